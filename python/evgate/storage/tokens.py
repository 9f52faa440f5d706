"""storage room: operator API tokens, stored as digests only."""

from __future__ import annotations

from typing import Literal

from evgate.storage.db import Database

__all__ = ["BOOTSTRAP", "Scope", "TokenStore"]

Scope = Literal["admin", "read"]
#: The name reserved for ``EVGATE_BOOTSTRAP_TOKEN`` (checked in memory by each process, never a
#: row here), so that no stored token is mistaken for it.
BOOTSTRAP = "bootstrap"


class TokenStore:
    """Queries on the ``api_tokens`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, name: str, scope: Scope, digest: bytes) -> int:
        """Store a token's digest; returns the token's id."""
        token_id: int = await self.db.fetchval(
            "INSERT INTO api_tokens (name, scope, digest) VALUES ($1, $2, $3)"
            " ON CONFLICT (digest) DO UPDATE SET name = EXCLUDED.name, scope = EXCLUDED.scope"
            " RETURNING id",
            name,
            scope,
            digest,
        )
        return token_id

    async def scope_of(self, digest: bytes) -> tuple[int, Scope] | None:
        """The (id, scope) of the token with that digest, or None."""
        row = await self.db.fetchrow("SELECT id, scope FROM api_tokens WHERE digest = $1", digest)
        return None if row is None else (row["id"], row["scope"])
