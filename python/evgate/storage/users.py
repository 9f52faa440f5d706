"""storage room: users (drivers) and user groups.

A user's email is unique, compared case-insensitively. A user belongs to any number of user
groups (``user_group_members``); a group says whether its prepaid members may charge at or
below a zero balance. Every change of a user appends UserChangedNotification to the outbox in
its transaction. What the native authorizer holds of users and groups (status, prepaid flag,
balance, groups; a group's balance rule) is sent on ``NOTIFY evgate_user`` by the tables'
triggers (migration 0019), so that no writer of these rows can forget it; the payloads are
:data:`UserChannelPayload`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import AlreadyExists, BadReference, InUse, NotFound
from evgate.storage.money import format_amount
from evgate.storage.outbox import record_user_changed

__all__ = [
    "USER_CHANNEL",
    "GroupAuth",
    "Money",
    "User",
    "UserAuth",
    "UserChannelPayload",
    "UserGroup",
    "UserGroupStore",
    "UserStatus",
    "UserStore",
    "read_user",
]

USER_CHANNEL = "evgate_user"

UserStatus = Literal["active", "blocked"]


class Money(msgspec.Struct, frozen=True):
    """An amount (a decimal string with the currency's decimals) and its ISO 4217 currency."""

    amount: str
    currency: str


class User(msgspec.Struct, rename="camel", kw_only=True):
    """A user (a driver), as the API shows it."""

    id: int
    email: str
    first_name: str | None
    last_name: str | None
    phone: str | None
    language: str | None
    status: UserStatus
    user_group_ids: list[int]
    prepaid: bool
    currency: str
    balance: Money
    # The partner the user is a member of (by accepting its invite), or None.
    partner_id: int | None
    created_at: datetime
    updated_at: datetime


class UserGroup(msgspec.Struct, rename="camel", kw_only=True):
    """A user group; ``allowEmptyBalance``: its prepaid members are not refused at or below
    zero."""

    id: int
    name: str
    allow_empty_balance: bool
    created_at: datetime
    updated_at: datetime


class UserAuth(msgspec.Struct, tag="user", tag_field="kind", rename="camel", frozen=True):
    """What the native authorizer holds of a user (a NOTIFY payload, or a row of the load)."""

    id: int
    status: UserStatus = "active"
    prepaid: bool = False
    balance: Decimal = Decimal(0)
    group_ids: tuple[int, ...] = ()
    deleted: bool = False


class GroupAuth(msgspec.Struct, tag="group", tag_field="kind", rename="camel", frozen=True):
    """What the native authorizer holds of a user group."""

    id: int
    allow_empty_balance: bool = False
    deleted: bool = False


#: A payload of ``evgate_user``.
UserChannelPayload = UserAuth | GroupAuth

_GROUP_IDS = (
    "ARRAY(SELECT m.group_id FROM user_group_members m WHERE m.user_id = u.id"
    " ORDER BY m.group_id) AS group_ids"
)
_SELECT = (
    "SELECT u.id, u.email, u.first_name, u.last_name, u.phone, u.language, u.status,"
    " u.prepaid, u.currency, u.balance, u.partner_id, u.created_at, u.updated_at,"
    f" {_GROUP_IDS} FROM users u"
)
#: The columns a user's fields are stored in (the API's names are their camelCase).
USER_FIELDS = ("email", "first_name", "last_name", "phone", "language", "status", "prepaid",
               "currency")  # fmt: skip


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        first_name=row["first_name"],
        last_name=row["last_name"],
        phone=row["phone"],
        language=row["language"],
        status=row["status"],
        user_group_ids=list(row["group_ids"]),
        prepaid=row["prepaid"],
        currency=row["currency"],
        balance=Money(format_amount(row["balance"], row["currency"]), row["currency"]),
        partner_id=row["partner_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def read_user(conn: asyncpg.Connection, user_id: int) -> User:
    """The user ``user_id`` on ``conn`` (in the caller's transaction).

    Raises:
        NotFound: no such user.
    """
    row = await conn.fetchrow(f"{_SELECT} WHERE u.id = $1", user_id)
    if row is None:
        raise NotFound(f"no user {user_id}")
    return _user(row)


async def _set_groups(conn: asyncpg.Connection, user_id: int, group_ids: list[int]) -> None:
    try:
        await conn.execute(
            "DELETE FROM user_group_members WHERE user_id = $1 AND group_id <> ALL($2::bigint[])",
            user_id,
            group_ids,
        )
        await conn.execute(
            "INSERT INTO user_group_members (user_id, group_id)"
            " SELECT $1, g FROM unnest($2::bigint[]) g ON CONFLICT DO NOTHING",
            user_id,
            group_ids,
        )
    except asyncpg.ForeignKeyViolationError:
        raise BadReference(f"no user group among {sorted(set(group_ids))}") from None


class UserStore:
    """Users: reads and changes, each change with its event."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, fields: dict[str, Any], group_ids: list[int]) -> User:
        """Add a user; ``fields`` are some of :data:`USER_FIELDS` (email required).

        Raises:
            AlreadyExists: a user has that email (case-insensitively).
            BadReference: an unknown user group.
        """
        names = sorted(fields)
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                user_id = await conn.fetchval(
                    f"INSERT INTO users ({', '.join(names)})"
                    f" VALUES ({', '.join(f'${i}' for i in range(1, len(names) + 1))})"
                    " RETURNING id",
                    *(fields[n] for n in names),
                )
                await _set_groups(conn, user_id, group_ids)
                user = await read_user(conn, user_id)
                await record_user_changed(conn, user, "created")
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a user with email {fields.get('email')!r} exists") from None
        return user

    async def get(self, user_id: int) -> User:
        """Raises: NotFound."""
        async with self.db.pool.acquire() as conn:
            return await read_user(conn, user_id)

    async def page(self, after: int | None = None, limit: int = 100) -> list[User]:
        """Users in id order, the ``limit`` first after ``after`` (keyset pagination)."""
        rows = await self.db.fetch(
            f"{_SELECT} WHERE $1::bigint IS NULL OR u.id > $1 ORDER BY u.id LIMIT $2",
            after,
            limit,
        )
        return [_user(r) for r in rows]

    async def update(
        self, user_id: int, fields: dict[str, Any], group_ids: list[int] | None = None
    ) -> User:
        """Change some of :data:`USER_FIELDS`, and the groups when ``group_ids`` is given.

        Raises:
            NotFound: no such user.
            AlreadyExists: another user has the new email.
            BadReference: an unknown user group.
            InUse: a new currency while the balance is not zero.
        """
        unknown = set(fields) - set(USER_FIELDS)
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "SELECT balance, currency FROM users WHERE id = $1 FOR UPDATE", user_id
                )
                if row is None:
                    raise NotFound(f"no user {user_id}")
                currency = fields.get("currency", row["currency"])
                if currency != row["currency"] and row["balance"] != 0:
                    raise InUse(
                        f"user {user_id} has a balance of"
                        f" {format_amount(row['balance'], row['currency'])} {row['currency']};"
                        " the currency changes only at zero"
                    )
                names = sorted(fields)
                sets = "".join(f"{n} = ${i}, " for i, n in enumerate(names, start=2))
                await conn.execute(
                    f"UPDATE users SET {sets}updated_at = now() WHERE id = $1",
                    user_id,
                    *(fields[n] for n in names),
                )
                if group_ids is not None:
                    await _set_groups(conn, user_id, group_ids)
                user = await read_user(conn, user_id)
                await record_user_changed(conn, user, "updated")
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a user with email {fields.get('email')!r} exists") from None
        return user

    async def delete(self, user_id: int) -> None:
        """Remove a user, their balance entries and group memberships.

        Raises:
            NotFound: no such user.
            InUse: the user owns id tags (delete them or give them to no one first).
        """
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                user = await read_user(conn, user_id)
                await record_user_changed(conn, user, "deleted")
                await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        except asyncpg.ForeignKeyViolationError:
            raise InUse(
                f"user {user_id} owns id tags; delete them or set their userId to null first"
            ) from None

    async def authorization(self) -> tuple[list[UserAuth], list[GroupAuth]]:
        """Every user's and group's authorization facts (the native authorizer's load)."""
        async with self.db.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            users = await conn.fetch(
                f"SELECT u.id, u.status, u.prepaid, u.balance, {_GROUP_IDS} FROM users u"
            )
            groups = await conn.fetch("SELECT id, allow_empty_balance FROM user_groups")
        return (
            [
                UserAuth(
                    id=r["id"],
                    status=r["status"],
                    prepaid=r["prepaid"],
                    balance=r["balance"],
                    group_ids=tuple(r["group_ids"]),
                )
                for r in users
            ],
            [GroupAuth(id=r["id"], allow_empty_balance=r["allow_empty_balance"]) for r in groups],
        )


_GROUP_COLUMNS = "id, name, allow_empty_balance, created_at, updated_at"


def _group(row: asyncpg.Record) -> UserGroup:
    return UserGroup(**{k: row[k] for k in UserGroup.__struct_fields__})


class UserGroupStore:
    """User groups (no catalog event: a group's change notifies the authorizers only)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, name: str, allow_empty_balance: bool = False) -> UserGroup:
        """Raises: AlreadyExists: a group has that name (case-insensitively)."""
        try:
            row = await self.db.fetchrow(
                "INSERT INTO user_groups (name, allow_empty_balance) VALUES ($1, $2)"
                f" RETURNING {_GROUP_COLUMNS}",
                name,
                allow_empty_balance,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a user group named {name!r} exists") from None
        assert row is not None
        return _group(row)

    async def get(self, group_id: int) -> UserGroup:
        """Raises: NotFound."""
        row = await self.db.fetchrow(
            f"SELECT {_GROUP_COLUMNS} FROM user_groups WHERE id = $1", group_id
        )
        if row is None:
            raise NotFound(f"no user group {group_id}")
        return _group(row)

    async def page(self, after: int | None = None, limit: int = 100) -> list[UserGroup]:
        """Groups in id order (keyset pagination)."""
        rows = await self.db.fetch(
            f"SELECT {_GROUP_COLUMNS} FROM user_groups WHERE $1::bigint IS NULL OR id > $1"
            " ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [_group(r) for r in rows]

    async def update(
        self, group_id: int, name: str | None = None, allow_empty_balance: bool | None = None
    ) -> UserGroup:
        """Raises: NotFound; AlreadyExists: another group has the new name."""
        try:
            row = await self.db.fetchrow(
                "UPDATE user_groups SET name = coalesce($2, name),"
                " allow_empty_balance = coalesce($3, allow_empty_balance), updated_at = now()"
                f" WHERE id = $1 RETURNING {_GROUP_COLUMNS}",
                group_id,
                name,
                allow_empty_balance,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a user group named {name!r} exists") from None
        if row is None:
            raise NotFound(f"no user group {group_id}")
        return _group(row)

    async def delete(self, group_id: int) -> None:
        """Raises: NotFound; InUse: the group has members."""
        try:
            done = await self.db.fetchval(
                "DELETE FROM user_groups WHERE id = $1 RETURNING id", group_id
            )
        except asyncpg.ForeignKeyViolationError:
            raise InUse(f"user group {group_id} has members") from None
        if done is None:
            raise NotFound(f"no user group {group_id}")
