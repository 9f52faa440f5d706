"""storage room: partners (corporate customers), their invites and their members.

A user is a member of at most one partner (``users.partner_id``), by accepting an invite sent
to their email: an invite is ``pending`` until a user whose email is the invite's (compared
case-insensitively) accepts it (``accepted``, the user joins the partner, leaving any other),
or until its ``expires_at`` passes (``expired``, by :meth:`PartnerInviteStore.expire_due`).
A partner with members is not deleted; its invites go with it. Each change appends its events
in its transaction: partner.changed and PartnerChangedNotification, partnerInvite.changed, and
UserChangedNotification for a user who joins or leaves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import msgspec

from evgate.events.builders import partner_changed, partner_invite_changed
from evgate.storage.db import Database
from evgate.storage.errors import AlreadyExists, BadReference, InUse, NotFound
from evgate.storage.keyset import children_page
from evgate.storage.outbox import insert_outbox, record_user_changed
from evgate.storage.users import User, read_user

__all__ = [
    "PARTNER_FIELDS",
    "InviteNotPending",
    "Partner",
    "PartnerInvite",
    "PartnerInviteStore",
    "PartnerStore",
    "partner_of_id_tag",
]

#: A partner's fields (the API's names are their camelCase).
PARTNER_FIELDS = ("name", "registration_number", "vat_number", "external_id", "street",
                  "post_code", "city", "country")  # fmt: skip
_PARTNER = ", ".join(("id", *PARTNER_FIELDS, "created_at", "updated_at"))


class Partner(msgspec.Struct, rename="camel", kw_only=True):
    """A corporate customer; its members' charging is billed to it."""

    id: int
    name: str
    registration_number: str | None
    vat_number: str | None
    external_id: str | None
    street: str | None
    post_code: str | None
    city: str | None
    country: str | None
    created_at: datetime
    updated_at: datetime


def _partner(row: asyncpg.Record) -> Partner:
    return Partner(**{k: row[k] for k in Partner.__struct_fields__})


