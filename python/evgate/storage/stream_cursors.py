"""storage room: stream cursors (``stream_cursors``) — an operator's subscription's stream of
the outbox, Kafka or webhook: the cursor's lease and moves, and a stream's own read of its
window (the streams of a process take their windows from one shared read,
``storage/stream_reader.py``; this read is for a stream behind that read's range, or a
subscription that is no longer the operator's).

An operator's subscription makes no ``deliveries`` row per event while it is healthy
(PostgreSQL's cost per row was about the sink's cost per event: issue 17). Its stream reads
the outbox itself, in (xid, id) order and only below the horizon (``pg_snapshot_xmin``, as the
fan-out does: a transaction that took its ids early and commits late is waited for, never
jumped over), the events it wants (:func:`~evgate.storage.deliveries.wanted_by`, the fan-out's
rule), and moves its cursor past what the receiver (brokers, or webhook) acknowledged. The
design (see ``events/dispatcher.py``):

* One process at a time streams a subscription: a lease in the cursor row (:meth:`lease`,
  renewed by every :meth:`advance`), never a row lock held over the send (a transaction
  open that long would hold back ``pg_snapshot_xmin``, and every fan-out with it). A dead
  process's lease runs out and another takes over from the cursor (at least once).
* The cursor row may lag behind what its stream delivered: a round that puts nothing in a
  lane saves its position (:meth:`advance`) only about once a second
  (``events/dispatcher.py``, ``_SAVE_WITHIN``); a crash resends what was delivered since
  (at least once, same ``event-id``). What reads the row for other ends (the counts'
  ``waiting``, the backlog gauge) counts those events as waiting meanwhile; the prune and
  the fan-out's handover of a stopped stream keep or resend them (never lose one).
* The cursor row is made by the fan-out (``DeliveryStore.fan_out``) at its own position, and
  removed by it once the subscription is no longer streamed (disabled, or a tenant's).
* An event not delivered (a record a broker refuses, a webhook attempt that failed) goes to
  the lane path (a ``deliveries`` row, its attempt, its lane), in the statement that moves the
  cursor past it; while a charger has a pending delivery, its later events go there too
  (:attr:`StreamedEvent.queued`), keeping its order. The cursor never passes an event that is
  neither acknowledged nor in a lane: an advance with lanes is never put off.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec

from evgate.storage.db import Database
from evgate.storage.deliveries import _NO_FLUSH, wanted_by

__all__ = ["Laned", "Position", "StreamCursorStore", "StreamWindow", "StreamedEvent"]


class Position(msgspec.Struct, frozen=True):
    """A place in the outbox's (xid, id) order."""

    xid: int
    id: int


class StreamedEvent(msgspec.Struct, frozen=True):
    """An event of a stream's window that its subscription wants, with what its sinks need
    (``events.sinks.EventRecord``).

    ``queued``: its charger had a pending delivery (a lane) when it was read: it goes to that
    lane, after the events there, rather than to the receiver now.
    """

    outbox_id: int
    xid: int
    charger_id: str
    event: str
    payload: bytes
    queued: bool

    @property
    def position(self) -> Position:
        return Position(self.xid, self.outbox_id)


class StreamWindow(msgspec.Struct):
    """The next outbox rows after a cursor: the wanted ones, in order, where the window ends
    (the last row read, wanted or not; None: nothing new below the horizon), and how many rows
    it has (wanted or not).

    ``age``: how old its first wanted event was when read (seconds since its transaction
    began, by the database's clock; None: it has none); ``read_at``: when it was read
    (``time.monotonic()``), so that the event's age later is ``time.monotonic() - read_at +
    age`` whatever the two hosts' clocks say.
    """

    events: list[StreamedEvent]
    end: Position | None
    rows: int
    age: float | None = None
    read_at: float = msgspec.field(default_factory=time.monotonic)


