"""events room: the dispatcher — from the outbox to every subscription, bounded, in order.

One task per process (owned by :class:`Dispatcher`, started and stopped by ``app.py``) loops:

1. **Fan-out.** Takes new outbox rows, in commit-safe order, and makes one delivery per
   matching webhook subscription (``DeliveryStore.fan_out``; one process at a time holds the
   cursor, so each event fans out once however many processes share the database).
2. **Claim.** For every enabled subscription with free slots, leases due *lanes* — one lane
   per (subscription, charger) — with ``FOR UPDATE SKIP LOCKED``, and their next events, in
   one statement. A lane is worked by one task of one process at a time, which sends its
   batch one event after the other: a charger's events arrive in order. A subscription has at
   most ``lanes_per_subscription`` lanes in flight, each holding at most ``lane_batch``
   events: memory and concurrency are bounded per subscription. What each lane did is written
   by the bookkeeper (:class:`_Books`) with the outcomes of the other lanes that ended
   meanwhile, in one transaction: the database work is per set of lanes, not per event.
3. **Deliver.** A failed attempt stops its lane until the retry time (exponential schedule with
   jitter, or the receiver's Retry-After); other lanes and other subscriptions go on. After the
   last retry the delivery is marked failed (listed by the API, resendable) and the lane goes
   on. A 410 disables the subscription.
4. **Streams.** An operator's subscription (webhook or Kafka) gets no delivery per event: one
   task per such subscription (:meth:`Dispatcher._stream`), in one process at a time (a
   lease in its cursor row), takes the next events it wants from the outbox after its cursor
   (from the process's one read of the outbox, shared by all its streams: ``StreamReader``;
   ``StreamCursorStore`` for the cursor), sends them all and moves the cursor past them: one
   window in flight per subscription. The cursor row is saved in one short statement at once
   by a round that puts events in lanes (the lanes are made in it), and otherwise about once
   a second (``_SAVE_WITHIN``; the position moves in memory meanwhile), when the lease is
   renewed and when the stream ends: a committed UPDATE per stream per round was what the
   streams cost PostgreSQL at a fleet's pace, and a crash resends at most that second more
   (at least once). Only the send differs: Kafka produces
   the window and waits for every acknowledgement (brokers away: the cursor stays, the stream
   waits for their return, probed every ``kafka_probe_interval``, and sends again from the
   cursor: at least once, the same ``event-id``); a webhook POSTs each charger's events one
   after the other, chargers side by side up to the sink's connections. An event not
   delivered (a record a broker refuses, a failed webhook attempt) goes to its charger's lane
   (a delivery, retried and given up as any) with the charger's later events, while one is
   pending there.

The charger path never waits for any of this: handlers only append outbox rows to their
transaction. A slow or dead receiver holds only its own subscription's lanes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from evgate.events.sinks import (
    Attempt,
    KafkaProducers,
    WebhookSink,
    failure_text,
    kafka_settings_key,
    refused,
    sent_again,
    timed_out,
)
from evgate.metrics import Registry
from evgate.storage.deliveries import (
    BACKLOG_SAMPLE,
    AttemptRecord,
    ClaimedLane,
    Delivery,
    DeliveryStore,
    FailedAttempt,
    LaneOutcome,
    LaneWant,
)
from evgate.storage.stream_cursors import (
    Laned,
    Position,
    StreamCursorStore,
    StreamedEvent,
    StreamWindow,
)
from evgate.storage.stream_reader import StreamReader
from evgate.storage.subscriptions import SubscriptionRow, SubscriptionStore
from evgate.tasks import cancel_and_wait, retrieve, service_task, wait_event

__all__ = ["Dispatcher", "DispatcherConfig", "retry_delay"]

log = logging.getLogger(__name__)

_STOP_GRACE = 5.0  # seconds stop() waits for each part (lanes, sinks) before moving on

# How long a stream's position may run ahead of its cursor row (seconds). Every save is a
# committed UPDATE that PostgreSQL pays on the chargers' cores: a save per round was 20 a
# second per stream at a fleet's pace (400 with 20 subscriptions, issue 17); one a second per
# stream whatever the pace costs a twentieth of that. Delivery is at least once with a stable
# event id, so the row may lag: after a crash (whose lease must run out first, 30 s or more)
# about a second of events more is sent again, and what reads the row (the counts' `waiting`,
# the backlog gauge) counts about a second of delivered events as waiting.
_SAVE_WITHIN = 1.0


class _NotSent(Exception):
    """A streamed event that its round did not send (a webhook round out of time)."""


_NOT_SENT = _NotSent("not sent")

#: What a stream's round did with each event it sent, by outbox id: None, delivered
#: (acknowledged); a ``Laned``, not delivered, for its charger's lane with its failed attempt;
#: an exception, neither (the cursor stops before it). An event not in it was not sent.
_Sent = dict[int, Laned | Exception | None]


@dataclass(frozen=True)
class DispatcherConfig:
    """The dispatcher's knobs (from ``Settings``: ``notification_*``, ``outbox_retention``)."""

    # Delay before retry n (1-based) after a failed attempt; after the last, the delivery fails.
    retry_schedule: Sequence[float] = (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200, 86400)
    # Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter].
    jitter: float = 0.2
    delivery_timeout: float = 10.0
    # How long a Kafka broker may take to acknowledge a produce request; also the age at which
    # aiokafka gives up a record whose partition has no leader.
    kafka_request_timeout: float = 30.0
    fan_out_batch: int = 5000
    # A stream's window (Kafka and webhook): outbox rows read, sent and acknowledged, the
    # cursor moved past them (halved after one that timed out or ran out of time, down to 100).
    kafka_batch: int = 5000
    lanes_per_subscription: int = 16
    lane_batch: int = 100
    poll_interval: float = 0.05
    # After rounds that found nothing to do, the wait doubles up to this (wake() and any work
    # bring it back to poll_interval): an idle process polls twice a second, not 20 times.
    idle_poll_interval: float = 0.5
    refresh_interval: float = 1.0
    # While a subscription's Kafka brokers are away, how often they are tried (a producer
    # start), so that lanes waiting out a long retry are resumed soon after the brokers return.
    kafka_probe_interval: float = 5.0
    outbox_retention: float = 7 * 86400.0
    # EVGATE_TENANT_PRIVATE_TARGETS: a sub-operator's webhook may connect to private addresses.
    tenant_private_targets: bool = False
    prune_interval: float = 60.0


