"""storage room: tariffs and tariff groups (issue 19).

A tariff's terms are the pricing room's :class:`~evgate.pricing.Tariff`, stored as JSON with its
currency beside them. A tariff group is an ordered list of tariffs with restrictions (the
pricing room's :class:`~evgate.pricing.GroupEntry`), all of one currency (else
:class:`~evgate.pricing.TariffInvalid`, a 422); ``tariff_group_tariffs`` keeps a tariff in a
group from being deleted (:class:`InUse`, a 409). Every change of a tariff appends
TariffChangedNotification to the outbox in its transaction; every change of either sends
``NOTIFY evgate_pricing`` (see ``storage/pricing.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from evgate.pricing import GroupEntry, Tariff, TariffInvalid, check_group, check_tariff
from evgate.storage.db import Database
from evgate.storage.errors import BadReference, InUse, NotFound
from evgate.storage.locations import PRICING_CHANNEL
from evgate.storage.outbox import record_tariff_changed

__all__ = ["StoredTariff", "TariffGroup", "TariffStore"]


class StoredTariff(Tariff, frozen=True, kw_only=True):
    """A tariff as the API shows it."""

    id: int
    created_at: datetime
    updated_at: datetime
    # The sub-operator that owns it (null: the operator's own).
    sub_operator_id: int | None = None


class TariffGroup(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A tariff group as the API shows it: its tariffs in order, and their one currency."""

    id: int
    name: str
    currency: str | None
    tariffs: tuple[GroupEntry, ...]
    created_at: datetime
    updated_at: datetime
    # The sub-operator that owns it (null: the operator's own).
    sub_operator_id: int | None = None


_decode_tariff = msgspec.json.Decoder(Tariff).decode
_decode_entries = msgspec.json.Decoder(tuple[GroupEntry, ...]).decode


