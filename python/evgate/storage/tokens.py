"""storage room: operator API tokens, stored as digests only.

A token is looked up by its digest on every API request (``grant_of``, one unique-index probe),
so a deleted token stops working at once in every evgate process, with no cache to refresh.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import BadReference, NotFound

__all__ = ["BOOTSTRAP", "ApiToken", "Grant", "Scope", "TokenStore"]

Scope = Literal["admin", "read"]
#: The name reserved for ``EVGATE_BOOTSTRAP_TOKEN`` (checked in memory by each process, never a
#: row here), so that no stored token is mistaken for it.
BOOTSTRAP = "bootstrap"


class ApiToken(msgspec.Struct, rename="camel", kw_only=True):
    """An API token as it is listed: never the token, nor its digest."""

    id: int
    name: str
    scope: Scope
    #: The sub-operator the token acts for (None: the operator's token, which sees everything).
    sub_operator_id: int | None
    created_at: datetime


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """What a presented token may do: its id, scope and tenant."""

    token_id: int
    scope: Scope
    sub_operator_id: int | None


_COLUMNS = "id, name, scope, sub_operator_id, created_at"


class TokenStore:
    """Queries on the ``api_tokens`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, name: str, scope: Scope, digest: bytes, sub_operator_id: int | None = None
    ) -> ApiToken:
        """Store a token's digest; returns the token's row. Made by a request acting for a
        sub-operator, the token is that sub-operator's when ``sub_operator_id`` is None
        (row-level security refuses another: ``NotPermitted``).

        Raises:
            BadReference: no sub-operator ``sub_operator_id``.
        """
        try:
            row = await self.db.fetchrow(
                "INSERT INTO api_tokens (name, scope, digest, sub_operator_id)"
                " VALUES ($1, $2, $3, coalesce($4, evgate_tenant()))"
                " ON CONFLICT (digest) DO UPDATE SET name = EXCLUDED.name,"
                " scope = EXCLUDED.scope, sub_operator_id = EXCLUDED.sub_operator_id"
                f" RETURNING {_COLUMNS}",
                name,
                scope,
                digest,
                sub_operator_id,
            )
        except asyncpg.ForeignKeyViolationError:
            raise BadReference(f"no sub-operator {sub_operator_id}") from None
        assert row is not None  # INSERT ... RETURNING always returns its row
        return ApiToken(**dict(row))

    async def page(self, after: int | None = None, limit: int = 100) -> list[ApiToken]:
        """Tokens in id order, the ``limit`` first after id ``after``."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE $1::bigint IS NULL OR id > $1"
            " ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [ApiToken(**dict(r)) for r in rows]

    async def delete(self, token_id: int) -> None:
        """Delete (revoke) a token: the next request presenting it is refused.

        Raises:
            NotFound: no such token.
        """
        status = await self.db.execute("DELETE FROM api_tokens WHERE id = $1", token_id)
        if status == "DELETE 0":
            raise NotFound(f"no API token {token_id}")

    async def grant_of(self, digest: bytes) -> Grant | None:
        """What the token with that digest may do, or None. A row named ``bootstrap``
        is never one: an older evgate stored its bootstrap token so (migration 0010 deletes
        it, but an old process restarting during a rolling upgrade writes it again), and that
        token is valid only where it is configured."""
        row = await self.db.fetchrow(
            "SELECT id, scope, sub_operator_id FROM api_tokens WHERE digest = $1 AND name <> $2",
            digest,
            BOOTSTRAP,
        )
        if row is None:
            return None
        return Grant(token_id=row["id"], scope=row["scope"], sub_operator_id=row["sub_operator_id"])
