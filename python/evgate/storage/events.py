"""storage room: the notification tables — outbox, subscriptions, deliveries, lanes, CDRs.

The design (see also ``events/dispatcher.py``):

* ``outbox``: an event is a row written in the transaction of the state it describes —
  through the group-commit writer (:data:`EMIT`: the state writes, then the outbox rows built
  from what they did) or, for changes made outside it, :func:`insert_outbox` on the same
  connection.
* Fan-out (:meth:`NotificationStore.fan_out`): one process at a time (the cursor row is taken
  with ``FOR UPDATE SKIP LOCKED``) turns new outbox rows into ``deliveries``, one per matching
  subscription, and marks their lanes. It reads only rows whose writing transaction is older
  than every running one (``pg_snapshot_xmin``), in (xid, id) order: a transaction that got
  its id early but commits late is never jumped over.
* Lanes: a lane is one subscription's queue for one charger. :meth:`claim_lanes` leases due
  lanes with ``FOR UPDATE SKIP LOCKED``, so each lane is worked by one process at a time and a
  charger's events go out in order; a lease that is not renewed (a dead process) expires and
  another process takes the lane over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import NotFound
from evgate.storage.kafka_settings import KafkaSettings
from evgate.storage.writer import CopyRows, Statement, Write, WriteOp

__all__ = [
    "CDRS",
    "EMIT",
    "OUTBOX",
    "CdrStore",
    "Delivery",
    "Emission",
    "FailedDelivery",
    "NotificationStore",
    "SubscriptionRow",
    "insert_outbox",
    "record_charger_changed",
    "record_id_tag_changed",
    "record_reservation_changed",
]

OUTBOX_COLUMNS = ("event", "charger_id", "payload")
# Writer ops: ``(OUTBOX, [OutboxEntry, ...])`` (an OutboxEntry is a row tuple in
# OUTBOX_COLUMNS order) and ``(CDRS, cdr_row(cdr))``. Handlers give them to the writer inside
# an Emission (below), never beside one: see EMIT for why.
OUTBOX = CopyRows("outbox", OUTBOX_COLUMNS)
CDR_COLUMNS = (
    "id",
    "charger_id",
    "charger_number",
    "transaction_id",
    "connector_id",
    "id_tag",
    "started_at",
    "stopped_at",
    "meter_start_wh",
    "meter_stop_wh",
    "energy_wh",
    "stop_reason",
    "created_at",
)
# A retried StopTransaction makes no second CDR (the id is derived from the transaction).
CDRS = Statement(
    f"INSERT INTO cdrs ({', '.join(CDR_COLUMNS)}) VALUES"
    f" ({', '.join(f'${i}' for i in range(1, len(CDR_COLUMNS) + 1))}) ON CONFLICT (id) DO NOTHING",
    name="cdrs",
)


class Emission(NamedTuple):
    """One submission's state writes and the writes that follow from them (its outbox rows,
    a CDR), for :data:`EMIT`.

    Attributes:
        writes: the state changes, ``(op, item)`` pairs of any writer ops but EMIT.
        then: the follow-up writes, ``(OUTBOX, entries)`` among them: given, or a pure
            function of the ``writes``' results (one per write, in order) called inside the
            transaction — again if the writer retries it — so that events say what the state
            writes actually did (a resent message finds its row there and makes no event).
    """

    writes: Sequence[Write]
    then: Sequence[Write] | Callable[[list[Any]], Sequence[Write]] = ()


async def _write_merged(conn: asyncpg.Connection, groups: list[Sequence[Write]]) -> list[list[Any]]:
    """Run every group's writes, each op once on its items of all groups (in first-appearance
    order, as the writer merges submissions); the results per group, in order."""
    by_op: dict[WriteOp[Any, Any], list[tuple[int, int, Any]]] = {}
    for g_index, writes in enumerate(groups):
        for w_index, (op, item) in enumerate(writes):
            by_op.setdefault(op, []).append((g_index, w_index, item))
    results: list[list[Any]] = [[None] * len(writes) for writes in groups]
    for op, entries in by_op.items():
        op_results = await op.write(conn, [item for _, _, item in entries])
        for (g_index, w_index, _), result in zip(entries, op_results, strict=True):
            results[g_index][w_index] = result
    return results


class Emit(WriteOp[Emission, list[Any]]):
    """The writer op of every state change that has events: the batch's state writes first,
    then every follow-up write, the outbox rows in one COPY in submission order.

    Why one op: the writer merges each op across the submissions of a batch and runs the ops
    in the order they first appear in it, so outbox rows written by several ops (or by OUTBOX
    beside other ops) could land in an order other than the submissions'. A charger's events
    must keep its order, and two submissions of one charger can share a batch (the
    connection observer's and a handler's); inside EMIT they cannot be reordered. The result
    of an Emission is the list of its ``writes``' results.
    """

    name = "emit"

    def weight(self, item: Emission) -> int:
        then = item.then
        follow_ups = 1 if callable(then) else sum(op.weight(i) for op, i in then)
        return sum(op.weight(i) for op, i in item.writes) + follow_ups

    async def write(self, conn: asyncpg.Connection, items: list[Emission]) -> list[list[Any]]:
        results = await _write_merged(conn, [item.writes for item in items])
        follow_ups = [
            item.then(result) if callable(item.then) else item.then
            for item, result in zip(items, results, strict=True)
        ]
        await _write_merged(conn, follow_ups)
        return results


EMIT = Emit()


async def record_charger_changed(conn: asyncpg.Connection, charger_id: str, action: str) -> None:
    """Append chargePoint.changed and ChargePointChangedNotification for a charger, on ``conn``
    inside the transaction that changes it (before the DELETE, for ``deleted``)."""
    from evgate.events.builders import ChargerFacts, charger_changed  # events builds, we store

    row = await conn.fetchrow(
        "SELECT id, number, description, security_profile, registration_status,"
        " network_status, created_at, updated_at FROM chargers WHERE id = $1",
        charger_id,
    )
    if row is not None:
        facts = ChargerFacts(**dict(row))
        await insert_outbox(conn, charger_changed(facts, action, datetime.now(UTC)))  # type: ignore[arg-type]


async def record_id_tag_changed(conn: asyncpg.Connection, number: int, action: str) -> None:
    """Append idTag.changed for the id tag ``number``, on ``conn`` inside the transaction that
    changes it."""
    from evgate.events.builders import id_tag_changed

    await insert_outbox(conn, [id_tag_changed(number, action, datetime.now(UTC))])  # type: ignore[arg-type]


async def record_reservation_changed(
    conn: asyncpg.Connection, reservations: Iterable[tuple[str, int]], status: str
) -> None:
    """Append reservation.changed ``status`` for each (charger id, reservation id), on
    ``conn`` inside the transaction that changes them."""
    from evgate.events.builders import reservation_changed

    at = datetime.now(UTC)
    await insert_outbox(
        conn,
        [reservation_changed(c, r, status, at) for c, r in reservations],  # type: ignore[arg-type]
    )


async def insert_outbox(conn: asyncpg.Connection, entries: Iterable[Sequence[Any]]) -> None:
    """Append outbox rows ``(event, charger_id, payload)`` on ``conn``, inside the caller's
    transaction (the one that makes the change the events describe)."""
    rows = list(entries)
    if rows:
        await conn.executemany(
            "INSERT INTO outbox (event, charger_id, payload) VALUES ($1, $2, $3)", rows
        )


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


class Delivery(msgspec.Struct, kw_only=True):
    """A pending delivery of a lane, with its event."""

    outbox_id: int
    event: str
    attempts: int
    payload: bytes
    created_at: datetime


class FailedDelivery(msgspec.Struct, kw_only=True, rename="camel"):
    """A delivery that gave up, as the API lists it."""

    event_id: int
    notification: str
    charger_id: str
    state: str
    attempts: int
    last_error: str | None
    created_at: datetime


_SUB_COLUMNS = (
    "id, via, notifications, callback_url, kafka, kafka_password, webhook_secret,"
    " token_hmac_state, enabled, disabled_reason, created_at, updated_at"
)


def _subscription(row: asyncpg.Record) -> SubscriptionRow:
    values = dict(row)
    kafka = row["kafka"]
    values["kafka"] = None if kafka is None else msgspec.json.decode(kafka, type=KafkaSettings)
    values["webhook_secret"] = bytes(row["webhook_secret"])
    if row["token_hmac_state"] is not None:
        values["token_hmac_state"] = bytes(row["token_hmac_state"])
    return SubscriptionRow(**values)


class NotificationStore:
    """Queries of the subscription API and the dispatcher."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # Subscriptions (the API).

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

    async def failed_deliveries(
        self, subscription_id: int, after: int = 0, limit: int = 100
    ) -> list[FailedDelivery]:
        rows = await self.db.fetch(
            "SELECT outbox_id AS event_id, event AS notification, charger_id, state, attempts,"
            " last_error, created_at FROM deliveries"
            " WHERE subscription_id = $1 AND state = 'failed' AND outbox_id > $2"
            " ORDER BY outbox_id LIMIT $3",
            subscription_id,
            after,
            limit,
        )
        return [FailedDelivery(**dict(r)) for r in rows]

    async def resend(
        self,
        subscription_id: int,
        notifications: list[str] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> int:
        """Put the subscription's failed deliveries (of these events, made in [start, end))
        back in their lanes. Returns how many."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(),"
                " last_error = NULL"
                " WHERE subscription_id = $1 AND state = 'failed'"
                " AND ($2::text[] IS NULL OR event = ANY($2))"
                " AND ($3::timestamptz IS NULL OR created_at >= $3)"
                " AND ($4::timestamptz IS NULL OR created_at < $4)"
                " RETURNING charger_id",
                subscription_id,
                notifications,
                start,
                end,
            )
            await _touch_lanes(
                conn, [(subscription_id, c) for c in {r["charger_id"] for r in rows}]
            )
        return len(rows)

    # The dispatcher.

    async def fan_out(self, limit: int) -> int | None:
        """Turn up to ``limit`` new outbox rows into deliveries. Returns how many outbox rows
        were taken, or None when another process holds the cursor."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            # First statement, before this transaction has an xid of its own: every
            # transaction older than ``horizon`` has ended, so rows below it are final.
            horizon = await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())")
            cursor = await conn.fetchrow(
                "SELECT after_xid, after_id FROM outbox_cursor FOR UPDATE SKIP LOCKED"
            )
            if cursor is None:
                return None
            last = await conn.fetchrow(
                "WITH batch AS ("
                "  SELECT id, xid, charger_id, event FROM outbox"
                "  WHERE (xid, id) > ($1::xid8, $2::bigint) AND xid < $3::xid8"
                "  ORDER BY xid, id LIMIT $4"
                "), added AS ("
                "  INSERT INTO deliveries (subscription_id, outbox_id, charger_id, event)"
                "  SELECT s.id, b.id, b.charger_id, b.event FROM batch b"
                "  JOIN subscriptions s ON s.enabled AND b.event = ANY(s.notifications)"
                "  RETURNING subscription_id, charger_id"
                "), lanes AS ("
                "  INSERT INTO delivery_lanes (subscription_id, charger_id)"
                "  SELECT DISTINCT subscription_id, charger_id FROM added"
                "  ON CONFLICT (subscription_id, charger_id)"
                "  DO UPDATE SET version = delivery_lanes.version + 1"
                ") SELECT xid, id, (SELECT count(*) FROM batch) AS n"
                "  FROM batch ORDER BY xid DESC, id DESC LIMIT 1",
                cursor["after_xid"],
                cursor["after_id"],
                horizon,
                limit,
            )
            if last is None:
                return 0
            await conn.execute(
                "UPDATE outbox_cursor SET after_xid = $1, after_id = $2", last["xid"], last["id"]
            )
            n: int = last["n"]
            return n

    async def claim_lanes(self, subscription_id: int, limit: int, lease: float) -> list[str]:
        """Lease up to ``limit`` due lanes of a subscription for ``lease`` seconds; returns
        their charger ids."""
        rows = await self.db.fetch(
            "UPDATE delivery_lanes l SET leased_until = now() + make_interval(secs => $3)"
            " FROM (SELECT subscription_id, charger_id FROM delivery_lanes"
            "       WHERE subscription_id = $1 AND next_attempt_at <= now()"
            "       AND (leased_until IS NULL OR leased_until < now())"
            "       ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) due"
            " WHERE l.subscription_id = due.subscription_id AND l.charger_id = due.charger_id"
            " RETURNING l.charger_id, l.version",
            subscription_id,
            limit,
            lease,
        )
        return [r["charger_id"] for r in rows]

    async def lane_deliveries(
        self, subscription_id: int, charger_id: str, limit: int
    ) -> tuple[int, list[Delivery]]:
        """The lane's version and its next ``limit`` pending deliveries, in outbox order."""
        async with self.db.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            version = await conn.fetchval(
                "SELECT version FROM delivery_lanes WHERE subscription_id = $1 AND charger_id = $2",
                subscription_id,
                charger_id,
            )
            rows = await conn.fetch(
                "SELECT d.outbox_id, d.event, d.attempts, o.payload, o.created_at"
                " FROM deliveries d JOIN outbox o ON o.id = d.outbox_id"
                " WHERE d.subscription_id = $1 AND d.charger_id = $2 AND d.state = 'pending'"
                " ORDER BY d.outbox_id LIMIT $3",
                subscription_id,
                charger_id,
                limit,
            )
        return (version or 0), [Delivery(**dict(r)) for r in rows]

    async def delivered(
        self,
        subscription_id: int,
        charger_id: str,
        outbox_ids: list[int],
        lease: float,
        attempts: Sequence[tuple[int, int, int | None, float]] = (),
    ) -> None:
        """Deliveries that succeeded: deleted, the lane's lease renewed. ``attempts``: (outbox
        id, attempt number, status code, ms) of successes that follow failures, for history."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM deliveries WHERE subscription_id = $1 AND outbox_id = ANY($2)",
                subscription_id,
                outbox_ids,
            )
            if attempts:
                await conn.executemany(
                    "INSERT INTO delivery_attempts (subscription_id, outbox_id, attempt, ok,"
                    " status_code, duration_ms) VALUES ($1, $2, $3, true, $4, $5)",
                    [(subscription_id, *a) for a in attempts],
                )
            await self._renew(conn, subscription_id, charger_id, lease)

    async def failed(
        self,
        subscription_id: int,
        charger_id: str,
        outbox_id: int,
        attempt: int,
        error: str,
        status_code: int | None,
        duration_ms: float,
        retry_in: float | None,
        lease: float,
    ) -> None:
        """An attempt failed. ``retry_in`` seconds: the delivery (and so its lane, which keeps
        the charger's order) waits that long; None: it gives up ('failed') and the lane goes on.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO delivery_attempts (subscription_id, outbox_id, attempt, ok,"
                " status_code, error, duration_ms) VALUES ($1, $2, $3, false, $4, $5, $6)",
                subscription_id,
                outbox_id,
                attempt,
                status_code,
                error,
                duration_ms,
            )
            await conn.execute(
                "UPDATE deliveries SET attempts = $3, last_error = $4,"
                " state = CASE WHEN $5::float8 IS NULL THEN 'failed' ELSE 'pending' END,"
                " next_attempt_at = now() + make_interval(secs => coalesce($5::float8, 0))"
                " WHERE subscription_id = $1 AND outbox_id = $2",
                subscription_id,
                outbox_id,
                attempt,
                error,
                retry_in,
            )
            if retry_in is None:
                await self._renew(conn, subscription_id, charger_id, lease)
            else:
                await conn.execute(
                    "UPDATE delivery_lanes SET leased_until = NULL,"
                    " next_attempt_at = now() + make_interval(secs => $3)"
                    " WHERE subscription_id = $1 AND charger_id = $2",
                    subscription_id,
                    charger_id,
                    retry_in,
                )

    async def release_lane(self, subscription_id: int, charger_id: str, version: int) -> None:
        """The claimant is done with a lane: it is removed when no delivery was added since
        ``version`` was read (and it found none pending), else it is due again at once."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "DELETE FROM delivery_lanes WHERE subscription_id = $1 AND charger_id = $2"
                " AND version = $3 AND NOT EXISTS (SELECT 1 FROM deliveries"
                "   WHERE subscription_id = $1 AND charger_id = $2 AND state = 'pending')",
                subscription_id,
                charger_id,
                version,
            )
            if status == "DELETE 0":
                await conn.execute(
                    "UPDATE delivery_lanes SET leased_until = NULL"
                    " WHERE subscription_id = $1 AND charger_id = $2",
                    subscription_id,
                    charger_id,
                )

    async def retry_now(self, subscription_ids: list[int]) -> int:
        """Make the lanes of these subscriptions that wait for a retry due now (their sink is
        back after an outage: waiting out the schedule would only delay them). Returns how
        many lanes."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE deliveries SET next_attempt_at = now() WHERE subscription_id = ANY($1)"
                " AND state = 'pending' AND next_attempt_at > now()",
                subscription_ids,
            )
            status: str = await conn.execute(
                "UPDATE delivery_lanes SET next_attempt_at = now()"
                " WHERE subscription_id = ANY($1) AND next_attempt_at > now()",
                subscription_ids,
            )
        return int(status.split()[-1])

    async def unlease(self, subscription_id: int, charger_id: str) -> None:
        """Give a lane back untouched (shutdown): due again at once, for any process."""
        await self.db.execute(
            "UPDATE delivery_lanes SET leased_until = NULL WHERE subscription_id = $1"
            " AND charger_id = $2",
            subscription_id,
            charger_id,
        )

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

    async def backlog(self) -> int:
        """Deliveries pending, all subscriptions (a gauge)."""
        n: int = await self.db.fetchval("SELECT count(*) FROM deliveries WHERE state = 'pending'")
        return n

    async def prune(self, retention: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` outbox rows older than ``retention`` seconds that are fanned
        out and have no delivery left (pending or failed). Returns how many."""
        status = await self.db.execute(
            "DELETE FROM outbox WHERE id IN ("
            " SELECT o.id FROM outbox o, outbox_cursor c"
            " WHERE o.created_at < now() - make_interval(secs => $1)"
            " AND (o.xid, o.id) <= (c.after_xid, c.after_id)"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.outbox_id = o.id)"
            " LIMIT $2)",
            retention,
            limit,
        )
        return int(status.split()[-1])

    @staticmethod
    async def _renew(
        conn: asyncpg.Connection, subscription_id: int, charger_id: str, lease: float
    ) -> None:
        await conn.execute(
            "UPDATE delivery_lanes SET leased_until = now() + make_interval(secs => $3)"
            " WHERE subscription_id = $1 AND charger_id = $2",
            subscription_id,
            charger_id,
            lease,
        )


async def _touch_lanes(conn: asyncpg.Connection, lanes: list[tuple[int, str]]) -> None:
    """Make these lanes due, bumping their version (deliveries were added to them)."""
    if lanes:
        await conn.executemany(
            "INSERT INTO delivery_lanes (subscription_id, charger_id) VALUES ($1, $2)"
            " ON CONFLICT (subscription_id, charger_id) DO UPDATE SET"
            " version = delivery_lanes.version + 1, next_attempt_at = now()",
            lanes,
        )


def cdr_row(cdr: Any) -> tuple[Any, ...]:
    """A :class:`evgate.events.builders.Cdr` as a row tuple in CDR_COLUMNS order."""
    return (
        cdr.id,
        cdr.charger_id,
        cdr.charge_point_id,
        cdr.transaction_id,
        cdr.connector_id,
        cdr.id_tag,
        cdr.started_at,
        cdr.stopped_at,
        cdr.meter_start_wh,
        cdr.meter_stop_wh,
        cdr.energy_wh,
        cdr.stop_reason,
        cdr.created_at,
    )


class CdrStore:
    """Charge detail records: written with the StopTransaction's rows, read by the API."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, cdr_id: str) -> dict[str, Any]:
        """The CDR's columns (``charger_number`` as ``charge_point_id``). Raises: NotFound."""
        columns = ", ".join(
            "charger_number AS charge_point_id" if c == "charger_number" else c for c in CDR_COLUMNS
        )
        row = await self.db.fetchrow(f"SELECT {columns} FROM cdrs WHERE id = $1", cdr_id)
        if row is None:
            raise NotFound(f"no CDR {cdr_id!r}")
        return dict(row)

    async def insert(self, conn: asyncpg.Connection, cdr: Any) -> None:
        """Insert a CDR on ``conn`` (in the caller's transaction); a second one with the same
        id is ignored."""
        await conn.execute(CDRS.sql, *cdr_row(cdr))
