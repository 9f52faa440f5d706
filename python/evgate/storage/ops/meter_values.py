"""storage room: the writer's op of ``meter_values`` — a message's rows with their per-minute
rollups.

A meter value row is a :data:`MeterRow`, a typed row in :data:`METER_COLUMNS` order, kept a
plain tuple: the hot path builds one per sampled value and the native module encodes them for
COPY as they are (a Struct or a NamedTuple would cost the handlers per row). Its dedupe key is
(charger, connector, time, measurand, phase, location): a sampled value a charger resends (in a
retried MeterValues, or again in StopTransaction's transactionData) is stored once, whether the
first copy is in the same batch or committed long ago; the op reports which rows of each
message it stored (:data:`NewRows`), so that a resend makes no event. The rollups count only
rows stored now, so a resent value is never counted twice. Rollups are kept per
``meter_series`` number (one per charger, connector, measurand, phase and location) and minute,
as partial aggregates: each batch appends its own, readers combine the rows of a series and
minute, and maintenance folds them into one (``storage/meter_values.py`` ``fold_rollups``; see
migration 0008 for why).
"""

from __future__ import annotations

import collections
import math
import sys
import weakref
from array import array
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from evgate import native
from evgate.storage.ops.base import (
    RetryBatch,
    Write,
    WriteOp,
    before_commit,
    database_of,
    text_literal,
)

__all__ = [
    "METER_COLUMNS",
    "METER_VALUES",
    "ROLLUP_COLUMNS",
    "MeterRow",
    "MeterValueRows",
    "NewRows",
    "SeriesKey",
    "rollup_records",
    "row_times",
    "rows",
    "series_key",
]

METER_COLUMNS = (
    "charger_id",
    "connector_id",
    "transaction_id",
    "ts",
    "measurand",
    "phase",
    "location",
    "context",
    "format",
    "unit",
    "value",
    "raw_value",
)
#: (charger_id, connector_id, transaction_id, ts, measurand, phase, location, context, format,
#: unit, value, raw_value). A connector_id of None stands for "the transaction's connector"
#: (StopTransaction does not name it): the op looks it up in the batch's transaction.
MeterRow = tuple[
    str, int | None, int | None, datetime, str, str | None, str, str, str, str | None, float | None,
    str | None,
]  # fmt: skip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _key(row: MeterRow) -> tuple[Any, ...]:
    return (row[0], row[1], row[3], row[4], row[5], row[6])


SeriesKey = tuple[str, int, str, str | None, str]
"""A series: (charger_id, connector_id, measurand, phase, location)."""


def series_key(row: MeterRow) -> SeriesKey:
    """The series of ``row`` (whose connector is known)."""
    return (row[0], row[1], row[4], row[5], row[6])  # type: ignore[return-value]


def row_times(rows: Sequence[MeterRow]) -> array[int]:
    """The time of each row in µs since the Unix epoch (for ``native.copy_meter_rows`` and
    :func:`rollup_records`)."""
    times = array("q")
    last_ts: datetime | None = None
    last_us = 0
    for row in rows:
        ts = row[3]
        # The sampled values of one MeterValue share their datetime object: convert it once.
        if ts is not last_ts:
            last_ts = ts
            last_us = (ts - _EPOCH) // _US
        times.append(last_us)
    return times


def rollup_records(
    rows: Sequence[MeterRow],
    times: array[int],
    series_id: Mapping[SeriesKey, int],
    rollup: Any = None,
) -> bytes:
    """The per-minute rollups of ``rows`` (numeric values only), computed by ``rollup``
    (default: ``evgate.native.rollup_1m``, native unless ``EVGATE_NO_NATIVE=1``).

    Args:
        rows: stored rows, each of a series numbered in ``series_id``.
        times: the rows' times (:func:`row_times`).
        series_id: the ``meter_series`` number of every series of ``rows``.

    Returns:
        The rollups as binary COPY tuples of ``meter_rollup_1m``'s columns
        (``native.ROLLUP_RECORD``), sorted by series then minute (the order of the table's
        index, so a batch's entries land close together). Empty without numeric values.
    """
    sids = array("I")
    numeric_times = array("q")
    values = array("d")
    for row, us in zip(rows, times, strict=True):
        value = row[10]
        if value is None:
            continue
        sids.append(series_id[(row[0], row[1], row[4], row[5], row[6])])  # type: ignore[index]
        numeric_times.append(us)
        values.append(value)
    if not sids:
        return b""
    return (rollup or native.rollup_1m)(sids.tobytes(), numeric_times.tobytes(), values.tobytes())


