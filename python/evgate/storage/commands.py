"""storage room: commands sent in the API's asynchronous form (``Prefer: respond-async``) and
bulk commands — the ``commands`` and ``bulk_commands`` rows (issue 21.5).

A command is stored ``pending`` before it is sent and ends ``completed`` (the charger's
CALLRESULT payload) or ``failed`` (a problem), with a ``command.completed`` event in the same
transaction. Any process of a cluster reads them, so the outcome is the same whichever process
is asked, and it survives a restart; a pending command whose runner (an evgate instance) no
longer holds a cluster lease reads as failed, ``interrupted``. Rows are kept
:data:`KEPT_FOR` after the request, then deleted by the maintenance task (``prune_commands``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from evgate.events.builders import OutboxEntry
from evgate.storage.db import Database
from evgate.storage.errors import NotFound
from evgate.storage.outbox import insert_outbox

__all__ = [
    "KEPT_FOR",
    "BulkCommandRow",
    "CommandOutcome",
    "CommandRow",
    "CommandStore",
    "NewCommand",
    "prune_commands",
]

#: How long a command's record (and a bulk command's) is kept after the request.
KEPT_FOR = timedelta(hours=24)

CommandStatus = Literal["pending", "completed", "failed"]


class NewCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A command about to be sent: its id, charger, action, request payload (JSON) and the
    bulk command it belongs to, if any."""

    id: UUID
    charger_id: str
    action: str
    request: bytes
    bulk_id: UUID | None = None


class CommandOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a command ended: ``response`` (JSON) when completed, ``problem`` (JSON) when failed;
    ``event`` the ``command.completed`` outbox entry (event, charger id, payload)."""

    id: UUID
    status: Literal["completed", "failed"]
    completed_at: datetime
    event: OutboxEntry
    response: bytes | None = None
    problem: bytes | None = None


class CommandRow(msgspec.Struct, kw_only=True):
    """A command's row; ``interrupted``: pending, but its runner is gone (it never ends)."""

    id: UUID
    bulk_id: UUID | None
    charger_id: str
    action: str
    request: msgspec.Raw
    status: CommandStatus
    response: msgspec.Raw | None
    problem: msgspec.Raw | None
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime
    interrupted: bool


class BulkCommandRow(msgspec.Struct, kw_only=True):
    """A bulk command's row and its commands (by charger id)."""

    id: UUID
    action: str
    request: msgspec.Raw
    created_at: datetime
    expires_at: datetime
    commands: list[CommandRow]


_COMMAND = (
    "SELECT c.id, c.bulk_id, c.charger_id, c.action, c.request, c.status, c.response,"
    " c.problem, c.created_at, c.completed_at, c.expires_at,"
    " c.status = 'pending' AND NOT EXISTS"
    " (SELECT 1 FROM cluster_instances i WHERE i.instance = c.runner) AS interrupted"
    " FROM commands c"
)


def _raw(value: str | None) -> msgspec.Raw | None:
    return None if value is None else msgspec.Raw(value.encode())


def _command(row: asyncpg.Record) -> CommandRow:
    fields: dict[str, Any] = dict(row)
    for name in ("request", "response", "problem"):
        fields[name] = _raw(fields[name])
    return CommandRow(**fields)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


class CommandStore:
    """The API's commands, pending and done (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def chargers_of_installation(self, installation_id: int) -> list[str]:
        """The ids of the installation's chargers, in id order.

        Raises:
            NotFound: no such installation.
        """
        rows = await self.db.fetch(
            "SELECT i.id AS installation, c.id FROM installations i"
            " LEFT JOIN chargers c ON c.installation_id = i.id WHERE i.id = $1 ORDER BY c.id",
            installation_id,
        )
        if not rows:
            raise NotFound(f"installation {installation_id} not found")
        return [r["id"] for r in rows if r["id"] is not None]

    async def unknown_chargers(self, charger_ids: list[str]) -> list[str]:
        """The ids among ``charger_ids`` that name no charger, in their order."""
        rows = await self.db.fetch(
            "SELECT id FROM chargers WHERE id = ANY($1::text[])", charger_ids
        )
        known = {r["id"] for r in rows}
        return [c for c in charger_ids if c not in known]

    async def create(
        self,
        commands: list[NewCommand],
        runner: str,
        now: datetime,
    ) -> None:
        """Store ``commands`` as pending, run by instance ``runner``, in one transaction, with
        their bulk command if they have one (all the same: one action, one request)."""
        expires = now + KEPT_FOR
        bulk_id = commands[0].bulk_id
        bulk_request = commands[0].request
        async with self.db.pool.acquire() as conn, conn.transaction():
            if bulk_id is not None:
                await conn.execute(
                    "INSERT INTO bulk_commands (id, action, request, created_at, expires_at)"
                    " VALUES ($1, $2, $3::jsonb, $4, $5)",
                    bulk_id,
                    commands[0].action,
                    _text(bulk_request),
                    now,
                    expires,
                )
            rows = [(c.id, c.bulk_id, c.charger_id, c.action, c.request.decode()) for c in commands]
            await conn.executemany(
                "INSERT INTO commands (id, bulk_id, charger_id, action, request, runner,"
                " created_at, expires_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)",
                [(*row, runner, now, expires) for row in rows],
            )

    async def finish(self, outcome: CommandOutcome) -> None:
        """Record how a pending command ended, with its event, in one transaction."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "UPDATE commands SET status = $2, response = $3::jsonb, problem = $4::jsonb,"
                " completed_at = $5 WHERE id = $1 AND status = 'pending' RETURNING true",
                outcome.id,
                outcome.status,
                _text(outcome.response),
                _text(outcome.problem),
                outcome.completed_at,
            )
            if done:
                await insert_outbox(conn, [outcome.event])

    async def get(self, command_id: UUID) -> CommandRow:
        """A command by id.

        Raises:
            NotFound: no such command (or its record expired).
        """
        row = await self.db.fetchrow(_COMMAND + " WHERE c.id = $1", command_id)
        if row is None:
            raise NotFound(f"command {command_id} not found")
        return _command(row)

    async def bulk(self, bulk_id: UUID) -> BulkCommandRow:
        """A bulk command and its commands, in charger id order.

        Raises:
            NotFound: no such bulk command (or its record expired).
        """
        row = await self.db.fetchrow(
            "SELECT id, action, request, created_at, expires_at FROM bulk_commands WHERE id = $1",
            bulk_id,
        )
        if row is None:
            raise NotFound(f"bulk command {bulk_id} not found")
        rows = await self.db.fetch(
            _COMMAND + " WHERE c.bulk_id = $1 ORDER BY c.charger_id", bulk_id
        )
        fields: dict[str, Any] = dict(row)
        fields["request"] = _raw(fields["request"])
        return BulkCommandRow(**fields, commands=[_command(r) for r in rows])


async def prune_commands(conn: asyncpg.Connection) -> None:
    """Delete the command records past their ``expires_at`` (the maintenance task's)."""
    await conn.execute("DELETE FROM commands WHERE expires_at < now()")
    await conn.execute("DELETE FROM bulk_commands WHERE expires_at < now()")
