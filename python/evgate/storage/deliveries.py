"""storage room: deliveries — the dispatcher's tables (``deliveries``, ``delivery_lanes``,
``delivery_attempts``, ``outbox_cursor``): fan-out of the outbox, lanes, attempts, resends.

The design (see also ``events/dispatcher.py``):

* ``outbox``: an event is a row written in the transaction of the state it describes —
  through the group-commit writer (``storage/ops/outbox.py``'s EMIT: the state writes, then
  the outbox rows built from what they did) or, for changes made outside it,
  ``storage/outbox.py`` on the same connection.
* Fan-out (:meth:`DeliveryStore.fan_out`): one process at a time (the cursor row is taken
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

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from evgate.storage.db import Database

__all__ = ["Delivery", "DeliveryCounts", "DeliveryStore", "FailedDelivery"]


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


class DeliveryCounts(msgspec.Struct, kw_only=True, rename="camel"):
    """A subscription's deliveries not done: waiting (to send, or for a retry) and failed
    (gave up: resend them)."""

    waiting: int
    failed: int


class DeliveryStore:
    """Queries of the dispatcher (and the API's failed deliveries and resends)."""

    def __init__(self, db: Database) -> None:
        self.db = db

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

    async def counts(self, subscription_id: int) -> DeliveryCounts:
        rows = await self.db.fetch(
            "SELECT state, count(*) FROM deliveries WHERE subscription_id = $1 GROUP BY state",
            subscription_id,
        )
        found = {r[0]: r[1] for r in rows}
        return DeliveryCounts(waiting=found.get("pending", 0), failed=found.get("failed", 0))

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
