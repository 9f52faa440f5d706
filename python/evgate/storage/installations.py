"""storage room: installations, charger membership, offline-config push results, and the
session-end outbox of external authorization (issue 7).

Every change to an installation or to a charger's membership sends ``NOTIFY
evgate_installation`` in the same transaction, with payload ``i:<installation id>`` or
``c:<charger id>``, so every evgate process refreshes its in-memory authorizer directory
(``evgate.auth.installations``). The webhook settings are opaque JSON here: the auth room
validates them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import InUse, NotFound

__all__ = [
    "INSTALLATION_CHANNEL",
    "SESSION_END_CHANNEL",
    "AuthorizationMode",
    "InstallationRow",
    "InstallationStore",
    "OfflineConfigRow",
    "OfflineState",
    "PendingSessionEnd",
    "SessionEndRow",
    "mark_offline_pending",
    "set_charger_installation",
]

INSTALLATION_CHANNEL = "evgate_installation"
# Notified (empty payload) when a session end enters the outbox.
SESSION_END_CHANNEL = "evgate_session_end"

AuthorizationMode = Literal["native", "acceptAll", "webhook"]
OfflineState = Literal["pending", "applied", "reboot_required", "rejected", "failed"]


class InstallationRow(msgspec.Struct, kw_only=True):
    """An installation as stored; ``webhook`` is the settings' JSON object, unvalidated."""

    id: int
    name: str
    authorization_mode: AuthorizationMode
    webhook: dict[str, Any] | None
    allow_charging_when_offline: bool
    created_at: datetime
    updated_at: datetime
    # The sub-operator that owns it (None: the operator's own).
    sub_operator_id: int | None = None


class OfflineConfigRow(msgspec.Struct, kw_only=True):
    """The last offline-charging configuration evgate asked of one charger, and its answer."""

    charger_id: str
    allow_offline: bool
    state: OfflineState
    results: dict[str, str]
    detail: str | None
    updated_at: datetime


class PendingSessionEnd(msgspec.Struct, kw_only=True, rename="camel"):
    """An undelivered session end, as the API shows it."""

    id: int
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime


class SessionEndRow(msgspec.Struct, kw_only=True):
    """A claimed row of the session-end outbox."""

    id: int
    installation_id: int
    payload: bytes
    attempts: int


_COLUMNS = (
    "id, name, authorization_mode, webhook, allow_charging_when_offline, created_at, updated_at,"
    " sub_operator_id"
)
_OFFLINE_COLUMNS = "charger_id, allow_offline, state, results, detail, updated_at"


