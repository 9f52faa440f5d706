"""The Kafka sink against the real test broker (tests/harness): record key = charger id,
per-charger order, SASL and compression as configured, and a broker restarted mid-stream."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import aiokafka
import msgspec
import pytest

from evgate.events.builders import ChargerRef, network_status
from evgate.events.catalog import EMITTED
from evgate.events.dispatcher import Dispatcher
from evgate.events.sinks import check_aiokafka
from evgate.storage.db import Database
from evgate.storage.deliveries import DeliveryCounts, DeliveryStore
from evgate.storage.subscriptions import SubscriptionStore
from harness.consumer import consume
from harness.kafka import KafkaBroker
from support import LogLines, quiet_for, until

from .events_helpers import FAST, at, emit, every_event, kafka_settings, kafka_subscription


async def _consume(broker: KafkaBroker, topic: str, count: int, within: float = 60.0) -> list[Any]:
    return await consume(broker.client_config(), topic, lambda got: len(got) >= count, within)


async def test_every_event_reaches_kafka_keyed_by_charger(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """Each event is one record: value = the payload, key = the charger id, headers name the
    event and its id; a charger's records are in order."""
    topic = f"evgate-{uuid.uuid4().hex[:8]}"
    await kafka_broker.create_topic(topic, partitions=3)
    await kafka_subscription(subscriptions, kafka_settings(kafka_broker.bootstrap_plain, topic))
    entries = every_event()
    await emit(db, entries)
    dispatchers()
    records = await _consume(kafka_broker, topic, len(entries))
    assert len(records) == len(entries)
    assert {msgspec.json.decode(r.value)["notification"] for r in records} == EMITTED
    for charger in ("CP-1", ""):
        sent = [e.payload for e in entries if e.charger_id == charger]
        mine = [r for r in records if r.key == charger.encode()]
        assert [r.value for r in mine] == sent
        assert len({r.partition for r in mine}) == 1
    headers = dict(records[0].headers)
    assert headers["notification"] == msgspec.json.decode(records[0].value)["notification"].encode()
    assert headers["event-id"].startswith(b"evt_")


@pytest.mark.parametrize(
    ("mechanism", "codec"),
    [("PLAIN", "snappy"), ("SCRAM-SHA-256", "lz4"), ("SCRAM-SHA-512", "none")],
)
async def test_sasl_and_compression(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
    mechanism: str,
    codec: str,
) -> None:
    """SASL_PLAINTEXT with each mechanism the catalog names, and each compression codec."""
    topic = f"evgate-{uuid.uuid4().hex[:8]}"
    await kafka_broker.create_topic(topic)
    settings = kafka_settings(
        kafka_broker.bootstrap_plain,
        topic,
        brokers=[kafka_broker.bootstrap_sasl],
        securityProtocol="SASL_PLAINTEXT",
        saslMechanism=mechanism,
        saslUsername=kafka_broker.sasl_username,
        compressionCodec=codec,
    )
    await kafka_subscription(subscriptions, settings, kafka_broker.sasl_password)
    await emit(db, every_event()[:3])
    dispatchers()
    assert len(await _consume(kafka_broker, topic, 3)) == 3


async def test_a_wrong_password_delays_and_nothing_is_lost(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """Brokers refusing the credentials: the stream waits (its cursor stays, the events are
    counted as waiting, the failure is logged once), and once the password is corrected every
    event arrives."""
    topic = f"evgate-{uuid.uuid4().hex[:8]}"
    await kafka_broker.create_topic(topic)
    settings = kafka_settings(
        kafka_broker.bootstrap_plain, topic, brokers=[kafka_broker.bootstrap_sasl],
        securityProtocol="SASL_PLAINTEXT", saslMechanism="PLAIN",
        saslUsername=kafka_broker.sasl_username,
    )  # fmt: skip
    sub = await kafka_subscription(subscriptions, settings, "wrong")
    await emit(db, every_event()[:2])
    with LogLines() as lines:
        dispatcher = dispatchers()
        await until(lambda: lines.saying("Kafka"), within=30)
        await quiet_for(1.0)  # more rounds fail meanwhile
    assert (await deliveries.counts(sub.id)).waiting == 2
    assert await db.fetchval("SELECT after_id FROM stream_cursors") == 0
    ours = [
        r for r in lines.records if r.name.startswith("evgate") and r.levelno >= logging.WARNING
    ]
    assert len(ours) == 1, [r.getMessage() for r in ours]  # once, not once a round
    await subscriptions.replace_subscription(
        sub.id, via="kafka", notifications=sub.notifications, callback_url=None,
        kafka=sub.kafka, kafka_password=kafka_broker.sasl_password, keep_password=False,
    )  # fmt: skip
    dispatcher.wake()
    assert len(await _consume(kafka_broker, topic, 2)) == 2

    async def counts() -> bool:
        return await deliveries.counts(sub.id) == DeliveryCounts(waiting=0, failed=0)

    await until(counts)  # the cursor moves once the batch is acknowledged


async def test_a_broker_restarted_mid_stream_loses_nothing(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """Events keep coming while the broker stops and starts again: every one arrives, in order
    per charger, none twice."""
    topic = f"evgate-{uuid.uuid4().hex[:8]}"
    await kafka_broker.create_topic(topic, partitions=2)
    await kafka_subscription(subscriptions, kafka_settings(kafka_broker.bootstrap_plain, topic))
    # Retries outlast the restart (a loaded machine can take tens of seconds to bring the
    # broker back): what is checked is that nothing is lost once it answers, not the schedule.
    dispatchers(dataclasses.replace(FAST, retry_schedule=(0.2,) + (0.5,) * 180))
    chargers = [ChargerRef(f"CP-{i}", i) for i in range(4)]
    sent = 0

    async def produce(rounds: int) -> None:
        nonlocal sent
        for _ in range(rounds):
            for c in chargers:
                await emit(db, [network_status(c, sent % 2 == 0, at(sent))])
                sent += 1
            await asyncio.sleep(0.02)  # pacing: a steady stream of events

    await produce(10)
    try:
        await kafka_broker.stop_async()
        await produce(10)  # while it is down
    finally:
        await kafka_broker.start_async()
    await produce(10)
    records = await _consume(kafka_broker, topic, sent, within=90)
    assert len(records) == sent
    by_charger: dict[bytes, list[str]] = defaultdict(list)
    for r in records:
        by_charger[r.key].append(msgspec.json.decode(r.value)["timestamp"])
    for stamps in by_charger.values():
        assert stamps == sorted(stamps) and len(stamps) == len(set(stamps)) == 30


def test_an_aiokafka_the_sink_was_not_written_for_is_refused_at_import() -> None:
    """The sink closes a replaced producer through aiokafka's internals: another release of
    aiokafka fails loudly when evgate starts, saying what to check, not later in an outage."""
    check_aiokafka(aiokafka.__version__)  # the pinned one
    with pytest.raises(ImportError, match=r"aiokafka 0\.15\.0 is installed.*_discard"):
        check_aiokafka("0.15.0")
