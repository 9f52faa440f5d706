"""storage room: the chargers registry.

Every change of a charger (created, updated, deleted) appends chargePoint.changed and
ChargePointChangedNotification to the outbox in its transaction (``storage/outbox.py``).
Every change to a charger's credentials or existence sends ``NOTIFY evgate_charger, '<id>'`` in
the same transaction, so every evgate process (this one included) refreshes its in-memory
credential index and drops a connection whose secret no longer holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from evgate.storage.db import CHARGER_CHANNEL, Database
from evgate.storage.errors import AlreadyExists, BadReference, NotFound
from evgate.storage.installations import set_charger_installation
from evgate.storage.locations import PRICING_CHANNEL, location_changed
from evgate.storage.outbox import record_charger_changed

__all__ = [
    "Charger",
    "ChargerCredentials",
    "ChargerStore",
    "RegistrationStatus",
]

RegistrationStatus = Literal["Accepted", "Pending", "Rejected"]


class Charger(msgspec.Struct, rename="camel", kw_only=True):
    """A charger as the registry holds it (never with its secret or digest)."""

    id: str
    description: str
    security_profile: int
    lenient: bool
    registration_status: RegistrationStatus
    # The installation it belongs to (its authorization mode), if any.
    installation_id: int | None
    # Where it stands and its own tariff group (which wins over its location's), if any.
    location_id: int | None = None
    tariff_group_id: int | None = None
    created_at: datetime
    updated_at: datetime


class ChargerCredentials(msgspec.Struct, frozen=True):
    """What the gateway's upgrade check needs of a charger, and its ``number`` (the
    notifications' ``chargePointId``), which the handlers get through the connection."""

    id: str
    secret_digest: bytes
    security_profile: int
    lenient: bool
    number: int = 0


_COLUMNS = (
    "id, description, security_profile, lenient, registration_status, installation_id,"
    " created_at, updated_at"
    ", location_id, tariff_group_id"
)


# A foreign key's constraint → the column it checks (a PATCH's bad reference says which).
_REFERENCES = {
    "chargers_installation_id_fkey": "installation_id",
    "chargers_location_id_fkey": "location_id",
    "chargers_tariff_group_id_fkey": "tariff_group_id",
}


def _charger(row: asyncpg.Record) -> Charger:
    return Charger(**{k: row[k] for k in Charger.__struct_fields__})


class ChargerStore:
    """Queries on the ``chargers`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        charger_id: str,
        secret_digest: bytes,
        description: str = "",
        security_profile: int = 1,
        lenient: bool = False,
    ) -> Charger:
        """Insert a charger.

        Raises:
            AlreadyExists: a charger with that id exists.
        """
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"INSERT INTO chargers (id, description, secret_digest, security_profile,"
                    f" lenient) VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
                    charger_id,
                    description,
                    secret_digest,
                    security_profile,
                    lenient,
                )
                await conn.execute("SELECT pg_notify($1, $2)", CHARGER_CHANNEL, charger_id)
                await record_charger_changed(conn, charger_id, "created")
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"charger {charger_id!r} exists already") from None
        assert row is not None
        return _charger(row)

    async def get(self, charger_id: str) -> Charger:
        """Raises: NotFound."""
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM chargers WHERE id = $1", charger_id)
        if row is None:
            raise NotFound(f"no charger {charger_id!r}")
        return _charger(row)

    async def page(self, after: str | None = None, limit: int = 100) -> list[Charger]:
        """Chargers in id order, the ``limit`` first after id ``after`` (keyset pagination)."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM chargers WHERE $1::text IS NULL OR id > $1"
            " ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [_charger(r) for r in rows]

    async def update(self, charger_id: str, **fields: object) -> Charger:
        """Set some of: description, security_profile, lenient, registration_status,
        installation_id (which also notifies the authorizer directories).

        Raises:
            NotFound: no such charger. BadReference: no such installation.
        """
        allowed = {
            "description",
            "security_profile",
            "lenient",
            "registration_status",
            "installation_id",
            "location_id",
            "tariff_group_id",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        names = sorted(fields)
        sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=2))
        async with self.db.pool.acquire() as conn, conn.transaction():
            installation_before = await conn.fetchval(
                "SELECT installation_id FROM chargers WHERE id = $1 FOR UPDATE", charger_id
            )
            # A move changes the chargers of the locations it leaves and joins (their events).
            location_before = (
                await conn.fetchval("SELECT location_id FROM chargers WHERE id = $1", charger_id)
                if "location_id" in fields
                else None
            )
            try:
                row = await conn.fetchrow(
                    f"UPDATE chargers SET {sets}{', ' if sets else ''}updated_at = now()"
                    f" WHERE id = $1 RETURNING {_COLUMNS}",
                    charger_id,
                    *(fields[n] for n in names),
                )
            except asyncpg.ForeignKeyViolationError as exc:
                column = _REFERENCES.get(exc.constraint_name or "", "installation_id")
                raise BadReference(
                    f"no {column[:-3].replace('_', ' ')} {fields.get(column)}"
                ) from None
            if row is None:
                raise NotFound(f"no charger {charger_id!r}")
            if {"security_profile", "lenient"} & set(names):
                await conn.execute("SELECT pg_notify($1, $2)", CHARGER_CHANNEL, charger_id)
            if row["installation_id"] != installation_before:
                await set_charger_installation(conn, charger_id, row["installation_id"])
            if {"location_id", "tariff_group_id"} & set(names):
                await conn.execute("SELECT pg_notify($1, '*')", PRICING_CHANNEL)
            if "location_id" in fields and row["location_id"] != location_before:
                for moved in sorted({location_before, row["location_id"]} - {None}):
                    await location_changed(conn, moved, "updated")
            await record_charger_changed(conn, charger_id, "updated")
        return _charger(row)

    async def set_secret_digest(self, charger_id: str, secret_digest: bytes) -> None:
        """Replace the charger's secret (rotation, or an accepted AuthorizationKey change).

        Raises:
            NotFound: no such charger.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE chargers SET secret_digest = $2, updated_at = now() WHERE id = $1",
                charger_id,
                secret_digest,
            )
            if status == "UPDATE 0":
                raise NotFound(f"no charger {charger_id!r}")
            await conn.execute("SELECT pg_notify($1, $2)", CHARGER_CHANNEL, charger_id)

    async def delete(self, charger_id: str) -> None:
        """Raises: NotFound."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await record_charger_changed(conn, charger_id, "deleted")  # while it is there
            status = await conn.execute("DELETE FROM chargers WHERE id = $1", charger_id)
            if status == "DELETE 0":
                raise NotFound(f"no charger {charger_id!r}")
            await conn.execute("SELECT pg_notify($1, $2)", CHARGER_CHANNEL, charger_id)

    async def credentials(self, charger_id: str | None = None) -> list[ChargerCredentials]:
        """The credentials of one charger (a list of 0 or 1) or, with no id, of all."""
        rows = await self.db.fetch(
            "SELECT id, secret_digest, security_profile, lenient, number FROM chargers"
            " WHERE $1::text IS NULL OR id = $1",
            charger_id,
        )
        return [
            ChargerCredentials(
                r["id"], bytes(r["secret_digest"]), r["security_profile"], r["lenient"], r["number"]
            )
            for r in rows
        ]
