"""Meter storage: the native rollup and its pure twin agree, rollups merge across batches,
partitions are made ahead, stray rows move out of the default partition, retention drops old
days, and reads at every resolution."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evgate import _native, native
from evgate.storage.db import Database
from evgate.storage.maintenance import Maintenance, partition_name
from evgate.storage.meter_values import MeterValueRows, MeterValueStore
from evgate.storage.writer import Statement, Writer, WriteRejected

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ROWS = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=True, allow_infinity=True, width=64),
    ),
    max_size=200,
)


def buffers(rows: list[tuple[int, int, float]]) -> tuple[bytes, bytes, bytes]:
    return (
        b"".join(struct.pack("<I", s) for s, _, _ in rows),
        b"".join(struct.pack("<q", t) for _, t, _ in rows),
        b"".join(struct.pack("<d", v) for _, _, v in rows),
    )


@settings(max_examples=300, deadline=None)
@given(ROWS)
def test_native_rollup_equals_its_pure_twin_byte_for_byte(
    rows: list[tuple[int, int, float]],
) -> None:
    """Any rows (NaN, infinities, negative times, ties included): identical packed output."""
    args = buffers(rows)
    assert _native.rollup_1m(*args) == native.pure_rollup_1m(*args)


@pytest.mark.parametrize(
    "rollup", [_native.rollup_1m, native.pure_rollup_1m], ids=["native", "pure"]
)
def test_rollup_refuses_ragged_or_mismatched_buffers(rollup: object) -> None:
    """A buffer of the wrong length, or a time beyond ±2**62 µs, is a ValueError, in both
    implementations."""
    with pytest.raises(ValueError):
        rollup(b"\0\0\0", b"", b"")  # type: ignore[operator]
    with pytest.raises(ValueError):
        rollup(b"\0" * 4, b"", b"")  # type: ignore[operator]
    with pytest.raises(ValueError, match="out of range"):
        rollup(*buffers([(0, 2**62 + 1, 1.0)]))  # type: ignore[operator]


def test_rollup_known_answer() -> None:
    """Two rows in one minute, one in the next: min, max, sum, count, first and last, as
    binary COPY tuples (ten fields, each with its length; times from PostgreSQL's epoch)."""
    m = 60_000_000
    e = native.PG_EPOCH_US
    out = native.rollup_1m(*buffers([(3, e + 10, 5.0), (3, e + 5, 7.0), (3, e + m + 1, 1.0)]))
    records = list(native.ROLLUP_RECORD.iter_unpack(out))
    assert [r[0] for r in records] == [10, 10]
    assert [r[1::2] for r in records] == [(4, 8, 8, 8, 8, 8, 8, 8, 8, 8)] * 2
    assert [r[2::2] for r in records] == [
        (3, 0, 5.0, 7.0, 12.0, 2, 5, 7.0, 10, 5.0),
        (3, m, 1.0, 1.0, 1.0, 1, m + 1, 1.0, m + 1, 1.0),
    ]


def mrow(ts: datetime, value: float, measurand: str = "Power.Active.Import") -> tuple[object, ...]:
    return (
        "CP-1",
        1,
        None,
        ts,
        measurand,
        None,
        "Outlet",
        "Sample.Periodic",
        "Raw",
        "W",
        value,
        None,
    )


async def test_rollups_merge_across_batches(writer: Writer, db: Database) -> None:
    """Three batches in one minute: min, max, sum, count merge; first/last by time."""
    op = MeterValueRows()
    await writer.submit([(op, [mrow(T0 + timedelta(seconds=30), 5.0)])])
    await writer.submit([(op, [mrow(T0 + timedelta(seconds=10), 9.0)])])
    await writer.submit([(op, [mrow(T0 + timedelta(seconds=50), 1.0)])])
    [r] = await db.fetch("SELECT * FROM meter_rollup_1m")
    assert (r["minute"], r["min_value"], r["max_value"], r["sum_value"], r["count"]) == (
        T0,
        1.0,
        9.0,
        15.0,
        3,
    )
    assert (r["first_at"], r["first_value"]) == (T0 + timedelta(seconds=10), 9.0)
    assert (r["last_at"], r["last_value"]) == (T0 + timedelta(seconds=50), 1.0)


async def test_read_raw_and_coarse_resolutions_with_cursor(writer: Writer, db: Database) -> None:
    """Raw rows page by instant; 15m buckets aggregate the minutes' rollups."""
    op = MeterValueRows()
    rows = [mrow(T0 + timedelta(minutes=i), float(i)) for i in range(30)]
    await writer.submit([(op, rows)])
    store = MeterValueStore(db)
    page, cursor = await store.read("CP-1", T0, T0 + timedelta(hours=1), limit=20)
    assert len(page) == 20 and cursor == T0 + timedelta(minutes=19)
    rest, cursor2 = await store.read("CP-1", T0, T0 + timedelta(hours=1), after=cursor, limit=20)
    assert len(rest) == 10 and cursor2 is None
    buckets, _ = await store.read("CP-1", T0, T0 + timedelta(hours=1), resolution="15m")
    assert [(b.timestamp, b.count, b.min, b.max, b.first, b.last) for b in buckets] == [
        (T0, 15, 0.0, 14.0, 0.0, 14.0),
        (T0 + timedelta(minutes=15), 15, 15.0, 29.0, 15.0, 29.0),
    ]
    [hour] = (await store.read("CP-1", T0, T0 + timedelta(hours=1), resolution="1h"))[0]
    assert hour.avg == pytest.approx(14.5)  # type: ignore[union-attr]


async def test_maintenance_makes_partitions_ahead_and_moves_strays(
    writer: Writer, db: Database
) -> None:
    """A row for a day without a partition lands in the default partition (no error); when
    the day's partition is made, the row moves into it."""
    today = date(2024, 5, 1)
    await writer.submit([(MeterValueRows(), [mrow(T0, 1.0)])])
    assert await db.fetchval("SELECT count(*) FROM meter_values_default") == 1
    maintenance = Maintenance(db, retention_days=0, ahead_days=2)
    await maintenance.run_once(today)
    days = await maintenance.partitions()
    assert days >= {today - timedelta(days=1), today, today + timedelta(days=2)}
    assert await db.fetchval("SELECT count(*) FROM meter_values_default") == 0
    assert await db.fetchval(f"SELECT count(*) FROM {partition_name(today)}") == 1


async def test_retention_drops_old_partitions_and_old_strays(writer: Writer, db: Database) -> None:
    """Partitions older than the retention period are dropped, and default rows that old."""
    maintenance = Maintenance(db, retention_days=10, ahead_days=1)
    await maintenance.run_once(date(2024, 5, 1))
    old = datetime(2001, 1, 1, tzinfo=UTC)
    await writer.submit([(MeterValueRows(), [mrow(old, 1.0)])])
    await maintenance.run_once(date(2024, 5, 20))
    days = await maintenance.partitions()
    assert date(2024, 5, 1) not in days and date(2024, 5, 20) in days
    assert await db.fetchval("SELECT count(*) FROM meter_values") == 0


async def test_series_are_numbered_once_and_a_rolled_back_number_is_never_reused(
    database_url: str, db: Database
) -> None:
    """A series numbered in a transaction that rolls back is numbered again (the op remembers
    committed numbers only); after that, its rollups merge into one row under one number."""
    op = MeterValueRows()
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await op.write(conn, [[mrow(T0, 1.0)]])  # type: ignore[list-item]
            await conn.execute("SELECT 1/0")  # the batch fails after the op wrote
    except asyncpg.DivisionByZeroError:
        pass
    try:
        for seconds, value in ((1, 2.0), (2, 3.0)):
            async with conn.transaction():
                await op.write(conn, [[mrow(T0 + timedelta(seconds=seconds), value)]])  # type: ignore[list-item]
    finally:
        await conn.close()
    series = await db.fetch("SELECT id, charger_id, measurand FROM meter_series")
    assert [(r["charger_id"], r["measurand"]) for r in series] == [("CP-1", "Power.Active.Import")]
    [rollup] = await db.fetch("SELECT series_id, count, sum_value FROM meter_rollup_1m")
    assert tuple(rollup) == (series[0]["id"], 2, 5.0)


async def test_a_total_and_its_phases_are_separate_series(writer: Writer, db: Database) -> None:
    """The same measurand without a phase and with L1 rolls up into two series; 1m reads
    return both."""
    total = mrow(T0, 10.0)
    l1 = (*total[:5], "L1", *total[6:10], 4.0, None)
    await writer.submit([(MeterValueRows(), [total, l1])])
    assert await db.fetchval("SELECT count(*) FROM meter_series") == 2
    buckets, _ = await MeterValueStore(db).read(
        "CP-1", T0, T0 + timedelta(minutes=1), resolution="1m"
    )
    assert [(b.phase, b.max) for b in buckets] == [(None, 10.0), ("L1", 4.0)]  # type: ignore[union-attr]


async def test_rollups_merge_after_a_batch_that_made_the_staging_table_rolled_back(
    writer: Writer, db: Database
) -> None:
    """The first meter batch on a connection makes the rollup staging table; if that batch
    is refused (rolled back, table and all), the next batch makes it again and merges."""
    op = MeterValueRows()
    bad = Statement("INSERT INTO id_tags (id_tag) VALUES ($1)")  # CHECK: 1..20 characters
    with pytest.raises(WriteRejected):
        await writer.submit([(op, [mrow(T0, 5.0)]), (bad, ("x" * 30,))])
    await writer.submit([(op, [mrow(T0 + timedelta(seconds=1), 7.0)])])
    [r] = await db.fetch("SELECT count, sum_value FROM meter_rollup_1m")
    assert (r["count"], r["sum_value"]) == (1, 7.0)
    assert await db.fetchval("SELECT count(*) FROM meter_values") == 1
