"""storage room: operator API tokens, stored as digests only."""

from __future__ import annotations

from typing import Literal

from evgate.storage.db import Database

__all__ = ["BOOTSTRAP", "Scope", "TokenStore"]

Scope = Literal["admin", "read"]
#: The name of the token ``EVGATE_BOOTSTRAP_TOKEN`` makes (reserved: no other token has it).
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

    async def set_bootstrap(self, digest: bytes | None) -> None:
        """Make the token with this digest the bootstrap token (admin), or have none: any
        other bootstrap token (an ``EVGATE_BOOTSTRAP_TOKEN`` since changed or unset) stops
        working. Call at every start with the setting's digest, or None when it is unset."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM api_tokens WHERE name = $1 AND digest IS DISTINCT FROM $2",
                BOOTSTRAP,
                digest,
            )
            if digest is not None:
                await conn.execute(
                    "INSERT INTO api_tokens (name, scope, digest) VALUES ($1, 'admin', $2)"
                    " ON CONFLICT (digest) DO UPDATE SET name = $1, scope = 'admin'",
                    BOOTSTRAP,
                    digest,
                )
