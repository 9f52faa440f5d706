"""storage room: subscription plans and users' subscriptions to them.

A plan has a fee (an amount in its currency) per renewal period. A user has at most one
subscription (to one plan), set whole with :meth:`UserSubscriptionStore.put` (another plan
replaces it), changed in status or end, and expired by :meth:`UserSubscriptionStore.expire_due`
once its end has passed. Each change appends subscriptionPlan.changed, or user.subscription.changed
(and the deprecated user.subscriptionChanged where its status enum allows), in its
transaction. ("Subscription" alone is a notification subscription in evgate.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import asyncpg
import msgspec

from evgate.events.builders import subscription_plan_changed, user_subscription_changed
from evgate.storage.db import Database
from evgate.storage.errors import AlreadyExists, BadReference, InUse, NotFound
from evgate.storage.money import format_amount
from evgate.storage.outbox import insert_outbox
from evgate.storage.users import Money

__all__ = [
    "RenewalPeriod",
    "SubscriptionPlan",
    "SubscriptionPlanStore",
    "UserSubscription",
    "UserSubscriptionStatus",
    "UserSubscriptionStore",
    "plan_of_id_tag",
]

RenewalPeriod = Literal["weekly", "monthly", "quarterly", "yearly"]
# The statuses of user.subscription.changed (events/catalog.py's UserSubscriptionStatus).
UserSubscriptionStatus = Literal["active", "canceled", "expired", "pending", "suspended"]


class SubscriptionPlan(msgspec.Struct, rename="camel", kw_only=True):
    """A plan: its fee per renewal period."""

    id: int
    name: str
    fee: Money
    renewal_period: RenewalPeriod
    created_at: datetime
    updated_at: datetime


_PLAN = "id, name, fee, currency, renewal_period, created_at, updated_at"


def _plan(row: asyncpg.Record) -> SubscriptionPlan:
    return SubscriptionPlan(
        id=row["id"],
        name=row["name"],
        fee=Money(format_amount(row["fee"], row["currency"]), row["currency"]),
        renewal_period=row["renewal_period"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _record_plan(conn: asyncpg.Connection, plan_id: int, action: str) -> None:
    await insert_outbox(conn, [subscription_plan_changed(plan_id, action, datetime.now(UTC))])  # type: ignore[arg-type]


class SubscriptionPlanStore:
    """``/api/v1/subscription-plans``; each change with subscriptionPlan.changed."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, name: str, fee: Decimal, currency: str, renewal_period: RenewalPeriod
    ) -> SubscriptionPlan:
        """Raises: AlreadyExists: a plan has that name (case-insensitively)."""
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "INSERT INTO subscription_plans (name, fee, currency, renewal_period)"
                    f" VALUES ($1, $2, $3, $4) RETURNING {_PLAN}",
                    name,
                    fee,
                    currency,
                    renewal_period,
                )
                await _record_plan(conn, row["id"], "created")
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a subscription plan named {name!r} exists") from None
        return _plan(row)

    async def get(self, plan_id: int) -> SubscriptionPlan:
        """Raises: NotFound."""
        row = await self.db.fetchrow(
            f"SELECT {_PLAN} FROM subscription_plans WHERE id = $1", plan_id
        )
        if row is None:
            raise NotFound(f"no subscription plan {plan_id}")
        return _plan(row)

    async def page(self, after: int | None = None, limit: int = 100) -> list[SubscriptionPlan]:
        """Plans in id order (keyset pagination)."""
        rows = await self.db.fetch(
            f"SELECT {_PLAN} FROM subscription_plans WHERE $1::bigint IS NULL OR id > $1"
            " ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [_plan(r) for r in rows]

    async def update(
        self,
        plan_id: int,
        name: str | None = None,
        fee: tuple[Decimal, str] | None = None,
        renewal_period: RenewalPeriod | None = None,
    ) -> SubscriptionPlan:
        """Change a plan's name, fee (amount, currency) or renewal period.

        Raises:
            NotFound: no such plan.
            AlreadyExists: another plan has the new name.
        """
        amount, currency = fee if fee is not None else (None, None)
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "UPDATE subscription_plans SET name = coalesce($2, name),"
                    " fee = coalesce($3, fee), currency = coalesce($4, currency),"
                    " renewal_period = coalesce($5, renewal_period), updated_at = now()"
                    f" WHERE id = $1 RETURNING {_PLAN}",
                    plan_id,
                    name,
                    amount,
                    currency,
                    renewal_period,
                )
                if row is None:
                    raise NotFound(f"no subscription plan {plan_id}")
                await _record_plan(conn, plan_id, "updated")
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a subscription plan named {name!r} exists") from None
        return _plan(row)

    async def delete(self, plan_id: int) -> None:
        """Raises: NotFound; InUse: a user's subscription is to this plan."""
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                done = await conn.fetchval(
                    "DELETE FROM subscription_plans WHERE id = $1 RETURNING id", plan_id
                )
                if done is None:
                    raise NotFound(f"no subscription plan {plan_id}")
                await _record_plan(conn, plan_id, "deleted")
        except asyncpg.ForeignKeyViolationError:
            raise InUse(f"users are subscribed to plan {plan_id}") from None


class UserSubscription(msgspec.Struct, rename="camel", kw_only=True):
    """A user's subscription to a plan, from ``startsAt`` to ``endsAt``."""

    id: int
    user_id: int
    plan_id: int
    status: UserSubscriptionStatus
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    updated_at: datetime