# New series are numbered in sorted order (two writers adding the same ones never deadlock);
# RETURNING names only the ones this statement inserted.
_ADD_SERIES = """
INSERT INTO meter_series (charger_id, connector_id, measurand, phase, location)
SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[])
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT DO NOTHING
RETURNING id, charger_id, connector_id, measurand, phase, location
"""

_FIND_SERIES = """
SELECT s.id, s.charger_id, s.connector_id, s.measurand, s.phase, s.location
FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[]) AS k(c, n, m, p, l)
JOIN meter_series s ON s.charger_id = k.c AND s.connector_id = k.n AND s.measurand = k.m
                   AND s.phase IS NOT DISTINCT FROM k.p AND s.location = k.l
"""

#: The fields of ``native.ROLLUP_RECORD``, in its order: ``meter_rollup_1m``'s columns.
ROLLUP_COLUMNS = ("series_id", "minute", "min_value", "max_value", "sum_value", "count",
                   "first_at", "first_value", "last_at", "last_value")  # fmt: skip

_EXISTING = """
SELECT u.i FROM unnest($1::text[], $2::int4[], $3::timestamptz[], $4::text[], $5::text[],
                       $6::text[]) WITH ORDINALITY AS u(c, k, ts, m, p, l, i)
WHERE EXISTS (SELECT 1 FROM meter_values v
              WHERE v.charger_id = u.c AND v.ts = u.ts AND v.connector_id = u.k
                AND v.measurand = u.m AND v.phase IS NOT DISTINCT FROM u.p AND v.location = u.l)
"""


NewRows = Sequence[int]
"""The result of :class:`MeterValueRows` for one item: the positions, in the item, of the
rows this write stored (the others were stored before, or by an earlier item of the batch)."""


def _new_rows(items: list[Sequence[MeterRow]], kept: Sequence[int], total: int) -> list[NewRows]:
    """Each item's :data:`NewRows`, from the positions ``kept`` (ascending) of the stored rows
    among the ``total`` rows of all items, in order."""
    if len(kept) == total:  # the common case: everything was new
        return [range(len(item)) for item in items]
    stored = set(kept)
    results: list[NewRows] = []
    offset = 0
    for item in items:
        n = len(item)
        results.append([j for j in range(n) if offset + j in stored])
        offset += n
    return results


# Up to this many rows (a fleet's batch: a message or two), a batch's meter rows and their
# rollups ride in its COMMIT's round trip as literal INSERTs (``before_commit``; new series
# numbered first); more go by COPY, which costs PostgreSQL and Python less a row.
_TAIL_ROWS = 64
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _float(value: float) -> str:
    """A float8 literal that reads back as the same double (quoted: float8's own input, so
    -0.0 stays negative)."""
    if math.isinf(value):
        return "'Infinity'" if value > 0 else "'-Infinity'"
    return "'NaN'" if value != value else f"'{value!r}'"


def _pg_time(us: int) -> str:
    """A time in µs since PostgreSQL's epoch (a rollup record's) as a timestamptz literal."""
    return "'" + (_PG_EPOCH + timedelta(microseconds=us)).isoformat() + "'::timestamptz"


def _literal(value: object) -> str:
    """A meter row's field as an SQL literal (its column's type is the INSERT's target)."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return text_literal(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, datetime):
        return "'" + value.isoformat() + "'"
    return str(int(value))  # type: ignore[call-overload]


async def _copy_stream(records: bytes) -> AsyncIterator[bytes]:
    """``records`` (binary COPY tuples) as the stream asyncpg's ``copy_to_table`` sends."""
    yield native.COPY_HEADER + records + native.COPY_TRAILER


