"""The test event loop and what the leak guard (tests/conftest.py) asks it: uvloop, with the
timer handles it schedules tracked, and a way to let pass one known loop error of asyncpg."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import uvloop

__all__ = ["TrackingLoop", "asyncpg_copy_waiter_unretrieved"]


class TrackingLoop(uvloop.Loop):  # type: ignore[misc]
    """uvloop's loop, remembering each timer handle (``call_later``/``call_at``) and the task
    that scheduled it. uvloop keeps its timers in libuv, out of Python's sight, and counts them
    only in a debug build (``_debug_cb_timer_handles_count``, what uvloop's own test base
    checks); so the timers are tracked here, where Python code schedules them. (uvloop's
    ``call_at`` goes through ``call_later``; both are wrapped for asyncio's loop, where it is the
    other way round.)"""

    def __init__(self) -> None:
        super().__init__()
        self.timers: dict[int, tuple[asyncio.TimerHandle, asyncio.Task[Any] | None]] = {}
        self._prune_at = 4096

    def _track(self, handle: asyncio.TimerHandle) -> asyncio.TimerHandle:
        # A delay of zero or less is a call_soon: a Handle, run on the next turn, no timer.
        if hasattr(handle, "when") and id(handle) not in self.timers:
            if len(self.timers) >= self._prune_at:  # forget what already ran or was cancelled
                self.pending_timers(ignore=lambda _: True)
                self._prune_at = max(4096, 2 * len(self.timers))
            self.timers[id(handle)] = (handle, asyncio.current_task(self))
        return handle

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any, **kw: Any
    ) -> asyncio.TimerHandle:
        return self._track(super().call_later(delay, callback, *args, **kw))

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, **kw: Any
    ) -> asyncio.TimerHandle:
        return self._track(super().call_at(when, callback, *args, **kw))

    def pending_timers(
        self, ignore: Callable[[asyncio.Task[Any] | None], bool]
    ) -> list[asyncio.TimerHandle]:
        """Timers not yet run nor cancelled (and forget the others), except those whose
        scheduling task ``ignore`` accepts."""
        now = self.time()
        pending = []
        for key, (handle, task) in list(self.timers.items()):
            if handle.cancelled() or handle.when() <= now:
                del self.timers[key]
            elif not ignore(task):
                pending.append(handle)
        return pending


@contextlib.contextmanager
def asyncpg_copy_waiter_unretrieved() -> Iterator[None]:
    """Let pass the loop error asyncpg 0.32 leaves when the server goes away around a COPY:
    "Future exception was never retrieved" (ConnectionDoesNotExistError) for the COPY's
    result future, which asyncpg never awaits when the COPY cannot start ("cannot switch to
    state 21") or its CopyFail meets a closed transport. Any other loop error goes on to the
    test's handler."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        unretrieved = context.get("message") == "Future exception was never retrieved"
        if not (
            unretrieved
            and isinstance(context.get("exception"), asyncpg.ConnectionDoesNotExistError)
        ):
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    try:
        yield
    finally:
        gc.collect()
        loop.set_exception_handler(previous)
