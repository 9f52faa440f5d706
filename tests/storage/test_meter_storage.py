"""Meter storage: the native rollup and its pure twin agree, partial rollups combine and fold,
partitions are made ahead, stray rows move out of the default partition, retention drops old
days, and reads at every resolution."""

from __future__ import annotations

import asyncio
import math
import struct
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evgate import _native, native
from evgate.storage.db import Database
from evgate.storage.maintenance import FOLD_FIRST, Maintenance, partition_name
from evgate.storage.meter_values import MeterValueStore
from evgate.storage.ops import meter_values as meter_values_op
from evgate.storage.ops.base import Statement
from evgate.storage.ops.meter_values import MeterValueRows
from evgate.storage.ops.outbox import Emission, Emit
from evgate.storage.writer import Writer, WriteRejected
from support import locked, logged_queries, until

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


TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)
METER_ROWS = st.lists(
    st.tuples(
        st.tuples(
            TEXT,
            st.integers(-(2**31), 2**31 - 1),
            st.none() | st.integers(-(2**31), 2**31 - 1),
            st.none(),  # the time column: taken from ts_us
            TEXT,
            st.none() | TEXT,
            TEXT,
            TEXT,
            TEXT,
            st.none() | TEXT,
            st.none() | st.floats(width=64),
            st.none() | TEXT,
        ),
        st.integers(-(2**62), 2**62),
    ),
    max_size=50,
)


@settings(max_examples=300, deadline=None)
@given(METER_ROWS)
def test_native_meter_row_encoding_equals_its_pure_twin(
    rows_and_times: list[tuple[tuple[object, ...], int]],
) -> None:
    """Any rows of the column types (NULLs, any text, int4 bounds, NaN, infinities, times
    either side of both epochs): identical binary COPY tuples."""
    rows = [row for row, _ in rows_and_times]
    times = struct.pack(f"<{len(rows)}q", *(t for _, t in rows_and_times))
    assert _native.copy_meter_rows(rows, times) == native.pure_copy_meter_rows(rows, times)


GOOD = ("CP-1", 1, None, None, "Voltage", None, "Outlet", "Sample.Periodic", "Raw", "V", 1.0, None)


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        ([GOOD[:11]], ValueError),  # eleven fields
        ([list(GOOD)], TypeError),  # not a tuple
        ([(b"CP-1", *GOOD[1:])], TypeError),  # bytes for text
        ([(GOOD[0], 1.5, *GOOD[2:])], TypeError),  # a float for int4
        ([(GOOD[0], 2**31, *GOOD[2:])], ValueError),  # beyond int4
        ([(*GOOD[:10], "1.5", None)], TypeError),  # text for float8
        ([("\ud800", *GOOD[1:])], UnicodeEncodeError),  # no UTF-8 for a lone surrogate
        ([(*GOOD[:10], 10**400, None)], OverflowError),  # an int beyond float8
        ((GOOD,), TypeError),  # rows in a tuple, not a list
    ],
    ids=[
        "short",
        "list",
        "bytes",
        "float-int4",
        "int4-range",
        "text-float8",
        "surrogate",
        "int-float8",
        "tuple-of-rows",
    ],
)
def test_meter_row_encoding_refuses_what_postgresql_would(
    rows: list[tuple[object, ...]], error: type[Exception]
) -> None:
    """Both implementations refuse a row that is not of the columns' types, the same way."""
    for encode in (_native.copy_meter_rows, native.pure_copy_meter_rows):
        with pytest.raises(error):
            encode(rows, bytes(8))
        with pytest.raises(ValueError, match="different row counts"):
            encode([GOOD], bytes(16))
        with pytest.raises(ValueError, match="out of range"):
            encode([GOOD], struct.pack("<q", 2**62 + 1))


