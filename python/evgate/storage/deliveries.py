"""storage room: deliveries — the dispatcher's tables (``deliveries``, ``delivery_lanes``,
``delivery_attempts``, ``outbox_cursor``): fan-out of the outbox, lanes, attempts, resends.

The design (see also ``events/dispatcher.py``):

* ``outbox``: an event is a row written in the transaction of the state it describes —
  through the group-commit writer (``storage/ops/outbox.py``'s EMIT: the state writes, then
  the outbox rows built from what they did) or, for changes made outside it,
  ``storage/outbox.py`` on the same connection.
* Fan-out (:meth:`DeliveryStore.fan_out`): one process at a time (the cursor row is taken
  with ``FOR UPDATE SKIP LOCKED``) turns new outbox rows into ``deliveries``, one per matching
  sub-operator's subscription (only the tenant's events), and marks their lanes.
  It reads only rows whose writing transaction is older than every running one
  (``pg_snapshot_xmin``), in (xid, id) order: a transaction that got its id early but
  commits late is never jumped over. The operator's subscriptions (webhook or
  Kafka) read the outbox themselves, each from its own cursor (``storage/stream_cursors.py``),
  which the fan-out starts at its own position.
* Lanes: a lane is one subscription's queue for one charger. :meth:`claim_lanes` leases due
  lanes with ``FOR UPDATE SKIP LOCKED``, so each lane is worked by one process at a time and a
  charger's events go out in order; a lease that is not renewed (a dead process) expires and
  another process takes the lane over.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from evgate.storage.db import Database

__all__ = [
    "BACKLOG_SAMPLE",
    "AttemptRecord",
    "ClaimedLane",
    "Delivery",
    "DeliveryCounts",
    "DeliveryStore",
    "FailedAttempt",
    "FailedDelivery",
    "LaneOutcome",
    "LaneWant",
    "streamed",
    "wanted_by",
]

#: ``synchronous_commit = off`` for the current transaction only (``set_config``'s
#: ``is_local``: reverted at its end, after its COMMIT record; the pool's connection goes on
#: committing durably), as an uncorrelated scalar subquery: PostgreSQL evaluates it once per
#: statement, as a one-time filter before the statement's rows, so a query can apply it in its
#: WHERE (``AND ... IS NOT NULL``, always true) instead of a SET LOCAL round trip of its own.
#: The dispatcher's bookkeeping (see :meth:`DeliveryStore._bookkeeping`) commits with it.
_NO_FLUSH = "(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"

#: How many outbox rows after a stream's cursor :meth:`DeliveryStore.backlog` reads to
#: count what the stream has still to send (beyond them, it estimates).
BACKLOG_SAMPLE = 10_000


def wanted_by(subscription: str, row: str) -> str:
    """The SQL condition that the subscription aliased ``subscription`` wants the outbox row
    aliased ``row`` (the fan-out's and the streams' one rule).

    An operator's subscription (no ``sub_operator_id``) gets every event it names; a
    sub-operator's only the tenant's: those of a charger that is the tenant's now (when read:
    a charger moved to another tenant takes its later events along) and those stamped with
    the tenant (``outbox.sub_operator_id``: written by the tenant's request, or about its
    location, tariff, circuit or id tag). An event of no tenant's charger and no stamp (users,
    partners, plans, balances, an operator's charger) is the operator's only. The charger is
    looked up by key, per row, and only for a tenant's subscription (a join would let the
    planner hash every charger for a batch of a few rows).
    """
    s, o = subscription, row
    return (
        f"{o}.event = ANY({s}.notifications) AND ({s}.sub_operator_id IS NULL"
        f" OR {s}.sub_operator_id = {o}.sub_operator_id OR {s}.sub_operator_id ="
        f" (SELECT c.sub_operator_id FROM chargers c WHERE c.id = {o}.charger_id))"
    )


def streamed(subscription: str) -> str:
    """The SQL condition that the subscription aliased ``subscription`` is streamed from a
    cursor (``storage/stream_cursors.py``) rather than given deliveries by the fan-out: an
    enabled subscription of the operator's, webhook or Kafka (every ``via``).

    A sub-operator's subscription gets deliveries (lanes): whether an event of a charger is
    the tenant's is decided by the charger's owner when it is read, and the fan-out reads it
    within moments of the commit, while a stream held up by its receiver may read it hours
    later, after the charger moved to another tenant (its earlier events would then go to the
    new tenant and never to the old one).
    """
    s = subscription
    return f"{s}.enabled AND {s}.sub_operator_id IS NULL"


class Delivery(msgspec.Struct, kw_only=True):
    """A pending delivery of a lane, with its event."""

    outbox_id: int
    event: str
    attempts: int
    payload: bytes
    created_at: datetime


class LaneWant(msgspec.Struct, frozen=True):
    """How many more lanes a subscription may take (its free slots)."""

    subscription_id: int
    lanes: int


class ClaimedLane(msgspec.Struct):
    """A lane leased by :meth:`DeliveryStore.claim`, with its first pending deliveries."""

    subscription_id: int
    charger_id: str
    version: int
    deliveries: list[Delivery]


class AttemptRecord(msgspec.Struct, frozen=True):
    """One attempt for the history (``delivery_attempts``): every failed one, and a success
    that follows failures."""

    outbox_id: int
    attempt: int
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


class FailedAttempt(msgspec.Struct, frozen=True):
    """The failed attempt that ended a lane's batch. ``retry_in`` seconds: the delivery (and
    its lane, which keeps the charger's order) waits that long; None: it gives up
    ('failed': listed, resendable) and the lane goes on."""

    outbox_id: int
    attempt: int
    error: str
    retry_in: float | None


class LaneOutcome(msgspec.Struct):
    """What a lane's batch did, for :meth:`DeliveryStore.finish`.

    ``then``: ``release`` (the lane is done for now: removed when nothing is pending, else due
    again at once), ``wait`` (until ``failure.retry_in``) or ``hold`` (stays leased: its
    subscription is being disabled, which removes its lanes).
    """

    subscription_id: int
    charger_id: str
    version: int
    delivered: list[int]
    attempts: list[AttemptRecord]
    failure: FailedAttempt | None = None
    then: Literal["release", "wait", "hold"] = "release"


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
    """A subscription's deliveries not done: waiting (to send, or for a retry; a streamed
    subscription's: the events its stream has still to send, and those in its lanes behind an
    event not delivered) and failed (gave up: resend them). A stream saves its cursor about
    once a second: an event it delivered may be counted as waiting for about that long."""

    waiting: int
    failed: int


class DeliveryStore:
    """Queries of the dispatcher (and the API's failed deliveries and resends)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.asynccontextmanager
    async def _bookkeeping(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction of the dispatcher's own rows (fan-out, outcomes) whose COMMIT does not
        wait for its WAL flush: its first statement must apply :data:`_NO_FLUSH` (one
        statement units, the claim, apply it in their implicit transaction instead).

        Each such commit would otherwise be one more fsync in the queue of the group-commit
        writer's, whose COMMIT holds chargers' replies: at fleet rates the dispatcher commits
        several hundred times a second, and the writer's commits took 4 - 10 times longer.
        Nothing is given up: only a crash of PostgreSQL itself can lose the last few hundred
        ms of these commits, and always a tail of them (the WAL is replayed in order); what
        that undoes is redone — a fan-out's cursor goes back with its deliveries, a lost
        outcome sends its events again (at least once, same ``webhook-id``), a lost lease
        only frees its lane. The events themselves (the outbox) are written by the writer,
        with durable commits.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            yield conn

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
        """Its deliveries waiting and failed. A streamed subscription's waiting ones are the
        events its stream has still to send (wanted, after its cursor, committed: also those
        above the horizon) and those in its lanes (behind an event not delivered): after the
        cursor row, which lags what the stream delivered by about a second at most."""
        row = await self.db.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'pending') AS waiting,"
            " count(*) FILTER (WHERE state = 'failed') AS failed,"
            " (SELECT count(*) FROM stream_cursors k JOIN subscriptions s"
            "   ON s.id = k.subscription_id JOIN outbox o"
            f"   ON (o.xid, o.id) > (k.after_xid, k.after_id) AND {wanted_by('s', 'o')}"
            "   WHERE k.subscription_id = $1) AS streaming"
            " FROM deliveries WHERE subscription_id = $1",
            subscription_id,
        )
        assert row is not None
        return DeliveryCounts(waiting=row["waiting"] + row["streaming"], failed=row["failed"])

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
        """Turn up to ``limit`` new outbox rows into deliveries of the sub-operators'
        subscriptions that want them (:func:`wanted_by`). Returns how many outbox rows were
        taken, or None when another process holds the cursor.

        The operator's subscriptions (webhook or Kafka) stream the outbox from cursors of
        their own (:func:`streamed`, ``storage/stream_cursors.py``): the same transaction makes the
        cursor of each that has none, at the position before this batch (the events a webhook
        subscription made now would get), and removes those of subscriptions that are no
        longer streamed (disabled, or a tenant's). What such a stream had not sent of what
        the fan-out passed (after its cursor, up to the position before this batch) becomes
        deliveries in the same statement: pending in its lanes if it is still enabled (made a
        tenant's), failed (listed, resendable) if it is disabled, so that a
        change of a subscription never loses an event it was owed. Those after its cursor row
        may include events the stream delivered in its last second or so (it saves its
        position about once a second, and a round may be sending meanwhile): sent again, or
        listed failed (at least once).
        """
        async with self._bookkeeping() as conn:
            # First statement, before this transaction has an xid of its own: every
            # transaction older than ``horizon`` has ended, so rows below it are final.
            horizon = await conn.fetchval(
                f"SELECT pg_snapshot_xmin(pg_current_snapshot()) WHERE {_NO_FLUSH}"
            )
            cursor = await conn.fetchrow(
                "SELECT after_xid, after_id FROM outbox_cursor FOR UPDATE SKIP LOCKED"
            )
            if cursor is None:
                return None
            last = await conn.fetchrow(
                "WITH batch AS ("
                "  SELECT o.id, o.xid, o.charger_id, o.event, o.sub_operator_id"
                "  FROM outbox o WHERE (o.xid, o.id) > ($1::xid8, $2::bigint)"
                "  AND o.xid < $3::xid8 ORDER BY o.xid, o.id LIMIT $4"
                "), added AS ("
                "  INSERT INTO deliveries (subscription_id, outbox_id, charger_id, event)"
                "  SELECT s.id, b.id, b.charger_id, b.event FROM batch b"
                f"  JOIN subscriptions s ON s.enabled AND NOT ({streamed('s')})"
                f"  AND {wanted_by('s', 'b')}"
                "  RETURNING subscription_id, charger_id"
                "), handed AS ("
                # A stream that stops (its subscription made a webhook, or disabled): what it
                # had not sent of what the fan-out passed becomes deliveries (all CTEs read
                # the cursors before `stopped` deletes them).
                "  INSERT INTO deliveries (subscription_id, outbox_id, charger_id, event, state,"
                "  last_error)"
                "  SELECT s.id, o.id, o.charger_id, o.event,"
                "  CASE WHEN s.enabled THEN 'pending' ELSE 'failed' END,"
                "  CASE WHEN s.enabled THEN NULL ELSE s.disabled_reason END"
                "  FROM stream_cursors k JOIN subscriptions s ON s.id = k.subscription_id"
                f"  AND NOT ({streamed('s')})"
                "  JOIN outbox o ON (o.xid, o.id) > (k.after_xid, k.after_id)"
                "  AND (o.xid, o.id) <= ($1::xid8, $2::bigint)"
                f"  WHERE {wanted_by('s', 'o')}"
                "  ON CONFLICT DO NOTHING"
                "  RETURNING subscription_id, charger_id, state"
                "), lanes AS ("
                "  INSERT INTO delivery_lanes (subscription_id, charger_id)"
                "  SELECT DISTINCT subscription_id, charger_id FROM ("
                "   SELECT subscription_id, charger_id FROM added UNION ALL"
                "   SELECT subscription_id, charger_id FROM handed WHERE state = 'pending'"
                "  ) x ORDER BY 1, 2"
                "  ON CONFLICT (subscription_id, charger_id)"
                "  DO UPDATE SET version = delivery_lanes.version + 1"
                "), started AS ("
                "  INSERT INTO stream_cursors (subscription_id, after_xid, after_id)"
                f"  SELECT s.id, $1, $2 FROM subscriptions s WHERE {streamed('s')}"
                "  AND NOT EXISTS (SELECT 1 FROM stream_cursors k WHERE k.subscription_id = s.id)"
                "  ON CONFLICT DO NOTHING"
                "), stopped AS ("
                "  DELETE FROM stream_cursors k USING subscriptions s"
                "  WHERE s.id = k.subscription_id"
                f"  AND NOT ({streamed('s')})"
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

    async def claim(
        self, wants: Sequence[LaneWant], lane_batch: int, lease: float
    ) -> list[ClaimedLane]:
        """Lease due lanes of several subscriptions in one statement (up to each want's
        ``lanes``, ``FOR UPDATE SKIP LOCKED``) for ``lease`` seconds, with each lane's version
        and its next ``lane_batch`` pending deliveries in outbox order. After delivering, hand
        each lane's outcome to :meth:`finish`.

        The version may be newer than the deliveries read (a fan-out that committed while the
        statement ran): harmless, since :meth:`finish` removes a lane only if nothing is
        pending when it runs; a version is never older than what was read.

        One round trip: the statement is its own (implicit) transaction, which applies
        :data:`_NO_FLUSH` to its commit (see :meth:`_bookkeeping`).
        """
        if not wants:
            return []
        rows = await self.db.fetch(
            "WITH want AS ("
            "  SELECT * FROM unnest($1::bigint[], $2::int[]) AS w(subscription_id, n)"
            "), due AS ("
            "  SELECT l.subscription_id, l.charger_id FROM want w, LATERAL ("
            "    SELECT subscription_id, charger_id FROM delivery_lanes"
            "    WHERE subscription_id = w.subscription_id AND next_attempt_at <= now()"
            "    AND (leased_until IS NULL OR leased_until < now())"
            "    ORDER BY next_attempt_at LIMIT w.n FOR UPDATE SKIP LOCKED) l"
            "), leased AS ("
            "  UPDATE delivery_lanes l SET leased_until = now() + make_interval(secs => $3)"
            "  FROM due WHERE l.subscription_id = due.subscription_id"
            "  AND l.charger_id = due.charger_id"
            "  RETURNING l.subscription_id, l.charger_id, l.version"
            ") SELECT l.subscription_id, l.charger_id, l.version,"
            "  d.outbox_id, d.event, d.attempts, d.payload, d.created_at"
            " FROM leased l LEFT JOIN LATERAL ("
            "  SELECT d.outbox_id, d.event, d.attempts, o.payload, o.created_at"
            "  FROM deliveries d JOIN outbox o ON o.id = d.outbox_id"
            "  WHERE d.subscription_id = l.subscription_id AND d.charger_id = l.charger_id"
            "  AND d.state = 'pending' ORDER BY d.outbox_id LIMIT $4) d ON true"
            f" WHERE {_NO_FLUSH}"
            " ORDER BY l.subscription_id, l.charger_id, d.outbox_id",
            [w.subscription_id for w in wants],
            [w.lanes for w in wants],
            lease,
            lane_batch,
        )
        lanes: list[ClaimedLane] = []
        for r in rows:
            sub_id, charger_id = r["subscription_id"], r["charger_id"]
            if not lanes or (lanes[-1].subscription_id, lanes[-1].charger_id) != (
                sub_id,
                charger_id,
            ):
                lanes.append(ClaimedLane(sub_id, charger_id, r["version"], []))
            if r["outbox_id"] is not None:
                lanes[-1].deliveries.append(
                    Delivery(
                        outbox_id=r["outbox_id"],
                        event=r["event"],
                        attempts=r["attempts"],
                        payload=r["payload"],
                        created_at=r["created_at"],
                    )
                )
        return lanes

    async def finish(self, outcomes: Sequence[LaneOutcome], lease: float) -> None:
        """Record the outcomes of a set of lanes in one transaction, a statement per kind of
        write for the whole set (not one per event): delivered deliveries deleted, attempts
        kept in the history, failed ones rescheduled or given up, and each lane released
        (removed when nothing is pending and no delivery was added since its claim; else due
        again at once), held back until its retry time, or kept leased (``hold``)."""
        if not outcomes:
            return
        done = [(o.subscription_id, i) for o in outcomes for i in o.delivered]
        history = [(o.subscription_id, a) for o in outcomes for a in o.attempts]
        failures = [(o.subscription_id, o.failure) for o in outcomes if o.failure is not None]
        release = [o for o in outcomes if o.then == "release"]
        wait = [o for o in outcomes if o.then == "wait"]
        hold = [o for o in outcomes if o.then == "hold"]
        keys = sorted({(o.subscription_id, o.charger_id) for o in outcomes})
        async with self._bookkeeping() as conn:
            # The lanes' rows first, in one order for every writer (the fan-out adds to lanes
            # in the same order): two sets never wait for each other in a cycle.
            await conn.execute(
                "SELECT 1 FROM delivery_lanes l"
                " JOIN unnest($1::bigint[], $2::text[]) AS x(s, c)"
                " ON l.subscription_id = x.s AND l.charger_id = x.c"
                f" WHERE {_NO_FLUSH}"
                " ORDER BY l.subscription_id, l.charger_id FOR UPDATE OF l",
                [k[0] for k in keys],
                [k[1] for k in keys],
            )
            if done:
                await conn.execute(
                    "DELETE FROM deliveries d USING unnest($1::bigint[], $2::bigint[]) AS x(s, o)"
                    " WHERE d.subscription_id = x.s AND d.outbox_id = x.o",
                    [s for s, _ in done],
                    [i for _, i in done],
                )
            if history:
                await conn.execute(
                    "INSERT INTO delivery_attempts (subscription_id, outbox_id, attempt, ok,"
                    " status_code, error, duration_ms) SELECT * FROM unnest($1::bigint[],"
                    " $2::bigint[], $3::int[], $4::bool[], $5::int[], $6::text[], $7::float8[])",
                    [s for s, _ in history],
                    [a.outbox_id for _, a in history],
                    [a.attempt for _, a in history],
                    [a.ok for _, a in history],
                    [a.status_code for _, a in history],
                    [a.error for _, a in history],
                    [a.duration_ms for _, a in history],
                )
            if failures:
                await conn.execute(
                    "UPDATE deliveries d SET attempts = x.n, last_error = x.e,"
                    " state = CASE WHEN x.r IS NULL THEN 'failed' ELSE 'pending' END,"
                    " next_attempt_at = now() + make_interval(secs => coalesce(x.r, 0))"
                    " FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::text[],"
                    " $5::float8[]) AS x(s, o, n, e, r)"
                    " WHERE d.subscription_id = x.s AND d.outbox_id = x.o",
                    [s for s, _ in failures],
                    [f.outbox_id for _, f in failures],
                    [f.attempt for _, f in failures],
                    [f.error for _, f in failures],
                    [f.retry_in for _, f in failures],
                )
            if wait:
                await conn.execute(
                    "UPDATE delivery_lanes l SET leased_until = NULL,"
                    " next_attempt_at = now() + make_interval(secs => x.r)"
                    " FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS x(s, c, r)"
                    " WHERE l.subscription_id = x.s AND l.charger_id = x.c",
                    [o.subscription_id for o in wait],
                    [o.charger_id for o in wait],
                    [o.failure.retry_in if o.failure else 0.0 for o in wait],
                )
            if hold:
                await conn.execute(
                    "UPDATE delivery_lanes l SET leased_until = now() + make_interval(secs => $3)"
                    " FROM unnest($1::bigint[], $2::text[]) AS x(s, c)"
                    " WHERE l.subscription_id = x.s AND l.charger_id = x.c",
                    [o.subscription_id for o in hold],
                    [o.charger_id for o in hold],
                    lease,
                )
            if release:
                await conn.execute(
                    "WITH x AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])"
                    "  AS x(s, c, v)"
                    "), gone AS ("
                    "  DELETE FROM delivery_lanes l USING x"
                    "  WHERE l.subscription_id = x.s AND l.charger_id = x.c AND l.version = x.v"
                    "  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = x.s"
                    "    AND d.charger_id = x.c AND d.state = 'pending')"
                    "  RETURNING l.subscription_id, l.charger_id"
                    ") UPDATE delivery_lanes l SET leased_until = NULL FROM x"
                    " WHERE l.subscription_id = x.s AND l.charger_id = x.c AND NOT EXISTS ("
                    "  SELECT 1 FROM gone g WHERE g.subscription_id = x.s AND g.charger_id = x.c)",
                    [o.subscription_id for o in release],
                    [o.charger_id for o in release],
                    [o.version for o in release],
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

    async def backlog(self, sample: int = BACKLOG_SAMPLE) -> int:
        """Events waiting for delivery, all subscriptions (a gauge, read periodically): the
        pending deliveries, and what each stream (:func:`streamed`) has still to send
        after its cursor, which has no delivery row (the cursor row: it lags what the stream
        delivered by about a second at most).

        A stream's part is counted over the next ``sample`` outbox rows after its cursor (an
        index range scan, bounded however far the stream is behind) and, when there are
        more, estimated beyond them: the rows after the sample (the outbox's last id less the
        sample's) times the share of the sample that the subscription wants. Exact while a
        stream is less than ``sample`` rows behind; an estimate, of the right size, beyond.
        """
        n: int = await self.db.fetchval(
            "SELECT (SELECT count(*) FROM deliveries WHERE state = 'pending')"
            " + coalesce((SELECT sum(x.owed)::bigint FROM stream_cursors k JOIN subscriptions s"
            f"  ON s.id = k.subscription_id AND {streamed('s')}, LATERAL ("
            "   SELECT round(count(*) FILTER (WHERE r.wanted) * CASE WHEN count(*) < $1 THEN 1"
            "    ELSE 1 + greatest(0, (SELECT max(id) FROM outbox) - max(r.id))::float8 / $1"
            "    END)::bigint AS owed FROM ("
            f"    SELECT o.id, {wanted_by('s', 'o')} AS wanted FROM outbox o"
            "    WHERE (o.xid, o.id) > (k.after_xid, k.after_id) ORDER BY o.xid, o.id LIMIT $1"
            "   ) r) x), 0)",
            sample,
        )
        return n

    async def prune(self, retention: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` outbox rows older than ``retention`` seconds that are fanned
        out, streamed past by every stream's cursor, and have no delivery left
        (pending or failed). Returns how many.

        A stream that is stalled (its receiver away for longer than the retention)
        keeps what it has still to send: its cursor holds the outbox back."""
        status = await self.db.execute(
            "DELETE FROM outbox WHERE id IN ("
            " SELECT o.id FROM outbox o, outbox_cursor c"
            " WHERE o.created_at < now() - make_interval(secs => $1)"
            " AND (o.xid, o.id) <= (c.after_xid, c.after_id)"
            " AND NOT EXISTS (SELECT 1 FROM stream_cursors k"
            "  WHERE (o.xid, o.id) > (k.after_xid, k.after_id))"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.outbox_id = o.id)"
            " LIMIT $2)",
            retention,
            limit,
        )
        return int(status.split()[-1])


async def _touch_lanes(conn: asyncpg.Connection, lanes: list[tuple[int, str]]) -> None:
    """Make these lanes due, bumping their version (deliveries were added to them)."""
    if lanes:
        await conn.executemany(
            "INSERT INTO delivery_lanes (subscription_id, charger_id) VALUES ($1, $2)"
            " ON CONFLICT (subscription_id, charger_id) DO UPDATE SET"
            " version = delivery_lanes.version + 1, next_attempt_at = now()",
            lanes,
        )
