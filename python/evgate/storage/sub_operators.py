"""storage room: sub-operators, the tenants inside an operator (issue 20).

A sub-operator owns chargers, locations, circuits, tariffs, tariff groups, installations and id
tags (their ``sub_operator_id``, migration 0020); it cannot be deleted while it owns one (the
foreign keys are RESTRICT: :class:`InUse`), and its API tokens and notification subscriptions
go with it (CASCADE). Names are unique case-insensitively. Creation and deletion append
SubOperatorChangedNotification in their transaction, its outbox row stamped with the
sub-operator (``outbox.sub_operator_id``), so that the tenant's own subscriptions may receive
it. A request acting for a tenant sees its own row only (row-level security).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, get_args

import asyncpg
import msgspec

from evgate.events.builders import sub_operator_changed
from evgate.storage.db import Database
from evgate.storage.errors import AlreadyExists, BadReference, InUse, NotFound
from evgate.storage.outbox import About, insert_outbox

__all__ = ["Owned", "SubOperator", "SubOperatorStore"]

#: The tables of what a sub-operator may own.
Owned = Literal[
    "chargers", "locations", "circuits", "tariffs", "tariff_groups", "installations", "id_tags"
]
# Each one's row by its key ($1), and what its NotFound calls it.
_ROW_OF: dict[str, tuple[str, str]] = {
    "chargers": ("id = $1", "charger"),
    "locations": ("id = $1", "location"),
    "circuits": ("id = $1", "circuit"),
    "tariffs": ("id = $1", "tariff"),
    "tariff_groups": ("id = $1", "tariff group"),
    "installations": ("id = $1", "installation"),
    "id_tags": ("upper(id_tag) = upper($1)", "id-tag"),
}
assert set(_ROW_OF) == set(get_args(Owned))

_COLUMNS = "id, name, created_at, updated_at"


class SubOperator(msgspec.Struct, rename="camel", kw_only=True):
    """A tenant: a reseller or a site owner inside the operator."""

    id: int
    name: str
    created_at: datetime
    updated_at: datetime


def _sub_operator(row: asyncpg.Record) -> SubOperator:
    return SubOperator(**{k: row[k] for k in SubOperator.__struct_fields__})


async def _record(
    conn: asyncpg.Connection, sub_operator_id: int, action: Literal["created", "deleted"]
) -> None:
    # Stamped with the sub-operator itself (its row must still be there: a deletion is
    # recorded before its DELETE), so that the event is the tenant's as well as the operator's.
    entry = sub_operator_changed(sub_operator_id, action, datetime.now(UTC))
    await insert_outbox(conn, [entry], About("sub_operators", sub_operator_id))


class SubOperatorStore:
    """``/api/v1/sub-operators``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, name: str) -> SubOperator:
        """Add a sub-operator.

        Raises:
            AlreadyExists: one has that name (compared case-insensitively).
        """
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"INSERT INTO sub_operators (name) VALUES ($1) RETURNING {_COLUMNS}", name
                )
                created = _sub_operator(row)
                await _record(conn, created.id, "created")
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a sub-operator is named {name!r} already") from None
        return created

    async def get(self, sub_operator_id: int) -> SubOperator:
        """Raises: NotFound."""
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM sub_operators WHERE id = $1", sub_operator_id
        )
        if row is None:
            raise NotFound(f"no sub-operator {sub_operator_id}")
        return _sub_operator(row)

    async def page(self, after: int | None = None, limit: int = 100) -> list[SubOperator]:
        """Sub-operators in id order (keyset pagination)."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM sub_operators WHERE $1::bigint IS NULL OR id > $1"
            " ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [_sub_operator(r) for r in rows]

    async def rename(self, sub_operator_id: int, name: str) -> SubOperator:
        """Change a sub-operator's name (no event: the catalog's has no ``updated``).

        Raises:
            NotFound: no such sub-operator.
            AlreadyExists: another has that name.
        """
        try:
            row = await self.db.fetchrow(
                "UPDATE sub_operators SET name = $2, updated_at = now() WHERE id = $1"
                f" RETURNING {_COLUMNS}",
                sub_operator_id,
                name,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a sub-operator is named {name!r} already") from None
        if row is None:
            raise NotFound(f"no sub-operator {sub_operator_id}")
        return _sub_operator(row)

    async def delete(self, sub_operator_id: int) -> None:
        """Remove a sub-operator with its API tokens and subscriptions.

        Raises:
            NotFound: no such sub-operator.
            InUse: it still owns chargers, locations, circuits, tariffs, tariff groups,
                installations or id tags (move or delete them first).
        """
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                await _record(conn, sub_operator_id, "deleted")
                done = await conn.fetchval(
                    "DELETE FROM sub_operators WHERE id = $1 RETURNING id", sub_operator_id
                )
                if done is None:  # the transaction, and its event, are rolled back
                    raise NotFound(f"no sub-operator {sub_operator_id}")
        except (asyncpg.ForeignKeyViolationError, asyncpg.RestrictViolationError) as exc:
            owned = (exc.table_name or "resources").replace("_", " ")
            raise InUse(
                f"sub-operator {sub_operator_id} still owns {owned}; move or delete them first"
            ) from None

    async def assign(self, table: Owned, key: str | int, sub_operator_id: int | None) -> None:
        """Give a resource to a sub-operator (None: to the operator). Its rows (a charger's
        transactions...) follow it: row-level security reaches them through it.

        Raises:
            NotFound: no such resource (to the acting tenant: none of its own).
            BadReference: no such sub-operator.
            NotPermitted: a request acting for a tenant gave its resource away (row-level
                security refuses the row).
        """
        where, noun = _ROW_OF[table]
        try:
            status = await self.db.execute(
                f"UPDATE {table} SET sub_operator_id = $2, updated_at = now() WHERE {where}",
                key,
                sub_operator_id,
            )
        except asyncpg.ForeignKeyViolationError:
            raise BadReference(f"no sub-operator {sub_operator_id}") from None
        if status == "UPDATE 0":
            raise NotFound(f"no {noun} {key!r}")