class PartnerStore:
    """``/api/v1/partners`` and their members."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, fields: dict[str, Any]) -> Partner:
        """Add a partner; ``fields`` are some of :data:`PARTNER_FIELDS` (name required)."""
        names = sorted(fields)
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"INSERT INTO partners ({', '.join(names)})"
                f" VALUES ({', '.join(f'${i}' for i in range(1, len(names) + 1))})"
                f" RETURNING {_PARTNER}",
                *(fields[n] for n in names),
            )
            partner = _partner(row)
            await insert_outbox(conn, partner_changed(partner.id, "created", _now()))
        return partner

    async def get(self, partner_id: int) -> Partner:
        """Raises: NotFound."""
        row = await self.db.fetchrow(f"SELECT {_PARTNER} FROM partners WHERE id = $1", partner_id)
        if row is None:
            raise NotFound(f"no partner {partner_id}")
        return _partner(row)

    async def page(self, after: int | None = None, limit: int = 100) -> list[Partner]:
        """Partners in id order (keyset pagination)."""
        rows = await self.db.fetch(
            f"SELECT {_PARTNER} FROM partners WHERE $1::bigint IS NULL OR id > $1"
            " ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [_partner(r) for r in rows]

    async def update(self, partner_id: int, fields: dict[str, Any]) -> Partner:
        """Change some of :data:`PARTNER_FIELDS` (None clears all but the name).

        Raises:
            NotFound: no such partner.
        """
        unknown = set(fields) - set(PARTNER_FIELDS)
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        names = sorted(fields)
        sets = "".join(f"{n} = ${i}, " for i, n in enumerate(names, start=2))
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE partners SET {sets}updated_at = now() WHERE id = $1 RETURNING {_PARTNER}",
                partner_id,
                *(fields[n] for n in names),
            )
            if row is None:
                raise NotFound(f"no partner {partner_id}")
            await insert_outbox(conn, partner_changed(partner_id, "updated", _now()))
        return _partner(row)

    async def delete(self, partner_id: int) -> None:
        """Remove a partner and its invites (each invite's deletion is an event too).

        Raises:
            NotFound: no such partner.
            InUse: it has members (remove them first).
        """
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                invites = await conn.fetch(
                    "DELETE FROM partner_invites WHERE partner_id = $1"
                    " RETURNING id, user_id, email",
                    partner_id,
                )
                row = await conn.fetchrow(
                    "DELETE FROM partners WHERE id = $1 RETURNING name, external_id", partner_id
                )
                if row is None:
                    raise NotFound(f"no partner {partner_id}")
                at = _now()
                await insert_outbox(
                    conn,
                    [
                        *(
                            partner_invite_changed(i["id"], i["user_id"], i["email"], "deleted", at)
                            for i in invites
                        ),
                        *partner_changed(
                            partner_id, "deleted", at, row["external_id"], row["name"]
                        ),
                    ],
                )
        except asyncpg.ForeignKeyViolationError:
            raise InUse(f"partner {partner_id} has members; remove them first") from None

    async def members(
        self, partner_id: int, after: int | None = None, limit: int = 100
    ) -> list[User]:
        """The partner's members in id order (keyset pagination).

        Raises:
            NotFound: no such partner.
        """
        async with self.db.pool.acquire() as conn:
            if await conn.fetchval("SELECT 1 FROM partners WHERE id = $1", partner_id) is None:
                raise NotFound(f"no partner {partner_id}")
            ids = await conn.fetch(
                "SELECT id FROM users WHERE partner_id = $1 AND ($2::bigint IS NULL OR id > $2)"
                " ORDER BY id LIMIT $3",
                partner_id,
                after,
                limit,
            )
            return [await read_user(conn, r["id"]) for r in ids]

    async def remove_member(self, partner_id: int, user_id: int) -> None:
        """The user leaves the partner.

        Raises:
            NotFound: no such partner, or the user is not its member.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "UPDATE users SET partner_id = NULL, updated_at = now()"
                " WHERE id = $1 AND partner_id = $2 RETURNING id",
                user_id,
                partner_id,
            )
            if done is None:
                raise NotFound(f"user {user_id} is no member of partner {partner_id}")
            await record_user_changed(conn, await read_user(conn, user_id), "updated")


InviteStatus = Literal["pending", "accepted", "expired"]


class PartnerInvite(msgspec.Struct, rename="camel", kw_only=True):
    """An email invited to a partner; ``userId`` the user who accepted it."""

    id: int
    partner_id: int
    email: str
    status: InviteStatus
    user_id: int | None
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


class InviteNotPending(Exception):
    """The invite was accepted already, or has expired."""


_INVITE = "id, partner_id, email, status, user_id, expires_at, created_at, updated_at"


def _invite(row: asyncpg.Record) -> PartnerInvite:
    return PartnerInvite(**{k: row[k] for k in PartnerInvite.__struct_fields__})


def _now() -> datetime:
    return datetime.now(UTC)


async def _record_invites(
    conn: asyncpg.Connection,
    invites: list[PartnerInvite],
    action: Literal["created", "updated", "deleted"],
) -> None:
    at = _now()
    await insert_outbox(
        conn, [partner_invite_changed(i.id, i.user_id, i.email, action, at) for i in invites]
    )


