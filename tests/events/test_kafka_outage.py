"""A Kafka broker that goes away under load and comes back (issue 14, item 1): stopped cleanly
(SIGTERM) or killed (SIGKILL) while chargers' events keep coming, then started again on the
same data and ports. Every event arrives, in order per charger; no delivery ends `failed`;
and the outage costs a handful of log lines, not an ERROR per reconnect attempt."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from evgate.events.builders import ChargerRef, OutboxEntry, network_status
from evgate.events.dispatcher import Dispatcher, DispatcherConfig
from evgate.storage.db import Database
from evgate.storage.events import NotificationStore
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
CHARGERS = 24
OUTAGE_SECONDS = 8.0


async def _consume_all(broker: KafkaBroker, topic: str, want: set[str], within: float) -> list[Any]:
    """Every record of ``topic`` until each event id in ``want`` was seen (or time is up)."""

    def enough(got: list[Any]) -> bool:
        return want <= {dict(r.headers)["event-id"].decode() for r in got}

    return await consume(broker.client_config(), topic, enough, within)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_kafka_delivery_resumes_after_the_broker_comes_back(
    db: Database,
    store: NotificationStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
    how: str,
) -> None:
    """Events for 24 chargers keep coming before, during and after an 8 s outage of the only
    broker: afterwards every event is in the topic, each charger's in the order emitted (a
    record may come twice, at least once, but never after a later one first came), none is
    left `failed`; the outage logged at most a few lines, no traceback."""
    topic = f"evgate-{uuid.uuid4().hex[:8]}"
    await kafka_broker.create_topic(topic, partitions=3)
    sub = await kafka_subscription(
        store,
        kafka_settings(kafka_broker.bootstrap_plain, topic),
    )
    dispatchers(OUTAGE)
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

    lines = LogLines()
    root = logging.getLogger()
    await produce(2.0)
    root.addHandler(lines)
    try:
        try:
            if how == "stop":
                await kafka_broker.stop_async()
            else:
                await kafka_broker.kill_async()
            await produce(OUTAGE_SECONDS)
        finally:
            await kafka_broker.start_async()
        await produce(2.0)
        want = {f"evt_{r['id']}" for r in await db.fetch("SELECT id FROM outbox")}
        assert len(want) == sent
        records = await _consume_all(kafka_broker, topic, want, within=120)
    finally:
        root.removeHandler(lines)

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
    store: NotificationStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """A refused record (larger than the topic takes) used up a sequence number of the
    idempotent producer, which the broker then expects for ever: every later record on that
    partition was refused too (`OutOfOrderSequenceNumber`). The producer is replaced, and
    another charger's events on the same partition are delivered."""
    topic = f"evgate-{uuid.uuid4().hex[:8]}"
    await kafka_broker.create_topic(topic, partitions=1, config={"max.message.bytes": "4096"})
    sub = await kafka_subscription(
        store,
        kafka_settings(kafka_broker.bootstrap_plain, topic, compressionCodec="none"),
    )
    small = ChargerRef("CP-SMALL", 2)
    await emit(db, [network_status(small, True, at(0))])
    dispatchers(OUTAGE)
    assert len(await _consume_all(kafka_broker, topic, {"evt_1"}, within=30)) == 1
    big = msgspec.json.encode(
        {"notification": "chargePoint.dataTransferReceived", "data": "x" * 20_000}
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


async def test_lanes_waiting_out_a_long_retry_resume_when_the_brokers_return(
    db: Database,
    store: NotificationStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """Lanes whose next retry is a minute away when the broker comes back resume within
    seconds: brokers that are away are tried every few seconds, and their return makes the
    lanes of their subscriptions due (a 10 min outage would otherwise delay delivery by up to
    the schedule's next step, 30 min)."""
    config = DispatcherConfig(
        retry_schedule=(0.2, *(60.0,) * 5),
        jitter=0.1,
        delivery_timeout=2.0,
        kafka_request_timeout=3.0,
        poll_interval=0.02,
        refresh_interval=0.2,
        kafka_probe_interval=0.5,
    )
    topic = f"evgate-{uuid.uuid4().hex[:8]}"
    await kafka_broker.create_topic(topic, partitions=2)
    sub = await kafka_subscription(
        store,
        kafka_settings(kafka_broker.bootstrap_plain, topic),
    )
    dispatchers(config)
    chargers = [ChargerRef(f"CP-{i}", i) for i in range(4)]
    await emit(db, [network_status(c, True, at(i)) for i, c in enumerate(chargers)])
    assert len(await _consume_all(kafka_broker, topic, {f"evt_{i}" for i in range(1, 5)}, 30)) == 4
    try:
        await kafka_broker.stop_async()
        await emit(db, [network_status(c, False, at(10 + i)) for i, c in enumerate(chargers)])
        # Every lane tried twice: its next retry is a minute away.
        query = "SELECT count(*) FROM deliveries WHERE subscription_id = $1 AND attempts >= 2"

        async def all_waiting() -> bool:
            return bool(await db.fetchval(query, sub.id) == len(chargers))

        await until(all_waiting, within=30)
    finally:
        await kafka_broker.start_async()
    want = {f"evt_{i}" for i in range(1, 9)}
    records = await _consume_all(kafka_broker, topic, want, within=25)
    assert want <= {dict(r.headers)["event-id"].decode() for r in records}