def retry_delay(
    config: DispatcherConfig, attempt: int, retry_after: float | None = None
) -> float | None:
    """Seconds before the next attempt after failed attempt number ``attempt`` (1-based), or
    None when the schedule is exhausted. A receiver's Retry-After is honoured when longer."""
    if attempt > len(config.retry_schedule):
        return None
    base = config.retry_schedule[attempt - 1]
    delay = base * random.uniform(1 - config.jitter, 1 + config.jitter)
    return max(delay, retry_after or 0.0)


@dataclass(eq=False)
class _Subscription:
    row: SubscriptionRow
    sink: WebhookSink | None = None
    # The lanes claimed and not yet done delivering: those delivering (at most
    # ``lanes_per_subscription``, the slots) and as many leased in advance, waiting for a
    # slot, so that a lane starts the moment another ends rather than after a claim.
    lanes: set[str] = field(default_factory=set)
    # Its stream is sending through ``sink`` (which is closed only when neither does).
    streaming: bool = False
    # Its receiver answered 410: disabled, its stream stops before the next refresh says so.
    gone: bool = False
    slots: asyncio.Semaphore | None = None


@dataclass(eq=False)
class _Stream:
    """A subscription's stream, as this process works it (see :meth:`Dispatcher._stream`)."""

    subscription_id: int
    batch: int
    # Its sink's kind (the lag's gauge), as of its last round.
    via: str
    # Its cursor while this process holds the lease (None: not held, or not known).
    position: Position | None = None
    # When (loop time) its cursor row was last written (the lease taken or renewed, the
    # position saved): the lease runs from then.
    leased_at: float = 0.0
    # The position its rounds moved to without saving it (``position`` then; None: the
    # cursor row has ``position``): a round that made no lane saves only every
    # ``_SAVE_WITHIN``; the lease's renewal and the stream's end save it too.
    unsaved: Position | None = None
    # New events (wake(), a fan-out that took rows), and the brokers' return after an outage.
    events: asyncio.Event = field(default_factory=asyncio.Event)
    back: asyncio.Event = field(default_factory=asyncio.Event)
    # The error last logged for a failure that is no outage (logged once until it changes).
    complaint: str | None = None
    # When (``time.monotonic()``) the oldest event it has not had acknowledged was written:
    # the first wanted one of its last window (None: caught up, or not streamed here).
    oldest: float | None = None
    # The next window, read while the current one is produced: where it starts, and its read.
    ahead: tuple[Position, asyncio.Task[StreamWindow]] | None = None

    def behind(self) -> float:
        """How old (seconds) the oldest event it has not had acknowledged is (0: none)."""
        return 0.0 if self.oldest is None else max(0.0, time.monotonic() - self.oldest)

    def save_due_in(self, now: float) -> float:
        """Seconds (loop time) until its position is to be saved (<= 0: due now)."""
        return self.leased_at + _SAVE_WITHIN - now

    def discard_ahead(self) -> None:
        """Forget the window read ahead (the cursor did not get to its start, or lanes were
        made meanwhile, which its events' ``queued`` did not see)."""
        if self.ahead is not None:
            _, task = self.ahead
            self.ahead = None
            task.cancel()
            task.add_done_callback(retrieve)