class PartnerInviteStore:
    """Partner invites; pending ones expire ``ttl`` after they are made."""

    def __init__(self, db: Database, ttl: timedelta = timedelta(days=7)) -> None:
        self.db = db
        self.ttl = ttl

    async def create(self, partner_id: int, email: str) -> PartnerInvite:
        """Invite ``email`` to the partner.

        Raises:
            NotFound: no such partner.
            AlreadyExists: a pending invite of the partner has that email.
        """
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "INSERT INTO partner_invites (partner_id, email, expires_at)"
                    f" SELECT id, $2, now() + $3::interval FROM partners WHERE id = $1"
                    f" RETURNING {_INVITE}",
                    partner_id,
                    email,
                    self.ttl,
                )
                if row is None:
                    raise NotFound(f"no partner {partner_id}")
                invite = _invite(row)
                await _record_invites(conn, [invite], "created")
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"{email!r} has a pending invite to partner {partner_id}") from None
        return invite

    async def get(self, invite_id: int) -> PartnerInvite:
        """Raises: NotFound."""
        row = await self.db.fetchrow(
            f"SELECT {_INVITE} FROM partner_invites WHERE id = $1", invite_id
        )
        if row is None:
            raise NotFound(f"no partner invite {invite_id}")
        return _invite(row)

    async def of_partner(
        self, partner_id: int, after: int | None = None, limit: int = 100
    ) -> list[PartnerInvite]:
        """The partner's invites in id order (keyset pagination).

        Raises:
            NotFound: no such partner.
        """
        rows = await children_page(
            self.db,
            parent=("partners", "partner"),
            parent_id=partner_id,
            columns=_INVITE,
            table="partner_invites",
            foreign_key="partner_id",
            after=after,
            limit=limit,
        )
        return [_invite(r) for r in rows]

    async def accept(self, invite_id: int, user_id: int) -> PartnerInvite:
        """The user accepts the invite and becomes a member of its partner.

        Raises:
            NotFound: no such invite.
            BadReference: no such user, or the user's email is not the invite's.
            InviteNotPending: the invite was accepted already or has expired (also when its
                time has passed and the expiry task has not yet run).
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_INVITE} FROM partner_invites WHERE id = $1 FOR UPDATE", invite_id
            )
            if row is None:
                raise NotFound(f"no partner invite {invite_id}")
            invite = _invite(row)
            if invite.status != "pending" or invite.expires_at <= _now():
                status = "expired" if invite.status == "pending" else invite.status
                raise InviteNotPending(f"partner invite {invite_id} is {status}")
            email = await conn.fetchval("SELECT email FROM users WHERE id = $1", user_id)
            if email is None:
                raise BadReference(f"no user {user_id}")
            if email.lower() != invite.email.lower():
                raise BadReference(f"the invite is for another email than user {user_id}'s")
            row = await conn.fetchrow(
                "UPDATE partner_invites SET status = 'accepted', user_id = $2, updated_at = now()"
                f" WHERE id = $1 RETURNING {_INVITE}",
                invite_id,
                user_id,
            )
            await conn.execute(
                "UPDATE users SET partner_id = $2, updated_at = now() WHERE id = $1",
                user_id,
                invite.partner_id,
            )
            accepted = _invite(row)
            await _record_invites(conn, [accepted], "updated")
            await record_user_changed(conn, await read_user(conn, user_id), "updated")
        return accepted

    async def delete(self, invite_id: int) -> None:
        """Withdraw an invite (an accepted one's member stays).

        Raises:
            NotFound: no such invite.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"DELETE FROM partner_invites WHERE id = $1 RETURNING {_INVITE}", invite_id
            )
            if row is None:
                raise NotFound(f"no partner invite {invite_id}")
            await _record_invites(conn, [_invite(row)], "deleted")

    async def expire_due(self, limit: int = 1000) -> int:
        """Expire up to ``limit`` pending invites past their time (each with its event); how
        many. Processes running it at once take different rows (SKIP LOCKED)."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE partner_invites SET status = 'expired', updated_at = now()"
                " WHERE id IN (SELECT id FROM partner_invites"
                " WHERE status = 'pending' AND expires_at <= now()"
                " ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
                f" RETURNING {_INVITE}",
                limit,
            )
            await _record_invites(conn, [_invite(r) for r in rows], "updated")
        return len(rows)


async def partner_of_id_tag(conn: asyncpg.Connection, id_tag: str) -> int | None:
    """The partner whose member owns the id tag, or None: the partner a transaction of that id
    tag is billed to now. (The CDR's own INSERT makes the same lookup in SQL, so that a stop
    pays no round trip for it: ``storage/cdrs.py`` INSERT_CDR.)"""
    partner_id: int | None = await conn.fetchval(
        "SELECT u.partner_id FROM id_tags t JOIN users u ON u.id = t.user_id"
        " WHERE upper(t.id_tag) = upper($1)",
        id_tag,
    )
    return partner_id
