"""storage room: the task that ends what has passed its time — reservations past their expiry
date, users' subscriptions past their end, partner invites left pending too long, and the
month just ended (its settlement reports, ``SettlementStore.settle_due``) — each with its events
(the stores' ``expire_due``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from evgate.outages import Dependency
from evgate.tasks import OwnedTask

__all__ = ["Expiry"]

log = logging.getLogger(__name__)


class Expiry:
    """Owns the task that calls each job every ``interval`` seconds, again at once while it
    expired something (a backlog after downtime): ``start()``, ``await stop()``.

    Args:
        health: the database's dependency, told of each run's outage or success.
        jobs: what each job is called in the logs → its ``expire_due`` (how many it ended).
        interval: seconds between runs.
    """

    def __init__(
        self,
        health: Dependency,
        jobs: Mapping[str, Callable[[], Awaitable[int]]],
        interval: float = 10.0,
    ) -> None:
        self.health = health
        self.jobs = dict(jobs)
        self.interval = interval
        self._task = OwnedTask(self._run, "expiry")

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def run_once(self) -> None:
        """Run every job until none has anything due."""
        for name, expire_due in self.jobs.items():
            try:
                while await expire_due() > 0:
                    pass
            except Exception as exc:  # the database may be away; the next run tries again
                self.health.report(exc, name, log)
            else:
                self.health.ok(name)

    async def _run(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval)
