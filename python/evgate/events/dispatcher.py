"""events room: the dispatcher — from the outbox to every subscription, bounded, in order.

One task per process (owned by :class:`Dispatcher`, started and stopped by ``app.py``) loops:

1. **Fan-out.** Takes new outbox rows, in commit-safe order, and makes one delivery per
   matching subscription (``DeliveryStore.fan_out``; one process at a time holds the
   cursor, so each event fans out once however many processes share the database).
2. **Claim.** For each enabled subscription with free slots, leases due *lanes* — one lane per
   (subscription, charger) — with ``FOR UPDATE SKIP LOCKED``. A lane is worked by one task of
   one process at a time, which sends its deliveries one after the other: a charger's events
   arrive in order. A subscription has at most ``lanes_per_subscription`` lanes in flight, each
   holding at most ``lane_batch`` events: memory and concurrency are bounded per subscription.
3. **Deliver.** A failed attempt stops its lane until the retry time (exponential schedule with
   jitter, or the receiver's Retry-After); other lanes and other subscriptions go on. After the
   last retry the delivery is marked failed (listed by the API, resendable) and the lane goes
   on. A 410 disables the subscription.

The charger path never waits for any of this: handlers only append outbox rows to their
transaction. A slow or dead receiver holds only its own subscription's lanes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from evgate.events.sinks import Attempt, KafkaProducers, WebhookSink, kafka_settings_key
from evgate.metrics import Registry
from evgate.storage.deliveries import Delivery, DeliveryStore
from evgate.storage.subscriptions import SubscriptionRow, SubscriptionStore
from evgate.tasks import cancel_and_wait, wait_event

__all__ = ["Dispatcher", "DispatcherConfig", "retry_delay"]

log = logging.getLogger(__name__)

_STOP_GRACE = 5.0  # seconds stop() waits for each part (lanes, sinks) before moving on


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
    fan_out_batch: int = 1000
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
    lanes: set[str] = field(default_factory=set)


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
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._probe_due = 0.0
        self._wakeup = asyncio.Event()
        self._refresh_due = 0.0
        self._prune_due = 0.0
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
            "Kafka lanes sent again because another lane's failure replaced their producer",
        )
        self._m_fanned = registry.counter(
            "evgate_outbox_fanned_out_total", "Outbox events turned into deliveries"
        )
        lanes = registry.gauge("evgate_notification_lanes_active", "Lanes being delivered now")
        lanes.set_function(lambda: len(self._tasks))
        self._m_backlog = registry.gauge(
            "evgate_notification_backlog", "Deliveries pending (all subscriptions, all processes)"
        )

    # Lifecycle.

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dispatcher")

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
        # Bounded: a lane that does not end in time (a receiver or the database not
        # answering its last words) is left behind; its lease expires and any process resends
        # what it held, so nothing is lost by not waiting longer.
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=_STOP_GRACE)
            if late:
                log.warning("dispatcher: %d lanes did not stop in %.0f s", len(late), _STOP_GRACE)
        for sub in self._subs.values():
            await self._close_sink(sub)
        self._subs.clear()
        await self._kafka.close(_STOP_GRACE)

    def wake(self) -> None:
        """New events or changed subscriptions: look now rather than at the next poll."""
        self._refresh_due = 0.0
        self._wakeup.set()

    # The loop.

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.config.poll_interval
        retry = self.deliveries.db.health.retry("the dispatcher", log, first=1.0)
        while True:
            busy = True
            try:
                now = loop.time()
                if now >= self._refresh_due:
                    await self._refresh()
                    self._refresh_due = now + self.config.refresh_interval
                await self._kafka_returns(now)
                fanned = await self._fan_out()
                claimed = await self._claim()
                # Rows fanned out to no subscription keep no one waiting: without one, the
                # outbox is looked at as an idle one is (a fleet's events would otherwise cost
                # a fan-out transaction every poll_interval).
                busy = bool((fanned and self._subs) or claimed or self._tasks)
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
                if not sub.lanes:
                    await self._close_sink(sub)
        for sub_id, row in rows.items():
            self._subs.setdefault(sub_id, _Subscription(row))
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
                self._probe = asyncio.get_running_loop().create_task(
                    self._probe_brokers(probes), name="kafka-probe"
                )

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
        """Fan out new outbox rows; returns how many were taken."""
        # A bounded amount per round, so claiming is not starved by a large backlog.
        total = 0
        for _ in range(10):
            taken = await self.deliveries.fan_out(self.config.fan_out_batch)
            if not taken:
                break
            total += taken
            self._m_fanned.inc(amount=taken)
            if taken < self.config.fan_out_batch:
                break
        return total

    async def _claim(self) -> int:
        """Lease due lanes and start them; returns how many were started."""
        started = 0
        lease = self._lease()
        for sub in list(self._subs.values()):
            free = self.config.lanes_per_subscription - len(sub.lanes)
            if free <= 0:
                continue
            for charger_id in await self.deliveries.claim_lanes(sub.row.id, free, lease):
                sub.lanes.add(charger_id)
                task = asyncio.get_running_loop().create_task(
                    self._lane(sub, charger_id), name=f"lane:{sub.row.id}:{charger_id}"
                )
                self._tasks[task] = sub
                task.add_done_callback(self._forget)
                started += 1
        return started

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    def _lease(self) -> float:
        # Long enough for one attempt plus the bookkeeping (and for a Kafka lane, the close of
        # a replaced producer first: up to the request timeout); renewed after every outcome.
        return self.config.delivery_timeout * 3 + self.config.kafka_request_timeout + 30.0

    # A lane.

    async def _lane(self, sub: _Subscription, charger_id: str) -> None:
        sub_id = sub.row.id
        try:
            for _ in range(10):  # then give the lane back, for fairness between chargers
                version, batch = await self.deliveries.lane_deliveries(
                    sub_id, charger_id, self.config.lane_batch
                )
                if not batch:
                    await self.deliveries.release_lane(sub_id, charger_id, version)
                    return
                if sub.row.via == "kafka":
                    going_on = await self._kafka_batch(sub, charger_id, batch)
                else:
                    going_on = await self._webhook_batch(sub, charger_id, batch)
                if not going_on:
                    return
            await self.deliveries.unlease(sub_id, charger_id)
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
            sub.lanes.discard(charger_id)
            if not sub.lanes and self._subs.get(sub_id) is not sub:
                await self._close_sink(sub)  # the subscription changed or went meanwhile
            self._wakeup.set()

    def _webhook_sink(self, sub: _Subscription) -> WebhookSink:
        if sub.sink is None:
            sub.sink = WebhookSink(
                sub.row, self.config.delivery_timeout, self.config.lanes_per_subscription
            )
        return sub.sink

    async def _webhook_batch(
        self, sub: _Subscription, charger_id: str, batch: list[Delivery]
    ) -> bool:
        """Deliver in order; successes are recorded together, up to the first failure."""
        sink = self._webhook_sink(sub)
        done: list[int] = []
        history: list[tuple[int, int, int | None, float]] = []
        going_on = True
        for delivery in batch:
            attempt = await sink.deliver(delivery)
            if attempt.ok:
                done.append(delivery.outbox_id)
                if delivery.attempts:
                    history.append(
                        (
                            delivery.outbox_id,
                            delivery.attempts + 1,
                            attempt.status_code,
                            attempt.duration_ms,
                        )
                    )
                continue
            await self._record_delivered(sub, charger_id, done, history)
            done, history = [], []
            going_on = await self._record_failure(sub, charger_id, delivery, attempt)
            if not going_on:
                break
        await self._record_delivered(sub, charger_id, done, history)
        return going_on

    async def _kafka_batch(
        self, sub: _Subscription, charger_id: str, batch: list[Delivery]
    ) -> bool:
        acked, attempt = await self._kafka.deliver(sub.row, charger_id, batch)
        await self._record_delivered(sub, charger_id, [d.outbox_id for d in batch[:acked]], [])
        if attempt.ok:
            return True
        if attempt.resend:
            # Another lane broke the shared producer: no failed attempt, no retry delay; the
            # lane is given back, due at once (claimed again within a poll interval).
            self._m_resent.inc()
            await self.deliveries.unlease(sub.row.id, charger_id)
            return False
        return await self._record_failure(sub, charger_id, batch[acked], attempt)

    async def _record_delivered(
        self,
        sub: _Subscription,
        charger_id: str,
        outbox_ids: list[int],
        history: list[tuple[int, int, int | None, float]],
    ) -> None:
        if outbox_ids:
            await self.deliveries.delivered(
                sub.row.id, charger_id, outbox_ids, self._lease(), history
            )
            self._m_delivered.inc(sub.row.via, amount=len(outbox_ids))

    async def _record_failure(
        self, sub: _Subscription, charger_id: str, delivery: Delivery, attempt: Attempt
    ) -> bool:
        """Record a failed attempt; returns whether the lane goes on (the delivery gave up)."""
        via = sub.row.via
        self._m_failed.inc(via)
        number = delivery.attempts + 1
        error = attempt.error or "failed"
        if attempt.gone:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            reason = f"receiver answered 410 Gone at {when}"
            await self.deliveries.failed(
                sub.row.id, charger_id, delivery.outbox_id, number, error,
                attempt.status_code, attempt.duration_ms, None, self._lease(),
            )  # fmt: skip
            await self.subscriptions.disable(sub.row.id, reason)
            log.warning("subscription %d disabled: %s", sub.row.id, reason)
            self.wake()
            return False
        retry_in = retry_delay(self.config, number, attempt.retry_after)
        await self.deliveries.failed(
            sub.row.id, charger_id, delivery.outbox_id, number, error,
            attempt.status_code, attempt.duration_ms, retry_in, self._lease(),
        )  # fmt: skip
        if retry_in is None:
            self._m_gave_up.inc(via)
            log.warning(
                "subscription %d: event %d failed after %d attempts (%s)",
                sub.row.id, delivery.outbox_id, number, error,
            )  # fmt: skip
            return True
        return False
