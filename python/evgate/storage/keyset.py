"""storage room: one parent's rows of a child table, a keyset page at a time.

A child list (a user's payment methods or balance entries, a partner's invites) answers 404
for a parent that does not exist, not an empty page: the parent's existence and the page are
read on one connection.
"""

from __future__ import annotations

import asyncpg

from evgate.storage.db import Database
from evgate.storage.errors import NotFound

__all__ = ["children_page"]


async def children_page(
    db: Database,
    *,
    parent: tuple[str, str],
    parent_id: int,
    columns: str,
    table: str,
    foreign_key: str,
    after: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    """The rows of ``table`` whose ``foreign_key`` is ``parent_id``, in id order after
    ``after``, at most ``limit``. Every name is the caller's constant, never input.

    Args:
        parent: the parent's table and the noun an error names it by (``("users", "user")``).

    Raises:
        NotFound: no such parent.
    """
    parent_table, noun = parent
    async with db.pool.acquire() as conn:
        if await conn.fetchval(f"SELECT 1 FROM {parent_table} WHERE id = $1", parent_id) is None:
            raise NotFound(f"no {noun} {parent_id}")
        rows: list[asyncpg.Record] = await conn.fetch(
            f"SELECT {columns} FROM {table} WHERE {foreign_key} = $1"
            " AND ($2::bigint IS NULL OR id > $2) ORDER BY id LIMIT $3",
            parent_id,
            after,
            limit,
        )
        return rows
