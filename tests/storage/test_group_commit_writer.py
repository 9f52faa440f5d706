"""The group-commit writer: ack after commit, batching, isolation of refused rows,
back-pressure, and PostgreSQL going away and coming back (nothing acked while down, everything
written exactly once after)."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from evgate.storage.db import Database
from evgate.storage.embedded import EmbeddedPostgres
from evgate.storage.writer import (
    CopyRows,
    Statement,
    WriteOp,
    Writer,
    WriteRejected,
    is_transient,
)

LOG = CopyRows("data_transfers", ("charger_id", "vendor_id", "status", "received_at"))
BAD = Statement("INSERT INTO id_tags (id_tag) VALUES ($1)")  # CHECK: 1..20 characters


def row(i: int) -> tuple[object, ...]:
    import datetime as dt

    return (f"CP-{i}", "acme", "Accepted", dt.datetime(2024, 1, 1, tzinfo=dt.UTC))


async def count(db: Database) -> int:
    return int(await db.fetchval("SELECT count(*) FROM data_transfers"))


async def test_submit_returns_after_commit_and_batches_concurrent_submissions(
    writer: Writer, db: Database
) -> None:
    """100 concurrent submissions commit in a few batches; each row is there on return."""
    await asyncio.gather(*(writer.submit([(LOG, [row(i)])]) for i in range(100)))
    assert await count(db) == 100
    assert writer.stats.batches < 20 and writer.stats.rows == 100


async def test_a_refused_submission_fails_alone(writer: Writer, db: Database) -> None:
    """A row PostgreSQL refuses fails its own submit; the rest of its batch commits."""
    results = await asyncio.gather(
        writer.submit([(LOG, [row(1)])]),
        writer.submit([(BAD, ("x" * 30,))]),
        writer.submit([(LOG, [row(2)])]),
        return_exceptions=True,
    )
    assert isinstance(results[1], WriteRejected)
    assert results[0] == [None] and results[2] == [None]
    assert await count(db) == 2


async def test_submit_waits_when_the_queue_is_full(database_url: str) -> None:
    """Past queue_rows waiting rows, submit blocks until the writer catches up."""
    w = Writer(database_url, queue_rows=10, batch_rows=10, flush_interval=0.001)
    await w.start()
    blocker = await asyncpg.connect(database_url)
    try:
        # Hold the writer's first batch inside its COPY, so its rows stay pending.
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("LOCK TABLE data_transfers IN ACCESS EXCLUSIVE MODE")
        first = asyncio.ensure_future(w.submit([(LOG, [row(i) for i in range(10)])]))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(w.submit([(LOG, [row(99)])]))
        await asyncio.sleep(0.1)
        assert w.queue_depth == 10 and not first.done() and not second.done()
        await lock.rollback()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert w.queue_depth == 0
    finally:
        await blocker.close()
        await w.stop()


def test_transient_errors_are_told_from_refusals() -> None:
    """Connection loss and admin shutdown are transient; a check violation is not."""
    assert is_transient(ConnectionResetError())
    assert is_transient(asyncpg.AdminShutdownError())
    assert not is_transient(asyncpg.CheckViolationError())
    assert not is_transient(ValueError())


async def test_database_down_nothing_acked_then_everything_written_once(
    private_pg: tuple[EmbeddedPostgres, str],
) -> None:
    """PostgreSQL killed: submissions wait (no ack); back: each written exactly once."""
    pg, database_url = private_pg
    w = Writer(database_url, flush_interval=0.002, retry_max_delay=0.2, stop_timeout=5)
    await w.start()
    try:
        await w.submit([(LOG, [row(0)])])
        await asyncio.to_thread(pg.kill)
        pending = [asyncio.ensure_future(w.submit([(LOG, [row(i)])])) for i in range(1, 51)]
        await asyncio.sleep(1.0)
        assert not any(p.done() for p in pending), "acknowledged while the database was down"
        await asyncio.to_thread(pg.restart_same_port)
        await asyncio.wait_for(asyncio.gather(*pending), 30)
        assert w.stats.retries > 0
    finally:
        await w.stop()
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT charger_id, count(*) FROM data_transfers GROUP BY 1")
    finally:
        await conn.close()
    assert len(rows) == 51 and all(r[1] == 1 for r in rows)


async def test_stop_fails_what_could_not_be_written(
    private_pg: tuple[EmbeddedPostgres, str],
) -> None:
    """Stopping while the database is down fails pending submissions (never acks them)."""
    pg, database_url = private_pg
    w = Writer(database_url, flush_interval=0.002, retry_max_delay=0.1, stop_timeout=0.5)
    await w.start()
    await asyncio.to_thread(pg.kill)
    try:
        pending = asyncio.ensure_future(w.submit([(LOG, [row(1)])]))
        await asyncio.sleep(0.2)
        await w.stop()
        with pytest.raises(Exception, match="stopping"):
            await pending
    finally:
        await asyncio.to_thread(pg.restart_same_port)


def keys_on_two_lanes() -> tuple[str, str]:
    """Two charger ids that the default two lanes give to different lanes (by their hash)."""
    first = "CP-0"
    other = next(f"CP-{i}" for i in range(1, 100) if hash(f"CP-{i}") % 2 != hash(first) % 2)
    return first, other


async def test_one_keys_submissions_commit_in_submission_order(
    writer: Writer, db: Database
) -> None:
    """Concurrent submissions of two chargers: each charger's rows land in the order its
    submissions were made, whichever lane they took and however they were batched."""
    a, b = keys_on_two_lanes()

    def mine(key: str, i: int) -> tuple[object, ...]:
        return (key, f"{i:03}", *row(i)[2:])

    await asyncio.gather(
        *(writer.submit([(LOG, [mine(key, i)])], key=key) for i in range(60) for key in (a, b))
    )
    for key in (a, b):
        stored = await db.fetch(
            "SELECT vendor_id FROM data_transfers WHERE charger_id = $1 ORDER BY id", key
        )
        assert [r[0] for r in stored] == [f"{i:03}" for i in range(60)]


async def test_a_blocked_lane_does_not_hold_up_another(database_url: str, db: Database) -> None:
    """Two lanes commit side by side: while one charger's batch waits on a lock, another
    charger's writes (on the other lane) commit; with one lane they would queue behind it."""
    a, b = keys_on_two_lanes()
    w = Writer(database_url, lanes=2, flush_interval=0.001)
    await w.start()
    blocker = await asyncpg.connect(database_url)
    try:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("LOCK TABLE id_tags IN ACCESS EXCLUSIVE MODE")
        held = asyncio.ensure_future(
            w.submit([(Statement("INSERT INTO id_tags (id_tag) VALUES ($1)"), ("T-1",))], key=a)
        )
        await asyncio.sleep(0.1)
        await asyncio.wait_for(w.submit([(LOG, [row(7)])], key=b), 5)
        assert await count(db) == 1 and not held.done()
        await lock.rollback()
        assert await asyncio.wait_for(held, 5) == [None]
    finally:
        await blocker.close()
        await w.stop()


def test_a_writer_needs_a_lane(database_url: str) -> None:
    """Zero lanes is a configuration error, told at construction."""
    with pytest.raises(ValueError, match="at least one lane"):
        Writer(database_url, lanes=0)


class Swallowing(WriteOp[int, None]):
    """A faulty op: it catches PostgreSQL's error without rolling back to a savepoint, which
    leaves the batch's transaction aborted."""

    async def write(self, conn: asyncpg.Connection, items: list[int]) -> list[None]:
        with contextlib.suppress(asyncpg.DivisionByZeroError):
            await conn.execute("SELECT 1/0")
        return [None] * len(items)


async def test_a_batch_whose_transaction_aborted_is_never_acknowledged(
    writer: Writer, db: Database
) -> None:
    """PostgreSQL answers the COMMIT of an aborted transaction with ROLLBACK, not an error: the
    writer checks, so the rows that were rolled back are never acknowledged as written."""
    with pytest.raises(WriteRejected, match="rolled back"):
        await writer.submit([(LOG, [row(1)]), (Swallowing(), 1)])
    await writer.submit([(LOG, [row(2)])])
    assert await count(db) == 1
