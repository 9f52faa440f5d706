"""storage room: the maintenance task — meter value partitions ahead, retention, pruning.

``meter_values`` has one partition per UTC day, ``meter_values_pYYYYMMDD``. Every run (at start,
then every ``interval`` seconds):

* creates the partitions from yesterday to ``ahead_days`` days ahead. Rows that a charger with a
  wrong clock put in the default partition for a day that now gets its own partition are moved
  into it in the same transaction (PostgreSQL refuses to create a partition over rows the
  default partition holds);
* with ``retention_days`` > 0, drops the daily partitions whose whole day is older than that,
  and deletes such rows from the default partition (rollups are kept: they are small);
* deletes ``writer_commits`` entries older than a day (they matter only for minutes).

Several processes may run it at once: each run holds an advisory lock for its transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, date, datetime, timedelta

import asyncpg

from evgate.storage.db import Database
from evgate.tasks import OwnedTask

__all__ = ["Maintenance", "partition_name"]

log = logging.getLogger(__name__)

_LOCK = 0x65766D74  # 'evmt'
_PARTITION = re.compile(r"^meter_values_p(\d{8})$")


def partition_name(day: date) -> str:
    return f"meter_values_p{day:%Y%m%d}"


class Maintenance:
    """Owns the maintenance task: ``start()``, ``await stop()``; ``await run_once()`` for a
    run now (tests, the CLI)."""

    def __init__(
        self,
        db: Database,
        *,
        retention_days: int = 90,
        ahead_days: int = 3,
        interval: float = 3600.0,
    ) -> None:
        self.db = db
        self.retention_days = retention_days
        self.ahead_days = ahead_days
        self.interval = interval
        self._task = OwnedTask(self._run, "maintenance")

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the database may be away; the next run tries again
                log.warning(
                    "maintenance failed (%s: %s); next run in %.0fs",
                    type(exc).__name__,
                    exc,
                    self.interval,
                )
            await asyncio.sleep(self.interval)

    async def run_once(self, today: date | None = None) -> None:
        """Create partitions ahead, apply retention, prune ``writer_commits``."""
        today = today or datetime.now(UTC).date()
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            existing = await self.partitions(conn)
            for offset in range(-1, self.ahead_days + 1):
                day = today + timedelta(days=offset)
                if day not in existing:
                    await self._create(conn, day)
            if self.retention_days > 0:
                cutoff = today - timedelta(days=self.retention_days)
                for day in sorted(existing):
                    if day < cutoff:
                        await conn.execute(f"DROP TABLE {partition_name(day)}")
                        log.info("dropped meter value partition %s", partition_name(day))
                await conn.execute(
                    "DELETE FROM meter_values_default WHERE ts < $1",
                    datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC),
                )
            await conn.execute(
                "DELETE FROM writer_commits WHERE committed_at < now() - interval '1 day'"
            )

    async def partitions(self, conn: asyncpg.Connection | None = None) -> set[date]:
        """The days that have a partition."""
        sql = (
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'meter_values'::regclass"
        )
        rows = await (conn.fetch(sql) if conn is not None else self.db.fetch(sql))
        days = set()
        for row in rows:
            match = _PARTITION.match(row[0])
            if match:
                days.add(datetime.strptime(match.group(1), "%Y%m%d").date())
        return days

    async def _create(self, conn: asyncpg.Connection, day: date) -> None:
        name = partition_name(day)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        bounds = f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        strays = await conn.fetchval(
            "SELECT count(*) FROM meter_values_default WHERE ts >= $1 AND ts < $2", start, end
        )
        if not strays:
            await conn.execute(f"CREATE TABLE {name} PARTITION OF meter_values FOR VALUES {bounds}")
            log.info("created meter value partition %s", name)
            return
        # Move the default partition's rows of that day into the new partition, then attach
        # it: attaching checks that the default partition holds none of the day any more.
        await conn.execute(f"CREATE TABLE {name} (LIKE meter_values INCLUDING DEFAULTS)")
        await conn.execute(
            f"WITH moved AS (DELETE FROM meter_values_default WHERE ts >= $1 AND ts < $2"
            f" RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            start,
            end,
        )
        await conn.execute(f"ALTER TABLE meter_values ATTACH PARTITION {name} FOR VALUES {bounds}")
        log.info("created meter value partition %s with %d rows from the default", name, strays)
