"""storage room: the operator's id-tag list.

OCPP id-tags are case-insensitive (CiString20): ``04a1`` and ``04A1`` are one id-tag, stored as
first written. An id-tag may belong to a user (``user_id``; the user's status and prepaid
balance then count too, see ``auth/native.py``). Every change sends
``NOTIFY evgate_id_tag, '<json>'`` in its transaction, the payload being the id-tag as it is
now (``{"idTag": ..., "deleted": true}`` once deleted), so every process's native authorizer
applies it without a query; and appends idTag.changed to the outbox in the same transaction
(``idTagsId``: the id-tag's ``number``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import AlreadyExists, BadReference, NotFound
from evgate.storage.outbox import record_id_tag_changed

__all__ = ["ID_TAG_CHANNEL", "IdTag", "IdTagChange", "IdTagStatus", "IdTagStore"]

ID_TAG_CHANNEL = "evgate_id_tag"

IdTagStatus = Literal["Accepted", "Blocked", "Expired", "Invalid"]


class IdTag(msgspec.Struct, rename="camel", kw_only=True):
    """An id-tag of the list."""

    id_tag: str
    status: IdTagStatus
    expiry_date: datetime | None
    parent_id_tag: str | None
    user_id: int | None = None
    created_at: datetime
    updated_at: datetime
    # The sub-operator that owns it (null: the operator's own).
    sub_operator_id: int | None = None


class IdTagChange(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    """The NOTIFY payload of a change: the id-tag as it is now, or deleted."""

    id_tag: str
    status: IdTagStatus = "Invalid"
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None
    user_id: int | None = None
    # The sub-operator that owns it (absent: the operator): which tariffs' restrictions on
    # who charges it may match (``pricing.GroupEntry``).
    sub_operator_id: int | None = None
    deleted: bool = False


_COLUMNS = (
    "id_tag, status, expiry_date, parent_id_tag, user_id, created_at, updated_at, sub_operator_id"
)


def _id_tag(row: asyncpg.Record) -> IdTag:
    return IdTag(**{k: row[k] for k in IdTag.__struct_fields__})


def _change(tag: IdTag) -> str:
    return msgspec.json.encode(
        IdTagChange(
            id_tag=tag.id_tag,
            status=tag.status,
            expiry_date=tag.expiry_date,
            parent_id_tag=tag.parent_id_tag,
            user_id=tag.user_id,
            sub_operator_id=tag.sub_operator_id,
        )
    ).decode()


class IdTagStore:
    """Queries on ``id_tags``; every change notifies ``evgate_id_tag``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        id_tag: str,
        status: IdTagStatus = "Accepted",
        expiry_date: datetime | None = None,
        parent_id_tag: str | None = None,
        user_id: int | None = None,
    ) -> IdTag:
        """Raises:
        AlreadyExists: the id-tag exists (compared case-insensitively).
        BadReference: no user ``user_id``.
        """
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "INSERT INTO id_tags (id_tag, status, expiry_date, parent_id_tag, user_id)"
                    f" VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}, number",
                    id_tag,
                    status,
                    expiry_date,
                    parent_id_tag,
                    user_id,
                )
                assert row is not None
                tag = _id_tag(row)
                await conn.execute("SELECT pg_notify($1, $2)", ID_TAG_CHANNEL, _change(tag))
                await record_id_tag_changed(conn, row["number"], "created")
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"id-tag {id_tag!r} exists already") from None
        except asyncpg.ForeignKeyViolationError:
            raise BadReference(f"no user {user_id}") from None
        return tag

    async def get(self, id_tag: str) -> IdTag:
        """Raises: NotFound."""
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM id_tags WHERE upper(id_tag) = upper($1)", id_tag
        )
        if row is None:
            raise NotFound(f"no id-tag {id_tag!r}")
        return _id_tag(row)

    async def page(self, after: str | None = None, limit: int = 100) -> list[IdTag]:
        """Id-tags in order, the ``limit`` first after ``after`` (keyset pagination)."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM id_tags WHERE $1::text IS NULL OR id_tag > $1"
            " ORDER BY id_tag LIMIT $2",
            after,
            limit,
        )
        return [_id_tag(r) for r in rows]

    async def all(self) -> list[IdTag]:
        """Every id-tag (the native authorizer's initial load)."""
        return [_id_tag(r) for r in await self.db.fetch(f"SELECT {_COLUMNS} FROM id_tags")]

    async def update(self, id_tag: str, **fields: object) -> IdTag:
        """Set some of: status, expiry_date, parent_id_tag, user_id (None clears the last
        three), sub_operator_id (the owner; checked by the caller).

        Raises:
            NotFound: no such id-tag.
            BadReference: no such user.
        """
        unknown = set(fields) - {
            "status",
            "expiry_date",
            "parent_id_tag",
            "user_id",
            "sub_operator_id",
        }
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        names = sorted(fields)
        sets = "".join(f"{n} = ${i}, " for i, n in enumerate(names, start=2))
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"UPDATE id_tags SET {sets}updated_at = now()"
                    f" WHERE upper(id_tag) = upper($1) RETURNING {_COLUMNS}, number",
                    id_tag,
                    *(fields[n] for n in names),
                )
                if row is None:
                    raise NotFound(f"no id-tag {id_tag!r}")
                tag = _id_tag(row)
                await conn.execute("SELECT pg_notify($1, $2)", ID_TAG_CHANNEL, _change(tag))
                await record_id_tag_changed(conn, row["number"], "updated")
        except asyncpg.ForeignKeyViolationError:
            raise BadReference(f"no user {fields.get('user_id')}") from None
        return tag

    async def delete(self, id_tag: str) -> None:
        """Raises: NotFound."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT id_tag, number FROM id_tags WHERE upper(id_tag) = upper($1) FOR UPDATE",
                id_tag,
            )
            if row is None:
                raise NotFound(f"no id-tag {id_tag!r}")
            await record_id_tag_changed(conn, row[1], "deleted")  # while it is there
            await conn.execute("DELETE FROM id_tags WHERE id_tag = $1", row[0])
            payload = msgspec.json.encode(IdTagChange(id_tag=row[0], deleted=True)).decode()
            await conn.execute("SELECT pg_notify($1, $2)", ID_TAG_CHANNEL, payload)
