"""storage room: meter values — the queries that read them back (raw, or from the rollups at
1m, 15m or 1h), and the fold of the rollups' partial rows (the writer's op that stores them is
``storage/ops/meter_values.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.ops.meter_values import ROLLUP_COLUMNS

__all__ = [
    "MeterBucket",
    "MeterSample",
    "MeterValueStore",
    "Resolution",
    "fold_rollups",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


# The partial rows of each series and minute in [$1, $2) that has more than one, replaced by
# one row that combines them as the readers do. Rows a writer appends meanwhile are not in this
# statement's snapshot: they stay, as partials of their own, for the next fold.
_FOLD_ROLLUPS = f"""
WITH split AS (
    SELECT series_id, minute FROM meter_rollup_1m
    WHERE minute >= $1 AND minute < $2
    GROUP BY series_id, minute HAVING count(*) > 1
), parts AS (
    DELETE FROM meter_rollup_1m r USING split s
    WHERE r.minute >= $1 AND r.minute < $2 AND r.series_id = s.series_id AND r.minute = s.minute
    RETURNING r.*
)
INSERT INTO meter_rollup_1m ({", ".join(ROLLUP_COLUMNS)})
SELECT series_id, minute, min(min_value), max(max_value), sum(sum_value), sum(count)::int8,
       min(first_at), (array_agg(first_value ORDER BY first_at))[1],
       max(last_at), (array_agg(last_value ORDER BY last_at DESC))[1]
FROM parts GROUP BY series_id, minute ORDER BY series_id, minute
"""


async def fold_rollups(conn: asyncpg.Connection, start: datetime, end: datetime) -> int:
    """Fold the partial rollups of every series and minute in ``[start, end)`` into one row
    each (in ``conn``'s transaction, if any).

    Readers combine partials the same way, so a fold changes no read; it keeps the table
    (and the reads' work) at about one row per series and minute.

    Returns:
        How many (series, minute) rows were folded.
    """
    status = await conn.execute(_FOLD_ROLLUPS, start, end)
    return int(status.rsplit(" ", 1)[1])


Resolution = Literal["raw", "1m", "15m", "1h"]
_BUCKETS = {"1m": "1 minute", "15m": "15 minutes", "1h": "1 hour"}
_BUCKET_SIZES = {"1m": timedelta(minutes=1), "15m": timedelta(minutes=15), "1h": timedelta(hours=1)}


class MeterSample(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    """One stored sampled value."""

    timestamp: datetime
    connector_id: int
    measurand: str
    location: str
    context: str
    format: str
    transaction_id: int | None = None
    phase: str | None = None
    unit: str | None = None
    value: float | None = None
    raw_value: str | None = None


class MeterBucket(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    """The numeric values of one series over one interval (from the per-minute rollups)."""

    timestamp: datetime
    connector_id: int
    measurand: str
    location: str
    min: float
    max: float
    avg: float
    count: int
    first: float
    last: float
    phase: str | None = None


class MeterValueStore:
    """Reads of ``meter_values`` and ``meter_rollup_1m``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def read(
        self,
        charger_id: str,
        start: datetime,
        end: datetime,
        *,
        resolution: Resolution = "raw",
        measurand: str | None = None,
        connector_id: int | None = None,
        after: datetime | None = None,
        limit: int = 1000,
    ) -> tuple[list[MeterSample] | list[MeterBucket], datetime | None]:
        """The charger's meter values with ``start <= time < end``, in time order.

        A page holds every row of its last instant (an instant is never split across pages),
        so it may exceed ``limit`` by the rows of that instant.

        Returns:
            The rows and, when more may follow, the cursor (the last instant; pass as ``after``).
        """
        step = _US if resolution == "raw" else _BUCKET_SIZES[resolution]
        if after is not None and after + step > start:
            start = after + step
        filters = "charger_id = $1 AND {t} >= $2 AND {t} < $3" + (
            " AND ($4::text IS NULL OR measurand = $4) AND ($5::int4 IS NULL OR connector_id = $5)"
        )
        args = (charger_id, start, end, measurand, connector_id)
        if resolution == "raw":
            where = filters.format(t="ts")
            sql = f"""
                WITH cut AS (SELECT ts FROM meter_values WHERE {where}
                             ORDER BY ts OFFSET $6 - 1 LIMIT 1)
                SELECT ts, connector_id, measurand, location, context, format, transaction_id,
                       phase, unit, value, raw_value
                FROM meter_values
                WHERE {where} AND ts <= coalesce((SELECT ts FROM cut), 'infinity')
                ORDER BY ts, connector_id, measurand, phase NULLS FIRST, location"""
            rows = await self.db.fetch(sql, *args, limit)
            samples = [MeterSample(timestamp=r[0], **_fields(r, MeterSample, 1)) for r in rows]
            full = len(rows) >= limit
            return samples, (samples[-1].timestamp if full and samples else None)
        bucket = _BUCKETS[resolution]
        where = filters.format(t="minute")
        sql = f"""
            WITH b AS (
                SELECT date_bin('{bucket}', minute, 'epoch') AS bucket, connector_id, measurand,
                       phase, location, min(min_value) AS mn, max(max_value) AS mx,
                       sum(sum_value) AS sm, sum(count)::int8 AS n,
                       (array_agg(first_value ORDER BY first_at))[1] AS fv,
                       (array_agg(last_value ORDER BY last_at DESC))[1] AS lv
                FROM meter_series JOIN meter_rollup_1m ON series_id = id WHERE {where}
                GROUP BY 1, 2, 3, 4, 5),
            cut AS (SELECT bucket FROM b ORDER BY bucket OFFSET $6 - 1 LIMIT 1)
            SELECT bucket, connector_id, measurand, location, mn, mx, sm / n, n, fv, lv, phase
            FROM b WHERE bucket <= coalesce((SELECT bucket FROM cut), 'infinity')
            ORDER BY bucket, connector_id, measurand, phase NULLS FIRST, location"""
        # A bucket starting before ``start`` would hold minutes outside the range: align.
        start = _floor(start, _BUCKET_SIZES[resolution])
        rows = await self.db.fetch(sql, charger_id, start, end, *args[3:], limit)
        buckets = [MeterBucket(timestamp=r[0], **_fields(r, MeterBucket, 1)) for r in rows]
        full = len(rows) >= limit
        return buckets, (buckets[-1].timestamp if full and buckets else None)


def _fields(row: asyncpg.Record, cls: type[msgspec.Struct], skip: int) -> dict[str, Any]:
    names = cls.__struct_fields__[skip:]
    return dict(zip(names, row[skip:], strict=True))


def _floor(moment: datetime, size: timedelta) -> datetime:
    """``moment`` rounded down to its bucket (buckets are aligned on the Unix epoch)."""
    return moment - (moment - _EPOCH) % size
