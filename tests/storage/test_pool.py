"""The pool's typed errors (storage/db.py, storage/errors.py): a connection that died under a
query is DatabaseUnavailable (the API answers 503, a charger's CALL is left unanswered), while
asyncpg's client-side error on a connection that is still open is evgate's own bug, raised as
it is (the API answers 500, a CALL gets InternalError, both with a traceback)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from evgate.storage.db import Database
from evgate.storage.errors import DatabaseUnavailable, is_unavailable
from support import terminate_query


async def test_a_wrong_argument_count_is_a_bug_not_an_outage(db: Database) -> None:
    with pytest.raises(asyncpg.InterfaceError) as raised:
        await db.pool.fetchval("SELECT $1::int + $2::int", 1, 2, 3)
    assert "arguments" in str(raised.value)
    assert not isinstance(raised.value, DatabaseUnavailable)
    assert not is_unavailable(raised.value)
    assert await db.pool.fetchval("SELECT 1") == 1  # the pool is fine


def test_asyncpgs_client_errors_are_an_outage_only_on_a_closed_connection() -> None:
    """The one rule the pool and the writer share: "another operation is in progress" or
    "cannot switch to state" on an open connection is a bug; on a closed one, the outage that
    closed it. A value asyncpg refuses to encode is never an outage."""
    busy = asyncpg.InterfaceError("cannot perform operation: another operation is in progress")
    state = asyncpg.exceptions.InternalClientError("cannot switch to state 15")
    for exc in (busy, state):
        assert not is_unavailable(exc)
        assert is_unavailable(exc, closed=True)
    refused = asyncpg.exceptions.DataError("invalid input for query argument $1")
    assert not is_unavailable(refused, closed=True)
    assert is_unavailable(asyncpg.exceptions.ConnectionDoesNotExistError("lost"))
    assert not is_unavailable(asyncpg.exceptions.UndefinedTableError("no such table"))


async def test_a_connection_closed_under_the_block_is_an_outage(db: Database) -> None:
    """The transport lost under a block: asyncpg's "connection is closed" InterfaceError is
    the outage that closed it."""
    with pytest.raises(DatabaseUnavailable) as raised:
        async with db.pool.acquire() as conn:
            conn.terminate()
            await conn.fetchval("SELECT 1")
    assert isinstance(raised.value.__cause__, asyncpg.InterfaceError)
    assert await db.pool.fetchval("SELECT 1") == 1  # the pool replaced the connection


async def test_a_connection_killed_mid_query_is_an_outage(db: Database) -> None:
    """pg_terminate_backend while the query runs: DatabaseUnavailable."""
    query = asyncio.ensure_future(db.pool.fetchval("SELECT pg_sleep(60) /* to be killed */"))
    await terminate_query(db, "to be killed")
    with pytest.raises(DatabaseUnavailable):
        await asyncio.wait_for(query, 30)


async def test_a_closing_pool_is_an_outage(db: Database) -> None:
    """Acquiring from a pool that is closing (evgate shutting down) is unavailable, not a bug."""
    held = await db.pool.acquire()
    closing = asyncio.ensure_future(db.pool.raw.close())
    try:
        async with asyncio.timeout(10):
            while not db.pool.raw.is_closing():  # noqa: ASYNC110 - close() sets it on its first step
                await asyncio.sleep(0.01)
        with pytest.raises(DatabaseUnavailable) as raised:
            await db.pool.acquire()
        assert isinstance(raised.value.__cause__, asyncpg.InterfaceError)
    finally:
        await db.pool.release(held)
        await closing


async def test_the_operator_pool_gives_a_connection_back_without_a_reset_query(
    db: Database,
) -> None:
    """Released, a connection of the operator's pool is not sent asyncpg's reset query (a
    round trip and four statements per query: storage/db.py, ``_keep_session``): a session
    setting made through it (which evgate's own SQL never does: tests/test_sourcecode.py) is
    still there for the next query. A transaction left open is still rolled back."""
    pool = db.pool
    async with pool.acquire() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.execute("SELECT set_config('evgate.probe', 'kept', false)")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == backend  # the same session
        assert await conn.fetchval("SELECT current_setting('evgate.probe', true)") == "kept"
        await conn.execute("SELECT set_config('evgate.probe', '', false)")
    # asyncpg reports a transaction left open to the loop's exception handler, then rolls it
    # back (what it does before any pool's reset).
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    reported: list[str] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        async with pool.acquire() as conn:
            await conn.transaction().start()
            await conn.execute("SELECT set_config('evgate.probe', 'in a transaction', true)")
    finally:
        loop.set_exception_handler(previous)
    assert [m.split(" <")[0] for m in reported] == [
        "Resetting connection with an active transaction"
    ]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == backend
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT current_setting('evgate.probe', true)") == ""