class _Books:
    """The lanes' outcomes, written in sets: a lane that ends hands its outcome over and waits
    for it to be written; whatever ends while one set is being written goes into the next (one
    transaction, a statement per kind of write: ``DeliveryStore.finish``), so the database
    work per event shrinks as the rate grows. ``start()``; ``await stop()`` after the lanes."""

    def __init__(self, deliveries: DeliveryStore, lease: Callable[[], float]) -> None:
        self._deliveries = deliveries
        self._lease = lease
        self._queue: list[tuple[LaneOutcome, asyncio.Future[None]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = service_task(self._run(), name="lane-books")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()

    async def record(self, outcome: LaneOutcome) -> None:
        """Write ``outcome`` with the others of its set; raises what the write raised."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((outcome, future))
        self._ready.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            # A lane cancelled meanwhile gave its lease back itself: what it delivered is sent
            # again by whoever takes the lane (at least once).
            batch = [(o, f) for o, f in self._queue if not f.done()]
            self._queue = []
            if not batch:
                continue
            try:
                await self._deliveries.finish([o for o, _ in batch], self._lease())
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)


class Dispatcher:
    """Delivers the outbox to the subscriptions. ``start()`` after the database is open,
    ``await stop()`` before it closes; ``wake()`` after writing events, to skip the poll wait.
    """

    def __init__(
        self,
        subscriptions: SubscriptionStore,
        deliveries: DeliveryStore,
        config: DispatcherConfig | None = None,
        metrics: Registry | None = None,
    ) -> None:
        self.subscriptions = subscriptions
        self.deliveries = deliveries
        self.config = config or DispatcherConfig()
        self._subs: dict[int, _Subscription] = {}
        registry = metrics or Registry()
        self._kafka = KafkaProducers(
            self.config.kafka_request_timeout, self.config.delivery_timeout, registry
        )
        # Every lane in flight, with the subscription (settings and sink) it works for.
        self._tasks: dict[asyncio.Task[None], _Subscription] = {}
        self._books = _Books(self.deliveries, self._lease)
        self.cursors = StreamCursorStore(deliveries.db)
        # One read of the outbox for all the streams of this dispatcher.
        self.reader = StreamReader(self.cursors, self.config.kafka_batch, self.config.poll_interval)
        # Who holds a stream's lease: this dispatcher (a process may run several in tests).
        self._holder = secrets.token_hex(8)
        self._streams: dict[int, tuple[_Stream, asyncio.Task[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._probe_due = 0.0
        self._wakeup = asyncio.Event()
        self._refresh_due = 0.0
        self._prune_due = 0.0
        self._new_events = asyncio.Event()
        self._m_delivered = registry.counter(
            "evgate_notifications_delivered_total", "Events delivered", ("via",)
        )
        self._m_failed = registry.counter(
            "evgate_notification_attempts_failed_total", "Delivery attempts that failed", ("via",)
        )
        self._m_gave_up = registry.counter(
            "evgate_notifications_gave_up_total",
            "Deliveries that exhausted their retries",
            ("via",),
        )
        self._m_resent = registry.counter(
            "evgate_kafka_resends_total",
            "Kafka lanes and stream batches sent again because a failure replaced their producer",
        )
        # One gauge per sink (the Kafka one's name is the operators' dashboards').
        self._m_stream_lag = {
            "kafka": registry.gauge(
                "evgate_kafka_stream_behind_seconds",
                "How old the oldest event a Kafka subscription's stream has not had"
                " acknowledged is (0: caught up; also while its brokers are away)",
                ("subscription",),
            ),
            "webhook": registry.gauge(
                "evgate_webhook_stream_behind_seconds",
                "How old the oldest event a webhook subscription's stream has not had"
                " delivered or put in a lane is (0: caught up)",
                ("subscription",),
            ),
        }
        self._m_fanned = registry.counter(
            "evgate_outbox_fanned_out_total", "Outbox events turned into deliveries"
        )
        lanes = registry.gauge("evgate_notification_lanes_active", "Lanes being delivered now")
        lanes.set_function(lambda: len(self._tasks))
        self._m_backlog = registry.gauge(
            "evgate_notification_backlog",
            "Events waiting for delivery (all subscriptions, all processes): deliveries pending,"
            " and what streams have still to send after their cursors (counted over the"
            f" next {BACKLOG_SAMPLE} outbox rows of each, estimated beyond)",
        )

    # Lifecycle.

    def start(self) -> None:
        if self._task is None:
            self._task = service_task(self._run(), name="dispatcher")
            self._books.start()

    async def stop(self) -> None:
        """Stop claiming, cancel the lanes in flight (their leases are given back: another
        process, or this one after a restart, resends what was not acknowledged) and close the
        sinks. Safe to call twice."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await cancel_and_wait(self._probe)
        self._probe = None
        for task in list(self._tasks):
            task.cancel()
        # Each stream saves its position and gives its lease back as it ends (the next holder
        # resends from the cursor what the round in flight had sent).
        streams = {task for _, task in self._streams.values()}
        for task in streams:
            task.cancel()
        if streams:
            await asyncio.wait(streams, timeout=_STOP_GRACE)
        self._streams.clear()
        await self.reader.close()
        # Bounded: a lane that does not end in time (a receiver or the database not
        # answering its last words) is left behind; its lease expires and any process resends
        # what it held, so nothing is lost by not waiting longer.
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=_STOP_GRACE)
            if late:
                log.warning("dispatcher: %d lanes did not stop in %.0f s", len(late), _STOP_GRACE)
        await self._books.stop()
        for sub in self._subs.values():
            await self._close_sink(sub)
        self._subs.clear()
        await self._kafka.close(_STOP_GRACE)

    def wake(self) -> None:
        """New events or changed subscriptions: look now rather than at the next poll."""
        self._refresh_due = 0.0
        self._new_events.set()
        self._wakeup.set()
        self._wake_streams()

    def _wake_streams(self) -> None:
        self.reader.wake()
        for stream, _ in self._streams.values():
            stream.events.set()

    # The loops.

    async def _run(self) -> None:
        """Claims lanes (and refreshes, probes, prunes) on lanes' ends, on ``wake()`` and at
        the poll interval; the fan-out runs beside it (:meth:`_fan_out_loop`), so that a
        fan-out never holds up the next claim."""
        fanning = service_task(self._fan_out_loop(), name="dispatcher-fan-out")
        try:
            await self._claim_loop()
        finally:
            await cancel_and_wait(fanning)

    async def _fan_out_loop(self) -> None:
        wait = self.config.poll_interval
        retry = self.deliveries.db.health.retry("the dispatcher's fan-out", log, first=1.0)
        while True:
            fanned = 0
            try:
                fanned = await self._fan_out()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await asyncio.sleep(retry.failed(exc))  # the database is away, most likely
            else:
                retry.ok()
            # Rows fanned out to no subscription keep no one waiting: without one, the outbox
            # is looked at as an idle one is (a fleet's events would otherwise cost a fan-out
            # transaction every poll_interval).
            wanted = bool(self._subs)
            if fanned and wanted:
                self._wakeup.set()  # new deliveries: claim them
                self._wake_streams()  # new events
            if fanned >= 10 * self.config.fan_out_batch and wanted:
                continue  # a backlog: on at once
            if wanted and (fanned or self._new_events.is_set()):
                wait = self.config.poll_interval
            else:
                wait = min(max(wait * 2, self.config.poll_interval), self.config.idle_poll_interval)
            self._new_events.clear()
            await wait_event(self._new_events, wait)

    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.config.poll_interval
        retry = self.deliveries.db.health.retry("the dispatcher", log, first=1.0)
        while True:
            busy = True
            self._show_lags()
            try:
                now = loop.time()
                if now >= self._refresh_due:
                    await self._refresh()
                    self._refresh_due = now + self.config.refresh_interval
                await self._kafka_returns(now)
                claimed = await self._claim()
                busy = bool(claimed or self._tasks)
                if now >= self._prune_due:
                    self._prune_due = now + self.config.prune_interval
                    await self.deliveries.prune(self.config.outbox_retention)
                    self._m_backlog.set(await self.deliveries.backlog())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database is unavailable, most likely: nothing is lost (the outbox and
                # the deliveries are in it); try again after a pause.
                await asyncio.sleep(retry.failed(exc))
            else:
                retry.ok()
            if busy or self._wakeup.is_set():
                wait = self.config.poll_interval
            else:
                wait = min(max(wait * 2, self.config.poll_interval), self.config.idle_poll_interval)
            self._wakeup.clear()
            await wait_event(self._wakeup, wait)

    async def _refresh(self) -> None:
        rows = {r.id: r for r in await self.subscriptions.subscriptions(enabled_only=True)}
        for sub_id, sub in list(self._subs.items()):
            row = rows.get(sub_id)
            if row is None or row.updated_at != sub.row.updated_at:
                # Changed or gone: lanes in flight finish with the settings they started with
                # and close the old sink when the last one ends.
                del self._subs[sub_id]
                if not sub.lanes and not sub.streaming:
                    await self._close_sink(sub)
        for sub_id, row in rows.items():
            self._subs.setdefault(sub_id, _Subscription(row))
            if row.streamed and sub_id not in self._streams:
                stream = _Stream(sub_id, self.config.kafka_batch, row.via)
                task = service_task(self._stream(stream), name=f"stream:{sub_id}")
                self._streams[sub_id] = (stream, task)
        in_use = {
            kafka_settings_key(sub.row)
            for sub in [*self._subs.values(), *self._tasks.values()]
            if sub.row.via == "kafka"
        }
        await self._kafka.retain(in_use)

    async def _kafka_returns(self, now: float) -> None:
        """Lanes waiting out a retry of Kafka brokers that answered again are due now; while
        brokers are away, try them every ``kafka_probe_interval`` (on a task of its own: a
        hung broker takes the delivery timeout)."""
        returned = self._kafka.returned()
        if returned:
            subs = [
                sub.row.id
                for sub in self._subs.values()
                if sub.row.via == "kafka" and kafka_settings_key(sub.row) in returned
            ]
            # Forgotten only once done: with the database away now, the next round tries again
            # (else the lanes would wait out their schedule, ten minutes or more).
            for sub_id in subs:
                if sub_id in self._streams:
                    self._streams[sub_id][0].back.set()
            if subs and await self.deliveries.retry_now(subs):
                self.wake()
            self._kafka.resumed(returned)
        away = self._kafka.away()
        if away and now >= self._probe_due and (self._probe is None or self._probe.done()):
            self._probe_due = now + self.config.kafka_probe_interval
            rows = {
                kafka_settings_key(s.row): s.row
                for s in self._subs.values()
                if s.row.via == "kafka"
            }
            probes = [rows[key] for key in away if key in rows]
            if probes:
                self._probe = service_task(self._probe_brokers(probes), name="kafka-probe")

    async def _probe_brokers(self, rows: list[SubscriptionRow]) -> None:
        for row in rows:
            await self._kafka.probe(row)
        self._wakeup.set()

    @staticmethod
    async def _close_sink(sub: _Subscription) -> None:
        if sub.sink is not None:
            sink, sub.sink = sub.sink, None
            # Bounded: closing an HTTP client whose request was just cancelled can wait on that
            # connection; a sink that does not close in time is dropped (it holds no state).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sink.close(), _STOP_GRACE)

    async def _fan_out(self) -> int:
        """Fan out new outbox rows, up to ten batches; returns how many were taken (all ten
        full: more at once). Bounded, so that a large backlog does not keep the lanes' claims
        waiting for a fresh snapshot for long; ten, not one, else the lanes claimed between
        batches would hold a charger's first few events each, and deliver in small batches."""
        total = 0
        for _ in range(10):
            taken = await self.deliveries.fan_out(self.config.fan_out_batch) or 0
            total += taken
            self._m_fanned.inc(amount=taken)
            if taken < self.config.fan_out_batch:
                break
        return total

    async def _claim(self) -> int:
        """Lease due lanes of every subscription with free slots, with their deliveries, in
        one statement, and start them; returns how many were started."""
        most = 2 * self.config.lanes_per_subscription  # delivering, and as many waiting
        wants = [
            LaneWant(sub.row.id, most - len(sub.lanes))
            for sub in self._subs.values()
            if len(sub.lanes) < most
        ]
        claimed = await self.deliveries.claim(wants, self.config.lane_batch, self._lease())
        loop = asyncio.get_running_loop()
        for lane in claimed:
            sub = self._subs[lane.subscription_id]
            sub.lanes.add(lane.charger_id)
            task = service_task(
                self._lane(sub, lane, loop.time()),
                name=f"lane:{lane.subscription_id}:{lane.charger_id}",
            )
            self._tasks[task] = sub
            task.add_done_callback(self._forget)
        return len(claimed)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    def _lease(self) -> float:
        # Long enough for one attempt plus the bookkeeping (and for a Kafka lane, the close of
        # a replaced producer first: up to the request timeout); renewed after every outcome.
        return self.config.delivery_timeout * 3 + self.config.kafka_request_timeout + 30.0

    def _stream_lease(self, row: SubscriptionRow) -> float:
        if row.via == "webhook":
            # A webhook round sends until half its lease is spent, each attempt within the
            # delivery timeout, so it ends within a shorter lease than a lane's; and a stream
            # holds a whole subscription, not one charger: a process that died (SIGKILL) holds
            # its delivery back until the lease runs out.
            return min(self._lease(), 3 * self.config.delivery_timeout)
        return self._lease()

    # A lane.

    async def _lane(self, sub: _Subscription, lane: ClaimedLane, claimed_at: float) -> None:
        """Deliver a claimed lane's batch in order, then hand its outcome to the bookkeeper
        (written with the other lanes' that end meanwhile, in one transaction); the lane is
        then released (claimed again by the next round if more is pending) or waits."""
        sub_id, charger_id = sub.row.id, lane.charger_id
        if sub.slots is None:
            sub.slots = asyncio.Semaphore(self.config.lanes_per_subscription)
        slots = sub.slots
        slot = False
        try:
            await slots.acquire()
            slot = True
            # The lease runs from the claim: a lane that waited long for its slot (a slow
            # receiver) gives its lease back untouched rather than deliver past it.
            budget = claimed_at + self._lease() / 2
            if not lane.deliveries or asyncio.get_running_loop().time() > budget:
                outcome = LaneOutcome(sub_id, charger_id, lane.version, [], [])
            elif sub.row.via == "kafka":
                outcome = await self._kafka_batch(sub, lane)
            else:
                outcome = await self._webhook_batch(sub, lane, budget)
            # The slot is free while the outcome is written (the lane stays leased until
            # then, so no one takes it meanwhile): the next lane starts without waiting for
            # the bookkeeping, which is what keeps the receiver busy.
            lane.deliveries.clear()
            slot = False
            slots.release()
            await self._free(sub, charger_id)
            await self._books.record(outcome)
            self._m_delivered.inc(sub.row.via, amount=len(outcome.delivered))
            if outcome.failure is not None:
                self._count_failure(sub, outcome)
            if outcome.then == "hold":  # 410 Gone
                await self._gone(sub_id)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.shield(self.deliveries.unlease(sub_id, charger_id)), _STOP_GRACE
                )
            raise
        except Exception as exc:
            self.deliveries.db.health.report(exc, f"delivery lane {sub_id}/{charger_id}", log)
            with contextlib.suppress(Exception):
                await self.deliveries.unlease(sub_id, charger_id)
        finally:
            if slot:
                slots.release()
            await self._free(sub, charger_id)

    async def _gone(self, sub_id: int) -> None:
        """Its receiver answered 410 Gone: disable the subscription (its pending deliveries
        become failed, its lanes go; the fan-out hands its stream's unsent events over)."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        reason = f"receiver answered 410 Gone at {when}"
        await self.subscriptions.disable(sub_id, reason)
        log.warning("subscription %d disabled: %s", sub_id, reason)
        if (sub := self._subs.get(sub_id)) is not None:
            sub.gone = True
        self.wake()

    async def _free(self, sub: _Subscription, charger_id: str) -> None:
        """The lane's slot is free (once; the lane may still be recording its outcome)."""
        if charger_id in sub.lanes:
            sub.lanes.discard(charger_id)
            await self._unused(sub)
            self._wakeup.set()

    async def _unused(self, sub: _Subscription) -> None:
        """Close the sink of a subscription that changed or went, once no lane and no stream
        round sends through it any more."""
        if not sub.lanes and not sub.streaming and self._subs.get(sub.row.id) is not sub:
            await self._close_sink(sub)

    def _webhook_sink(self, sub: _Subscription) -> WebhookSink:
        if sub.sink is None:
            sub.sink = WebhookSink(
                sub.row,
                self.config.delivery_timeout,
                # Its lanes and its stream's round (as many of each), so that neither waits
                # for a connection the other holds (a wait its attempt's timeout counts).
                2 * self.config.lanes_per_subscription,
                self.config.tenant_private_targets,
            )
        return sub.sink

    async def _webhook_batch(
        self, sub: _Subscription, lane: ClaimedLane, budget: float
    ) -> LaneOutcome:
        """Deliver in order, up to the first failure (or until half the lease is spent: the
        rest waits for the next claim, so the lease never runs out under a slow receiver)."""
        sink = self._webhook_sink(sub)
        outcome = LaneOutcome(sub.row.id, lane.charger_id, lane.version, [], [])
        loop = asyncio.get_running_loop()
        for delivery in lane.deliveries:
            attempt = await sink.deliver(delivery)
            if not attempt.ok:
                self._failed(outcome, delivery, attempt)
                break
            outcome.delivered.append(delivery.outbox_id)
            if delivery.attempts:
                number = delivery.attempts + 1
                outcome.attempts.append(
                    AttemptRecord(
                        delivery.outbox_id,
                        number,
                        True,
                        attempt.status_code,
                        None,
                        attempt.duration_ms,
                    )
                )
            if loop.time() > budget:
                break
        return outcome

    async def _kafka_batch(self, sub: _Subscription, lane: ClaimedLane) -> LaneOutcome:
        # A delivery tried before goes alone: a broker that refuses it may still take the
        # records sent after it (a replaced producer's new id has no sequence to break), and
        # they would reach the topic ahead of it.
        batch = lane.deliveries[:1] if lane.deliveries[0].attempts else lane.deliveries
        acked, attempt = await self._kafka.deliver(sub.row, lane.charger_id, batch)
        outcome = LaneOutcome(
            sub.row.id, lane.charger_id, lane.version, [d.outbox_id for d in batch[:acked]], []
        )
        if attempt.resend:
            # Another lane broke the shared producer: no failed attempt, no retry delay; the
            # lane is given back, due at once (claimed again within a poll interval).
            self._m_resent.inc()
        elif not attempt.ok:
            self._failed(outcome, batch[acked], attempt)
        return outcome

    def _failed(self, outcome: LaneOutcome, delivery: Delivery, attempt: Attempt) -> None:
        """Add a failed attempt to the lane's outcome: its retry time (the lane waits), or
        given up (the lane goes on), or 410 Gone (the subscription is disabled)."""
        number = delivery.attempts + 1
        error = attempt.error or "failed"
        retry_in = None if attempt.gone else retry_delay(self.config, number, attempt.retry_after)
        outcome.attempts.append(
            AttemptRecord(
                delivery.outbox_id, number, False, attempt.status_code, error, attempt.duration_ms
            )
        )
        outcome.failure = FailedAttempt(delivery.outbox_id, number, error, retry_in)
        if attempt.gone:
            outcome.then = "hold"
        elif retry_in is not None:
            outcome.then = "wait"

    def _count_failure(self, sub: _Subscription, outcome: LaneOutcome) -> None:
        via, failure = sub.row.via, outcome.failure
        assert failure is not None
        self._m_failed.inc(via)
        if failure.retry_in is None and outcome.then == "release":
            self._m_gave_up.inc(via)
            log.warning(
                "subscription %d: event %d failed after %d attempts (%s)",
                sub.row.id, failure.outbox_id, failure.attempt, failure.error,
            )  # fmt: skip

    # A stream.

    async def _stream(self, stream: _Stream) -> None:
        """Stream one subscription for as long as it is streamed here: a round at a time
        (:meth:`_stream_round`), then a pause that new events cut short, or while its Kafka
        brokers are away one that their return cuts short. Saves its position and gives the
        lease back at the end (shutdown; the subscription disabled, made a tenant's or
        deleted)."""
        sub_id = stream.subscription_id
        name = f"the stream of subscription {sub_id}"
        retry = self.deliveries.db.health.retry(name, log, first=1.0)
        idle = self.config.poll_interval
        if (sub := self._subs.get(sub_id)) is not None and sub.row.via == "kafka":
            self._kafka.prepare(sub.row)
        try:
            while (sub := self._subs.get(sub_id)) is not None and sub.row.streamed and not sub.gone:
                stream.events.clear()
                stream.back.clear()
                outage = False
                try:
                    pause, outage = await self._stream_round(sub, stream, name)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The database away, most likely: read the lease and the cursor again. An
                    # unsaved position goes too: the events since the cursor row's are sent
                    # again (at least once).
                    stream.position = stream.unsaved = None
                    stream.discard_ahead()
                    self.reader.forget(sub_id)
                    pause = retry.failed(exc)
                else:
                    retry.ok()
                if pause is None:  # nothing new: poll less often, as the claims do
                    idle = min(
                        max(idle * 2, self.config.poll_interval), self.config.idle_poll_interval
                    )
                    pause = idle
                else:
                    idle = self.config.poll_interval
                if stream.unsaved is not None and not outage:
                    # A stream gone quiet saves its position within the bound too.
                    due = stream.save_due_in(asyncio.get_running_loop().time())
                    pause = min(pause, max(0.0, due))
                if pause > 0:
                    await wait_event(stream.back if outage else stream.events, pause)
        finally:
            if stream.ahead is not None:
                read = stream.ahead[1]
                stream.discard_ahead()
                await asyncio.wait({read})  # ended, not left running past stop()
            self.reader.forget(sub_id)
            for gauge in self._m_stream_lag.values():
                gauge.set(0, str(sub_id))
            try:
                if stream.position is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(self._give_back(stream)), _STOP_GRACE)
            finally:
                # Listed until its lease is given back: _refresh starts no second stream of
                # the subscription (same holder) whose lease the give-back would release.
                if self._streams.get(sub_id, (None,))[0] is stream:
                    del self._streams[sub_id]

    async def _stream_round(
        self, sub: _Subscription, stream: _Stream, name: str
    ) -> tuple[float | None, bool]:
        """Read the next window after the cursor, send it (:meth:`_produce` or :meth:`_post`)
        and move the cursor past what was acknowledged or put in a lane: in the cursor row at
        once when it made lanes (or stopped short), else in memory, saved within
        ``_SAVE_WITHIN``. Returns how long to pause (None: nothing was there; 0: more at once)
        and whether the brokers are away."""
        row = sub.row
        loop = asyncio.get_running_loop()
        lease = self._stream_lease(row)
        if stream.via != row.via:
            self._m_stream_lag[stream.via].set(0, str(row.id))  # made the other kind
            stream.via = row.via
        if stream.unsaved is not None and loop.time() - stream.leased_at > lease / 4:
            # Renewed by saving the position (an advance renews the lease): a lease() would
            # read the cursor row's older one back.
            if not await self._advance(row, stream, stream.unsaved, [], lease):
                return 0.0, False
        elif stream.position is None or loop.time() - stream.leased_at > lease / 4:
            stream.position = await self.cursors.lease(row.id, self._holder, lease)
            stream.leased_at = loop.time()
            if stream.position is None:
                # Another process streams it (and shows its lag), or its cursor is not made yet.
                self.reader.forget(row.id)
                self._show_lag(stream, None)
                return None, False
            # Lanes another process made while it held the stream are in no read of the
            # subscriptions from before this lease: the next windows ask for them.
            self.reader.laned(row.id)
        assert stream.position is not None  # held: taken, renewed or saved above
        window = await self._window(row, stream, stream.position)
        # Its first wanted event is the oldest not acknowledged (the cursor is before it).
        self._show_lag(stream, None if window.age is None else window.read_at - window.age)
        if window.end is None:
            if (
                stream.unsaved is not None
                and stream.save_due_in(loop.time()) <= 0
                and not await self._advance(row, stream, stream.unsaved, [], lease)
            ):
                return 0.0, False
            return None, False
        full = window.rows >= stream.batch  # more is waiting
        if full:
            # The next window is read while this one is sent (two in memory at most).
            read = service_task(
                self.reader.window(row.id, window.end, stream.batch), name=f"stream-read:{row.id}"
            )
            stream.ahead = (window.end, read)
        send = [e for e in window.events if not e.queued]
        if not send:
            sent: _Sent = {}
        elif row.via == "kafka":
            sent = await self._produce(row, send, name)
        else:
            # Sent until half the lease is spent (the rest is sent by the next round), so the
            # lease never runs out under a slow receiver.
            sent = await self._post(sub, send, stream.leased_at + lease / 2)
        end, laned, delivered, stopped = self._settle(window.events, sent)
        if stopped is None:
            end = window.end  # the unwanted rows after the last wanted one too
        if stopped is not None or laned:
            stream.discard_ahead()
        # Not past any event, the cursor stays; what failed after the stop still goes to lanes.
        to = end if end is not None else (stream.position if laned else None)
        if to is None and stopped is not None and stream.unsaved is not None:
            # Stopped at its first event: the earlier rounds' position is saved before a
            # pause that may be long (brokers away, the probe's pace).
            to = stream.unsaved
        if to is not None and (
            laned or stopped is not None or stream.save_due_in(loop.time()) <= 0
        ):
            # Lanes are made in the statement that moves the cursor, at once: it never passes
            # an event neither acknowledged nor in a lane. A round that stopped short saves
            # too: rare (an outage, a round out of time), and its pause may be long.
            if not await self._advance(row, stream, to, laned, lease):
                return 0.0, False
            if laned:
                self.reader.laned(row.id)  # its next windows ask which chargers have lanes
        elif to is not None:
            # Only delivered or unwanted events passed: saved within _SAVE_WITHIN.
            stream.position = stream.unsaved = to
        self._m_delivered.inc(row.via, amount=delivered)
        failures = [item for item in laned if item.attempt]  # the others wait behind them
        if failures:
            self._m_failed.inc(row.via, amount=len(failures))
            given_up = sum(item.retry_in is None and item.status_code != 410 for item in failures)
            if given_up:
                self._m_gave_up.inc(row.via, amount=given_up)
            if row.via == "kafka":
                log.warning(
                    "%s: the brokers refused %d events (first %d: %s); they go to their"
                    " chargers' lanes",
                    name, len(failures), failures[0].outbox_id, failures[0].error,
                )  # fmt: skip
            if any(item.status_code == 410 for item in failures) and row.via == "webhook":
                await self._gone(row.id)
        if stopped is None:
            stream.complaint = None
            stream.batch = min(self.config.kafka_batch, stream.batch * 2)
            if not full:
                self._show_lag(stream, None)  # caught up (a full one: the next window says)
            return (0.0 if full else self.config.poll_interval), False
        self._show_lag(stream, stream.oldest)  # older now (the send took its time)
        if row.via != "kafka":
            # A webhook's round out of time: on from where it stopped, with a window the
            # receiver can take within a round (what was delivered after the stop is sent
            # again).
            stream.batch = max(100, stream.batch // 2)
            return 0.0, False
        if sent_again(stopped):
            self._m_resent.inc()  # a producer replaced under it: again at once
            return 0.0, False
        if timed_out(stopped):
            stream.batch = max(100, stream.batch // 2)
        if not self._kafka.brokers(row).available:
            return self.config.kafka_probe_interval, True
        # Neither an outage nor a refusal of the record (a failure of the producer itself,
        # its credentials): retried at the probe's pace, logged once until it changes.
        complaint = f"{type(stopped).__name__}: {stopped}"
        if complaint != stream.complaint:
            stream.complaint = complaint
            log.warning("%s waits: %s; retrying", name, complaint)
        return (0.0 if delivered or laned else self.config.kafka_probe_interval), False

    async def _advance(
        self,
        row: SubscriptionRow,
        stream: _Stream,
        to: Position,
        laned: Sequence[Laned],
        lease: float,
    ) -> bool:
        """Save the stream's position ``to`` in its cursor row, with ``laned`` to their lanes,
        and renew its lease (``StreamCursorStore.advance``). False: the lease ran out and
        another process took the stream; its position (saved or not) is dropped, and what was
        delivered after the cursor row's is sent again by the new holder (at least once)."""
        # Not saved again at the stream's end if this is cancelled: that could move the row
        # back behind this save, had it committed.
        stream.unsaved = None
        if not await self.cursors.advance(row.id, self._holder, to, laned, lease):
            stream.position = None
            stream.discard_ahead()
            self.reader.forget(row.id)
            return False
        stream.position = to
        stream.leased_at = asyncio.get_running_loop().time()
        return True

    async def _give_back(self, stream: _Stream) -> None:
        """The stream's end: save its unsaved position (the next holder goes on from it, not
        from the cursor row's older one), then give the lease back."""
        sub_id = stream.subscription_id
        if stream.unsaved is not None:
            # A lease of 0 s: given back by the save itself, should the release not come.
            # False (the lease was lost): the new holder sends them again (at least once).
            await self.cursors.advance(sub_id, self._holder, stream.unsaved, [], 0.0)
            stream.unsaved = None
        await self.cursors.release(sub_id, self._holder)

    async def _produce(self, row: SubscriptionRow, send: list[StreamedEvent], name: str) -> _Sent:
        """A Kafka stream's send: produce the window, wait for every acknowledgement. A
        record a broker refused goes to its charger's lane with its failed attempt."""
        produced = await self._kafka.produce(row, send, [e.charger_id.encode() for e in send], name)
        sent: _Sent = {}
        for e, error in zip(send, produced.errors, strict=True):
            if refused(error):
                assert error is not None
                attempt = Attempt(
                    False, error=failure_text(error), duration_ms=produced.duration_ms
                )
                sent[e.outbox_id] = self._laned(e, attempt)
            else:
                sent[e.outbox_id] = error
        return sent

    async def _post(self, sub: _Subscription, send: list[StreamedEvent], budget: float) -> _Sent:
        """A webhook stream's send: each charger's events one after the other (in order), up
        to the first that is not delivered (it goes to the charger's lane with its failed
        attempt, the charger's later ones behind it); chargers side by side, as many as the
        sink has connections. An event not sent by ``budget`` (loop time) stops the cursor."""
        by_charger: dict[str, list[StreamedEvent]] = {}
        for e in send:
            by_charger.setdefault(e.charger_id, []).append(e)
        # In window order (the cursor stops before the first event not sent: the window's
        # first chargers go first, or a round out of time would never pass them).
        queue = collections.deque(by_charger.values())
        sent: _Sent = {}
        gone = False  # the receiver answered 410: nothing more is sent to it
        sub.streaming = True
        try:
            sink = self._webhook_sink(sub)
            loop = asyncio.get_running_loop()

            async def worker() -> None:
                nonlocal gone
                while queue:
                    for e in queue.popleft():
                        if gone or loop.time() > budget:
                            sent[e.outbox_id] = _NotSent("the round's time ran out")
                            break
                        attempt = await sink.deliver(e)
                        sent[e.outbox_id] = None if attempt.ok else self._laned(e, attempt)
                        gone |= attempt.gone
                        if not attempt.ok:
                            break

            # A task group: a worker that fails (or a cancelled round) ends the others too.
            async with asyncio.TaskGroup() as group:
                for _ in range(min(len(queue), self.config.lanes_per_subscription)):
                    group.create_task(worker())
        finally:
            sub.streaming = False
            await self._unused(sub)
        return sent

    def _laned(self, e: StreamedEvent, attempt: Attempt) -> Laned:
        """A streamed event not delivered, for its charger's lane: its first failed attempt,
        retried as a lane's is (a receiver's Retry-After honoured; a 410 is not retried)."""
        retry_in = None if attempt.gone else retry_delay(self.config, 1, attempt.retry_after)
        error = attempt.error or "failed"
        return Laned(e.outbox_id, e.charger_id, e.event, 1, error, retry_in,
                     attempt.duration_ms, attempt.status_code)  # fmt: skip

    def _show_lag(self, stream: _Stream, oldest: float | None) -> None:
        """Say the stream's oldest event not acknowledged was written at ``oldest``."""
        stream.oldest = oldest
        self._m_stream_lag[stream.via].set(stream.behind(), str(stream.subscription_id))

    def _show_lags(self) -> None:
        """Every stream's lag, as of now: it grows while a round waits (for its brokers, or
        the database), between the rounds that read it."""
        for stream, _ in self._streams.values():
            self._show_lag(stream, stream.oldest)

    async def _window(self, row: SubscriptionRow, stream: _Stream, after: Position) -> StreamWindow:
        """The window after ``after``: the one read ahead if it starts there, else read now."""
        ahead, stream.ahead = stream.ahead, None
        if ahead is not None:
            start, task = ahead
            if start == after:
                return await task
            stream.ahead = ahead
            stream.discard_ahead()
        return await self.reader.window(row.id, after, stream.batch)

    def _settle(
        self, events: list[StreamedEvent], sent: _Sent
    ) -> tuple[Position | None, list[Laned], int, Exception | None]:
        """Go through a window's events in order: delivered ones are passed, those not
        delivered (and every later one of their chargers, and those of chargers with a lane)
        go to the lanes, and the first that is neither stops the cursor before it (after it,
        only failed attempts and their chargers' later events go to the lanes). Returns where
        the cursor may go (None: not past any event), what goes to the lanes, how many were
        delivered, and what stopped it (None: nothing did)."""
        end: Position | None = None
        laned: list[Laned] = []
        chargers: set[str] = set()  # of an event not delivered in this window
        delivered = 0
        stopped: Exception | None = None
        for e in events:
            result = sent.get(e.outbox_id, _NOT_SENT)
            if stopped is not None:
                # Past the stop the cursor stays, but an attempt that failed goes to its lane
                # now, with its charger's events after it (their rows are kept once when the
                # next window lanes them again), so that its Retry-After is kept.
                if e.charger_id in chargers:
                    laned.append(Laned(e.outbox_id, e.charger_id, e.event))
                elif isinstance(result, Laned):
                    laned.append(result)
                    chargers.add(e.charger_id)
                continue
            if e.queued or e.charger_id in chargers:
                if result is None:
                    delivered += 1  # already at the receiver, whatever the lane does
                else:  # behind its charger's lane
                    laned.append(Laned(e.outbox_id, e.charger_id, e.event))
            elif result is None:
                delivered += 1
            elif isinstance(result, Laned):
                laned.append(result)
                chargers.add(e.charger_id)
            else:
                stopped = result
                continue
            end = e.position
        return end, laned, delivered, stopped