def _tariff(row: asyncpg.Record) -> StoredTariff:
    terms = _decode_tariff(row["terms"])
    return StoredTariff(
        **msgspec.structs.asdict(terms),
        id=row["id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sub_operator_id=row["sub_operator_id"],
    )


def _group(row: asyncpg.Record) -> TariffGroup:
    return TariffGroup(
        id=row["id"],
        name=row["name"],
        currency=row["currency"],
        tariffs=_decode_entries(row["entries"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sub_operator_id=row["sub_operator_id"],
    )


_TARIFF = "SELECT id, terms, created_at, updated_at, sub_operator_id FROM tariffs"
_GROUP = (
    "SELECT id, name, currency, entries, created_at, updated_at, sub_operator_id FROM tariff_groups"
)


def _terms(tariff: Tariff) -> Tariff:
    """The terms alone (a StoredTariff's id and times are not stored in them)."""
    return Tariff(**{f: getattr(tariff, f) for f in Tariff.__struct_fields__})


async def _notify(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_notify($1, '*')", PRICING_CHANNEL)


class TariffStore:
    """Queries on ``tariffs`` and ``tariff_groups``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- tariffs --------------------------------------------------------------------------

    async def create_tariff(self, tariff: Tariff) -> StoredTariff:
        """Raises: TariffInvalid."""
        check_tariff(tariff)
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO tariffs (currency, terms) VALUES ($1, $2)"
                " RETURNING id, terms, created_at, updated_at, sub_operator_id",
                tariff.currency,
                msgspec.json.encode(_terms(tariff)).decode(),
            )
            assert row is not None
            stored = _tariff(row)
            await record_tariff_changed(conn, stored, "created")
            await _notify(conn)
        return stored

    async def get_tariff(self, tariff_id: int) -> StoredTariff:
        """Raises: NotFound."""
        row = await self.db.fetchrow(_TARIFF + " WHERE id = $1", tariff_id)
        if row is None:
            raise NotFound(f"no tariff {tariff_id}")
        return _tariff(row)

    async def tariffs(self, after: int | None = None, limit: int = 100) -> list[StoredTariff]:
        """Tariffs in id order, the ``limit`` first after ``after``."""
        rows = await self.db.fetch(
            _TARIFF + " WHERE $1::int8 IS NULL OR id > $1 ORDER BY id LIMIT $2", after, limit
        )
        return [_tariff(r) for r in rows]

    async def update_tariff(self, tariff_id: int, **fields: object) -> StoredTariff:
        """Set some of a tariff's terms (by attribute name).

        Raises:
            NotFound: no such tariff. TariffInvalid: the terms are invalid, or the new currency
            is not that of a group the tariff is in.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_TARIFF + " WHERE id = $1 FOR UPDATE", tariff_id)
            if row is None:
                raise NotFound(f"no tariff {tariff_id}")
            tariff = msgspec.structs.replace(_decode_tariff(row["terms"]), **fields)
            check_tariff(tariff)
            others = await conn.fetchval(
                "SELECT count(*) FROM tariff_group_tariffs m JOIN tariffs t ON t.id = m.tariff_id"
                " WHERE m.group_id IN (SELECT group_id FROM tariff_group_tariffs"
                " WHERE tariff_id = $1) AND t.id <> $1 AND t.currency <> $2",
                tariff_id,
                tariff.currency,
            )
            if others:
                raise TariffInvalid(f"tariff {tariff_id} is in a group of another currency")
            # The groups it is in (of this currency now, by the check above) follow it.
            await conn.execute(
                "UPDATE tariff_groups SET currency = $2 WHERE id IN"
                " (SELECT group_id FROM tariff_group_tariffs WHERE tariff_id = $1)",
                tariff_id,
                tariff.currency,
            )
            row = await conn.fetchrow(
                "UPDATE tariffs SET currency = $2, terms = $3, updated_at = now() WHERE id = $1"
                " RETURNING id, terms, created_at, updated_at, sub_operator_id",
                tariff_id,
                tariff.currency,
                msgspec.json.encode(tariff).decode(),
            )
            assert row is not None
            stored = _tariff(row)
            await record_tariff_changed(conn, stored, "updated")
            await _notify(conn)
        return stored

    async def delete_tariff(self, tariff_id: int) -> None:
        """Raises: NotFound. InUse: a tariff group names it."""
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_TARIFF + " WHERE id = $1 FOR UPDATE", tariff_id)
                if row is None:
                    raise NotFound(f"no tariff {tariff_id}")
                await record_tariff_changed(conn, _tariff(row), "deleted")  # while it is there
                await conn.execute("DELETE FROM tariffs WHERE id = $1", tariff_id)
                await _notify(conn)
        except (asyncpg.ForeignKeyViolationError, asyncpg.RestrictViolationError):
            raise InUse(f"tariff {tariff_id} is in a tariff group; take it out first") from None

    # -- groups ---------------------------------------------------------------------------

    async def _set_entries(
        self, conn: asyncpg.Connection, group_id: int, entries: Sequence[GroupEntry]
    ) -> str | None:
        """Check and store which tariffs group ``group_id`` names; returns their currency."""
        ids = sorted({e.tariff_id for e in entries})
        rows = await conn.fetch(
            "SELECT id, currency FROM tariffs WHERE id = ANY($1::int8[]) FOR SHARE", ids
        )
        try:
            currency = check_group({r[0]: r[1] for r in rows}, entries)
        except KeyError as missing:
            raise BadReference(f"no tariff {missing.args[0]}") from None
        await conn.execute("DELETE FROM tariff_group_tariffs WHERE group_id = $1", group_id)
        await conn.executemany(
            "INSERT INTO tariff_group_tariffs (group_id, tariff_id) VALUES ($1, $2)",
            [(group_id, i) for i in ids],
        )
        return currency

    async def create_group(self, name: str, entries: Sequence[GroupEntry]) -> TariffGroup:
        """Raises: BadReference: no such tariff. TariffInvalid: tariffs of two currencies."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            group_id = await conn.fetchval(
                "INSERT INTO tariff_groups (name, entries) VALUES ($1, $2) RETURNING id",
                name,
                msgspec.json.encode(tuple(entries)).decode(),
            )
            currency = await self._set_entries(conn, group_id, entries)
            row = await conn.fetchrow(
                "UPDATE tariff_groups SET currency = $2 WHERE id = $1"
                " RETURNING id, name, currency, entries, created_at, updated_at,"
                " sub_operator_id",
                group_id,
                currency,
            )
            await _notify(conn)
        return _group(row)

    async def get_group(self, group_id: int) -> TariffGroup:
        """Raises: NotFound."""
        row = await self.db.fetchrow(_GROUP + " WHERE id = $1", group_id)
        if row is None:
            raise NotFound(f"no tariff group {group_id}")
        return _group(row)

    async def groups(self, after: int | None = None, limit: int = 100) -> list[TariffGroup]:
        """Tariff groups in id order, the ``limit`` first after ``after``."""
        rows = await self.db.fetch(
            _GROUP + " WHERE $1::int8 IS NULL OR id > $1 ORDER BY id LIMIT $2", after, limit
        )
        return [_group(r) for r in rows]

    async def update_group(
        self, group_id: int, name: str | None = None, entries: Sequence[GroupEntry] | None = None
    ) -> TariffGroup:
        """Rename a group and/or replace its tariffs.

        Raises:
            NotFound: no such group. BadReference: no such tariff. TariffInvalid: tariffs of
            two currencies.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_GROUP + " WHERE id = $1 FOR UPDATE", group_id)
            if row is None:
                raise NotFound(f"no tariff group {group_id}")
            currency = row["currency"]
            if entries is not None:
                currency = await self._set_entries(conn, group_id, entries)
            row = await conn.fetchrow(
                "UPDATE tariff_groups SET name = coalesce($2, name),"
                " entries = coalesce($3::jsonb, entries), currency = $4, updated_at = now()"
                " WHERE id = $1 RETURNING id, name, currency, entries, created_at, updated_at,"
                " sub_operator_id",
                group_id,
                name,
                None if entries is None else msgspec.json.encode(tuple(entries)).decode(),
                currency,
            )
            await _notify(conn)
        return _group(row)

    async def delete_group(self, group_id: int) -> None:
        """Raises: NotFound. InUse: a location or a charger has it."""
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                status = await conn.execute("DELETE FROM tariff_groups WHERE id = $1", group_id)
                if status == "DELETE 0":
                    raise NotFound(f"no tariff group {group_id}")
                await _notify(conn)
        except (asyncpg.ForeignKeyViolationError, asyncpg.RestrictViolationError):
            raise InUse(
                f"tariff group {group_id} is a location's or a charger's; unassign it first"
            ) from None
