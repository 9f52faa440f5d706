"""storage room: circuits (breakers in a tree) and the chargers in them (issue 18).

Every change of a circuit appends circuit.changed to the outbox in its transaction; every
change of a circuit or of a charger's membership sends ``NOTIFY evgate_circuit`` in the same
transaction, so that each process's smart-charging engine reloads the trees
(``handlers/smart_charging.py``). Currents are amperes per phase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import msgspec

from evgate.events.builders import circuit_changed
from evgate.storage.db import Database
from evgate.storage.errors import BadReference, InUse, NotFound
from evgate.storage.outbox import About, insert_outbox

__all__ = [
    "CIRCUIT_CHANNEL",
    "ENGINE_STACK_LEVEL",
    "Allocation",
    "Circuit",
    "CircuitLive",
    "CircuitStore",
    "Member",
    "OpenTransaction",
    "PhaseLoad",
    "PhaseRotation",
    "PushRecord",
    "Topology",
]

#: The stack level of the load-management engine's TxProfiles and TxDefaultProfiles. The
#: operator's profiles may not use it, nor (on a charger in a circuit) a higher one for those
#: purposes: the higher level would override the engine's limit.
ENGINE_STACK_LEVEL = 50

#: NOTIFY channel of circuit and membership changes (payload: the circuit id, or '').
CIRCUIT_CHANNEL = "evgate_circuit"

#: Which circuit phases a charger's L1, L2, L3 are wired to (OCPP's ConnectorPhaseRotation
#: letters, R S T = the circuit's L1 L2 L3), or the one phase of a single-phase charger.
PhaseRotation = Literal["RST", "RTS", "SRT", "STR", "TRS", "TSR", "R", "S", "T"]


class Circuit(msgspec.Struct, rename="camel", kw_only=True):
    """A circuit as the API shows it."""

    id: int
    name: str
    max_current: float
    phases: int
    parent_circuit_id: int | None
    min_charge_point_current: float
    offline_reserved_current: float
    created_at: datetime
    updated_at: datetime
    # The sub-operator that owns it (null: the operator's own).
    sub_operator_id: int | None = None


class Member(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """A charger in a circuit."""

    charger_id: str
    circuit_id: int
    max_current: float
    phase_rotation: PhaseRotation


class Allocation(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """A transaction's current limit as the engine last decided it (amperes)."""

    charger_id: str
    connector_id: int
    transaction_id: int
    limit: float


