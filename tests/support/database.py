"""Databases of the session's PostgreSQL server for a test or a fixture."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg

from evgate.events.catalog import SUBSCRIBABLE

__all__ = [
    "create_database",
    "drop_database",
    "terminate_query",
    "want_events",
    "with_database",
]


def with_database(dsn: str, name: str) -> str:
    """``dsn`` naming database ``name`` instead."""
    return dsn.rsplit("/", 1)[0] + "/" + name


async def create_database(server_dsn: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` (afresh: dropped first if it is there) on the server of
    ``server_dsn``, as a copy of ``template`` if given; its DSN."""
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        # FILE_COPY: a checkpoint and a file copy take a third of the time WAL_LOG's copy of
        # every block through the WAL does (0.1 s against 0.33 s a test, on the suite's server).
        copy = "" if template is None else f" TEMPLATE {template} STRATEGY FILE_COPY"
        await conn.execute(f"CREATE DATABASE {name}{copy}")
    finally:
        await conn.close()
    return with_database(server_dsn, name)


async def drop_database(server_dsn: str, name: str) -> None:
    """Drop database ``name`` of the server of ``server_dsn``, ending its sessions (a test's
    leftover connection must not keep its database on disk)."""
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def terminate_query(db: Any, marker: str, within: float = 30.0) -> None:
    """``pg_terminate_backend`` the session running a query that holds ``marker`` (a comment
    in it), once it runs: a connection killed mid-query, as a server-side fault would."""
    async with asyncio.timeout(within):
        while not await db.pool.fetchval(  # noqa: ASYNC110 - a database value
            "SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity"
            " WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
            marker,
        ):
            await asyncio.sleep(0.02)


async def want_events(db: Any, *events: str) -> None:
    """Subscribe (a webhook to the discard port of loopback, which refuses: its deliveries
    only fail and wait) to ``events``, or to every event evgate emits: the writer keeps only
    the events some enabled subscription names (storage/ops/outbox.py), and a test that reads
    the outbox needs them kept. ``db``: a Database, pool or connection."""
    await db.execute(
        "INSERT INTO subscriptions (via, notifications, callback_url, webhook_secret)"
        " VALUES ('webhook', $1, 'http://127.0.0.1:9/', '\\x00')",
        list(events) or sorted(SUBSCRIBABLE),
    )


@contextlib.asynccontextmanager
async def locked(database_url: str, table: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Hold an ACCESS EXCLUSIVE lock on ``table`` from another session; yields its release."""
    blocker = await asyncpg.connect(database_url)
    try:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield lock.rollback
    finally:
        await blocker.close()


@contextlib.contextmanager
def logged_queries(conn: asyncpg.Connection) -> Iterator[list[str]]:
    """The text of every query ``conn`` sends while the block runs."""
    queries: list[str] = []

    def logged(record: asyncpg.connection.LoggedQuery) -> None:
        queries.append(record.query)

    conn.add_query_logger(logged)
    try:
        yield queries
    finally:
        conn.remove_query_logger(logged)