def _installation(row: asyncpg.Record) -> InstallationRow:
    webhook = row["webhook"]
    return InstallationRow(
        id=row["id"],
        name=row["name"],
        authorization_mode=row["authorization_mode"],
        webhook=None if webhook is None else msgspec.json.decode(webhook),
        allow_charging_when_offline=row["allow_charging_when_offline"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sub_operator_id=row["sub_operator_id"],
    )


def _offline(row: asyncpg.Record) -> OfflineConfigRow:
    return OfflineConfigRow(
        charger_id=row["charger_id"],
        allow_offline=row["allow_offline"],
        state=row["state"],
        results=msgspec.json.decode(row["results"]),
        detail=row["detail"],
        updated_at=row["updated_at"],
    )


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


async def _notify(conn: asyncpg.Connection, payload: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", INSTALLATION_CHANNEL, payload)


async def mark_offline_pending(
    conn: asyncpg.Connection, charger_ids: Iterable[str], allow_offline: bool
) -> None:
    """Record, in the caller's transaction, that these chargers are to get the offline-charging
    configuration ``allow_offline``; the process holding each charger's connection pushes it
    and records the answer (``InstallationStore.record_offline_result``)."""
    await conn.execute(
        "INSERT INTO charger_offline_config (charger_id, allow_offline, state)"
        " SELECT unnest($1::text[]), $2, 'pending'"
        " ON CONFLICT (charger_id) DO UPDATE SET allow_offline = EXCLUDED.allow_offline,"
        " state = 'pending', results = '{}', detail = NULL, updated_at = now()",
        list(charger_ids),
        allow_offline,
    )


async def set_charger_installation(
    conn: asyncpg.Connection, charger_id: str, installation_id: int | None
) -> None:
    """After a charger moved into an installation (or out, with None), in the same
    transaction: notify the directories and mark its offline configuration to be pushed
    (the installation's choice, or off when it left)."""
    allow = False
    if installation_id is not None:
        allow = bool(
            await conn.fetchval(
                "SELECT allow_charging_when_offline FROM installations WHERE id = $1",
                installation_id,
            )
        )
    await mark_offline_pending(conn, [charger_id], allow)
    await _notify(conn, f"c:{charger_id}")


class InstallationStore:
    """Queries on ``installations``, ``charger_offline_config`` and ``auth_session_ends``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- installations -------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        authorization_mode: AuthorizationMode,
        webhook: dict[str, Any] | None,
        allow_charging_when_offline: bool,
    ) -> InstallationRow:
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO installations (name, authorization_mode, webhook,"
                f" allow_charging_when_offline) VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}",
                name,
                authorization_mode,
                _json(webhook),
                allow_charging_when_offline,
            )
            assert row is not None
            await _notify(conn, f"i:{row['id']}")
        return _installation(row)

    async def get(self, installation_id: int) -> InstallationRow:
        """Raises: NotFound."""
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM installations WHERE id = $1", installation_id
        )
        if row is None:
            raise NotFound(f"no installation {installation_id}")
        return _installation(row)

    async def all(self) -> list[InstallationRow]:
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM installations ORDER BY id")
        return [_installation(r) for r in rows]

    async def page(self, after: int | None = None, limit: int = 100) -> list[InstallationRow]:
        """Installations in id order, the ``limit`` first after id ``after``."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM installations WHERE $1::bigint IS NULL OR id > $1"
            " ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [_installation(r) for r in rows]

    async def replace(
        self,
        installation_id: int,
        name: str,
        authorization_mode: AuthorizationMode,
        webhook: dict[str, Any] | None,
        allow_charging_when_offline: bool,
    ) -> InstallationRow:
        """Store new settings; when the offline flag changes, every member charger is marked
        for a configuration push in the same transaction.

        Raises:
            NotFound: no such installation.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchval(
                "SELECT allow_charging_when_offline FROM installations WHERE id = $1 FOR UPDATE",
                installation_id,
            )
            if before is None:
                raise NotFound(f"no installation {installation_id}")
            row = await conn.fetchrow(
                "UPDATE installations SET name = $2, authorization_mode = $3, webhook = $4,"
                " allow_charging_when_offline = $5, updated_at = now()"
                f" WHERE id = $1 RETURNING {_COLUMNS}",
                installation_id,
                name,
                authorization_mode,
                _json(webhook),
                allow_charging_when_offline,
            )
            assert row is not None
            if before != allow_charging_when_offline:
                members = await conn.fetch(
                    "SELECT id FROM chargers WHERE installation_id = $1", installation_id
                )
                await mark_offline_pending(
                    conn, [m["id"] for m in members], allow_charging_when_offline
                )
            await _notify(conn, f"i:{installation_id}")
        return _installation(row)

    async def delete(self, installation_id: int) -> None:
        """Raises: NotFound; InUse when chargers still belong to it."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            try:
                status = await conn.execute(
                    "DELETE FROM installations WHERE id = $1", installation_id
                )
            except asyncpg.RestrictViolationError:  # chargers_installation_id_fkey
                count = await self.db.fetchval(
                    "SELECT count(*) FROM chargers WHERE installation_id = $1", installation_id
                )
                raise InUse(
                    f"installation {installation_id} still has {count} charger(s);"
                    " move them out first (PATCH /api/v1/chargers/{id} installationId null)"
                ) from None
            if status == "DELETE 0":
                raise NotFound(f"no installation {installation_id}")
            await _notify(conn, f"i:{installation_id}")

    # -- membership ----------------------------------------------------------------------------

    async def memberships(self, charger_id: str | None = None) -> dict[str, int | None]:
        """charger id → installation id, for every charger in an installation, or for the one
        charger named (None when it is in none; absent when it does not exist)."""
        rows = await self.db.fetch(
            "SELECT id, installation_id FROM chargers"
            " WHERE ($1::text IS NULL AND installation_id IS NOT NULL) OR id = $1",
            charger_id,
        )
        return {r["id"]: r["installation_id"] for r in rows}

    async def members(
        self, installation_id: int, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, OfflineConfigRow | None]]:
        """The installation's chargers in id order, each with its offline-config push row.

        Raises:
            NotFound: no such installation.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT true FROM installations WHERE id = $1", installation_id
            ):
                raise NotFound(f"no installation {installation_id}")
            rows = await conn.fetch(
                f"SELECT c.id, o.{_OFFLINE_COLUMNS.replace(', ', ', o.')}"
                " FROM chargers c LEFT JOIN charger_offline_config o ON o.charger_id = c.id"
                " WHERE c.installation_id = $1 AND ($2::text IS NULL OR c.id > $2)"
                " ORDER BY c.id LIMIT $3",
                installation_id,
                after,
                limit,
            )
        return [(r["id"], None if r["charger_id"] is None else _offline(r)) for r in rows]

    # -- offline configuration -----------------------------------------------------------------

    async def offline_unsettled(self) -> set[str]:
        """The chargers in no installation whose offline configuration waits for a push (they
        left one, and their charger has not applied the change yet)."""
        rows = await self.db.fetch(
            "SELECT o.charger_id FROM charger_offline_config o"
            " JOIN chargers c ON c.id = o.charger_id"
            " WHERE c.installation_id IS NULL AND o.state <> 'applied'"
        )
        return {r["charger_id"] for r in rows}

    async def offline_config(self, charger_id: str) -> OfflineConfigRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_OFFLINE_COLUMNS} FROM charger_offline_config WHERE charger_id = $1",
            charger_id,
        )
        return None if row is None else _offline(row)

    async def record_offline_result(
        self,
        charger_id: str,
        allow_offline: bool,
        state: OfflineState,
        results: dict[str, str],
        detail: str | None = None,
    ) -> None:
        """Store a push's outcome, unless the wanted value changed meanwhile (a newer push is
        pending then, and this answer is about the old value)."""
        await self.db.execute(
            "INSERT INTO charger_offline_config (charger_id, allow_offline, state, results,"
            " detail) SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM chargers WHERE id = $1)"
            " ON CONFLICT (charger_id) DO UPDATE SET state = EXCLUDED.state,"
            " results = EXCLUDED.results, detail = EXCLUDED.detail, updated_at = now()"
            " WHERE charger_offline_config.allow_offline = EXCLUDED.allow_offline",
            charger_id,
            allow_offline,
            state,
            msgspec.json.encode(results).decode(),
            detail,
        )

    # -- session-end outbox --------------------------------------------------------------------

    async def enqueue_session_end(self, installation_id: int, payload: bytes) -> None:
        """Add a session end by hand (tools, tests). Stops enter the outbox by themselves: a
        trigger on ``transactions`` adds the row in the stop's transaction (0005_auth.sql)."""
        await self.db.execute(
            "INSERT INTO auth_session_ends (installation_id, payload) VALUES ($1, $2)",
            installation_id,
            payload.decode(),
        )

    async def claim_session_ends(self, limit: int, lease_seconds: float) -> list[SessionEndRow]:
        """Take up to ``limit`` due rows, oldest first, leasing them for ``lease_seconds``: no
        other process takes them meanwhile, and a process that dies leaves them to the next."""
        rows = await self.db.fetch(
            "UPDATE auth_session_ends SET attempts = attempts + 1,"
            " next_attempt_at = now() + make_interval(secs => $2)"
            " WHERE id IN (SELECT id FROM auth_session_ends WHERE next_attempt_at <= now()"
            " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, installation_id, payload, attempts",
            limit,
            lease_seconds,
        )
        return sorted(
            (
                SessionEndRow(
                    id=r["id"],
                    installation_id=r["installation_id"],
                    payload=r["payload"].encode(),
                    attempts=r["attempts"],
                )
                for r in rows
            ),
            key=lambda r: r.id,
        )

    async def session_end_delivered(self, row_id: int) -> None:
        await self.db.execute("DELETE FROM auth_session_ends WHERE id = $1", row_id)

    async def session_end_failed(self, row_id: int, retry_in: float, error: str) -> None:
        await self.db.execute(
            "UPDATE auth_session_ends SET next_attempt_at = now() + make_interval(secs => $2),"
            " last_error = $3 WHERE id = $1",
            row_id,
            retry_in,
            error[:500],
        )

    async def next_session_end_due(self) -> float | None:
        """Seconds until the earliest row is due (0 when one is due now); None when empty."""
        # (Not greatest(0, ...) in SQL: greatest ignores NULL, so an empty outbox would read
        # as "due now" and the sender would spin.)
        value = await self.db.fetchval(
            "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM auth_session_ends"
        )
        return None if value is None else max(0.0, float(value))

    async def pending_session_ends(
        self, installation_id: int, after: int | None = None, limit: int = 100
    ) -> list[PendingSessionEnd]:
        """The installation's undelivered session ends, oldest first (for the API)."""
        rows = await self.db.fetch(
            "SELECT id, payload, attempts, next_attempt_at, last_error, created_at"
            " FROM auth_session_ends WHERE installation_id = $1"
            " AND ($2::bigint IS NULL OR id > $2) ORDER BY id LIMIT $3",
            installation_id,
            after,
            limit,
        )
        return [
            PendingSessionEnd(
                id=r["id"],
                payload=msgspec.json.decode(r["payload"]),
                attempts=r["attempts"],
                next_attempt_at=r["next_attempt_at"],
                last_error=r["last_error"],
                created_at=r["created_at"],
            )
            for r in rows
        ]
