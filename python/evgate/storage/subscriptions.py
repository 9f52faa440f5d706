"""storage room: notification subscriptions — created, read, replaced and deleted by the
subscription API, read by the dispatcher, disabled when their receiver answers 410.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import NotFound
from evgate.storage.kafka_settings import KafkaSettings

__all__ = ["SubscriptionRow", "SubscriptionStore"]


class SubscriptionRow(msgspec.Struct, kw_only=True):
    """A subscription as stored (secrets included: for the dispatcher, never for the API)."""

    id: int
    via: str
    notifications: list[str]
    callback_url: str | None
    kafka: KafkaSettings | None
    kafka_password: str | None
    webhook_secret: bytes
    token_hmac_state: bytes | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    # The sub-operator that made it (None: the operator): its webhook reaches no private
    # address (events/sinks.py).
    sub_operator_id: int | None = None

    @property
    def streamed(self) -> bool:
        """Delivered by a stream of the outbox from a cursor (the operator's subscriptions,
        webhook or Kafka; see ``storage.deliveries.streamed``), not by the fan-out's
        deliveries."""
        return self.sub_operator_id is None


_SUB_COLUMNS = (
    "id, via, notifications, callback_url, kafka, kafka_password, webhook_secret,"
    " token_hmac_state, enabled, disabled_reason, created_at, updated_at, sub_operator_id"
)


def _subscription(row: asyncpg.Record) -> SubscriptionRow:
    values = dict(row)
    kafka = row["kafka"]
    values["kafka"] = None if kafka is None else msgspec.json.decode(kafka, type=KafkaSettings)
    values["webhook_secret"] = bytes(row["webhook_secret"])
    if row["token_hmac_state"] is not None:
        values["token_hmac_state"] = bytes(row["token_hmac_state"])
    return SubscriptionRow(**values)


class SubscriptionStore:
    """Queries of ``subscriptions`` (the subscription API's, and the dispatcher's)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_subscription(
        self,
        *,
        via: str,
        notifications: list[str],
        callback_url: str | None,
        kafka: KafkaSettings | None,
        kafka_password: str | None,
        webhook_secret: bytes,
        token_hmac_state: bytes | None,
        created_by: int | None,
    ) -> SubscriptionRow:
        row = await self.db.fetchrow(
            "INSERT INTO subscriptions (via, notifications, callback_url, kafka, kafka_password,"
            " webhook_secret, token_hmac_state, created_by)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_SUB_COLUMNS}",
            via,
            notifications,
            callback_url,
            None if kafka is None else msgspec.json.encode(kafka).decode(),
            kafka_password,
            webhook_secret,
            token_hmac_state,
            created_by,
        )
        assert row is not None
        return _subscription(row)

    async def get_subscription(self, subscription_id: int) -> SubscriptionRow:
        """Raises: NotFound."""
        row = await self.db.fetchrow(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE id = $1", subscription_id
        )
        if row is None:
            raise NotFound(f"no subscription {subscription_id}")
        return _subscription(row)

    async def subscriptions(
        self, after: int = 0, limit: int | None = None, enabled_only: bool = False
    ) -> list[SubscriptionRow]:
        rows = await self.db.fetch(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE id > $1 AND (enabled OR NOT $3)"
            " ORDER BY id LIMIT $2",
            after,
            limit,
            enabled_only,
        )
        return [_subscription(r) for r in rows]

    async def subscriptions_page(self, offset: int, limit: int) -> list[SubscriptionRow]:
        """A page of subscriptions in id order (they are few: offset paging is fine)."""
        rows = await self.db.fetch(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions ORDER BY id OFFSET $1 LIMIT $2",
            offset,
            limit,
        )
        return [_subscription(r) for r in rows]

    async def count_subscriptions(self) -> int:
        count: int = await self.db.fetchval("SELECT count(*) FROM subscriptions")
        return count

    async def replace_subscription(
        self,
        subscription_id: int,
        *,
        via: str,
        notifications: list[str],
        callback_url: str | None,
        kafka: KafkaSettings | None,
        kafka_password: str | None,
        keep_password: bool,
    ) -> SubscriptionRow:
        """PUT: new settings, enabled again. ``keep_password``: the body left the Kafka
        password out, so the stored one stays.

        Raises:
            NotFound: no such subscription.
        """
        row = await self.db.fetchrow(
            "UPDATE subscriptions SET via = $2, notifications = $3, callback_url = $4,"
            " kafka = $5, kafka_password = CASE WHEN $7 THEN kafka_password ELSE $6 END,"
            " enabled = true, disabled_reason = NULL, updated_at = now()"
            f" WHERE id = $1 RETURNING {_SUB_COLUMNS}",
            subscription_id,
            via,
            notifications,
            callback_url,
            None if kafka is None else msgspec.json.encode(kafka).decode(),
            kafka_password,
            keep_password,
        )
        if row is None:
            raise NotFound(f"no subscription {subscription_id}")
        return _subscription(row)

    async def delete_subscription(self, subscription_id: int) -> None:
        """Raises: NotFound."""
        status = await self.db.execute("DELETE FROM subscriptions WHERE id = $1", subscription_id)
        if status == "DELETE 0":
            raise NotFound(f"no subscription {subscription_id}")

    async def disable(self, subscription_id: int, reason: str) -> None:
        """Disable a subscription (its receiver answered 410): its pending deliveries become
        'failed' (listed, resendable after a PUT re-enables it) and its lanes go."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE subscriptions SET enabled = false, disabled_reason = $2,"
                " updated_at = now() WHERE id = $1",
                subscription_id,
                reason,
            )
            await conn.execute(
                "UPDATE deliveries SET state = 'failed', last_error = $2"
                " WHERE subscription_id = $1 AND state = 'pending'",
                subscription_id,
                reason,
            )
            await conn.execute(
                "DELETE FROM delivery_lanes WHERE subscription_id = $1", subscription_id
            )
