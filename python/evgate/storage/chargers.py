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
    "BootInfo",
    "Charger",
    "ChargerCredentials",
    "ChargerFilter",
    "ChargerStore",
    "FleetCounts",
    "MissingCharger",
    "NetworkStatus",
    "RegistrationStatus",
    "SecretsImported",
]

RegistrationStatus = Literal["Accepted", "Pending", "Rejected"]
NetworkStatus = Literal["never connected", "available", "temporarily unavailable"]


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
    # Whether it is connected (to any evgate process), and since when (null: never connected).
    network_status: NetworkStatus = "never connected"
    network_status_at: datetime | None = None
    # The sub-operator that owns it (null: the operator's own).
    sub_operator_id: int | None = None


class BootInfo(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """What the charger said of itself in its last BootNotification, and the answer."""

    vendor: str
    model: str
    registration_status: str
    booted_at: datetime
    charge_point_serial_number: str | None = None
    charge_box_serial_number: str | None = None
    firmware_version: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    meter_type: str | None = None
    meter_serial_number: str | None = None


class ChargerFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which chargers a page lists (every field that is set must hold).

    Attributes:
        text: a part of the id or the description, case-insensitive.
        network_status: the charger's network status.
        connector_status: a status that one of its connectors (0 included) has.
        installation_id: the installation it belongs to.
    """

    text: str | None = None
    network_status: NetworkStatus | None = None
    connector_status: str | None = None
    installation_id: int | None = None


class FleetCounts(msgspec.Struct, kw_only=True, rename="camel"):
    """The fleet at a glance: chargers by network status, connectors (0 excluded: that is the
    charger itself) by status."""

    chargers: int
    network: dict[str, int]
    connectors: dict[str, int]


class MissingCharger(NotFound):
    """A charger named in a change of many does not exist.

    Attributes:
        charger_id: which.
    """

    def __init__(self, charger_id: str) -> None:
        super().__init__(f"no charger {charger_id!r}")
        self.charger_id = charger_id


class SecretsImported(msgspec.Struct, frozen=True):
    """What :meth:`ChargerStore.import_secrets` did: the chargers it made and those whose
    secret it replaced."""

    created: list[str]
    updated: list[str]


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
    " created_at, updated_at, network_status, network_status_at"
    ", location_id, tariff_group_id, sub_operator_id"
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

    async def ids(self) -> set[str]:
        """Every charger's id (a sub-operator's request: its own, by row-level security)."""
        return {r[0] for r in await self.db.fetch("SELECT id FROM chargers")}

    async def page(
        self, after: str | None = None, limit: int = 100, where: ChargerFilter | None = None
    ) -> list[Charger]:
        """Chargers in id order, the ``limit`` first after id ``after`` (keyset pagination)
        that ``where`` selects (in the primary key's order: a search that matches few chargers
        reads the table once per page, ~10 ms per 20,000 chargers: ``bench/dashboard.py``)."""
        where = where or ChargerFilter()
        # Only the conditions given, so that PostgreSQL plans each combination for what it is
        # (an index scan in id order for the plain list, at any depth).
        conditions: list[str] = []
        args: list[object] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if after is not None:
            conditions.append(f"id > {arg(after)}")
        if where.text:
            escaped = where.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = arg(f"%{escaped}%")
            conditions.append(f"(id ILIKE {pattern} OR description ILIKE {pattern})")
        if where.network_status is not None:
            conditions.append(f"network_status = {arg(where.network_status)}")
        if where.connector_status is not None:
            conditions.append(
                "EXISTS (SELECT 1 FROM connectors c WHERE c.charger_id = ch.id"
                f" AND c.status = {arg(where.connector_status)})"
            )
        if where.installation_id is not None:
            conditions.append(f"installation_id = {arg(where.installation_id)}")
        sql = f"SELECT {_COLUMNS} FROM chargers ch"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        rows = await self.db.fetch(f"{sql} ORDER BY id LIMIT {arg(limit)}", *args)
        return [_charger(r) for r in rows]

    async def boot_info(self, charger_id: str) -> BootInfo | None:
        """The charger's last BootNotification, or None if it never sent one."""
        row = await self.db.fetchrow(
            f"SELECT {', '.join(BootInfo.__struct_fields__)} FROM charger_boot_info"
            " WHERE charger_id = $1",
            charger_id,
        )
        return None if row is None else BootInfo(**dict(row.items()))

    async def counts(self) -> FleetCounts:
        """Chargers by network status and connectors by status, in one snapshot."""
        async with self.db.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            network = await conn.fetch(
                "SELECT network_status, count(*) FROM chargers GROUP BY network_status"
            )
            connectors = await conn.fetch(
                "SELECT status, count(*) FROM connectors c JOIN chargers ch ON ch.id = c.charger_id"
                " WHERE c.connector_id > 0 GROUP BY status"
            )
        by_network = {r[0]: r[1] for r in network}
        return FleetCounts(
            chargers=sum(by_network.values()),
            network=by_network,
            connectors={r[0]: r[1] for r in connectors},
        )

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

    async def import_secrets(
        self, digests: dict[str, bytes], create_missing: bool = False
    ) -> SecretsImported:
        """Set the secret digest of each charger of ``digests`` (id → digest), all or none: in
        one transaction, each with its NOTIFY. A charger that does not exist is made (security
        profile 1, with its chargePoint.changed ``created``) when ``create_missing``.

        Raises:
            MissingCharger: a charger does not exist (and ``create_missing`` is false);
                nothing changed.
        """
        created: list[str] = []
        updated: list[str] = []
        async with self.db.pool.acquire() as conn, conn.transaction():
            for charger_id, secret_digest in digests.items():
                status = await conn.execute(
                    "UPDATE chargers SET secret_digest = $2, updated_at = now() WHERE id = $1",
                    charger_id,
                    secret_digest,
                )
                if status != "UPDATE 0":
                    updated.append(charger_id)
                elif not create_missing:
                    raise MissingCharger(charger_id)
                else:
                    await conn.execute(
                        "INSERT INTO chargers (id, secret_digest) VALUES ($1, $2)",
                        charger_id,
                        secret_digest,
                    )
                    await record_charger_changed(conn, charger_id, "created")
                    created.append(charger_id)
                await conn.execute("SELECT pg_notify($1, $2)", CHARGER_CHANNEL, charger_id)
        return SecretsImported(created=created, updated=updated)

    async def delete(self, charger_id: str) -> None:
        """Raises: NotFound."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await record_charger_changed(conn, charger_id, "deleted")  # while it is there
            status = await conn.execute("DELETE FROM chargers WHERE id = $1", charger_id)
            if status == "DELETE 0":
                raise NotFound(f"no charger {charger_id!r}")
            await conn.execute("SELECT pg_notify($1, $2)", CHARGER_CHANNEL, charger_id)

    async def number_of(self, charger_id: str) -> int:
        """The charger's ``number`` (the notifications' ``chargePointId``).

        Raises:
            NotFound: no such charger.
        """
        number: int | None = await self.db.fetchval(
            "SELECT number FROM chargers WHERE id = $1", charger_id
        )
        if number is None:
            raise NotFound(f"no charger {charger_id!r}")
        return number

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
