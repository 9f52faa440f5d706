"""The background task a component owns (STYLE: every task has an owner).

A component that runs one loop (the id-tag directory's refresher, the session-end sender, the
offline-config pusher, maintenance, reservation expiry, the loop-lag monitor) holds an
:class:`OwnedTask`: its idempotent start and its cancel-and-wait stop. A loop that sleeps until
it is woken or a timeout passes waits with :func:`wait_event`. Every task a component starts
is a :func:`service_task`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["OwnedTask", "cancel_and_wait", "retrieve", "service_task", "wait_event"]

T = TypeVar("T")


def service_task(coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
    """A task of a component that serves everyone (a loop, a saver, a refresher, a sender),
    run in a context of its own, not in that of whichever request or charger started it.

    A task inherits its creator's contextvars, and an API request made with a sub-operator's
    token acts for it (``storage.db.acting_for``): a component's task started lazily by such a
    request would query as that tenant for every caller, for its whole life (another tenant's
    charger's AuthorizationKey "deleted", every other charger's credentials or id tags dropped
    from a reload). Only a task that does the request's own work may inherit (api/
    async_commands.py); tests/test_sourcecode.py allows no other ``create_task``.
    """
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; tell whether it was set.

    Not ``asyncio.wait_for(event.wait(), seconds)``: on Python 3.11 that loses a cancellation
    which arrives in the same loop iteration as the event (CPython gh-86296), so a loop woken
    just as its owner stops it never ends, and the owner's ``await task`` hangs forever.
    ``asyncio.timeout`` tells its own cancellation from anyone else's.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


def retrieve(future: asyncio.Future[Any]) -> None:
    """Read the outcome of a done future nobody awaits (a done callback: a cancelled read,
    a record whose result no longer matters), so that asyncio does not log it as never
    retrieved."""
    if not future.cancelled():
        future.exception()


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class OwnedTask:
    """One named task running ``run()``: :meth:`start` (idempotent), ``await`` :meth:`stop`."""

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._run = run
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = service_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Cancel the task and wait for it to end. Safe to call more than once."""
        await cancel_and_wait(self._task)
        self._task = None
