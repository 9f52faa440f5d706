"""Databases of the session's PostgreSQL server for a test or a fixture."""

from __future__ import annotations

import asyncpg

__all__ = ["create_database", "with_database"]


def with_database(dsn: str, name: str) -> str:
    """``dsn`` naming database ``name`` instead."""
    return dsn.rsplit("/", 1)[0] + "/" + name


async def create_database(server_dsn: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` (afresh: dropped first if it is there) on the server of
    ``server_dsn``, as a copy of ``template`` if given; its DSN."""
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        copy = "" if template is None else f" TEMPLATE {template}"
        await conn.execute(f"CREATE DATABASE {name}{copy}")
    finally:
        await conn.close()
    return with_database(server_dsn, name)
