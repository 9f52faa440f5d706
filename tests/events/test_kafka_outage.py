"""A Kafka broker that goes away under load and comes back (issue 14, item 1): stopped cleanly
(SIGTERM) or killed (SIGKILL) while chargers' events keep coming, then started again on the
same data and ports. Every event arrives, in order per charger; no delivery ends `failed`;
and the outage costs a handful of log lines, not an ERROR per reconnect attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner

from evgate.events.builders import ChargerRef, OutboxEntry, network_status
from evgate.events.dispatcher import Dispatcher, DispatcherConfig
from evgate.events.sinks import KafkaProducers
from evgate.storage.db import Database
from evgate.storage.deliveries import Delivery, DeliveryStore
from evgate.storage.subscriptions import SubscriptionRow, SubscriptionStore
from harness.consumer import consume
from harness.kafka import KafkaBroker
from support import LogLines, until

from .events_helpers import at, emit, kafka_settings, kafka_subscription

# Retries every half second for two minutes: an outage of a few seconds never exhausts them,
# so a delivery that ends `failed` is a producer that never recovered. A short Kafka request
# timeout makes aiokafka give up records of a leaderless partition within the outage (as the
# 30 s default does in a 40 s outage).
OUTAGE = DispatcherConfig(
    retry_schedule=(0.5,) * 240,
    jitter=0.1,
    delivery_timeout=2.0,
    kafka_request_timeout=3.0,
    poll_interval=0.02,
    refresh_interval=0.2,
    lanes_per_subscription=8,
)
# A broker that hangs (SIGSTOP) rather than goes away: its requests in flight stay
# unanswered, and outlive the lanes' attempts (request timeout > delivery timeout).
HUNG = dataclasses.replace(OUTAGE, kafka_request_timeout=12.0)
CHARGERS = 24
OUTAGE_SECONDS = 8.0
# A topic that refuses record batches of more than 32 KiB (aiokafka's batches of small
# records stay within 16 KiB), and an event too large for it.
_SMALL = {"max.message.bytes": "32768"}
_TOO_LARGE = 100_000


async def _consume_all(broker: KafkaBroker, topic: str, want: set[str], within: float) -> list[Any]:
    """Every record of ``topic`` until each event id in ``want`` was seen (or time is up)."""

    def enough(got: list[Any]) -> bool:
        return want <= {dict(r.headers)["event-id"].decode() for r in got}

    return await consume(broker.client_config(), topic, enough, within)


async def _subscribed(
    subscriptions: SubscriptionStore,
    broker: KafkaBroker,
    partitions: int,
    topic_config: dict[str, str] | None = None,
    **settings: Any,
) -> tuple[str, SubscriptionRow]:
    """A new topic of ``partitions`` and a Kafka subscription to it (with ``settings``)."""
    topic = f"evgate-{uuid.uuid4().hex[:8]}"
    await broker.create_topic(topic, partitions=partitions, config=topic_config)
    sub = await kafka_subscription(
        subscriptions, kafka_settings(broker.bootstrap_plain, topic, **settings)
    )
    return topic, sub


async def _attempts(db: Database, sub: SubscriptionRow, charger_id: str) -> int:
    """Failed attempts recorded for a charger's deliveries."""
    count: int = await db.fetchval(
        "SELECT count(*) FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id"
        " WHERE a.subscription_id = $1 AND o.charger_id = $2",
        sub.id,
        charger_id,
    )
    return count


async def _cursor_at(db: Database, outbox_id: int) -> bool:
    """Whether the stream's cursor row is at ``outbox_id`` (saved there)."""
    return bool(await db.fetchval("SELECT after_id = $1 FROM stream_cursors", outbox_id))


