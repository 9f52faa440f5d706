"""The group-commit writer: ack after commit, batching, isolation of refused rows,
back-pressure, and PostgreSQL going away and coming back (nothing acked while down, everything
written exactly once after)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from evgate.storage.db import Database
from evgate.storage.embedded import EmbeddedPostgres
from evgate.storage.errors import is_unavailable
from evgate.storage.ops import outbox, sequences
from evgate.storage.ops.base import (
    CopyRows,
    Statement,
    Write,
    WriteOp,
    before_commit,
    text_literal,
)
from evgate.storage.ops.connectors import CONNECTOR_STATUS as STATUS
from evgate.storage.ops.connectors import ConnectorStatus
from evgate.storage.ops.meter_values import MeterValueRows
from evgate.storage.writer import Writer, WriteRejected
from support import (
    asyncpg_copy_waiter_unretrieved,
    locked,
    logged_queries,
    quiet_for,
    until,
    want_events,
)

LOG = CopyRows("data_transfers", ("charger_id", "vendor_id", "status", "received_at"))
BAD = Statement("INSERT INTO id_tags (id_tag) VALUES ($1)")  # CHECK: 1..20 characters


# The events this file's outbox rows name: the writer keeps only the wanted ones.
_EVENTS = ("event", "first", "second\\'", "third", "e", "a", "s", "z")


@pytest.fixture
async def events_wanted(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await want_events(conn, *_EVENTS)
    finally:
        await conn.close()


def row(i: int) -> tuple[object, ...]:
    return (f"CP-{i}", "acme", "Accepted", datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))


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
    try:
        # Hold the writer's first batch inside its COPY, so its rows stay pending.
        async with locked(database_url, "data_transfers") as release:
            first = asyncio.ensure_future(w.submit([(LOG, [row(i) for i in range(10)])]))
            await until(lambda: w.queue_depth == 10)
            second = asyncio.ensure_future(w.submit([(LOG, [row(99)])]))
            await quiet_for(0.1)  # the second submission stays blocked
            assert w.queue_depth == 10 and not first.done() and not second.done()
            await release()
            await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert w.queue_depth == 0
    finally:
        await w.stop()


def test_transient_errors_are_told_from_refusals() -> None:
    """Connection loss and admin shutdown are transient; a check violation is not."""
    assert is_unavailable(ConnectionResetError())
    assert is_unavailable(asyncpg.AdminShutdownError())
    assert not is_unavailable(asyncpg.CheckViolationError())
    assert not is_unavailable(ValueError())


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
        await quiet_for(1.0)  # an outage: nothing is acknowledged
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
        await quiet_for(0.2)  # the writer retries against the dead server, acknowledging nothing
        await w.stop()
        with pytest.raises(Exception, match="stopping"):
            await pending
    finally:
        await asyncio.to_thread(pg.restart_same_port)


async def test_one_keys_submissions_commit_in_submission_order(
    writer: Writer, db: Database
) -> None:
    """Concurrent submissions of two chargers: each charger's rows land in the order its
    submissions were made, however they were batched (one committer's queue here; a charger
    kept on its committer while another is free: the test below)."""

    def mine(key: str, i: int) -> tuple[object, ...]:
        return (key, f"{i:03}", *row(i)[2:])

    await asyncio.gather(
        *(
            writer.submit([(LOG, [mine(key, i)])], key=key)
            for i in range(60)
            for key in ("CP-a", "CP-b")
        )
    )
    for key in ("CP-a", "CP-b"):
        stored = await db.fetch(
            "SELECT vendor_id FROM data_transfers WHERE charger_id = $1 ORDER BY id", key
        )
        assert [r[0] for r in stored] == [f"{i:03}" for i in range(60)]


@contextlib.asynccontextmanager
async def a_batch_held(
    database_url: str,
) -> AsyncIterator[tuple[Writer, asyncio.Future[list[Any]], Callable[[], Awaitable[None]]]]:
    """A writer of two committers, one of them writing charger CP-a's batch, which waits on a
    lock of ``id_tags`` until ``release()``; yields the writer, that submission and release."""
    w = Writer(database_url, committers=2, flush_interval=0.001)
    await w.start()
    try:
        async with locked(database_url, "id_tags") as release:
            insert = Statement("INSERT INTO id_tags (id_tag) VALUES ($1)")
            held = asyncio.ensure_future(w.submit([(insert, ("T-1",))], key="CP-a"))
            await until(lambda: any(committer.current for committer in w._committers))
            yield w, held, release
    finally:
        await w.stop()


async def test_a_blocked_committer_does_not_hold_up_another(
    database_url: str, db: Database
) -> None:
    """Two committers commit side by side: while one charger's batch waits on a lock, another
    charger's writes go to the other committer and commit; with one committer they would
    queue behind it."""
    async with a_batch_held(database_url) as (w, held, release):
        await asyncio.wait_for(w.submit([(LOG, [row(7)])], key="CP-b"), 5)
        assert await count(db) == 1 and not held.done()
        await release()
        assert await asyncio.wait_for(held, 5) == [None]


async def test_a_keys_next_submission_waits_for_its_committer(
    database_url: str, db: Database
) -> None:
    """While a charger's batch waits on a lock, its next submission does not take the idle
    committer (it would commit first, out of the charger's order): it queues behind the
    batch, and commits after it."""
    async with a_batch_held(database_url) as (w, held, release):
        after = asyncio.ensure_future(w.submit([(LOG, [row(7)])], key="CP-a"))
        await quiet_for(0.2)
        assert not after.done() and await count(db) == 0
        await release()
        assert await asyncio.wait_for(asyncio.gather(held, after), 5) == [[None], [None]]
    tag_xid, log_xid = await db.fetchrow(
        "SELECT (SELECT xmin::text::bigint FROM id_tags WHERE id_tag = 'T-1'),"
        " (SELECT xmin::text::bigint FROM data_transfers)"
    )
    assert tag_xid < log_xid


async def test_submissions_of_many_chargers_share_one_batch(database_url: str) -> None:
    """Submissions of 40 chargers made during one linger are one batch, not one per
    committer they would spread over: each batch costs PostgreSQL its COMMIT and WAL flush."""
    w = Writer(database_url, committers=4, flush_interval=0.05)
    await w.start()
    try:
        await asyncio.gather(*(w.submit([(LOG, [row(i)])], key=f"CP-{i}") for i in range(40)))
        assert w.stats.batches == 1 and w.stats.rows == 40
        assert not w._placed  # every key free to take any committer again
    finally:
        await w.stop()


def test_a_writer_needs_a_committer(database_url: str) -> None:
    """Zero committers is a configuration error, told at construction."""
    with pytest.raises(ValueError, match="at least one committer"):
        Writer(database_url, committers=0)


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
    """PostgreSQL answers the COMMIT of an aborted transaction with ROLLBACK, not an error (and
    refuses the batch's ``writer_commits`` row sent with it): the writer checks, so the rows
    that were rolled back are never acknowledged as written."""
    with pytest.raises(WriteRejected, match=r"rolled back|transaction is aborted"):
        await writer.submit([(LOG, [row(1)]), (Swallowing(), 1)])
    await writer.submit([(LOG, [row(2)])])
    assert await count(db) == 1


async def test_a_refused_batch_start_leaves_the_committer_working(
    writer: Writer, db: Database
) -> None:
    """The batch's first statement is refused (here by a trigger, once): that submission is
    rejected, the connection is rolled back, and the next batches commit (none joins a
    transaction left open)."""
    # A sequence counts the calls: unlike a table, it is not rolled back with the batch.
    await db.execute(
        """CREATE SEQUENCE refuse_once;
        CREATE FUNCTION refuse_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('refuse_once') = 1 THEN
                RAISE EXCEPTION 'refused once';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_once BEFORE INSERT ON writer_commits
            FOR EACH ROW EXECUTE FUNCTION refuse_once();"""
    )
    try:
        with pytest.raises(WriteRejected, match="refused once"):
            await writer.submit([(LOG, [row(1)])])
        for i in (2, 3):
            assert await writer.submit([(LOG, [row(i)])]) == [None]
        assert await count(db) == 2
    finally:
        await db.execute("DROP FUNCTION refuse_once CASCADE; DROP SEQUENCE refuse_once")


class NestedTransaction(WriteOp[int, None]):
    """A faulty op: it opens a transaction of its own inside the batch's."""

    async def write(self, conn: asyncpg.Connection, items: list[int]) -> list[None]:
        async with conn.transaction():
            pass
        return [None] * len(items)


async def test_an_op_misusing_the_connection_is_rejected_not_retried(writer: Writer) -> None:
    """An interface error on a connection still open is the op's fault, not an outage: the
    submission is rejected at once (retrying would stall the committer) and the committer goes
    on."""
    async with asyncio.timeout(5):
        with pytest.raises(WriteRejected):
            await writer.submit([(NestedTransaction(), 1)])
        assert await writer.submit([(LOG, [row(1)])]) == [None]
    assert writer.stats.retries == 0


async def test_a_connection_lost_during_commit_writes_the_batch_once(
    writer: Writer, db: Database
) -> None:
    """The writer's session is terminated while its COMMIT runs (a deferred trigger holds it):
    the outcome is unknown, so the writer waits for that session to end, looks the batch's id
    up, and writes it again only if it was not committed: one row, acknowledged once."""
    await db.execute(
        """CREATE SEQUENCE slow_once;
        CREATE FUNCTION slow_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('slow_once') = 1 THEN PERFORM pg_sleep(1); END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER slow_once AFTER INSERT ON data_transfers
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_once();"""
    )
    try:
        submitted = asyncio.ensure_future(writer.submit([(LOG, [row(1)])]))
        [committer] = await until(
            lambda: [committer for committer in writer._committers if committer.current]
        )
        assert committer.conn is not None
        pid = committer.conn.get_server_pid()

        async def committing() -> bool:  # inside the trigger's pg_sleep, at COMMIT
            query = "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'"
            return (await db.fetchval(query, pid) or "").strip().upper().endswith("COMMIT")

        await until(committing)
        await db.execute("SELECT pg_terminate_backend($1)", committer.conn.get_server_pid())
        assert await asyncio.wait_for(submitted, 10) == [None]
        assert await count(db) == 1 and writer.stats.retries >= 1
    finally:
        await db.execute("DROP FUNCTION slow_once CASCADE; DROP SEQUENCE slow_once")


async def test_a_commit_whose_answer_was_lost_is_acknowledged_once(
    writer: Writer, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COMMIT succeeds on the server but its answer never arrives: the batch's id is found,
    and the submission is acknowledged without writing it again."""
    real = asyncpg.Connection.execute
    armed = [True]

    async def execute(self: asyncpg.Connection, query: str, *args: object, **kw: object) -> str:
        result: str = await real(self, query, *args, **kw)
        if query.endswith("COMMIT") and armed and armed.pop():
            self.terminate()
            raise ConnectionResetError("lost after COMMIT")
        return result

    monkeypatch.setattr(asyncpg.Connection, "execute", execute)
    assert await asyncio.wait_for(writer.submit([(LOG, [row(1)])]), 10) == [None]
    assert await count(db) == 1 and writer.stats.retries == 1


class Failing(WriteOp[int, None]):
    """An op that fails in Python, leaving the batch's transaction open and healthy."""

    async def write(self, conn: asyncpg.Connection, items: list[int]) -> list[None]:
        raise ValueError("refused by the op")


async def test_a_failed_rollback_never_lets_a_refused_batch_commit(
    writer: Writer, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ROLLBACK after a refused batch fails: the connection is dropped, so the per-
    submission retries never join (and commit) the refused batch's open transaction."""
    real = asyncpg.Connection.execute
    armed = [True]

    async def execute(self: asyncpg.Connection, query: str, *args: object, **kw: object) -> str:
        if query == "ROLLBACK" and armed and armed.pop():
            raise asyncpg.InterfaceError("ROLLBACK not sent")
        result: str = await real(self, query, *args, **kw)
        return result

    monkeypatch.setattr(asyncpg.Connection, "execute", execute)
    results = await asyncio.gather(
        writer.submit([(LOG, [row(1)])]),
        writer.submit([(LOG, [row(2)]), (Failing(), 1)]),
        return_exceptions=True,
    )
    assert results[0] == [None] and isinstance(results[1], WriteRejected)
    stored = await db.fetch("SELECT charger_id, count(*) FROM data_transfers GROUP BY 1")
    assert [tuple(r) for r in stored] == [("CP-1", 1)]


async def test_an_unknown_commit_ends_its_own_session_and_no_other(
    writer: Writer, database_url: str
) -> None:
    """Before looking an unknown COMMIT up, the writer ends the session that sent it, found
    by its server process and start: a session that only shares the pid (PostgreSQL was
    restarted meanwhile) is left alone."""
    import uuid
    from datetime import UTC, datetime

    from evgate.storage.writer import _CommitUnknown

    committer = writer._committers[0]
    other = await asyncpg.connect(database_url)
    try:
        pid = other.get_server_pid()
        started = await other.fetchval(
            "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        cause = ConnectionResetError("lost")
        reused = (pid, datetime(2000, 1, 1, tzinfo=UTC))
        assert not await committer._committed(_CommitUnknown(uuid.uuid4(), [], reused, cause))
        assert await other.fetchval("SELECT 1") == 1  # still there
        assert not await committer._committed(
            _CommitUnknown(uuid.uuid4(), [], (pid, started), cause)
        )
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await other.fetchval("SELECT 1")
    finally:
        other.terminate()


async def test_a_connection_left_in_a_transaction_is_never_used_again(
    writer: Writer, db: Database
) -> None:
    """The committer's connection is found inside a transaction (a failure left it there): the
    next batch goes on a new connection, so it never commits what that transaction held."""
    committer = writer._committers[writer.committer_of(None)]
    assert committer.conn is not None
    await committer.conn.execute(
        "BEGIN; INSERT INTO data_transfers (charger_id, vendor_id, status, received_at)"
        " VALUES ('CP-stale', 'acme', 'Accepted', now())"
    )
    stale = committer.conn
    assert await writer.submit([(LOG, [row(1)])]) == [None]
    assert committer.conn is not stale and stale.is_closed()
    stored = await db.fetch("SELECT charger_id FROM data_transfers")
    assert [r[0] for r in stored] == ["CP-1"]


class Forgetful(WriteOp[int, None]):
    """An op whose bookkeeping after COMMIT fails."""

    async def write(self, conn: asyncpg.Connection, items: list[int]) -> list[None]:
        return [None] * len(items)

    def committed(self, conn: asyncpg.Connection) -> None:
        raise KeyError("lost track")


async def test_a_committed_batch_is_acknowledged_whatever_an_op_says_after(
    writer: Writer, db: Database
) -> None:
    """An op failing in ``committed`` (after COMMIT) is logged: the durable batch is
    acknowledged once, not re-run per submission."""
    assert await writer.submit([(LOG, [row(1)]), (Forgetful(), 1)]) == [None, None]
    assert await count(db) == 1 and writer.stats.retries == 0 and writer.stats.rejected == 0


class DiesMidCopy(WriteOp[int, None]):
    """An op whose first COPY loses its server session half-way (terminated from another
    session, as ``pg_ctl stop`` ends every session): asyncpg then raises a RuntimeError from
    the closed transport, or ``InternalClientError`` at the next statement, not a
    connection error. Later attempts write their rows."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.attempts = 0

    async def write(self, conn: asyncpg.Connection, items: list[int]) -> list[None]:
        self.attempts += 1
        first = self.attempts == 1
        pid = conn.get_server_pid()

        async def records() -> AsyncIterator[tuple[object, ...]]:
            for i in items:
                if first:
                    killer = await asyncpg.connect(self.dsn)
                    try:
                        await killer.execute("SELECT pg_terminate_backend($1, 5000)", pid)
                    finally:
                        await killer.close()
                    await asyncio.sleep(0.2)  # the FATAL and the socket's end arrive
                yield row(i)

        await conn.copy_records_to_table("data_transfers", records=records(), columns=LOG.columns)
        return [None] * len(items)


async def test_a_connection_dying_mid_copy_is_an_outage_not_a_refusal(
    writer: Writer, db: Database, database_url: str
) -> None:
    """The server session ends in the middle of an op's COPY (PostgreSQL shutting down): the
    batch is retried like any outage and committed once, never rejected (which a charger
    would get as a CALLERROR)."""
    op = DiesMidCopy(database_url)
    with asyncpg_copy_waiter_unretrieved():
        assert await asyncio.wait_for(writer.submit([(op, 7)]), 10) == [None]
    assert op.attempts == 2 and writer.stats.retries == 1 and writer.stats.rejected == 0
    assert await count(db) == 1


class DefersBad(WriteOp[str, None]):
    """An op that defers to COMMIT an insert PostgreSQL refuses for a long id tag."""

    async def write(self, conn: asyncpg.Connection, items: list[str]) -> list[None]:
        for tag in items:
            await before_commit(conn, f"INSERT INTO id_tags (id_tag) VALUES ({text_literal(tag)})")
        return [None] * len(items)


async def test_a_statement_deferred_to_commit_that_fails_refuses_only_its_submission(
    writer: Writer, db: Database
) -> None:
    """A deferred statement runs in the batch's COMMIT round trip: when PostgreSQL refuses it,
    COMMIT never runs, nothing of the batch is committed, and the batch is re-run one
    submission at a time like any refusal; the committer goes on writing."""
    defers = DefersBad()
    results = await asyncio.gather(
        writer.submit([(LOG, [row(1)]), (defers, "x" * 30)], key="CP-1"),
        writer.submit([(LOG, [row(2)]), (defers, "ok-tag")], key="CP-1"),
        return_exceptions=True,
    )
    assert isinstance(results[0], WriteRejected) and results[1] == [None, None]
    assert [r[0] for r in await db.fetch("SELECT charger_id FROM data_transfers")] == ["CP-2"]
    assert await db.fetchval("SELECT array_agg(id_tag) FROM id_tags") == ["ok-tag"]
    assert await writer.submit([(LOG, [row(3)])], key="CP-1") == [None]
    assert await count(db) == 2


@pytest.mark.usefixtures("events_wanted")
async def test_a_batch_that_only_defers_is_one_round_trip(writer: Writer, db: Database) -> None:
    """A batch whose ops send nothing of their own (outbox rows, deferred to COMMIT) goes as
    one simple query: BEGIN, the rows, the batch's ``writer_commits`` row, COMMIT; one that
    left an event nobody wants out also takes the lock and writes its row only if the names
    it filtered by are still current. A batch whose op sends a statement still has BEGIN sent
    before that statement, in a round trip of its own; and a deferred statement PostgreSQL
    refuses in the one round trip fails its submission alone, with nothing of it committed."""
    await writer.submit([(LOG, [row(0)])], key="CP-1")  # the connection's once-only reads
    conn = writer._committers[writer.committer_of("CP-1")].conn
    assert conn is not None
    with logged_queries(conn) as queries:
        before = writer.stats.round_trips
        await writer.submit(outbox.append([("event", "CP-1", b"{}")]), key="CP-1")
        assert writer.stats.round_trips - before == 1
        assert len(queries) == 1, queries
        assert queries[0].startswith("BEGIN ISOLATION LEVEL READ COMMITTED; INSERT INTO outbox")
        assert "; INSERT INTO writer_commits (batch_id) VALUES ('" in queries[0]
        assert queries[0].endswith("'::uuid); COMMIT") and outbox.WANTED_LOCK not in queries[0]
        queries.clear()
        await writer.submit(outbox.append([("unwanted", "CP-1", b"{}")]), key="CP-1")
        assert len(queries) == 1 and "INSERT INTO outbox" not in queries[0], queries
        assert (
            f"; {outbox.WANTED_LOCK}; INSERT INTO writer_commits (batch_id) VALUES (CASE"
            in (queries[0])
        )
        queries.clear()
        before = writer.stats.round_trips
        await writer.submit([(BAD, ("ok-tag",))], key="CP-1")
        assert writer.stats.round_trips - before == 3  # BEGIN, the statement, COMMIT
        assert (
            queries[0] == "BEGIN ISOLATION LEVEL READ COMMITTED"
            and queries[-1].startswith("INSERT INTO writer_commits")
            and queries[-1].endswith("; COMMIT")
        )
        with pytest.raises(WriteRejected):
            await writer.submit([(DefersBad(), "x" * 30)], key="CP-1")
    assert await db.fetchval("SELECT count(*) FROM outbox") == 1
    assert await db.fetchval("SELECT array_agg(id_tag) FROM id_tags") == ["ok-tag"]
    assert await writer.submit([(DefersBad(), "next-tag")], key="CP-1") == [None]


@pytest.mark.usefixtures("events_wanted")
async def test_a_one_round_trip_batch_whose_answer_was_lost_is_acknowledged_once(
    writer: Writer, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN, the rows and COMMIT went in one round trip and its answer never arrives: the
    batch's id (in that same round trip) is found, and the submission is acknowledged once,
    its rows written once."""
    real = asyncpg.Connection.execute
    armed = [True]

    async def execute(self: asyncpg.Connection, query: str, *args: object, **kw: object) -> str:
        result: str = await real(self, query, *args, **kw)
        if query.startswith("BEGIN") and query.endswith("COMMIT") and armed and armed.pop():
            self.terminate()
            raise ConnectionResetError("lost after COMMIT")
        return result

    monkeypatch.setattr(asyncpg.Connection, "execute", execute)
    submitted = writer.submit(outbox.append([("event", "CP-1", b"{}")]), key="CP-1")
    assert await asyncio.wait_for(submitted, 10) == [None]
    assert await db.fetchval("SELECT count(*) FROM outbox") == 1
    assert not armed and writer.stats.retries == 1


async def test_authorization_ids_are_drawn_a_block_at_a_time(writer: Writer) -> None:
    """An Authorize's authorizationId comes from a block drawn once (as a sequence's CACHE
    would): every id differs, and the batches after the first send no query of their own (one
    round trip: BEGIN, COMMIT)."""
    first = await writer.submit([sequences.authorization_id()], key="CP-1")
    before = writer.stats.round_trips
    later = [(await writer.submit([sequences.authorization_id()], key="CP-1"))[0] for _ in range(5)]
    assert writer.stats.round_trips - before == 5
    together = await writer.submit([sequences.authorization_id()] * 3, key="CP-1")
    ids = [*first, *later, *together]
    assert len(set(ids)) == len(ids) == 9 and ids == sorted(ids)


@pytest.mark.usefixtures("events_wanted")
async def test_outbox_rows_go_with_the_commit_byte_for_byte(writer: Writer, db: Database) -> None:
    """A batch's few outbox rows are sent with its COMMIT, in one round trip: a status
    emission costs three (BEGIN, the upsert, the outbox rows with COMMIT); any charger id and
    payload bytes come back as given, in order."""
    charger = "CP-'\\\"ünï'--"
    payload = bytes(range(256))
    write = STATUS(
        ConnectorStatus(
            charger_id="CP-1",
            connector_id=1,
            status="Available",
            error_code="NoError",
            info=None,
            vendor_id=None,
            vendor_error_code=None,
            status_at=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
            updated_at=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        )
    )
    then = outbox.append([("first", charger, payload), ("second\\'", "", b"")])
    await writer.submit([outbox.emit([write], then)], key="CP-1")  # the statements prepared
    conn = writer._committers[writer.committer_of("CP-1")].conn
    assert conn is not None
    with logged_queries(conn) as queries:
        await writer.submit([outbox.emit([write], then)], key="CP-1")
    assert len(queries) == 3, queries
    assert queries[-1].startswith("INSERT INTO outbox") and queries[-1].endswith("COMMIT")
    stored = await db.fetch("SELECT event, charger_id, payload FROM outbox ORDER BY id")
    assert [tuple(r) for r in stored] == [
        ("first", charger, payload),
        ("second\\'", "", b""),
    ] * 2


def meter_row(minute: int, raw: str | None, value: float | None) -> tuple[object, ...]:
    at = datetime.datetime(2024, 1, 1, 0, minute, tzinfo=datetime.UTC)
    common = ("Energy.Active.Import.Register", None, "Outlet", "Sample.Periodic")
    return ("CP-1", 1, None, at, *common, "Raw", "Wh", value, raw)


@pytest.mark.usefixtures("events_wanted")
@pytest.mark.parametrize("text", ["CP-\x00", "CP-\ud800"], ids=["NUL", "lone-surrogate"])
@pytest.mark.parametrize("where", ["outbox", "meter-value"])
async def test_a_text_postgresql_cannot_hold_in_a_literal_refuses_only_its_submission(
    writer: Writer, db: Database, text: str, where: str
) -> None:
    """U+0000 or a lone surrogate in a text that rides the COMMIT as a literal (an outbox
    row's, a meter value's) fails its own submission (WriteRejected, its cause the 22021 that
    PostgreSQL answers such a parameter); the other submission of its batch commits, and the
    committer goes on (it once took the protocol error for an outage and retried for ever)."""
    meter = MeterValueRows()
    if where == "meter-value":
        # The first batch numbers the series: the next ones ride the COMMIT as literals.
        await writer.submit([meter([meter_row(0, None, 1.0)])], key="CP-1")

    def submission(good: bool) -> list[Write[Any]]:
        if where == "outbox":
            return [outbox.emit([], outbox.append([("e", "CP-2" if good else text, b"x")]))]
        return [meter([meter_row(1 + good, "ok" if good else text, None)])]

    bad, good = await asyncio.wait_for(
        asyncio.gather(
            writer.submit(submission(False), key="CP-1"),
            writer.submit(submission(True), key="CP-1"),
            return_exceptions=True,
        ),
        30,
    )
    assert isinstance(bad, WriteRejected) and "U+0000 or a lone surrogate" in str(bad)
    assert isinstance(good, list), good
    assert writer.stats.retries == 0
    if where == "outbox":
        assert await db.fetchval("SELECT array_agg(charger_id) FROM outbox") == ["CP-2"]
    else:
        assert await db.fetchval("SELECT array_agg(raw_value) FROM meter_values") == [None, "ok"]
    assert await writer.submit([(LOG, [row(3)])], key="CP-1") == [None]


@pytest.mark.usefixtures("events_wanted")
async def test_a_one_round_trip_batch_whose_session_ends_mid_commit_is_written_once(
    writer: Writer, db: Database
) -> None:
    """Review of perf23c: a batch whose ops only defer goes as ONE simple query (BEGIN, its
    ``writer_commits`` row, the outbox row, COMMIT). Its server session is terminated while
    that query runs (a deferred trigger holds it at COMMIT): the outcome is unknown, the
    batch's id (sent in that same query, in the same transaction) is looked up, the batch is
    written again only because it was not committed, and acknowledged once, its row once."""
    await db.execute(
        """CREATE SEQUENCE slow_outbox;
        CREATE FUNCTION slow_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('slow_outbox') = 1 THEN PERFORM pg_sleep(30); END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER slow_outbox AFTER INSERT ON outbox
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_outbox();"""
    )
    try:
        await writer.submit([(LOG, [row(0)])], key="CP-1")  # the connection's once-only reads
        committer = writer._committers[writer.committer_of("CP-1")]
        assert committer.conn is not None
        pid = committer.conn.get_server_pid()
        submitted = asyncio.ensure_future(
            writer.submit(outbox.append([("event", "CP-1", b"{}")]), key="CP-1")
        )

        async def in_the_one_round_trip() -> bool:  # in the trigger's pg_sleep, at COMMIT
            query = (
                "SELECT query FROM pg_stat_activity"
                " WHERE pid = $1 AND state = 'active' AND wait_event = 'PgSleep'"
            )
            text = await db.fetchval(query, pid) or ""
            return text.startswith("BEGIN ISOLATION LEVEL READ COMMITTED; ") and text.endswith(
                "COMMIT"
            )

        await until(in_the_one_round_trip)
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        assert await asyncio.wait_for(submitted, 20) == [None]
        assert await db.fetchval("SELECT count(*) FROM outbox") == 1
        assert writer.stats.retries >= 1
        assert await db.fetchval("SELECT count(*) FROM writer_commits") >= 2
    finally:
        await db.execute("DROP FUNCTION slow_outbox CASCADE; DROP SEQUENCE slow_outbox")


@pytest.mark.usefixtures("events_wanted")
async def test_a_bad_deferred_statement_in_a_one_round_trip_batch_fails_alone(
    writer: Writer, db: Database
) -> None:
    """Review of perf23c: three submissions whose ops only defer share a batch (one simple
    query with its BEGIN and COMMIT); PostgreSQL refuses one deferred statement: nothing of
    that query is committed, the batch is re-run one submission at a time, the two good ones
    are acknowledged and written once, the bad one alone is refused."""
    defers = DefersBad()
    committer = writer._committers[writer.committer_of("CP-1")]
    results = await asyncio.gather(
        writer.submit(outbox.append([("first", "CP-1", b"1")]), key="CP-1"),
        writer.submit([(defers, "x" * 30)], key="CP-1"),
        writer.submit(outbox.append([("third", "CP-1", b"3")]), key="CP-1"),
        return_exceptions=True,
    )
    assert results[0] == [None] and results[2] == [None], results
    assert isinstance(results[1], WriteRejected)
    assert writer.stats.retries == 0 and writer.stats.rejected == 1
    stored = await db.fetch("SELECT event FROM outbox ORDER BY id")
    assert [r[0] for r in stored] == ["first", "third"]
    assert await db.fetchval("SELECT count(*) FROM id_tags") == 0
    assert committer.conn is not None and not committer.conn.is_in_transaction()


async def test_authorization_ids_stay_unique_across_writers_and_restarts(
    database_url: str,
) -> None:
    """Review of perf23c: two writers (two evgate processes) and a restart of one each draw
    their own blocks of authorization ids: no id is handed out twice."""
    seen: list[int] = []
    first = Writer(database_url, committers=2, flush_interval=0.001)
    second = Writer(database_url, committers=2, flush_interval=0.001)
    await first.start()
    await second.start()
    try:
        for i in range(40):
            for w in (first, second):
                seen += await w.submit([sequences.authorization_id()], key=f"CP-{i}")
        await first.stop()
        first = Writer(database_url, committers=2, flush_interval=0.001)
        await first.start()
        for i in range(40):
            seen += await first.submit([sequences.authorization_id()] * 2, key=f"CP-{i}")
    finally:
        await first.stop()
        await second.stop()
    assert len(seen) == 160 and len(set(seen)) == 160


async def test_no_batch_statement_ever_runs_outside_the_batchs_transaction(
    database_url: str, db: Database
) -> None:
    """Review of perf23c (BEGIN sent late): over a mix of every kind of write (COPY, upsert,
    deferred outbox and meter rows, new and known series, a large meter batch, block-drawn ids,
    a resend taking the savepoint, refused submissions re-run one by one), every statement the
    committer sends is inside a transaction its own BEGIN opened (or is that BEGIN, or the
    ROLLBACK): none runs in autocommit, where it would commit part of a batch."""
    writer = Writer(database_url, committers=1, flush_interval=0.005, retry_max_delay=0.2)
    await writer.start()
    conn = writer._committers[0].conn
    assert conn is not None
    log: list[tuple[str, bool]] = []

    def logged(record: asyncpg.connection.LoggedQuery) -> None:
        log.append((record.query, record.exception is not None))

    conn.add_query_logger(logged)
    meter = MeterValueRows()
    at = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)

    def reading(i: int, measurand: str = "Voltage") -> tuple[object, ...]:
        ts = at + datetime.timedelta(seconds=i)
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
            "V",
            1.0 * i,
            None,
        )

    def status(i: int) -> Write[Any]:
        return STATUS(
            ConnectorStatus(
                charger_id="CP-1",
                connector_id=1 + i % 3,
                status="Available",
                error_code="NoError",
                info=None,
                vendor_id=None,
                vendor_error_code=None,
                status_at=at + datetime.timedelta(seconds=i),
                updated_at=at,
            )
        )

    drawn = sequences.authorization_id()
    waves: list[list[list[Write[Any]]]] = [
        [[(LOG, [row(1)])], [meter([reading(0)])]],
        [[drawn], outbox.append([("a", "CP-1", b"1")]), [meter([reading(1)])]],
        [[outbox.emit([status(1)], outbox.append([("s", "CP-1", b"2")]))], [(BAD, ("x" * 30,))]],
        [[meter([reading(i, "Current.Import") for i in range(100)])], [drawn, drawn]],
        [[meter([reading(0), reading(2)])], [(DefersBad(), "x" * 30)], [(DefersBad(), "ok")]],
        [
            [outbox.emit([drawn], outbox.append([("z", "CP-1", b"3")]))],
            [meter([reading(3, "Power")])],
        ],
    ]
    try:
        for wave in waves:
            await asyncio.gather(
                *(writer.submit(s, key="CP-1") for s in wave), return_exceptions=True
            )
    finally:
        conn.remove_query_logger(logged)
        await writer.stop()
    in_transaction = False
    outside: list[str] = []
    for query, failed in log:
        if query.startswith("BEGIN"):
            in_transaction = failed or not query.endswith("COMMIT")
        elif query == "ROLLBACK":
            in_transaction = False
        elif not in_transaction and not query.startswith(
            ("SELECT backend_start", "SELECT w.generation")
        ):
            outside.append(query)  # (the connection's once-only reads are not a batch's)
        elif query.endswith("COMMIT") and not failed:
            in_transaction = False
    assert len(log) > 20 and outside == []
    assert await db.fetchval("SELECT count(*) FROM meter_values") == 104
    assert await db.fetchval("SELECT count(*) FROM id_tags") == 1  # "ok"; the two bad refused


async def test_only_the_events_an_enabled_subscription_names_are_written(
    writer: Writer, db: Database
) -> None:
    """Issue 23: the writer keeps an outbox row only if an enabled subscription names its
    event; the rows it keeps are in submission order. A disabled subscription wants
    nothing."""
    await db.execute(
        "INSERT INTO subscriptions (via, notifications, callback_url, webhook_secret, enabled)"
        " VALUES ('webhook', '{b}', 'http://127.0.0.1:9/', '\\x00', false)"
    )
    await want_events(db, "a", "c")
    rows = [(name, f"CP-{i}", str(i).encode()) for i, name in enumerate("abcbac")]
    await writer.submit(outbox.append(rows), key="CP-1")
    stored = await db.fetch("SELECT event, charger_id FROM outbox ORDER BY id")
    assert [tuple(r) for r in stored] == [
        ("a", "CP-0"),
        ("c", "CP-2"),
        ("a", "CP-4"),
        ("c", "CP-5"),
    ]
    await writer.submit(outbox.append([("b", "CP-9", b"")]), key="CP-1")
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE event = 'b'") == 0


async def test_a_storms_copied_outbox_rows_are_filtered_and_checked_too(
    writer: Writer, db: Database
) -> None:
    """Over 64 rows a batch's outbox rows are COPYed, not sent as one literal: the rows nobody
    wants are left out there too, in order, and the batch still checks the names it left
    them out by (a subscription made since the writer read them gets its rows)."""
    await want_events(db, "a")
    rows = [("ab"[i % 2], f"CP-{i}", b"") for i in range(100)]
    await writer.submit(outbox.append(rows), key="CP-1")
    stored = await db.fetch("SELECT event, charger_id FROM outbox ORDER BY id")
    assert [tuple(r) for r in stored] == [(e, c) for e, c, _ in rows if e == "a"]
    await db.execute("DELETE FROM outbox")
    await want_events(db, "c")  # after the writer read the names
    more = [("bc"[i % 2], f"CP-{i}", b"") for i in range(100)]
    await writer.submit(outbox.append(more), key="CP-1")
    stored = await db.fetch("SELECT event, charger_id FROM outbox ORDER BY id")
    assert [tuple(r) for r in stored] == [(e, c) for e, c, _ in more if e == "c"]


async def test_the_writer_keeps_no_stale_names_of_wanted_events(
    writer: Writer, db: Database
) -> None:
    """The writer filters by the names it read before (not in each batch): a subscription
    made, enabled again or widened since then counts from the next batch on, on every
    committer (a batch that left an event out checks the subscriptions' generation, and runs
    again with the new names if it moved); one narrowed, disabled or deleted within a moment
    (the names are read again at least every second)."""

    chargers = (f"CP-{i}" for i in itertools.count())  # every committer in turn

    async def kept(event: str) -> bool:
        charger = next(chargers)
        await writer.submit(outbox.append([(event, charger, b"")]), key=charger)
        found = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE event = $1 AND charger_id = $2", event, charger
        )
        return bool(found)

    async def dropped(event: str) -> bool:
        return not await kept(event)

    assert not await kept("a")  # the names are read: none
    await want_events(db, "a")
    assert [await kept("a") for _ in range(8)] == [True] * 8
    assert not await kept("b")
    await db.execute("UPDATE subscriptions SET notifications = '{a,b}'")
    assert await kept("b") and await kept("a")
    # A narrowing holds no batch back (migration 0027): rows nobody wants may still be
    # written for a moment (the fan-out skips them), then no more.
    await db.execute("UPDATE subscriptions SET notifications = '{b}'")
    await until(lambda: dropped("a"))
    assert [await kept("a") for _ in range(8)] == [False] * 8
    await db.execute("UPDATE subscriptions SET enabled = false")
    await until(lambda: dropped("b"))
    await db.execute("UPDATE subscriptions SET enabled = true")
    assert await kept("b")
    await db.execute("DELETE FROM subscriptions")
    await until(lambda: dropped("b"))
    assert [await kept("b") for _ in range(8)] == [False] * 8
    await want_events(db, "c")
    assert await kept("c")
    await db.execute("TRUNCATE subscriptions CASCADE")
    await until(lambda: dropped("c"))


@pytest.mark.parametrize("default_isolation", ["read committed", "repeatable read"])
async def test_a_subscription_committed_during_a_batch_gets_its_events(
    db: Database, database_url: str, default_isolation: str
) -> None:
    """The race a skipped row could lose an event to: a subscription is being made (its
    transaction open) while a batch of its event runs. The batch waits for it (migration
    0026's lock) and keeps the row; had it read the subscriptions before the subscription
    committed, the event would be lost to it. Whatever the database's default isolation: a
    batch under REPEATABLE READ would read with its first statement's snapshot, taken before
    the wait (the writer's BEGIN names READ COMMITTED)."""
    name = await db.fetchval("SELECT current_database()")
    await db.execute(
        f"ALTER DATABASE {name} SET default_transaction_isolation = '{default_isolation}'"
    )
    writer = Writer(database_url, flush_interval=0.002, retry_max_delay=0.2, stop_timeout=5)
    await writer.start()
    maker = await asyncpg.connect(database_url)
    try:
        made = maker.transaction()
        await made.start()
        await want_events(maker, "late")
        submitted = asyncio.ensure_future(
            writer.submit(outbox.append([("late", "CP-1", b"{}")]), key="CP-1")
        )
        await quiet_for(0.3)
        assert not submitted.done(), "the batch did not wait for the subscription being made"
        await made.commit()
        assert await asyncio.wait_for(submitted, 10) == [None]
    finally:
        await maker.close()
        await writer.stop()
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE event = 'late'") == 1


async def test_a_subscription_waits_for_the_writers_event_rows_only(database_url: str) -> None:
    """The other side of the race: a transaction that has checked the generation of the
    names it filtered its events by (the writer's batch, whatever it then keeps) holds back a
    subscription that makes an event wanted (made, enabled again, or naming more events)
    until it ends, so the subscription exists only after every event it could have missed
    committed. Nothing else that writes the outbox (an API change's event, the prune) makes
    it wait, nor does a change that only narrows: a subscription re-enabled while the
    operator deletes its sub-operator (whose event is written first, then the delete
    cascades to the subscription) deadlocked when it took a table lock."""
    batch, maker = await asyncpg.connect(database_url), await asyncpg.connect(database_url)

    async def checked(conn: asyncpg.Connection) -> None:  # what a batch that left rows out does
        wanted = await outbox.read_wanted(conn)
        await conn.execute(outbox.WANTED_LOCK)
        assert await conn.fetchval(f"SELECT {outbox.still_wanted_sql(wanted)}") is True

    try:

        async def waits_for_the_batch(change: str) -> None:
            open_batch = batch.transaction()
            await open_batch.start()
            await checked(batch)
            changing = asyncio.ensure_future(maker.execute(change))
            await quiet_for(0.3)
            assert not changing.done(), f"did not wait for the writer: {change}"
            await open_batch.commit()
            await asyncio.wait_for(changing, 10)

        await waits_for_the_batch(
            "INSERT INTO subscriptions (via, notifications, callback_url, webhook_secret)"
            " VALUES ('webhook', '{x}', 'http://127.0.0.1:9/', '\\x00')"
        )
        await waits_for_the_batch("UPDATE subscriptions SET notifications = '{x,y}'")
        await maker.execute("UPDATE subscriptions SET enabled = false")
        await waits_for_the_batch("UPDATE subscriptions SET enabled = true")
        # Narrowing, disabling and deleting make nothing wanted: no wait.
        for change in (
            "UPDATE subscriptions SET notifications = '{x}'",
            "UPDATE subscriptions SET enabled = false",
            "DELETE FROM subscriptions",
        ):
            async with batch.transaction():
                await checked(batch)
                await asyncio.wait_for(maker.execute(change), 10)
        # An event written by other means (the API's, unfiltered) holds no subscription back.
        async with batch.transaction():
            await batch.execute("INSERT INTO outbox (event, payload) VALUES ('y', '')")
            await asyncio.wait_for(want_events(maker, "y"), 10)
    finally:
        await batch.close()
        await maker.close()


async def test_a_narrowing_still_open_does_not_stall_the_writer(
    writer: Writer, db: Database, database_url: str
) -> None:
    """A narrowing still open (a 410's disable marking a long outage's deliveries failed, a
    sub-operator's delete) holds the generation's row; a widening waits for it. The
    widening must not hold the lock meanwhile (it took the lock first, then waited for the
    row): every batch that left an event out waited for the narrowing, in every process."""
    await want_events(db, "a")
    await writer.submit(outbox.append([("a", "CP-1", b"")]), key="CP-1")
    narrower, widener = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        narrowing = narrower.transaction()
        await narrowing.start()
        await narrower.execute("UPDATE subscriptions SET enabled = false")
        widening = asyncio.ensure_future(want_events(widener, "b"))
        await quiet_for(0.3)
        assert not widening.done()  # waits for the narrowing's row of outbox_wanted
        # A charger's batch whose event nobody wants yet:
        await asyncio.wait_for(writer.submit(outbox.append([("z", "CP-2", b"")]), key="CP-2"), 5)
        await narrowing.rollback()
        await asyncio.wait_for(widening, 10)
    finally:
        await narrower.close()
        await widener.close()


class WantedMoves(WriteOp[int, None]):
    """A test's op: each run commits a change of the subscriptions' generation on a connection
    of its own, as a script changing subscriptions without pause would, mid-batch."""

    def __init__(self, side: asyncpg.Connection) -> None:
        self.side = side
        self.runs = 0

    async def write(self, conn: asyncpg.Connection, items: list[int]) -> list[None]:
        self.runs += 1
        await self.side.execute("UPDATE outbox_wanted SET generation = generation + 1")
        return [None] * len(items)


async def test_subscriptions_changing_without_pause_delay_a_batch_but_never_stall_it(
    writer: Writer, db: Database, database_url: str
) -> None:
    """A batch that left an event out runs again when what is wanted changed meanwhile; were
    it to change during every run, the batch (and its charger's answer) would wait for ever.
    After three filtered runs refused so, it writes every event, filtered by nothing, so it has
    nothing left to check and commits; the next batch is filtered again."""
    side = await asyncpg.connect(database_url)
    try:
        moves = WantedMoves(side)
        async with asyncio.timeout(10):
            await writer.submit([(moves, 1), *outbox.append([("nobody", "CP-1", b"")])])
    finally:
        await side.close()
    assert moves.runs == 4  # three filtered runs refused, then one unfiltered
    assert writer.stats.unfiltered == 1
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE event = 'nobody'") == 1
    await writer.submit(outbox.append([("nobody", "CP-1", b"")]), key="CP-1")
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE event = 'nobody'") == 1
