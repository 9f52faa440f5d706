"""storage room: the connection pool and the migrations.

Migrations are the numbered ``.sql`` files beside this module, applied in order, each in its
own transaction, under an advisory lock so that several evgate processes starting at once apply
each exactly once.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import asyncpg

__all__ = ["Database", "apply_migrations", "migration_files"]

log = logging.getLogger(__name__)

_MIGRATIONS_LOCK = 0x65766761  # 'evga': any fixed key that no other code uses
CHARGER_CHANNEL = "evgate_charger"  # NOTIFY payload: the charger id whose credentials changed


def migration_files() -> list[tuple[str, str]]:
    """The migrations as (version, sql), in the order they apply."""
    folder = resources.files("evgate.storage") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations that ``conn``'s database lacks.

    Returns:
        The versions applied now (empty when the database was current).
    """
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATIONS_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
            log.info("applied migration %s", version)
    return applied_now


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as text: msgspec encodes and decodes it, faster than asyncpg's json.
    await conn.set_type_codec(
        "jsonb", encoder=lambda v: v, decoder=lambda v: v, schema="pg_catalog"
    )


class Database:
    """The asyncpg pool of one evgate process. ``await open()`` before use, ``close()`` after."""

    def __init__(self, dsn: str, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Database.open() was not awaited")
        return self._pool

    async def open(self, migrate: bool = True) -> None:
        """Connect, and apply pending migrations unless ``migrate`` is false."""
        if migrate:
            conn = await asyncpg.connect(self.dsn)
            try:
                await apply_migrations(conn)
            finally:
                await conn.close()
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self.pool_size, init=_init_connection
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(sql, *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self.pool.execute(sql, *args)
        return status