@pytest.mark.parametrize("how", ["stop", "kill", "pause"])
async def test_kafka_delivery_resumes_after_the_broker_comes_back(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
    how: str,
) -> None:
    """Events for 24 chargers keep coming before, during and after an 8 s outage of the only
    broker (stopped, killed, or hung with requests in flight that outlive the lanes' attempts):
    afterwards every event is in the topic, each charger's in the order emitted (a record may
    come twice, at least once, but never after a later one first came), none is left
    `failed`; the outage logged at most a few lines, no traceback."""
    topic, sub = await _subscribed(subscriptions, kafka_broker, 3)
    dispatchers(HUNG if how == "pause" else OUTAGE)
    chargers = [ChargerRef(f"CP-{i}", i) for i in range(CHARGERS)]
    sent = 0

    async def produce(seconds: float) -> None:
        nonlocal sent
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await emit(
                db, [network_status(c, sent % 2 == 0, at(sent + i)) for i, c in enumerate(chargers)]
            )
            sent += len(chargers)
            await asyncio.sleep(0.05)  # pacing: a steady stream of events

    await produce(2.0)
    with LogLines() as lines:
        try:
            if how == "stop":
                await kafka_broker.stop_async()
            elif how == "kill":
                await kafka_broker.kill_async()
            else:
                kafka_broker.pause()
            await produce(OUTAGE_SECONDS)
        finally:
            if how == "pause":
                kafka_broker.resume()
            else:
                await kafka_broker.start_async()
        await produce(2.0)
        want = {f"evt_{r['id']}" for r in await db.fetch("SELECT id FROM outbox")}
        assert len(want) == sent
        records = await _consume_all(kafka_broker, topic, want, within=120)

    failed = await db.fetchval(
        "SELECT count(*) FROM deliveries WHERE subscription_id = $1 AND state = 'failed'", sub.id
    )
    assert failed == 0
    seen = {dict(r.headers)["event-id"].decode() for r in records}
    assert want - seen == set()
    by_charger: dict[bytes, list[str]] = defaultdict(list)
    for r in records:
        by_charger[r.key].append(msgspec.json.decode(r.value)["timestamp"])
    assert len(by_charger) == CHARGERS
    for stamps in by_charger.values():
        firsts = list(dict.fromkeys(stamps))  # each record's first arrival
        assert firsts == sorted(firsts)

    loud = [r for r in lines.records if r.levelno >= logging.WARNING]
    assert len(loud) <= 20, [f"{r.name}: {r.getMessage()}" for r in loud]
    assert not [r for r in lines.records if r.exc_info], "a traceback was logged"


