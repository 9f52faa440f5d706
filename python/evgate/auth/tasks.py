"""auth room: the background task each auth component owns (STYLE: every task has an owner).

The directory's refresher, the session-end sender and the offline-config pusher each run one
loop; :class:`OwnedTask` is its start and cancel-and-wait stop. (Maintenance and
LoopLagMonitor repeat the same pattern; this could move to a shared module.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["OwnedTask"]


class OwnedTask:
    """One named task running ``run()``: :meth:`start` (idempotent), ``await`` :meth:`stop`."""

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._run = run
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Cancel the task and wait for it to end. Safe to call more than once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