class Laned(msgspec.Struct, frozen=True):
    """An event of the stream that goes to its charger's lane: not delivered (refused by a
    broker, a webhook attempt that failed: ``attempt`` 1, its ``error`` and ``status_code``,
    its retry in ``retry_in`` seconds, or None: given up), or behind an earlier one of its
    charger (``attempt`` 0: due with the lane)."""

    outbox_id: int
    charger_id: str
    event: str
    attempt: int = 0
    error: str | None = None
    retry_in: float | None = 0.0
    duration_ms: float = 0.0
    status_code: int | None = None


class StreamCursorStore:
    """Queries of the streams (the dispatcher's, as the owner)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def lease(self, subscription_id: int, holder: str, seconds: float) -> Position | None:
        """Take (or renew) the stream of a subscription for ``seconds``, if no one else holds
        it. Returns its cursor, or None: another process streams it, or the fan-out has not
        made its cursor yet (a subscription just made, or enabled again). A holder whose
        position is ahead of the row (not saved yet) renews with :meth:`advance` instead:
        this reads the row's older position back."""
        row = await self.db.fetchrow(
            "UPDATE stream_cursors SET holder = $2,"
            " leased_until = now() + make_interval(secs => $3)"
            " WHERE subscription_id = $1"
            " AND (holder = $2 OR leased_until IS NULL OR leased_until < now())"
            f" AND {_NO_FLUSH} RETURNING after_xid, after_id",
            subscription_id,
            holder,
            seconds,
        )
        return None if row is None else Position(int(row["after_xid"]), row["after_id"])

    async def read(self, subscription_id: int, after: Position, limit: int) -> StreamWindow:
        """The next ``limit`` outbox rows after ``after`` below the horizon, and of them the
        events the subscription wants, with their payloads: a stream's own read
        (``StreamReader.window`` answers from the process's shared read when it can).

        One statement, no transaction held: its snapshot's xmin is the horizon (every
        transaction below it has ended, and this snapshot sees all it wrote).
        """
        rows = await self.db.fetch(
            "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon),"
            " s AS (SELECT * FROM subscriptions WHERE id = $1),"
            " w AS ("
            "  SELECT o.* FROM outbox o, h WHERE (o.xid, o.id) > ($2::xid8, $3::bigint)"
            "  AND o.xid < h.horizon ORDER BY o.xid, o.id LIMIT $4"
            "), pending AS (SELECT EXISTS (SELECT 1 FROM deliveries"
            "  WHERE subscription_id = $1 AND state = 'pending') AS lanes"
            ") SELECT w.xid, w.id, w.charger_id, w.event, x.wanted,"
            "  CASE WHEN x.wanted THEN w.payload END AS payload,"
            # The first wanted row's age only (a running count of the wanted rows): the
            # others' timestamps are not decoded.
            "  CASE WHEN x.wanted AND count(*) FILTER (WHERE x.wanted)"
            "   OVER (ORDER BY w.xid, w.id) = 1"
            "   THEN extract(epoch FROM now() - w.created_at)::float8 END AS age,"
            # A scalar subquery per wanted row only while the subscription has a lane at all.
            "  x.wanted AND (SELECT lanes FROM pending) AND EXISTS (SELECT 1 FROM deliveries d"
            "   WHERE d.subscription_id = $1 AND d.charger_id = w.charger_id"
            "   AND d.state = 'pending') AS queued"
            " FROM w LEFT JOIN LATERAL ("
            f"  SELECT true AS wanted FROM s WHERE {wanted_by('s', 'w')}) x ON true"
            " ORDER BY w.xid, w.id",
            subscription_id,
            after.xid,
            after.id,
            limit,
        )
        events = [
            StreamedEvent(
                r["id"], int(r["xid"]), r["charger_id"], r["event"], r["payload"], r["queued"]
            )
            for r in rows
            if r["wanted"]
        ]
        end = Position(int(rows[-1]["xid"]), rows[-1]["id"]) if rows else None
        age = next((r["age"] for r in rows if r["age"] is not None), None)
        return StreamWindow(events, end, len(rows), age)

    async def advance(
        self,
        subscription_id: int,
        holder: str,
        to: Position,
        laned: Sequence[Laned],
        seconds: float,
    ) -> bool:
        """Move the cursor to ``to`` and renew the lease, with the events ``laned`` put in
        their chargers' lanes (their ``deliveries`` rows, the refused ones' attempts, the lanes
        due at their first event's time): one statement, so that the cursor never passes an
        event that is neither acknowledged nor in a lane. Returns False, changing nothing,
        when ``holder`` no longer holds the stream (its lease ran out and another took it).

        Commits without waiting for its WAL flush (:data:`_NO_FLUSH`): a crash of PostgreSQL
        that undoes it sends those events again (at least once, same ``event-id``).
        """
        first: dict[str, Laned] = {}
        for item in laned:
            first.setdefault(item.charger_id, item)
        tried = [item for item in laned if item.attempt]
        lanes = sorted(first.values(), key=lambda item: item.charger_id)
        moved = await self.db.fetchval(
            "WITH moved AS ("
            "  UPDATE stream_cursors SET after_xid = $3, after_id = $4,"
            "  leased_until = now() + make_interval(secs => $5)"
            f"  WHERE subscription_id = $1 AND holder = $2 AND {_NO_FLUSH}"
            "  RETURNING subscription_id"
            "), queued AS ("
            "  INSERT INTO deliveries (subscription_id, outbox_id, charger_id, event, attempts,"
            "  state, next_attempt_at, last_error)"
            "  SELECT m.subscription_id, x.o, x.c, x.e, x.n,"
            "  CASE WHEN x.r IS NULL THEN 'failed' ELSE 'pending' END,"
            "  now() + make_interval(secs => coalesce(x.r, 0)), x.err"
            "  FROM moved m, unnest($6::bigint[], $7::text[], $8::text[], $9::int[],"
            "  $10::float8[], $11::text[]) AS x(o, c, e, n, r, err)"
            "  ON CONFLICT DO NOTHING"
            "), history AS ("
            "  INSERT INTO delivery_attempts (subscription_id, outbox_id, attempt, ok,"
            "  status_code, error, duration_ms) SELECT m.subscription_id, x.o, x.n, false, x.s,"
            "  x.err, x.d FROM moved m, unnest($12::bigint[], $13::int[], $14::text[],"
            "  $15::float8[], $18::int[]) AS x(o, n, err, d, s)"
            "), lanes AS ("
            # In (subscription, charger) order, as every writer of lanes takes them.
            "  INSERT INTO delivery_lanes (subscription_id, charger_id, next_attempt_at)"
            "  SELECT m.subscription_id, x.c, now() + make_interval(secs => coalesce(x.r, 0))"
            "  FROM moved m, unnest($16::text[], $17::float8[]) WITH ORDINALITY AS x(c, r, i)"
            "  ORDER BY x.i"
            "  ON CONFLICT (subscription_id, charger_id)"
            "  DO UPDATE SET version = delivery_lanes.version + 1"
            ") SELECT count(*) FROM moved",
            subscription_id,
            holder,
            to.xid,
            to.id,
            seconds,
            [item.outbox_id for item in laned],
            [item.charger_id for item in laned],
            [item.event for item in laned],
            [item.attempt for item in laned],
            [item.retry_in for item in laned],
            [item.error for item in laned],
            [item.outbox_id for item in tried],
            [item.attempt for item in tried],
            [item.error for item in tried],
            [item.duration_ms for item in tried],
            [item.charger_id for item in lanes],
            [item.retry_in for item in lanes],
            [item.status_code for item in tried],
        )
        return bool(moved)

    async def release(self, subscription_id: int, holder: str) -> None:
        """Give the stream back (shutdown): any process may take it at once."""
        await self.db.execute(
            "UPDATE stream_cursors SET holder = NULL, leased_until = NULL"
            " WHERE subscription_id = $1 AND holder = $2",
            subscription_id,
            holder,
        )