class PhaseLoad(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """The measured current on one phase of a circuit (its chargers' and sub-circuits')."""

    phase: Literal["L1", "L2", "L3"]
    current: float
    last_updated_at: datetime | None = None


class CircuitLive(msgspec.Struct, kw_only=True, frozen=True):
    """What the engine of this process knows of a circuit now."""

    allocations: list[Allocation]
    consumption: list[PhaseLoad]


class OpenTransaction(msgspec.Struct, kw_only=True, frozen=True):
    """An open transaction of a charger in a circuit (the engine's start-up view)."""

    transaction_id: int
    charger_id: str
    connector_id: int


class PushRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A SetChargingProfile the engine sent, and what came of it."""

    charger_id: str
    connector_id: int
    transaction_id: int | None
    purpose: str
    stack_level: int
    limit_amps: float
    outcome: Literal["accepted", "rejected", "unanswered"]
    sent_at: datetime


class Topology(msgspec.Struct, kw_only=True, frozen=True):
    """Every circuit and every membership: what the engine builds its trees from."""

    circuits: list[Circuit]
    members: list[Member]


_COLUMNS = (
    "id, name, max_current, phases, parent_circuit_id, min_charge_point_current,"
    " offline_reserved_current, created_at, updated_at, sub_operator_id"
)
_FIELDS = {
    "name",
    "max_current",
    "phases",
    "parent_circuit_id",
    "min_charge_point_current",
    "offline_reserved_current",
}


def _circuit(row: asyncpg.Record) -> Circuit:
    return Circuit(**{k: row[k] for k in Circuit.__struct_fields__})


async def _changed(conn: asyncpg.Connection, circuit_id: int, action: str) -> None:
    entry = circuit_changed(circuit_id, action, datetime.now(UTC))  # type: ignore[arg-type]
    await insert_outbox(conn, [entry], About("circuits", circuit_id))
    await conn.execute("SELECT pg_notify($1, $2)", CIRCUIT_CHANNEL, str(circuit_id))


async def _check_tree(conn: asyncpg.Connection, circuit_id: int) -> None:
    """Refuse a parent that is the circuit itself or below it, and a three-phase circuit fed
    by a one-phase one (either way round).

    Raises:
        BadReference: the tree would be wrong.
    """
    cycle = await conn.fetchval(
        "WITH RECURSIVE up(id, parent) AS ("
        " SELECT id, parent_circuit_id FROM circuits WHERE id = $1"
        " UNION SELECT c.id, c.parent_circuit_id FROM circuits c JOIN up ON c.id = up.parent)"
        " SELECT count(*) FROM up WHERE parent = $1",
        circuit_id,
    )
    if cycle:
        raise BadReference(f"circuit {circuit_id}: its parents would make a cycle")
    wrong = await conn.fetchval(
        "SELECT count(*) FROM circuits c JOIN circuits p ON p.id = c.parent_circuit_id"
        " WHERE (c.id = $1 OR p.id = $1) AND c.phases = 3 AND p.phases = 1",
        circuit_id,
    )
    if wrong:
        raise BadReference("a three-phase circuit cannot be fed by a one-phase one")


class CircuitStore:
    """Queries on ``circuits`` and ``circuit_chargers``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, **fields: object) -> Circuit:
        """Insert a circuit (``name``, ``max_current`` and any of the other columns).

        Raises:
            BadReference: no such parent, or a three-phase circuit under a one-phase one.
        """
        names = sorted(fields)
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE circuits IN SHARE ROW EXCLUSIVE MODE")
            try:
                row = await conn.fetchrow(
                    f"INSERT INTO circuits ({', '.join(names)}) VALUES"
                    f" ({', '.join(f'${i}' for i in range(1, len(names) + 1))})"
                    f" RETURNING {_COLUMNS}",
                    *(fields[n] for n in names),
                )
            except asyncpg.ForeignKeyViolationError:
                raise BadReference(f"no circuit {fields.get('parent_circuit_id')}") from None
            except asyncpg.CheckViolationError as e:
                raise BadReference(f"circuit refused: {e.constraint_name}") from None
            assert row is not None
            await _check_tree(conn, row["id"])
            await _changed(conn, row["id"], "created")
        return _circuit(row)

    async def get(self, circuit_id: int) -> Circuit:
        """Raises: NotFound."""
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM circuits WHERE id = $1", circuit_id)
        if row is None:
            raise NotFound(f"no circuit {circuit_id}")
        return _circuit(row)

    async def page(self, after: int | None = None, limit: int = 100) -> list[Circuit]:
        """Circuits in id order, the ``limit`` first after id ``after``."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM circuits WHERE $1::bigint IS NULL OR id > $1"
            " ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [_circuit(r) for r in rows]

    async def update(self, circuit_id: int, **fields: object) -> Circuit:
        """Set some of the circuit's columns.

        Raises:
            NotFound: no such circuit. BadReference: no such parent, a cycle, or the phases
            of a circuit and its parent do not fit.
        """
        unknown = set(fields) - _FIELDS
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        names = sorted(fields)
        sets = "".join(f"{n} = ${i}, " for i, n in enumerate(names, start=2))
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE circuits IN SHARE ROW EXCLUSIVE MODE")
            try:
                row = await conn.fetchrow(
                    f"UPDATE circuits SET {sets}updated_at = now() WHERE id = $1"
                    f" RETURNING {_COLUMNS}",
                    circuit_id,
                    *(fields[n] for n in names),
                )
            except asyncpg.ForeignKeyViolationError:
                raise BadReference(f"no circuit {fields.get('parent_circuit_id')}") from None
            except asyncpg.CheckViolationError as e:
                raise BadReference(f"circuit refused: {e.constraint_name}") from None
            if row is None:
                raise NotFound(f"no circuit {circuit_id}")
            await _check_tree(conn, circuit_id)
            await _changed(conn, circuit_id, "updated")
        return _circuit(row)

    async def delete(self, circuit_id: int) -> None:
        """Raises: NotFound. InUse: the circuit has chargers or sub-circuits."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT 1 FROM circuits WHERE id = $1 FOR UPDATE", circuit_id
            ):
                raise NotFound(f"no circuit {circuit_id}")
            await _changed(conn, circuit_id, "deleted")  # while it is there: its tenant's
            try:
                await conn.execute("DELETE FROM circuits WHERE id = $1", circuit_id)
            except (asyncpg.ForeignKeyViolationError, asyncpg.RestrictViolationError):
                raise InUse(f"circuit {circuit_id} has chargers or sub-circuits") from None

    async def members(self, circuit_id: int | None = None) -> list[Member]:
        """The chargers of one circuit, or of all, in charger id order."""
        rows = await self.db.fetch(
            "SELECT charger_id, circuit_id, max_current, phase_rotation FROM circuit_chargers"
            " WHERE $1::bigint IS NULL OR circuit_id = $1 ORDER BY charger_id",
            circuit_id,
        )
        return [Member(**dict(r)) for r in rows]

    async def member(self, charger_id: str) -> Member | None:
        row = await self.db.fetchrow(
            "SELECT charger_id, circuit_id, max_current, phase_rotation FROM circuit_chargers"
            " WHERE charger_id = $1",
            charger_id,
        )
        return None if row is None else Member(**dict(row))

    async def set_membership(
        self,
        charger_id: str,
        circuit_id: int | msgspec.UnsetType | None = msgspec.UNSET,
        max_current: float | msgspec.UnsetType = msgspec.UNSET,
        phase_rotation: str | msgspec.UnsetType = msgspec.UNSET,
    ) -> Member | None:
        """Put a charger in a circuit (``circuit_id``), take it out (None), or change its
        ``max_current`` or ``phase_rotation`` there (unset: kept). Joining without a
        ``max_current`` takes the circuit's.

        Raises:
            NotFound: no such charger. BadReference: no such circuit, or a change for a
            charger in no circuit.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT 1 FROM chargers WHERE id = $1", charger_id):
                raise NotFound(f"no charger {charger_id!r}")
            before = await conn.fetchrow(
                "SELECT circuit_id, max_current, phase_rotation FROM circuit_chargers"
                " WHERE charger_id = $1 FOR UPDATE",
                charger_id,
            )
            if circuit_id is None:
                await conn.execute("DELETE FROM circuit_chargers WHERE charger_id = $1", charger_id)
                if before is not None:
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", CIRCUIT_CHANNEL, str(before["circuit_id"])
                    )
                return None
            target = before["circuit_id"] if circuit_id is msgspec.UNSET and before else circuit_id
            if target is msgspec.UNSET:
                raise BadReference(f"charger {charger_id!r} is in no circuit: give circuitId")
            if max_current is msgspec.UNSET:
                max_current = (
                    before["max_current"]
                    if before is not None
                    else await conn.fetchval(
                        "SELECT max_current FROM circuits WHERE id = $1", target
                    )
                )
                if max_current is None:
                    raise BadReference(f"no circuit {target}")
            if phase_rotation is msgspec.UNSET:
                phase_rotation = before["phase_rotation"] if before is not None else "RST"
            try:
                row = await conn.fetchrow(
                    "INSERT INTO circuit_chargers (charger_id, circuit_id, max_current,"
                    " phase_rotation) VALUES ($1, $2, $3, $4) ON CONFLICT (charger_id) DO UPDATE"
                    " SET circuit_id = $2, max_current = $3, phase_rotation = $4"
                    " RETURNING charger_id, circuit_id, max_current, phase_rotation",
                    charger_id,
                    target,
                    max_current,
                    phase_rotation,
                )
            except asyncpg.ForeignKeyViolationError:
                raise BadReference(f"no circuit {target}") from None
            except asyncpg.CheckViolationError as e:
                raise BadReference(f"membership refused: {e.constraint_name}") from None
            await conn.execute("SELECT pg_notify($1, $2)", CIRCUIT_CHANNEL, str(target))
        return Member(**dict(row))

    async def topology(self) -> Topology:
        """Every circuit and membership, read in one snapshot."""
        async with self.db.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            circuits = [_circuit(r) for r in await conn.fetch(f"SELECT {_COLUMNS} FROM circuits")]
            rows = await conn.fetch(
                "SELECT charger_id, circuit_id, max_current, phase_rotation FROM circuit_chargers"
            )
        return Topology(circuits=circuits, members=[Member(**dict(r)) for r in rows])

    async def open_transactions(self) -> list[OpenTransaction]:
        """The open transactions of chargers in circuits, oldest first (the admission order)."""
        rows = await self.db.fetch(
            "SELECT t.id AS transaction_id, t.charger_id, t.connector_id FROM transactions t"
            " JOIN circuit_chargers m ON m.charger_id = t.charger_id"
            " WHERE t.stopped_at IS NULL ORDER BY t.started_at, t.id"
        )
        return [OpenTransaction(**dict(r)) for r in rows]

    async def still_open(self, transaction_ids: Iterable[int]) -> set[int]:
        """Which of ``transaction_ids`` are open (the engine's check after missed stop
        notifications); an id closed or not found is left out."""
        rows = await self.db.fetch(
            "SELECT id FROM transactions WHERE id = ANY($1::bigint[]) AND stopped_at IS NULL",
            list(transaction_ids),
        )
        return {r["id"] for r in rows}

    async def record_push(self, push: PushRecord, events: Iterable[Sequence[Any]]) -> None:
        """Keep a push's outcome, with its events (chargingProfile.applied), in one
        transaction."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO charging_profile_pushes (charger_id, connector_id, transaction_id,"
                " purpose, stack_level, limit_amps, outcome, sent_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                push.charger_id,
                push.connector_id,
                push.transaction_id,
                push.purpose,
                push.stack_level,
                push.limit_amps,
                push.outcome,
                push.sent_at,
            )
            await insert_outbox(conn, events)

    async def append_events(self, events: Mapping[int, Sequence[Any]]) -> None:
        """Append each circuit's event that describes no stored change (its consumption),
        stamped with the circuit's sub-operator."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            for circuit_id, entry in events.items():
                await insert_outbox(conn, [entry], About("circuits", circuit_id))