@pytest.mark.parametrize(
    "encode", [_native.copy_meter_rows, native.pure_copy_meter_rows], ids=["native", "pure"]
)
async def test_encoded_meter_rows_read_back_from_postgresql_as_sent(
    encode: object, database_url: str, db: Database
) -> None:
    """The encoded rows, COPYed into a table of meter_values' columns, read back equal: text
    in any script, NULLs, int4 bounds, NaN and infinities, times before 1970 and after 2000."""
    from evgate.storage.ops.meter_values import METER_COLUMNS, _copy_stream

    when = [
        datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=UTC),
        T0,
        datetime(2262, 1, 1, tzinfo=UTC),
    ]
    common = ("Outlet", "Sample.Periodic", "Raw")
    rows = [
        ("CP-é", 2**31 - 1, None, when[0], "Energy", "L1", *common, "Wh", float("inf"), None),
        ("充电桩", -(2**31), 7, when[1], "Voltage", None, *common, None, None, "AbC="),
        ("CP-3", 0, None, when[2], "Power", "L2-N", *common, "W", float("nan"), None),
    ]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    times = struct.pack("<3q", *((w - epoch) // timedelta(microseconds=1) for w in when))
    records = encode(rows, times)  # type: ignore[operator]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TEMPORARY TABLE t (LIKE meter_values)")
        await conn.copy_to_table(
            "t", source=_copy_stream(records), columns=METER_COLUMNS, format="binary"
        )
        back = [tuple(r) for r in await conn.fetch("SELECT * FROM t ORDER BY ts")]
    finally:
        await conn.close()
    assert back[:2] == rows[:2]
    assert back[2][:10] == rows[2][:10] and math.isnan(back[2][10]) and back[2][11] is None


async def test_a_meter_row_out_of_int4_is_refused_alone(writer: Writer, db: Database) -> None:
    """A connector id beyond int4 fails its own submission (WriteRejected); another charger's
    rows in the same batch commit."""
    op = MeterValueRows()
    bad = (*mrow(T0, 1.0)[:1], 2**40, *mrow(T0, 1.0)[2:])
    results = await asyncio.gather(
        writer.submit([(op, [bad])]),
        writer.submit([(op, [mrow(T0, 2.0)])]),
        return_exceptions=True,
    )
    assert isinstance(results[0], WriteRejected) and [list(r) for r in results[1]] == [[0]]
    assert await db.fetchval("SELECT value FROM meter_values") == 2.0


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


ROLLUP_FIGURES = """
    SELECT series_id, minute, min(min_value), max(max_value), sum(sum_value), sum(count),
           min(first_at), (array_agg(first_value ORDER BY first_at))[1],
           max(last_at), (array_agg(last_value ORDER BY last_at DESC))[1]
    FROM meter_rollup_1m GROUP BY 1, 2 ORDER BY 1, 2"""


async def figures(db: Database) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await db.fetch(ROLLUP_FIGURES)]


async def test_rollups_of_several_batches_combine_and_fold_into_one_row(
    writer: Writer, db: Database
) -> None:
    """Three batches in one minute append three partial rows; a 1m read combines them (min,
    max, sum, count; first and last by time), and the fold replaces them by one row with the
    same figures."""
    op = MeterValueRows()
    for seconds, value in ((30, 5.0), (10, 9.0), (50, 1.0)):
        await writer.submit([(op, [mrow(T0 + timedelta(seconds=seconds), value)])])
    assert await db.fetchval("SELECT count(*) FROM meter_rollup_1m") == 3
    store = MeterValueStore(db)
    before, _ = await store.read("CP-1", T0, T0 + timedelta(hours=1), resolution="1m")
    assert [(b.timestamp, b.min, b.max, b.avg, b.count, b.first, b.last) for b in before] == [  # type: ignore[union-attr]
        (T0, 1.0, 9.0, 5.0, 3, 9.0, 1.0)
    ]
    assert await Maintenance(db).fold_once(now=T0 + timedelta(minutes=2)) == 1
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
    after, _ = await store.read("CP-1", T0, T0 + timedelta(hours=1), resolution="1m")
    assert after == before


async def test_fold_takes_ended_minutes_once_and_late_partials_within_reach(
    writer: Writer, db: Database
) -> None:
    """A fold takes the minutes that ended a minute ago; the current minute stays partial. The
    next fold at the same time has nothing to do; a partial that arrives late for a folded
    minute is folded again within FOLD_LATE; one older than FOLD_FIRST is left partial (reads
    still combine it). Figures never change."""
    op = MeterValueRows()
    now = T0 + timedelta(minutes=10, seconds=30)
    old = T0 - FOLD_FIRST - timedelta(minutes=5)
    for ts in (T0, T0 + timedelta(seconds=1), T0 + timedelta(minutes=8), now, old):
        for extra in (0, 2):  # two batches each: two partials per minute
            await writer.submit([(op, [mrow(ts + timedelta(seconds=extra), 1.0 + extra)])])
    maintenance = Maintenance(db)
    # T0 (four partials) and T0+8 fold; T0+9 ended only 30 s ago; `old` is too old.
    assert await maintenance.fold_once(now=now) == 2
    assert await maintenance.fold_once(now=now) == 0
    await writer.submit([(op, [mrow(T0 + timedelta(minutes=8, seconds=30), 7.0)])])
    expected = await figures(db)
    assert await maintenance.fold_once(now=now + timedelta(minutes=1)) == 1  # T0+8 again
    assert await maintenance.fold_once(now=now + timedelta(minutes=2)) == 1  # T0+10
    counts = await db.fetch("SELECT minute, count(*) FROM meter_rollup_1m GROUP BY 1 ORDER BY 1")
    assert [(r[0], r[1]) for r in counts] == [
        (old.replace(second=0), 2),
        (T0, 1),
        (T0 + timedelta(minutes=8), 1),
        (T0 + timedelta(minutes=10), 1),
    ]
    assert await figures(db) == expected


async def test_fold_keeps_a_partial_appended_while_it_runs(
    writer: Writer, db: Database, database_url: str
) -> None:
    """A batch appending a partial of a minute being folded, committed after the fold's
    snapshot, is neither lost nor counted twice."""
    op = MeterValueRows()
    for seconds in (1, 2):
        await writer.submit([(op, [mrow(T0 + timedelta(seconds=seconds), 1.0)])])
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await op.write(conn, [[mrow(T0 + timedelta(seconds=3), 5.0)]])  # type: ignore[list-item]
            assert await Maintenance(db).fold_once(now=T0 + timedelta(minutes=2)) == 1
    finally:
        await conn.close()
    [(_, _, mn, mx, sm, n, *_)] = await figures(db)
    assert (mn, mx, sm, n) == (1.0, 5.0, 7.0, 3)
    assert await db.fetchval("SELECT count(*) FROM meter_rollup_1m") == 2


async def test_a_fold_skips_while_another_process_folds(writer: Writer, db: Database) -> None:
    """The fold's advisory lock is held elsewhere: this fold does nothing and moves no mark."""
    op = MeterValueRows()
    for seconds in (1, 2):
        await writer.submit([(op, [mrow(T0 + timedelta(seconds=seconds), 1.0)])])
    async with db.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", 0x6576666C)
        assert await Maintenance(db).fold_once(now=T0 + timedelta(minutes=2)) == 0
    assert await db.fetchval("SELECT count(*) FROM meter_rollup_folds") == 0
    assert await Maintenance(db).fold_once(now=T0 + timedelta(minutes=2)) == 1


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
    [rollup] = await figures(db)
    assert (rollup[0], rollup[5], rollup[4]) == (series[0]["id"], 2, 5.0)


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


async def test_a_refused_batch_leaves_no_rollup(writer: Writer, db: Database) -> None:
    """A batch PostgreSQL refuses (another write of its submission breaks a constraint) leaves
    neither its meter rows nor their rollups; the next batch adds its own."""
    op = MeterValueRows()
    bad = Statement("INSERT INTO id_tags (id_tag) VALUES ($1)")  # CHECK: 1..20 characters
    with pytest.raises(WriteRejected):
        await writer.submit([(op, [mrow(T0, 5.0)]), (bad, ("x" * 30,))])
    await writer.submit([(op, [mrow(T0 + timedelta(seconds=1), 7.0)])])
    [r] = await db.fetch("SELECT count, sum_value FROM meter_rollup_1m")
    assert (r["count"], r["sum_value"]) == (1, 7.0)
    assert await db.fetchval("SELECT count(*) FROM meter_values") == 1


async def test_the_maintenance_task_folds_on_its_own(writer: Writer, db: Database) -> None:
    """Started, the maintenance task folds every fold_interval seconds (and stops cleanly)."""
    op = MeterValueRows()
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    for seconds in (1, 2):
        await writer.submit([(op, [mrow(minute + timedelta(seconds=seconds), 1.0)])])
    maintenance = Maintenance(db, fold_interval=0.05)
    maintenance.start()
    try:

        async def folded() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM meter_rollup_1m") == 1)

        await until(folded)
    finally:
        await maintenance.stop()
    assert await db.fetchval("SELECT count FROM meter_rollup_1m") == 2


async def test_the_meter_op_reports_the_rows_each_message_stored(
    writer: Writer, db: Database
) -> None:
    """The op's result per message: the positions of its rows it stored. A key repeated in a
    batch is new in the first message only; a resend of committed rows stores nothing; a
    resend with one more value stores (and reports) that one."""
    op = MeterValueRows()
    a, b, c = (mrow(T0 + timedelta(seconds=s), float(s)) for s in (1, 2, 3))
    first, again = await asyncio.gather(
        writer.submit([(op, [a, b])], key="CP-1"), writer.submit([(op, [b, a])], key="CP-1")
    )
    assert [list(first[0]), list(again[0])] == [[0, 1], []]
    [resent] = await writer.submit([(op, [a, b])])
    [grown] = await writer.submit([(op, [a, c, b])])
    assert list(resent) == [] and list(grown) == [1]
    assert await db.fetchval("SELECT count(*) FROM meter_values") == 3


async def test_series_committed_through_emit_are_remembered(writer: Writer, db: Database) -> None:
    """Meter rows written inside an Emission (as every handler writes them) leave their series
    numbers with the meter op once the batch commits: EMIT passes the commit on to the ops it
    ran, so the next batch of the same series asks ``meter_series`` nothing."""
    op = MeterValueRows()
    emit = Emit()
    key = "CP-1"
    await writer.submit([emit(Emission([op([mrow(T0, 1.0)])]))], key=key)
    conn = writer._committers[writer.committer_of(key)].conn
    assert conn is not None
    with logged_queries(conn) as queries:
        await writer.submit([emit(Emission([op([mrow(T0 + timedelta(seconds=1), 2.0)])]))], key=key)
    assert queries, "the query logger saw the batch"
    assert not [q for q in queries if "meter_series" in q]
    assert await db.fetchval("SELECT count(*) FROM meter_series") == 1
    assert await db.fetchval("SELECT sum(count) FROM meter_rollup_1m") == 2


async def test_series_numbered_on_one_committer_are_known_to_the_others(
    database_url: str, writer: Writer, db: Database
) -> None:
    """A charger's batches take whichever committer is free: its series numbered in a batch on
    one committer are remembered for the writer, so its next batch on another committer asks
    ``meter_series`` nothing (one cache per connection would learn each series once per
    committer, in memory and round trips)."""
    op = MeterValueRows()
    await writer.submit([op([mrow(T0, 1.0)])], key="CP-1")
    first = writer.committer_of("CP-1")
    async with locked(database_url, "id_tags") as release:
        # Another charger's batch keeps that committer busy, so CP-1's next takes another.
        held = asyncio.ensure_future(
            writer.submit([(Statement("INSERT INTO id_tags (id_tag) VALUES ($1)"), ("T-1",))])
        )
        await until(lambda: bool(writer._committers[first].current))
        other = writer.committer_of("CP-1")
        assert other != first
        conn = writer._committers[other].conn
        assert conn is not None
        with logged_queries(conn) as queries:
            await writer.submit([op([mrow(T0 + timedelta(seconds=1), 2.0)])], key="CP-1")
        await release()
        await held
    assert queries, "the query logger saw the batch"
    assert not [q for q in queries if "meter_series" in q]
    assert await db.fetchval("SELECT sum(count) FROM meter_rollup_1m") == 2


async def test_a_resend_in_a_batch_runs_it_again_with_a_savepoint_and_refuses_nothing(
    writer: Writer, db: Database
) -> None:
    """Batches COPY their meter rows without a savepoint; a batch holding a resend of
    committed values (with another charger's new ones, and other writes) is rolled back and
    run again once with the savepoint: everything new commits, once, nothing is refused or
    counted as a retry, and the next batch goes without the savepoint again."""
    op = MeterValueRows()
    old = mrow(T0, 1.0)
    await writer.submit([(op, [old])], key="CP-1")
    other = ("CP-2", *mrow(T0, 2.0)[1:])
    log = Statement(
        "INSERT INTO data_transfers (charger_id, vendor_id, status, received_at)"
        " VALUES ($1, 'acme', 'Accepted', now())"
    )
    conn = writer._committers[writer.committer_of(None)].conn
    assert conn is not None
    with logged_queries(conn) as queries:
        resent, new = await asyncio.gather(
            writer.submit([(op, [old, mrow(T0 + timedelta(seconds=1), 3.0)]), (log, ("CP-1",))]),
            writer.submit([(op, [other])]),
        )
        assert [list(resent[0]), list(new[0])] == [[1], [0]]
        assert any(q.startswith("SAVEPOINT") for q in queries)
        queries.clear()
        await writer.submit([(op, [mrow(T0 + timedelta(seconds=2), 4.0)])])
        assert not [q for q in queries if q.startswith("SAVEPOINT")]
    assert await db.fetchval("SELECT count(*) FROM meter_values") == 4
    assert await db.fetchval("SELECT count(*) FROM data_transfers") == 1
    assert await db.fetchval("SELECT sum(count) FROM meter_rollup_1m") == 4
    assert writer.stats.retries == 0 and writer.stats.rejected == 0


async def test_a_small_batch_of_known_series_goes_with_the_commit_as_the_copy_would(
    writer: Writer, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its series are numbered, a small batch's meter rows and rollups are sent as
    literal INSERTs with its BEGIN and COMMIT, the batch's one round trip; what is stored is
    what the COPY stores, value for value (NaN, infinities, -0.0, a raw value with quotes and
    backslashes, NULLs)."""
    op = MeterValueRows()
    values = [float("nan"), float("inf"), float("-inf"), -0.0, 1e-300, 123.456789]

    def message(minute: int) -> list[tuple[object, ...]]:
        ts = T0 + timedelta(minutes=minute, microseconds=123457)
        rows = [
            (*mrow(ts + timedelta(seconds=i), v, f"M{i}")[:10], v, None)
            for i, v in enumerate(values)
        ]
        raw = mrow(ts, 0.0, "Raw")
        rows.append((*raw[:5], "L1", *raw[6:9], None, None, "it's \\ a 'raw' value"))
        return rows

    with monkeypatch.context() as m:  # the COPY way, as a large batch goes
        m.setattr(meter_values_op, "_TAIL_ROWS", 0)
        await writer.submit([(op, message(0))], key="CP-1")  # numbers the series
    conn = writer._committers[writer.committer_of("CP-1")].conn
    assert conn is not None
    with logged_queries(conn) as queries:
        await writer.submit([(op, message(1))], key="CP-1")
    assert len(queries) == 1 and queries[0].startswith("BEGIN ISOLATION LEVEL READ COMMITTED; ")
    assert "; INSERT INTO meter_values" in queries[0] and queries[0].endswith("; COMMIT")
    columns = "measurand, phase, location, context, format, unit, value, raw_value"
    by_minute = [
        await db.fetch(
            f"SELECT ts - $1::timestamptz AS at, {columns} FROM meter_values"
            " WHERE ts >= $1 AND ts < $1 + interval '1 minute' ORDER BY ts, measurand",
            T0 + timedelta(minutes=m),
        )
        for m in (0, 1)
    ]
    assert len(by_minute[0]) == len(values) + 1
    assert [repr(tuple(r)) for r in by_minute[0]] == [repr(tuple(r)) for r in by_minute[1]]
    rollups = [
        await db.fetch(
            "SELECT series_id, min_value, max_value, sum_value, count, first_at - minute,"
            " first_value, last_at - minute, last_value FROM meter_rollup_1m"
            " WHERE minute = $1 ORDER BY series_id",
            T0 + timedelta(minutes=m),
        )
        for m in (0, 1)
    ]
    assert rollups[0] and [repr(tuple(r)) for r in rollups[0]] == [
        repr(tuple(r)) for r in rollups[1]
    ]


async def test_a_small_batch_of_new_series_numbers_them_then_goes_with_the_commit(
    writer: Writer, db: Database
) -> None:
    """A small batch whose series are new (a charger's first session, or the first message
    after a restart) numbers them in one query, and its rows and rollups still ride in the
    COMMIT's round trip (three round trips: BEGIN, the numbering, the rest; not two COPYs
    besides), with the rollups under the numbers just drawn."""
    op = MeterValueRows()
    await writer.submit([(op, [mrow(T0, 1.0, "Warm")])], key="CP-1")  # the connection's reads
    conn = writer._committers[writer.committer_of("CP-1")].conn
    assert conn is not None
    rows = [mrow(T0 + timedelta(seconds=i), float(i), f"New{i}") for i in range(4)]
    with logged_queries(conn) as queries:
        await writer.submit([(op, rows)], key="CP-1")
    assert len(queries) == 3, queries
    assert queries[1].lstrip().startswith("INSERT INTO meter_series")
    assert queries[2].startswith("INSERT INTO meter_values") and queries[2].endswith("COMMIT")
    stored = await db.fetch(
        "SELECT s.measurand, r.sum_value, r.count FROM meter_rollup_1m r"
        " JOIN meter_series s ON s.id = r.series_id WHERE s.measurand LIKE 'New%'"
        " ORDER BY s.measurand"
    )
    assert [tuple(r) for r in stored] == [(f"New{i}", float(i), 1) for i in range(4)]
    assert await db.fetchval("SELECT count(*) FROM meter_values WHERE measurand LIKE 'New%'") == 4


async def test_a_text_postgresql_refuses_in_a_deferred_batch_refuses_only_its_message(
    writer: Writer, db: Database
) -> None:
    """A raw value with a NUL (which no PostgreSQL text holds) in a batch sent with its
    COMMIT: the round trip fails before COMMIT, and only that message is refused; the other
    of its batch commits."""
    op = MeterValueRows()
    await writer.submit([(op, [mrow(T0, 1.0)])], key="CP-1")  # the series numbered
    bad = (*mrow(T0 + timedelta(seconds=1), 2.0)[:11], "a\x00b")
    outcomes = await asyncio.gather(
        writer.submit([(op, [bad])], key="CP-1"),
        writer.submit([(op, [mrow(T0 + timedelta(seconds=2), 3.0)])], key="CP-1"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], WriteRejected)
    assert not isinstance(outcomes[1], BaseException)
    assert await db.fetchval("SELECT count(*) FROM meter_values") == 2


async def test_a_resend_beside_a_new_series_after_a_restart_leaves_no_stale_number(
    writer: Writer, db: Database
) -> None:
    """Review of perf23c: after a restart (an op that knows no series), a small batch holds a
    resent reading (stored before) and a reading of a series never seen. Its first run numbers
    the new series, then its deferred INSERT meets the stored key, and it is rolled back and
    run again the careful way: the number drawn in the rolled-back run is never used, every
    rollup names a series that exists, and the next batch of that series merges under it."""
    old = mrow(T0, 1.0)
    await writer.submit([(MeterValueRows(), [old])], key="CP-1")
    op = MeterValueRows()  # a restarted process: no series known
    fresh = mrow(T0 + timedelta(seconds=1), 5.0, "Voltage")
    [stored] = await writer.submit([(op, [old, fresh])], key="CP-1")
    assert list(stored) == [1]
    await writer.submit([(op, [mrow(T0 + timedelta(seconds=2), 7.0, "Voltage")])], key="CP-1")
    orphans = await db.fetchval(
        "SELECT count(*) FROM meter_rollup_1m r"
        " WHERE NOT EXISTS (SELECT 1 FROM meter_series s WHERE s.id = r.series_id)"
    )
    assert orphans == 0
    by_measurand = await db.fetch(
        "SELECT s.measurand, sum(r.count) AS n, sum(r.sum_value) AS total"
        " FROM meter_rollup_1m r JOIN meter_series s ON s.id = r.series_id GROUP BY 1 ORDER BY 1"
    )
    assert [tuple(r) for r in by_measurand] == [
        ("Power.Active.Import", 1, 1.0),
        ("Voltage", 2, 12.0),
    ]
    assert writer.stats.rejected == 0
