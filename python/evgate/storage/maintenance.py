"""storage room: the maintenance tasks — meter value partitions ahead, retention, pruning; and
the folding of partial rollups.

``meter_values`` has one partition per UTC day, ``meter_values_pYYYYMMDD``. Every run (at start,
then every ``interval`` seconds):

* creates the partitions from yesterday to ``ahead_days`` days ahead. Rows that a charger with a
  wrong clock put in the default partition for a day that now gets its own partition are moved
  into it in the same transaction (PostgreSQL refuses to create a partition over rows the
  default partition holds);
* with ``retention_days`` > 0, drops the daily partitions whose whole day is older than that,
  and deletes such rows from the default partition (rollups are kept: they are small);
* deletes ``writer_commits`` entries older than a day (they matter only for minutes), and
  the API's command records past their ``expires_at`` (``storage/commands.py``).

Every ``fold_interval`` seconds, the rollup fold: the writer appends each batch's per-minute
rollups as partial rows (storage/meter_values.py), so a series and minute gets one row per
batch that held its values; the fold replaces them by one row each (``fold_rollups``), for the
minutes that ended at least a minute ago and were not folded yet, plus the few minutes before
them again (``FOLD_LATE``: partials of a charger whose message came late). How far it got is
kept in ``meter_rollup_folds``, so the processes of a cluster share the work. Readers combine
partials the same way, so folding is about size and read cost, never about correctness.

Several processes may run both at once: each run holds an advisory lock for its transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg

from evgate.storage.commands import prune_commands
from evgate.storage.db import Database
from evgate.storage.meter_values import fold_rollups
from evgate.tasks import OwnedTask

__all__ = ["FOLD_CHUNK", "FOLD_FIRST", "FOLD_LATE", "Maintenance", "partition_name"]

log = logging.getLogger(__name__)

_LOCK = 0x65766D74  # 'evmt'
_FOLD_LOCK = 0x6576666C  # 'evfl'
_MINUTE = timedelta(minutes=1)
#: Minutes folded again at each fold, before the ones never folded.
FOLD_LATE = timedelta(minutes=2)
#: How far back a fold looks at most (the first one, or the first after a long stop).
FOLD_FIRST = timedelta(hours=1)
#: Minutes folded per transaction (bounded statements on a large fleet).
FOLD_CHUNK = timedelta(minutes=5)
_PARTITION = re.compile(r"^meter_values_p(\d{8})$")


def partition_name(day: date) -> str:
    return f"meter_values_p{day:%Y%m%d}"


class Maintenance:
    """Owns the maintenance tasks: ``start()``, ``await stop()``; ``await run_once()`` and
    ``await fold_once()`` for a run now (tests, the CLI)."""

    def __init__(
        self,
        db: Database,
        *,
        retention_days: int = 90,
        ahead_days: int = 3,
        interval: float = 3600.0,
        fold_interval: float = 60.0,
    ) -> None:
        self.db = db
        self.retention_days = retention_days
        self.ahead_days = ahead_days
        self.interval = interval
        self.fold_interval = fold_interval
        self._tasks = [
            OwnedTask(
                lambda: self._every("maintenance", self.interval, self.run_once), "maintenance"
            ),
            OwnedTask(
                lambda: self._every("rollup fold", self.fold_interval, self.fold_once),
                "rollup-fold",
            ),
        ]

    def start(self) -> None:
        for task in self._tasks:
            task.start()

    async def stop(self) -> None:
        for task in self._tasks:
            await task.stop()

    async def _every(
        self, what: str, interval: float, run: Callable[[], Awaitable[object]]
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await run()
            except Exception as exc:  # the database may be away; the next run tries again
                self.db.health.report(exc, what, log)
            else:
                self.db.health.ok(what)

    async def fold_once(self, now: datetime | None = None) -> int:
        """Fold the partial rollups of the minutes that ended at least a minute before
        ``now`` (default: the database's clock) and were not folded yet (at most
        ``FOLD_FIRST`` of them), and of the ``FOLD_LATE`` before those.

        Returns:
            How many (series, minute) rows were folded; 0 also when another process is
            folding now (it does this work).
        """
        folded = 0
        late = FOLD_LATE  # only before the first chunk: the next ones start where it ended
        while True:
            async with self.db.pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _FOLD_LOCK):
                    return folded
                # The database's clock, the same for every process sharing the mark.
                clock = now or await conn.fetchval("SELECT now()")
                until = clock.replace(second=0, microsecond=0) - _MINUTE
                done = await conn.fetchval("SELECT folded_until FROM meter_rollup_folds")
                if done is not None and done > until + FOLD_CHUNK:
                    log.warning("rollup fold: the mark %s is ahead of the clock; restarting", done)
                    done = None
                if done is not None and done >= until:
                    return folded
                if done is None or done < until - FOLD_FIRST:
                    # The first fold, or the first after a long stop: partials older than
                    # this stay partials (readers combine them).
                    start = done = until - FOLD_FIRST
                else:
                    start = done - late
                end = min(done + FOLD_CHUNK, until)
                folded += await fold_rollups(conn, start, end)
                await conn.execute(
                    "INSERT INTO meter_rollup_folds (folded_until) VALUES ($1)"
                    " ON CONFLICT (only_row) DO UPDATE SET folded_until = excluded.folded_until",
                    end,
                )
                if end >= until:
                    return folded
            late = timedelta(0)

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
            await prune_commands(conn)

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
        # Row-level security without a policy: a tenant's role (which may read every table,
        # migration 0020) sees nothing in a partition named directly, only through the parent.
        closed = f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"
        if not strays:
            await conn.execute(
                f"CREATE TABLE {name} PARTITION OF meter_values FOR VALUES {bounds}; {closed}"
            )
            log.info("created meter value partition %s", name)
            return
        # Move the default partition's rows of that day into the new partition, then attach
        # it: attaching checks that the default partition holds none of the day any more.
        await conn.execute(f"CREATE TABLE {name} (LIKE meter_values INCLUDING DEFAULTS); {closed}")
        await conn.execute(
            f"WITH moved AS (DELETE FROM meter_values_default WHERE ts >= $1 AND ts < $2"
            f" RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            start,
            end,
        )
        await conn.execute(f"ALTER TABLE meter_values ATTACH PARTITION {name} FOR VALUES {bounds}")
        log.info("created meter value partition %s with %d rows from the default", name, strays)