async def test_a_record_the_broker_refuses_does_not_block_the_others(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """A refused record (larger than the topic takes) used up a sequence number of the
    idempotent producer, which the broker then expects for ever: every later record on that
    partition was refused too (`OutOfOrderSequenceNumber`). The producer is replaced, and
    another charger's events on the same partition are delivered."""
    topic, sub = await _subscribed(subscriptions, kafka_broker, 1, _SMALL, compressionCodec="none")
    small = ChargerRef("CP-SMALL", 2)
    await emit(db, [network_status(small, True, at(0))])
    dispatchers(OUTAGE)
    assert len(await _consume_all(kafka_broker, topic, {"evt_1"}, within=30)) == 1
    big = msgspec.json.encode(
        {"notification": "chargePoint.dataTransferReceived", "data": "x" * _TOO_LARGE}
    )
    await emit(db, [OutboxEntry("chargePoint.dataTransferReceived", "CP-BIG", big)])
    query = "SELECT count(*) FROM delivery_attempts WHERE subscription_id = $1"
    assert await until(lambda: db.fetchval(query, sub.id))
    await emit(db, [network_status(small, i % 2 == 0, at(i)) for i in range(1, 11)])
    want = {
        f"evt_{r['id']}"
        for r in await db.fetch("SELECT id FROM outbox WHERE charger_id = 'CP-SMALL'")
    }
    records = await _consume_all(kafka_broker, topic, want, within=30)
    assert want <= {dict(r.headers)["event-id"].decode() for r in records}


async def test_a_stream_waiting_for_its_brokers_resumes_when_they_return(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """While its brokers are away a Kafka subscription's stream waits (its cursor stays, no
    delivery is made of its events, none fails) and tries at the probe's pace, not the retry
    schedule's (a minute here): it resumes within seconds of their return, from its cursor."""
    config = DispatcherConfig(
        retry_schedule=(60.0,) * 5,
        jitter=0.1,
        delivery_timeout=2.0,
        kafka_request_timeout=3.0,
        poll_interval=0.02,
        refresh_interval=0.2,
        kafka_probe_interval=0.5,
    )
    topic, sub = await _subscribed(subscriptions, kafka_broker, 2)
    dispatcher = dispatchers(config)
    chargers = [ChargerRef(f"CP-{i}", i) for i in range(4)]
    await emit(db, [network_status(c, True, at(i)) for i, c in enumerate(chargers)])
    assert len(await _consume_all(kafka_broker, topic, {f"evt_{i}" for i in range(1, 5)}, 30)) == 4
    try:
        await kafka_broker.stop_async()
        await emit(db, [network_status(c, False, at(10 + i)) for i, c in enumerate(chargers)])
        await until(lambda: dispatcher._kafka.away(), within=30)
        # Saved by the round that stopped short at its first event, before its pause.
        await until(lambda: _cursor_at(db, 4))
    finally:
        await kafka_broker.start_async()
    want = {f"evt_{i}" for i in range(1, 9)}
    records = await _consume_all(kafka_broker, topic, want, within=25)
    assert want <= {dict(r.headers)["event-id"].decode() for r in records}
    assert (
        await db.fetchval("SELECT count(*) FROM deliveries WHERE subscription_id = $1", sub.id) == 0
    )


# Brokers probed twice a second (their return is seen within moments).
PROBED = dataclasses.replace(OUTAGE, kafka_probe_interval=0.5)


async def test_the_stream_lag_says_how_old_its_oldest_unsent_event_is_while_brokers_are_away(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """Review of the gauges (found 0): the stream's lag said how long its windows had been
    full, so a few events waiting for brokers that are away showed as no lag at all. It says
    how old the oldest event the stream has not had acknowledged is: it grows during the
    outage and is 0 again once they were delivered."""
    topic, sub = await _subscribed(subscriptions, kafka_broker, 1)
    dispatcher = dispatchers(PROBED)
    charger = ChargerRef("CP-1", 1)

    def lag() -> float:
        return dispatcher._m_stream_lag["kafka"].value(str(sub.id))

    await emit(db, [network_status(charger, True, at(0))])
    await _consume_all(kafka_broker, topic, {"evt_1"}, within=30)
    await until(lambda: lag() == 0, within=30)
    try:
        await kafka_broker.stop_async()
        await emit(db, [network_status(charger, i % 2 == 0, at(i)) for i in range(1, 4)])
        await until(lambda: lag() >= 3, within=60, message=lag)
    finally:
        await kafka_broker.start_async()
    await _consume_all(kafka_broker, topic, {f"evt_{i}" for i in range(1, 5)}, within=60)
    await until(lambda: lag() == 0, within=60, message=lag)


@pytest.mark.parametrize("expiry", ["the delivery timeout", "aiokafka's request timeout"])
async def test_a_stream_halves_its_batch_after_one_timed_out_and_grows_it_back(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
    expiry: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hung broker (SIGSTOP): the stream's batch times out (the dispatcher's delivery
    timeout, or aiokafka's request timeout when it is the shorter: a send that cannot queue
    its record in time; that one was not halved) and the next is half as large; each batch
    that times out halves it, down to 100 rows (with aiokafka's shorter timeout the later
    rounds fail to start a producer: no batch is sent, none halved). Once the broker answers
    again each batch delivered doubles the next, back to ``kafka_batch``. Every event
    arrives."""
    topic, sub = await _subscribed(subscriptions, kafka_broker, 1)
    if expiry == "the delivery timeout":
        config = dataclasses.replace(PROBED, kafka_batch=400, delivery_timeout=1.0)
    else:
        config = dataclasses.replace(
            PROBED, kafka_batch=400, delivery_timeout=6.0, kafka_request_timeout=1.0
        )
    dispatcher = dispatchers(config)
    charger = ChargerRef("CP-1", 1)
    await emit(db, [network_status(charger, True, at(0))])
    await _consume_all(kafka_broker, topic, {"evt_1"}, within=30)
    stream, _ = dispatcher._streams[sub.id]
    sizes = [stream.batch]
    # Every size the stream's batch takes, as it is set (sampling missed a size set and
    # doubled again between two samples).
    setattr_ = type(stream).__setattr__

    def recording(self: Any, name: str, value: Any) -> None:
        setattr_(self, name, value)
        if self is stream and name == "batch" and value != sizes[-1]:
            sizes.append(value)

    monkeypatch.setattr(type(stream), "__setattr__", recording)

    async def streamed(outbox_id: int) -> bool:
        return stream.position is not None and stream.position.id >= outbox_id

    sent = 1
    try:
        kafka_broker.pause()
        try:
            # More than aiokafka queues for a partition while its request is unanswered.
            await emit(db, [network_status(charger, i % 2 == 0, at(i)) for i in range(1, 301)])
            sent = 301
            # The round that found the brokers away halved the batch before it returned (after
            # saving what earlier rounds moved in memory: the halving may come a moment later).
            await until(lambda: dispatcher._kafka.away(), within=60)
            await until(lambda: stream.batch != 400, within=10, message=lambda: sizes)
            assert stream.batch == 200
            if expiry == "the delivery timeout":
                await until(lambda: stream.batch == 100, within=120, message=lambda: sizes)
        finally:
            kafka_broker.resume()
        while stream.batch < 400:  # a batch delivered doubles the next
            assert len(sizes) < 20, sizes
            await emit(db, [network_status(charger, sent % 2 == 0, at(sent))])
            sent += 1
            await until(lambda: streamed(sent), within=120, message=lambda: sizes)  # noqa: B023
    finally:
        monkeypatch.undo()
    assert sizes[:2] == [400, 200] and sizes[-2:] == [200, 400], sizes
    if expiry == "the delivery timeout":
        assert sizes[:3] == [400, 200, 100], sizes
    assert all(b in (a * 2, a // 2) for a, b in itertools.pairwise(sizes)), sizes
    await _consume_all(kafka_broker, topic, {f"evt_{i}" for i in range(1, sent + 1)}, within=60)


async def test_a_kafka_lane_waiting_for_its_retry_is_sent_when_the_brokers_return(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """A record the topic refused waits in its charger's lane for a retry two minutes away
    (the topic has meanwhile been made to take it). The brokers go away and return: their
    return makes the lane due at once (``retry_now``), and the record reaches the topic
    long before its retry time, followed by its charger's later event, without a failed
    attempt more."""
    topic, sub = await _subscribed(subscriptions, kafka_broker, 1, _SMALL, compressionCodec="none")
    dispatcher = dispatchers(dataclasses.replace(PROBED, retry_schedule=(120.0,) * 3))
    big = ChargerRef("CP-BIG", 1)
    payload = msgspec.json.encode({"notification": "x", "data": "x" * _TOO_LARGE})
    await emit(db, [OutboxEntry("chargePoint.dataTransferReceived", big.id, payload)])
    query = "SELECT count(*) FROM delivery_attempts WHERE subscription_id = $1"
    await until(lambda: db.fetchval(query, sub.id), within=60)
    await emit(db, [network_status(big, True, at(1))])  # behind it, in its lane
    await kafka_broker.configure_topic(topic, {"max.message.bytes": str(2 * _TOO_LARGE)})
    try:
        await kafka_broker.stop_async()
        await emit(db, [network_status(ChargerRef("CP-1", 2), True, at(2))])  # seen failing
        await until(lambda: dispatcher._kafka.away(), within=60)
    finally:
        await kafka_broker.start_async()
    # Its retry was due after 108 s at the earliest.
    records = await _consume_all(kafka_broker, topic, {"evt_1", "evt_2", "evt_3"}, within=60)
    ids = [dict(r.headers)["event-id"].decode() for r in records if r.key == big.id.encode()]
    assert list(dict.fromkeys(ids)) == ["evt_1", "evt_2"]
    assert await db.fetchval(query, sub.id) == 1
    waiting = "SELECT count(*) FROM deliveries WHERE subscription_id = $1"
    await until(lambda: _is_zero(db.fetchval(waiting, sub.id)), within=60)


async def _is_zero(count: Awaitable[int]) -> bool:
    return await count == 0


async def test_a_lane_that_breaks_the_producer_costs_the_other_lanes_no_attempt(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """One charger's record is refused again and again (too large for the topic: it went to
    its lane), and each refusal replaces the producer that the lane and the subscription's
    stream share. Another charger's records in flight at that moment fail with it: they are
    sent again at once, with no failed attempt recorded and no retry delay (they were pushed
    back by 5 s, 30 s, 120 s... before), and arrive in order."""
    topic, sub = await _subscribed(subscriptions, kafka_broker, 2, _SMALL, compressionCodec="none")
    partition = DefaultPartitioner()
    big = "CP-BIG"
    other = next(  # a charger on the other partition (the refusals are only the big one's)
        f"CP-{i}"
        for i in range(100)
        if partition(f"CP-{i}".encode(), [0, 1], [0, 1]) != partition(big.encode(), [0, 1], [0, 1])
    )
    dispatcher = dispatchers(dataclasses.replace(OUTAGE, retry_schedule=(0.1,) * 1000))
    payload = msgspec.json.encode({"notification": "x", "data": "x" * _TOO_LARGE})
    await emit(db, [OutboxEntry("chargePoint.dataTransferReceived", big, payload)])
    charger = ChargerRef(other, 1)
    sent = 0
    deadline = time.monotonic() + 90
    # Until some of the other charger's records were in flight when the producer was replaced
    # (a matter of timing: the test goes on until it happened, within the deadline).
    while (
        await _attempts(db, sub, big) < 30 or not dispatcher._m_resent.value()
    ) and time.monotonic() < deadline:
        # Enough to keep the stream producing most of the time (a stream batch is acknowledged
        # in one go: a small one is seldom in flight when the lane's refusal comes back).
        await emit(
            db, [network_status(charger, i % 2 == 0, at(i)) for i in range(sent, sent + 200)]
        )
        sent += 200
        await asyncio.sleep(0.02)
    assert await _attempts(db, sub, big) >= 30
    want = {
        f"evt_{r['id']}"
        for r in await db.fetch("SELECT id FROM outbox WHERE charger_id = $1", other)
    }
    records = await _consume_all(kafka_broker, topic, want, within=60)
    assert want <= {dict(r.headers)["event-id"].decode() for r in records}
    assert await _attempts(db, sub, other) == 0
    stamps = [msgspec.json.decode(r.value)["timestamp"] for r in records if r.key == other.encode()]
    firsts = list(dict.fromkeys(stamps))
    assert firsts == sorted(firsts)
    # Not vacuous: some of its records were in flight when the producer was replaced.
    assert dispatcher._m_resent.value() > 0


def _record(i: int) -> Delivery:
    return Delivery(
        outbox_id=i,
        event="chargePoint.statusNotification",
        attempts=0,
        payload=msgspec.json.encode({"i": i}),
        created_at=datetime.now(UTC),
    )


async def test_a_new_producer_waits_until_the_replaced_one_closed(
    subscriptions: SubscriptionStore, kafka_broker: KafkaBroker
) -> None:
    """A broker hangs with a charger's record N in flight: the lane's attempt ends after the
    delivery timeout and the producer is replaced, but its request stays in flight until the
    request timeout (longer). Had the lane's next attempt gone through a new producer at
    once, N and N+1 could reach the topic before the old request's N (N+1 before N). The next
    attempt waits for the old producer's close (not counted in its delivery timeout), then
    sends: the topic has the charger's records in order."""
    topic, sub = await _subscribed(subscriptions, kafka_broker, 1)
    producers = KafkaProducers(request_timeout=20.0, delivery_timeout=1.0)
    try:
        assert (await producers.deliver(sub, "CP-1", [_record(1)]))[0] == 1
        kafka_broker.pause()
        try:
            acked, attempt = await producers.deliver(sub, "CP-1", [_record(2)])
            assert (acked, attempt.ok) == (0, False)
            assert "not acknowledged" in (attempt.error or "")  # timed out
            closing = set(producers._closing)
            assert closing  # replaced, its request for record 2 still in flight
            again = asyncio.ensure_future(producers.deliver(sub, "CP-1", [_record(2), _record(3)]))
            done, _ = await asyncio.wait(
                {again, *closing}, timeout=5, return_when=asyncio.FIRST_COMPLETED
            )
            # Before, a new producer was made at once (and timed out on the hung broker,
            # or with a broker that answers it, sent 2 and 3 ahead of the old request's 2).
            assert not done
        finally:
            kafka_broker.resume()
        acked, attempt = await again
        assert (acked, attempt.ok) == (2, True)
        assert all(task.done() for task in closing)
    finally:
        await producers.close()
    records = await _consume_all(kafka_broker, topic, {"evt_1", "evt_2", "evt_3"}, within=30)
    firsts = list(dict.fromkeys(dict(r.headers)["event-id"] for r in records))
    assert firsts == [b"evt_1", b"evt_2", b"evt_3"]


async def test_a_brokers_return_is_kept_until_its_lanes_were_made_due(
    database_url: str,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    kafka_broker: KafkaBroker,
) -> None:
    """Brokers answer again while the database is away: the lanes of their subscriptions
    cannot be made due now, and the return is not forgotten (the lanes would wait out their
    schedule, ten minutes or more): the next round, with the database back, makes them due."""
    _, sub = await _subscribed(subscriptions, kafka_broker, 1)
    away = Database(database_url, pool_size=1)
    await away.open(migrate=False)
    await away.close()  # every query fails, as with the database away
    dispatcher = Dispatcher(subscriptions, deliveries)
    try:
        await dispatcher._refresh()
        brokers = dispatcher._kafka.brokers(sub)
        brokers.failed(OSError("connection refused"), "a test")
        await dispatcher._kafka.probe(sub)  # the broker answers
        returned = dispatcher._kafka.returned()
        assert returned and brokers.available
        dispatcher.deliveries = DeliveryStore(away)
        with pytest.raises(Exception):  # noqa: B017 - whatever a closed pool raises
            await dispatcher._kafka_returns(0.0)
        assert dispatcher._kafka.returned() == returned
        dispatcher.deliveries = deliveries
        await dispatcher._kafka_returns(0.0)
        assert dispatcher._kafka.returned() == set()
    finally:
        await dispatcher.stop()


class _FirstRequestOnly:
    """A TCP relay in front of a real broker that passes each connection's first request
    (aiokafka's ApiVersions, when it connects) and its answer, then withholds every later
    request: the broker never sees it, and the client waits for its answer."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.withheld = asyncio.Event()
        self._pumps: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _FirstRequestOnly:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(*self.target)

        async def requests() -> None:
            size = await reader.readexactly(4)
            broker_writer.write(size + await reader.readexactly(int.from_bytes(size, "big")))
            await reader.readexactly(4)  # the next request's size: withheld from here on
            self.withheld.set()
            await reader.read()  # until the client closes

        async def answers() -> None:
            while data := await broker_reader.read(65536):
                writer.write(data)

        pumps = [asyncio.ensure_future(requests()), asyncio.ensure_future(answers())]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._pumps.difference_update(pumps)
            writer.close()
            broker_writer.close()


def _kafka_reads() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and "AIOKafkaConnection._read" in repr(t.get_coro())
    ]


async def test_a_lane_cancelled_while_its_producer_starts_leaves_no_connection_open(
    subscriptions: SubscriptionStore, kafka_broker: KafkaBroker
) -> None:
    """A lane's attempt ends (its delivery timeout, or a shutdown) while the producer it
    waits for asks the bootstrap broker for the cluster's metadata. aiokafka closes that
    connection when the request fails, not when it is cancelled: cancelled, its read task
    ran for ever (a leak the full suite met about once a run). The start now runs on and
    fails or succeeds on its own; closing the producers waits for it."""
    host, _, port = kafka_broker.bootstrap_plain.rpartition(":")
    before = set(_kafka_reads())
    async with _FirstRequestOnly(host, int(port)) as relay:
        sub = await kafka_subscription(subscriptions, kafka_settings(relay.address, "evgate-never"))
        producers = KafkaProducers(request_timeout=1.5, delivery_timeout=1.0)
        try:
            attempt = asyncio.ensure_future(producers.deliver(sub, "CP-1", [_record(1)]))
            await asyncio.wait_for(relay.withheld.wait(), 10)
            attempt.cancel()  # as a shutdown cancels its lanes
            with pytest.raises(asyncio.CancelledError):
                await attempt
        finally:
            await producers.close()
        assert set(_kafka_reads()) - before == set()


async def test_a_start_whose_settings_were_dropped_still_ends_before_close_returns(
    subscriptions: SubscriptionStore,
) -> None:
    """A subscription's settings stop being used (retain()) while its producer starts: the
    start runs on, no longer its settings' (it closes what it started). Closing the
    producers waits for it as for any other start: left running, it would end after the
    loop's shutdown began (cancelled in aiokafka's bootstrap, a connection left open)."""
    asked = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4)  # the client's first request: never answered
        asked.set()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    before = set(_kafka_reads())
    try:
        sub = await kafka_subscription(subscriptions, kafka_settings(address, "evgate-never"))
        producers = KafkaProducers(request_timeout=3.0, delivery_timeout=1.0)
        lane = asyncio.ensure_future(producers.producer(sub))
        await asyncio.wait_for(asked.wait(), 10)
        lane.cancel()
        with pytest.raises(asyncio.CancelledError):
            await lane
        await producers.retain(set())  # its subscription was deleted meanwhile
        await producers.close(grace=30)
        starts = [
            t
            for t in asyncio.all_tasks()
            if t.get_name() == "kafka-producer-start" and not t.done()
        ]
        assert starts == []
        assert set(_kafka_reads()) - before == set()
    finally:
        server.close()
        await server.wait_closed()
