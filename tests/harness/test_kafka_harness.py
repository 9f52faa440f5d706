"""The Kafka test broker works the way the rest of the suite relies on it to."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from .consumer import consume
from .kafka import SASL_MECHANISMS, KafkaBroker


def _topic(prefix: str) -> str:
    return f"harness-{prefix}-{uuid.uuid4().hex[:8]}"


async def _produce(config: dict, topic: str, values: list[bytes], **producer_kwargs) -> None:
    producer = AIOKafkaProducer(**config, **producer_kwargs)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=str(i).encode())
    finally:
        await producer.stop()


async def _consume(config: dict, topic: str, count: int, within: float = 30.0) -> list[bytes]:
    records = await consume(config, topic, lambda got: len(got) >= count, within)
    return [r.value for r in records]


async def test_plaintext_listener_roundtrip(kafka_broker: KafkaBroker) -> None:
    topic = _topic("plain")
    await kafka_broker.create_topic(topic)
    config = kafka_broker.client_config()
    assert config == {"bootstrap_servers": kafka_broker.bootstrap_plain}
    assert kafka_broker.bootstrap_plain.startswith("127.0.0.1:")

    await _produce(config, topic, [b"hello", b"plain"])
    assert await _consume(config, topic, 2) == [b"hello", b"plain"]


@pytest.mark.parametrize("mechanism", SASL_MECHANISMS)
async def test_sasl_listener_roundtrip(kafka_broker: KafkaBroker, mechanism: str) -> None:
    topic = _topic(mechanism.lower())
    await kafka_broker.create_topic(topic)
    config = kafka_broker.client_config(mechanism)
    assert config["bootstrap_servers"] == kafka_broker.bootstrap_sasl
    assert kafka_broker.bootstrap_sasl != kafka_broker.bootstrap_plain

    await _produce(config, topic, [b"hello", mechanism.encode()])
    assert await _consume(config, topic, 2) == [b"hello", mechanism.encode()]


@pytest.mark.parametrize("mechanism", SASL_MECHANISMS)
async def test_sasl_listener_rejects_a_wrong_password(
    kafka_broker: KafkaBroker, mechanism: str
) -> None:
    config = kafka_broker.client_config(mechanism) | {"sasl_plain_password": "not-the-password"}
    producer = AIOKafkaProducer(**config, request_timeout_ms=5000)
    try:
        with pytest.raises(KafkaConnectionError):
            await producer.start()
    finally:
        await producer.stop()


async def test_idempotent_producer(kafka_broker: KafkaBroker) -> None:
    topic = _topic("idempotent")
    await kafka_broker.create_topic(topic, partitions=3)
    config = kafka_broker.client_config("SCRAM-SHA-512")
    producer = AIOKafkaProducer(**config, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, f"v{i}".encode(), key=f"k{i % 5}".encode())
            for i in range(200)
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert {m.partition for m in metadata} <= {0, 1, 2}

    got = await _consume(kafka_broker.client_config(), topic, 200)
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(200))
    # Per key (so per partition) the order is the send order.
    for k in range(5):
        sent = [f"v{i}".encode() for i in range(200) if i % 5 == k]
        assert [v for v in got if v in set(sent)] == sent


async def test_consumer_group_commits(kafka_broker: KafkaBroker) -> None:
    topic = _topic("group")
    await kafka_broker.create_topic(topic)
    config = kafka_broker.client_config("PLAIN")
    await _produce(config, topic, [b"a", b"b"])
    group = f"harness-{uuid.uuid4().hex[:8]}"
    for expected in ([b"a", b"b"], []):
        consumer = AIOKafkaConsumer(
            topic, **config, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=3000 if expected else 1000)
            assert [r.value for rs in batches.values() for r in rs] == expected
            await consumer.commit()
        finally:
            await consumer.stop()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_restart_keeps_records_and_ports(kafka_broker: KafkaBroker, how: str) -> None:
    topic = _topic(how)
    await kafka_broker.create_topic(topic)
    plain, sasl = kafka_broker.bootstrap_plain, kafka_broker.bootstrap_sasl
    config = kafka_broker.client_config("SCRAM-SHA-256")
    await _produce(config, topic, [b"before-1", b"before-2"], acks="all")

    try:
        if how == "stop":
            await kafka_broker.stop_async()
        else:
            await kafka_broker.kill_async()
        assert not kafka_broker.is_running
    finally:
        await kafka_broker.start_async()

    assert (kafka_broker.bootstrap_plain, kafka_broker.bootstrap_sasl) == (plain, sasl)
    await _produce(config, topic, [b"after"], acks="all", enable_idempotence=True)
    assert await _consume(config, topic, 3) == [b"before-1", b"before-2", b"after"]


async def test_producer_rides_through_a_restart(kafka_broker: KafkaBroker) -> None:
    """A producer started before a restart delivers what is sent while the broker is down."""
    topic = _topic("ride")
    await kafka_broker.create_topic(topic)
    config = kafka_broker.client_config()
    producer = AIOKafkaProducer(**config, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"1")
        try:
            await kafka_broker.stop_async()
            pending = await producer.send(topic, b"2")
        finally:
            await kafka_broker.start_async()
        await asyncio.wait_for(pending, 60)
    finally:
        await producer.stop()
    assert await _consume(config, topic, 2) == [b"1", b"2"]


def test_private_broker_from_the_factory(kafka_broker_factory, kafka_broker: KafkaBroker) -> None:
    # A random cluster id starts with "-" once in 64 brokers: it must not read as an option.
    other = kafka_broker_factory(
        sasl_username="someone", sasl_password="s3cret", cluster_id="-dashFirst0123456789AB"
    )
    assert other.is_running
    assert other.bootstrap_plain != kafka_broker.bootstrap_plain
    assert (other.sasl_username, other.sasl_password) == ("someone", "s3cret")
    other.kill()
    assert not other.is_running