class MeterValueRows(WriteOp[Sequence[MeterRow], Sequence[int]]):
    """The writer op for meter values: an item is one message's rows; its result, the
    positions in the item of the rows this write stored (:data:`NewRows`).

    Per batch: drop repeated keys (first kept), COPY the rows into ``meter_values``, and COPY
    their rollups into ``meter_rollup_1m`` (one partial row per series and minute of the
    batch). When the COPY meets a key stored before (a resent message whose first copy
    committed), the op asks the writer to run the batch again (:class:`RetryBatch`), and
    then COPYs after a savepoint: on that key it rolls back to the savepoint, looks the stored
    keys up, leaves them out and writes the rest. The common case pays for one COPY only,
    with no savepoint.
    A row left out is new in no item's result; a key repeated in the batch is new in the
    first item that holds it. So a resent message whose values are all stored has an empty
    result, and the events built from the result (``handlers/meter_values.py``) say nothing
    twice.

    The op remembers the ``meter_series`` number of every series it has seen committed, per
    database (a writer's committers share it: ``base.database_of``; at most ``series_cache``
    of them; then it starts over), so a batch of known series costs no lookup. A series first
    seen in a batch is numbered in that batch's transaction and remembered only once the
    writer reports the commit (:meth:`committed`): a batch rolled back never leaves a number
    behind that does not exist.
    """

    name = "meter_values"

    def __init__(self, rollup: Any = None, series_cache: int = 1_000_000) -> None:
        self.rollup = rollup
        self.series_cache = series_cache
        # Per database (base.database_of): series → number, committed ones only.
        self._series: weakref.WeakKeyDictionary[object, dict[SeriesKey, int]] = (
            weakref.WeakKeyDictionary()
        )
        # The connections whose next write takes a savepoint: their last COPY met a key
        # stored before (a resend), so the batch is being run again.
        self._careful: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()
        # Per connection: the series numbered by the last write's transaction, until it commits.
        self._numbered: weakref.WeakKeyDictionary[asyncpg.Connection, dict[SeriesKey, int]] = (
            weakref.WeakKeyDictionary()
        )

    def committed(self, conn: asyncpg.Connection) -> None:
        numbered = self._numbered.pop(conn, None)
        if numbered:
            self._series.setdefault(database_of(conn), {}).update(numbered)

    def weight(self, item: Sequence[MeterRow]) -> int:
        return len(item)

    async def write(
        self, conn: asyncpg.Connection, items: list[Sequence[MeterRow]]
    ) -> list[Sequence[int]]:
        flat = [row for item in items for row in item]
        if any(row[1] is None for row in flat):
            flat = await self._with_connectors(conn, flat)
        # Each key's first row, by its position in ``flat``.
        first: dict[tuple[Any, ...], int] = {}
        for i, row in enumerate(flat):
            first.setdefault(_key(row), i)
        rows = flat
        kept: Sequence[int] = range(len(flat))  # the positions in ``flat`` of ``rows``
        if len(first) < len(flat):
            kept = list(first.values())
            rows = [flat[i] for i in kept]
        times = row_times(rows)
        careful = conn in self._careful
        self._careful.discard(conn)
        if not careful and rows and len(rows) <= _TAIL_ROWS:
            # Series not numbered yet are numbered first (one query), so that the rows and
            # rollups still ride in the COMMIT's round trip rather than in two COPYs.
            ids = await self._series_ids(conn, rows)
            await before_commit(conn, self._deferred(rows, times, ids), self._tail_failed(conn))
            return _new_rows(items, kept, len(flat))
        for _attempt in range(5):
            if not rows:
                break
            # Encoded natively, times from ``times``: no per-field work in Python.
            records = native.copy_meter_rows(rows, times.tobytes())
            if not careful:
                # Nearly every batch holds new values only: no savepoint (a round trip and a
                # subtransaction per batch). A key stored before aborts the transaction;
                # the writer then runs the batch again, and this op takes the savepoint.
                try:
                    await conn.copy_to_table(
                        "meter_values",
                        source=_copy_stream(records),
                        columns=METER_COLUMNS,
                        format="binary",
                    )
                    break
                except asyncpg.UniqueViolationError as exc:
                    self._careful.add(conn)
                    raise RetryBatch("a meter value stored before") from exc
            # A savepoint, so that a key stored before rolls back this COPY only. It is not
            # released: COMMIT does that, and a RELEASE would cost a round trip per batch.
            await conn.execute("SAVEPOINT meter_values")
            try:
                await conn.copy_to_table(
                    "meter_values",
                    source=_copy_stream(records),
                    columns=METER_COLUMNS,
                    format="binary",
                )
                break
            except asyncpg.UniqueViolationError:
                await conn.execute("ROLLBACK TO SAVEPOINT meter_values")
                fresh = await self._not_stored(conn, rows)
                rows = [rows[i] for i in fresh]
                kept = [kept[i] for i in fresh]
                times = row_times(rows)
        else:
            raise RuntimeError("meter values kept meeting new duplicates; giving up this batch")
        await self.add_rollups(conn, rows, times)
        return _new_rows(items, kept, len(flat))

    def _deferred(
        self, rows: Sequence[MeterRow], times: array[int], known: Mapping[SeriesKey, int]
    ) -> str:
        """The INSERTs of ``rows`` and their rollups (the numbers of their series in
        ``known``) as one literal statement for the batch's COMMIT round trip."""
        values = ",".join("(" + ",".join([_literal(v) for v in row]) + ")" for row in rows)
        sql = f"INSERT INTO meter_values ({', '.join(METER_COLUMNS)}) VALUES {values}"
        records = rollup_records(rows, times, known, self.rollup)
        if records:
            rollups = ",".join(
                f"({r[2]},{_pg_time(r[4])},{_float(r[6])},{_float(r[8])},{_float(r[10])},"
                f"{r[12]},{_pg_time(r[14])},{_float(r[16])},{_pg_time(r[18])},{_float(r[20])})"
                for r in native.ROLLUP_RECORD.iter_unpack(records)
            )
            sql += f"; INSERT INTO meter_rollup_1m ({', '.join(ROLLUP_COLUMNS)}) VALUES {rollups}"
        return sql

    def _tail_failed(self, conn: asyncpg.Connection) -> Callable[[BaseException], bool]:
        def failed(exc: BaseException) -> bool:
            # A key stored before (a resend): the batch again, the careful way.
            if isinstance(exc, asyncpg.UniqueViolationError):
                self._careful.add(conn)
                return True
            return False

        return failed

    async def _with_connectors(
        self, conn: asyncpg.Connection, rows: list[MeterRow]
    ) -> list[MeterRow]:
        """Give rows whose connector is None (StopTransaction's transactionData) their
        transaction's connector, or 0 (the charger) for a transaction evgate does not know."""
        ids = list({row[2] for row in rows if row[1] is None and row[2] is not None})
        found = await conn.fetch(
            "SELECT id, connector_id FROM transactions WHERE id = ANY($1::int4[])", ids
        )
        connector_of = {r[0]: r[1] for r in found}
        return [
            row if row[1] is not None else (row[0], connector_of.get(row[2], 0), *row[2:])
            for row in rows
        ]

    async def _not_stored(self, conn: asyncpg.Connection, rows: list[MeterRow]) -> list[int]:
        """The positions of the ``rows`` whose keys ``meter_values`` does not hold yet."""
        columns = list(zip(*(_key(r) for r in rows), strict=True))
        stored = {r[0] - 1 for r in await conn.fetch(_EXISTING, *columns)}
        return [i for i in range(len(rows)) if i not in stored]

    async def _series_ids(
        self, conn: asyncpg.Connection, rows: Sequence[MeterRow]
    ) -> Mapping[SeriesKey, int]:
        """The ``meter_series`` numbers of the series of ``rows`` (those with a value),
        numbering the new ones in the batch's transaction (one query, none when all are
        known)."""
        self._numbered.pop(conn, None)  # a transaction whose commit was not reported
        known = self._series.get(database_of(conn))
        if known is None or len(known) > self.series_cache:
            known = self._series[database_of(conn)] = {}
        missing: set[SeriesKey] = set()
        for row in rows:
            if row[10] is not None:
                key: SeriesKey = (row[0], row[1], row[4], row[5], row[6])  # type: ignore[assignment]
                if key not in known:
                    missing.add(key)
        if not missing:
            return known
        return collections.ChainMap(await self._number(conn, missing, known), known)

    async def add_rollups(
        self, conn: asyncpg.Connection, rows: Sequence[MeterRow], times: array[int]
    ) -> None:
        """Append the rollups of ``rows`` (just stored; ``times`` from :func:`row_times`) to
        ``meter_rollup_1m``."""
        ids = await self._series_ids(conn, rows)
        records = rollup_records(rows, times, ids, self.rollup)
        if records:
            await conn.copy_to_table(
                "meter_rollup_1m",
                source=_copy_stream(records),
                columns=ROLLUP_COLUMNS,
                format="binary",
            )

    async def _number(
        self, conn: asyncpg.Connection, keys: set[SeriesKey], known: dict[SeriesKey, int]
    ) -> dict[SeriesKey, int]:
        """The numbers of ``keys``, adding the series that are new. The ones committed by
        earlier transactions are also added to ``known``; the new ones once this transaction
        commits."""
        # The keys remembered share their strings: the charger id with the charger's
        # connection, the measurand, phase and location names with every other series.
        shared = {
            k: (k[0], k[1], sys.intern(k[2]), k[3] and sys.intern(k[3]), sys.intern(k[4]))
            for k in keys
        }
        ids: dict[SeriesKey, int] = {}
        for r in await conn.fetch(_ADD_SERIES, *zip(*keys, strict=True)):
            ids[shared[(r[1], r[2], r[3], r[4], r[5])]] = r[0]
        self._numbered[conn] = dict(ids)
        rest = [key for key in keys if key not in ids]
        if rest:
            for r in await conn.fetch(_FIND_SERIES, *zip(*rest, strict=True)):
                key = shared[(r[1], r[2], r[3], r[4], r[5])]
                ids[key] = known[key] = r[0]
        return ids


#: The op every handler stores meter values with.
METER_VALUES = MeterValueRows()


def rows(item: Sequence[MeterRow]) -> Write[NewRows]:
    """Store one message's meter rows; its result is the positions of the rows stored now."""
    return METER_VALUES(item)
