"""Waiting on an observed condition: the one polling helper of the tests (a NOTIFY round trip,
a delivery, a metric, a database row, a process's output), instead of a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["quiet_for", "until", "until_sync"]

# Generous: the machine running the suite may be busy; a condition that holds returns at once.
WITHIN = 10.0


async def until(
    condition: Callable[[], Any | Awaitable[Any]],
    within: float = WITHIN,
    interval: float = 0.01,
    message: Callable[[], object] | None = None,
) -> Any:
    """Wait until ``condition()`` (a function, or an async function such as a query) returns
    a true value, and return that value; fail after ``within`` seconds (the assertion says
    ``message()``, if given)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(
                f"not within {within} s" + ("" if message is None else f": {message()}")
            )
        await asyncio.sleep(interval)


def until_sync(
    condition: Callable[[], Any],
    within: float = WITHIN,
    interval: float = 0.05,
    message: Callable[[], object] | None = None,
) -> Any:
    """:func:`until` for code without a running loop (subprocesses, threads)."""
    deadline = time.monotonic() + within
    while not (value := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not within {within} s" + ("" if message is None else f": {message()}")
            )
        time.sleep(interval)
    return value


async def quiet_for(seconds: float) -> None:
    """A fixed wait, for the one thing no condition can show: that nothing (more) happens
    within ``seconds`` (no duplicate arrives, no second event, the connection stays open). The
    caller checks afterwards that nothing did."""
    await asyncio.sleep(seconds)
