"""storage room: the writer's ops that draw ids from sequences, for the events that carry one
(a sequence never gives a value back: a retried batch leaves a gap, which is harmless).

Authorization ids are drawn a block at a time and kept in memory (:class:`DrawnInBlocks`), as
a sequence's own ``CACHE`` would: an Authorize's batch then sends no query of its own, and
goes to PostgreSQL as one round trip (its BEGIN, outbox rows and COMMIT). Ids stay unique;
like ``CACHE``, two processes hand out interleaved blocks, and a process that stops leaves the
rest of its block unused.
"""

from __future__ import annotations

import weakref

import asyncpg

from evgate.storage.ops.base import FetchEach, Write, WriteOp

__all__ = [
    "AUTHORIZATION_ID",
    "COMMAND_REQUEST_ID",
    "DrawnInBlocks",
    "authorization_id",
    "command_request_id",
]

_NO_ARGS = ()


class DrawnInBlocks(WriteOp[None, int]):
    """Draws values of ``sequence``, ``block`` at a time, kept per connection (per database)
    until handed out. Result: a new value per item, never handed out twice (a value drawn for
    a batch that rolled back is a gap, as ``nextval``'s would be)."""

    def __init__(self, sequence: str, name: str, block: int = 64) -> None:
        self.sequence = sequence
        self.name = name
        self.block = block
        self._drawn: weakref.WeakKeyDictionary[asyncpg.Connection, list[int]] = (
            weakref.WeakKeyDictionary()
        )

    async def write(self, conn: asyncpg.Connection, items: list[None]) -> list[int]:
        drawn = self._drawn.setdefault(conn, [])
        if len(drawn) < len(items):
            rows = await conn.fetch(
                f"SELECT nextval('{self.sequence}') FROM generate_series(1, $1)",
                max(self.block, len(items) - len(drawn)),
            )
            drawn.extend(sorted(r[0] for r in rows))
        taken = drawn[: len(items)]
        del drawn[: len(items)]
        return taken


#: Result: a new authorizationId (AuthorizationNotification, authorization.changed).
AUTHORIZATION_ID = DrawnInBlocks("authorization_ids", name="authorization_id")

#: Result: a new command request id (GetConfiguration, GetDiagnostics).
COMMAND_REQUEST_ID: FetchEach[None, int] = FetchEach(
    "SELECT nextval('command_request_ids')", name="command_request_id", args=lambda _: _NO_ARGS
)


def authorization_id() -> Write[int]:
    """Draw a new authorizationId."""
    return AUTHORIZATION_ID(None)


def command_request_id() -> Write[int]:
    """Draw a new command request id."""
    return COMMAND_REQUEST_ID(None)
