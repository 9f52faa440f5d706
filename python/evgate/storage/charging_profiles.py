"""storage room: the operator's charging profiles (``charging_profiles``) — what each charger
was told through ``/api/v1/chargers/{id}/charging-profiles`` and what it answered — and the
load-management engine's latest profiles (``charging_profile_pushes``), listed beside them.

A stored profile appends chargingProfile.applied to the outbox in its transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from evgate.events.builders import AppliedProfile, ChargerRef, charging_profile_applied
from evgate.storage.db import Database
from evgate.storage.errors import NotFound
from evgate.storage.outbox import insert_outbox

__all__ = ["ChargingProfileStore", "StoredProfile"]


class StoredProfile(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """A charging profile a charger was sent: the operator's, or the engine's latest.

    Attributes:
        id: the chargingProfileId sent (the operator's start at 1000; the engine's are 100
            and 100 + connector).
        owner: ``operator`` (this API) or ``engine`` (load management).
        status: the charger's answer (``Accepted``, ``Rejected``, ``NotSupported``; for the
            engine's: ``accepted``, ``rejected``, ``unanswered``).
        profile: the csChargingProfiles sent, as OCPP JSON (the engine's: its limit only).
    """

    id: int
    charger_id: str
    connector_id: int
    purpose: str
    stack_level: int
    owner: Literal["operator", "engine"]
    status: str
    profile: dict[str, Any]
    created_at: datetime


class ChargingProfileStore:
    """Queries on ``charging_profiles`` (and the engine's ``charging_profile_pushes``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def next_id(self) -> int:
        """A chargingProfileId for a new profile of the operator's."""
        value = await self.db.fetchval(
            "SELECT nextval(pg_get_serial_sequence('charging_profiles', 'id'))"
        )
        return int(value)

    async def store(
        self,
        profile_id: int,
        charger_id: str,
        connector_id: int,
        profile: dict[str, Any],
        applied: AppliedProfile,
        status: str,
        transaction_id: int | None,
    ) -> StoredProfile:
        """Keep a profile the charger answered (replacing one of the same id, purpose and
        stack level on that connector, as the charger does), with chargingProfile.applied.

        Raises:
            NotFound: no such charger.
        """
        now = datetime.now(UTC)
        async with self.db.pool.acquire() as conn, conn.transaction():
            number = await conn.fetchval("SELECT number FROM chargers WHERE id = $1", charger_id)
            if number is None:
                raise NotFound(f"no charger {charger_id!r}")
            if status == "Accepted":
                await conn.execute(
                    "DELETE FROM charging_profiles WHERE charger_id = $1 AND (id = $2 OR"
                    " (connector_id = $3 AND purpose = $4 AND stack_level = $5))",
                    charger_id,
                    profile_id,
                    connector_id,
                    applied.purpose,
                    applied.stack_level,
                )
                await conn.execute(
                    "INSERT INTO charging_profiles (id, charger_id, connector_id, purpose,"
                    " stack_level, profile, status, created_at)"
                    " OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    profile_id,
                    charger_id,
                    connector_id,
                    applied.purpose,
                    applied.stack_level,
                    msgspec.json.encode(profile).decode(),
                    status,
                    now,
                )
            outcome: Literal["accepted", "rejected"] = (
                "accepted" if status == "Accepted" else "rejected"
            )
            entry = charging_profile_applied(
                ChargerRef(charger_id, number), connector_id, transaction_id, applied, outcome, now
            )
            await insert_outbox(conn, [entry])
        return StoredProfile(
            id=profile_id,
            charger_id=charger_id,
            connector_id=connector_id,
            purpose=applied.purpose,
            stack_level=applied.stack_level,
            owner="operator",
            status=status,
            profile=profile,
            created_at=now,
        )

    async def of_charger(self, charger_id: str) -> list[StoredProfile]:
        """The operator's profiles of a charger and the engine's latest per connector and
        purpose, by stack level then id."""
        rows = await self.db.fetch(
            "SELECT id, charger_id, connector_id, purpose, stack_level, 'operator' AS owner,"
            " status, profile::text AS profile, created_at FROM charging_profiles"
            " WHERE charger_id = $1"
            " UNION ALL SELECT * FROM (SELECT DISTINCT ON (connector_id, purpose)"
            " CASE WHEN connector_id = 0 THEN 100 ELSE 100 + connector_id END::bigint,"
            " charger_id, connector_id, purpose, stack_level, 'engine',"
            " outcome, json_build_object('limit', limit_amps, 'chargingRateUnit', 'A',"
            " 'transactionId', transaction_id)::text, answered_at"
            " FROM charging_profile_pushes WHERE charger_id = $1"
            " ORDER BY connector_id, purpose, id DESC) AS engine"
            " ORDER BY stack_level, id",
            charger_id,
        )
        return [
            StoredProfile(**{**dict(r), "profile": msgspec.json.decode(r["profile"])}) for r in rows
        ]

    async def get(self, charger_id: str, profile_id: int) -> StoredProfile:
        """One of the operator's profiles. Raises: NotFound."""
        for profile in await self.of_charger(charger_id):
            if profile.id == profile_id and profile.owner == "operator":
                return profile
        raise NotFound(f"charger {charger_id!r} has no charging profile {profile_id}")

    async def delete(self, charger_id: str, profile_id: int) -> None:
        """Forget a profile the charger cleared."""
        await self.db.execute(
            "DELETE FROM charging_profiles WHERE charger_id = $1 AND id = $2",
            charger_id,
            profile_id,
        )