_SUBSCRIPTION = "id, user_id, plan_id, status, starts_at, ends_at, created_at, updated_at"
# A subscription's end by default: its start plus the plan's renewal period.
_PERIOD_END = (
    "$3::timestamptz + CASE p.renewal_period WHEN 'weekly' THEN interval '7 days'"
    " WHEN 'monthly' THEN interval '1 month' WHEN 'quarterly' THEN interval '3 months'"
    " ELSE interval '1 year' END"
)


def _subscription(row: asyncpg.Record) -> UserSubscription:
    return UserSubscription(**{k: row[k] for k in UserSubscription.__struct_fields__})


async def _record_subscriptions(
    conn: asyncpg.Connection, subscriptions: list[UserSubscription]
) -> None:
    at = datetime.now(UTC)
    await insert_outbox(
        conn,
        [
            entry
            for s in subscriptions
            for entry in user_subscription_changed(s.user_id, s.plan_id, s.status, s.ends_at, at)
        ],
    )


class UserSubscriptionStore:
    """``/api/v1/users/{id}/subscription``: a user's one subscription."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, user_id: int) -> UserSubscription | None:
        """The user's subscription, None when they have none.

        Raises:
            NotFound: no such user.
        """
        # A user without one has none, as a list would be empty: not a 404, which says the
        # user is not there (and schemathesis, rightly, finds a just-created user's
        # subscription "not found" a lie).
        row = await self.db.fetchrow(
            f"SELECT u.id AS found, s.* FROM users u"
            f" LEFT JOIN (SELECT {_SUBSCRIPTION} FROM user_subscriptions) s ON s.user_id = u.id"
            " WHERE u.id = $1",
            user_id,
        )
        if row is None:
            raise NotFound(f"no user {user_id}")
        return None if row["id"] is None else _subscription(row)

    async def put(
        self,
        user_id: int,
        plan_id: int,
        starts_at: datetime,
        ends_at: datetime | None,
        status: UserSubscriptionStatus,
    ) -> UserSubscription:
        """Subscribe the user to a plan (replacing any subscription they have); ``ends_at``
        None: one renewal period after ``starts_at``.

        Raises:
            NotFound: no such user.
            BadReference: no such plan.
            ValueError: ``ends_at`` not after ``starts_at``.
        """
        if ends_at is not None and ends_at <= starts_at:
            raise ValueError("endsAt is after startsAt")
        async with self.db.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM users WHERE id = $1", user_id) is None:
                raise NotFound(f"no user {user_id}")
            row = await conn.fetchrow(
                "INSERT INTO user_subscriptions (user_id, plan_id, status, starts_at, ends_at)"
                f" SELECT $1, p.id, $5, $3, coalesce($4, {_PERIOD_END})"
                " FROM subscription_plans p WHERE p.id = $2"
                " ON CONFLICT (user_id) DO UPDATE SET plan_id = EXCLUDED.plan_id,"
                " status = EXCLUDED.status, starts_at = EXCLUDED.starts_at,"
                f" ends_at = EXCLUDED.ends_at, updated_at = now() RETURNING {_SUBSCRIPTION}",
                user_id,
                plan_id,
                starts_at,
                ends_at,
                status,
            )
            if row is None:
                raise BadReference(f"no subscription plan {plan_id}")
            subscription = _subscription(row)
            await _record_subscriptions(conn, [subscription])
        return subscription

    async def update(
        self,
        user_id: int,
        status: UserSubscriptionStatus | None = None,
        ends_at: datetime | None = None,
    ) -> UserSubscription:
        """Change the user's subscription's status or end.

        Raises:
            NotFound: no such user, or no subscription.
            ValueError: ``ends_at`` not after the start.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    "UPDATE user_subscriptions SET status = coalesce($2, status),"
                    " ends_at = coalesce($3, ends_at), updated_at = now()"
                    f" WHERE user_id = $1 RETURNING {_SUBSCRIPTION}",
                    user_id,
                    status,
                    ends_at,
                )
            except asyncpg.CheckViolationError:
                raise ValueError("endsAt is after startsAt") from None
            if row is None:
                raise NotFound(f"user {user_id} has no subscription")
            subscription = _subscription(row)
            await _record_subscriptions(conn, [subscription])
        return subscription

    async def expire_due(self, limit: int = 1000) -> int:
        """Expire up to ``limit`` pending, active or suspended subscriptions whose end has
        passed (each with its events); how many. Processes running it at once take different
        rows (SKIP LOCKED)."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE user_subscriptions SET status = 'expired', updated_at = now()"
                " WHERE id IN (SELECT id FROM user_subscriptions"
                " WHERE status IN ('pending', 'active', 'suspended') AND ends_at <= now()"
                " ORDER BY ends_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
                f" RETURNING {_SUBSCRIPTION}",
                limit,
            )
            await _record_subscriptions(conn, [_subscription(r) for r in rows])
        return len(rows)


async def plan_of_id_tag(conn: asyncpg.Connection, id_tag: str, at: datetime) -> int | None:
    """The plan the id tag's user is actively subscribed to at ``at``, or None: for pricing,
    whose tariffs may require a plan (call it on the stop's connection, in its transaction).
    A subscription counts while ``active`` and ``startsAt <= at < endsAt``."""
    plan_id: int | None = await conn.fetchval(
        "SELECT s.plan_id FROM id_tags t JOIN user_subscriptions s ON s.user_id = t.user_id"
        " WHERE upper(t.id_tag) = upper($1) AND s.status = 'active'"
        " AND s.starts_at <= $2 AND s.ends_at > $2",
        id_tag,
        at,
    )
    return plan_id
