"""Kafka delivery by cursor (issue 17): a Kafka subscription streams the outbox from a cursor of
its own, with no delivery row per event, against the real test broker (tests/harness). Exactly
the wanted events, in order per charger; a record a broker refuses goes to its charger's lane
(and the charger's later events behind it) while other chargers flow on; one dispatcher streams
a subscription at a time, and another takes over from the cursor when it stops or is killed;
a subscription disabled then enabled again starts from the fan-out's position; the outbox's
retention keeps what a stalled stream has not sent."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner

from evgate.events.builders import ChargerRef, OutboxEntry, network_status
from evgate.events.dispatcher import Dispatcher
from evgate.storage.db import Database
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.stream_cursors import StreamCursorStore
from evgate.storage.subscriptions import SubscriptionRow, SubscriptionStore
from harness.consumer import consume
from harness.kafka import KafkaBroker
from support import serving, until

from .events_helpers import (
    FAST,
    at,
    emit,
    every_event,
    kafka_settings,
    kafka_subscription,
    webhook_subscription,
)

# Small batches: a test's events take several rounds, windows end between a charger's events.
SMALL = dataclasses.replace(FAST, kafka_batch=50)
_TOO_LARGE = 100_000  # bytes of a payload; the topics of _SMALL_TOPIC refuse more than 32 KiB
_SMALL_TOPIC = {"max.message.bytes": "32768"}
_DATA_TRANSFER = "chargePoint.dataTransferReceived"


def _ids(records: list[Any]) -> list[str]:
    return [dict(r.headers)["event-id"].decode() for r in records]


async def _all_of(broker: KafkaBroker, topic: str, want: set[str], within: float = 60) -> list[Any]:
    """The records of ``topic`` until every event id of ``want`` was seen."""
    return await consume(broker.client_config(), topic, lambda got: want <= set(_ids(got)), within)


async def _topic(broker: KafkaBroker, partitions: int, config: dict[str, str] | None = None) -> str:
    topic = f"evgate-{uuid.uuid4().hex[:8]}"
    await broker.create_topic(topic, partitions=partitions, config=config)
    return topic


async def _outbox_ids(db: Database, charger_id: str | None = None) -> list[int]:
    rows = await db.fetch(
        "SELECT id FROM outbox WHERE $1::text IS NULL OR charger_id = $1 ORDER BY xid, id",
        charger_id,
    )
    return [r["id"] for r in rows]


async def test_each_charger_gets_exactly_the_events_it_wants_in_order(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """Six chargers' events, interleaved over many transactions, half the event names wanted:
    each key's records are exactly its wanted events, in the order written, once each (the
    windows of 50 rows end between wanted and unwanted ones)."""
    topic = await _topic(kafka_broker, 3)
    names = sorted({e.event for e in every_event()})
    wanted = set(names[::2])
    await subscriptions.create_subscription(
        via="kafka", notifications=sorted(wanted), callback_url=None,
        kafka=kafka_settings(kafka_broker.bootstrap_plain, topic), kafka_password=None,
        webhook_secret=b"k" * 32, token_hmac_state=None, created_by=None,
    )  # fmt: skip
    dispatchers(SMALL)
    chargers = [ChargerRef(f"CP-{i}", i) for i in range(6)]
    for round_ in range(3):
        for c in chargers:
            await emit(db, every_event(c, transaction_id=round_))
    expected: dict[bytes, list[str]] = defaultdict(list)
    for r in await db.fetch("SELECT id, charger_id, event FROM outbox ORDER BY xid, id"):
        if r["event"] in wanted:
            expected[r["charger_id"].encode()].append(f"evt_{r['id']}")
    want = {i for ids in expected.values() for i in ids}
    records = await _all_of(kafka_broker, topic, want)
    got: dict[bytes, list[str]] = defaultdict(list)
    for r in records:
        got[r.key or b""].append(dict(r.headers)["event-id"].decode())
    assert got == expected
    assert {dict(r.headers)["notification"].decode() for r in records} == wanted


async def test_a_refused_record_goes_to_its_lane_and_its_charger_waits_behind_it(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """A record too large for the topic: it goes to its charger's lane (a delivery, its failed
    attempts, given up after the schedule: listed, resendable); the charger's later event waits
    behind it and reaches the topic only after it gave up; another charger's events flow on
    meanwhile."""
    topic = await _topic(kafka_broker, 2, _SMALL_TOPIC)
    sub = await kafka_subscription(
        subscriptions,
        kafka_settings(kafka_broker.bootstrap_plain, topic, compressionCodec="none"),
    )
    partition = DefaultPartitioner()
    big = ChargerRef("CP-BIG", 1)
    other = next(  # a charger on the other partition
        ChargerRef(f"CP-{i}", 100 + i)
        for i in range(100)
        if partition(f"CP-{i}".encode(), [0, 1], [0, 1]) != partition(b"CP-BIG", [0, 1], [0, 1])
    )
    dispatchers(dataclasses.replace(FAST, retry_schedule=(2.0, 2.0)))  # gives up at attempt 3
    payload = msgspec.json.encode({"notification": "x", "data": "x" * _TOO_LARGE})
    await emit(db, [network_status(big, True, at(0))])
    await emit(db, [OutboxEntry("chargePoint.dataTransferReceived", big.id, payload)])
    await emit(db, [network_status(big, False, at(2))])
    await emit(db, [network_status(other, i % 2 == 0, at(i)) for i in range(3, 13)])
    first, refused, after = await _outbox_ids(db, big.id)
    others = {f"evt_{i}" for i in await _outbox_ids(db, other.id)}
    records = await _all_of(kafka_broker, topic, {f"evt_{first}", f"evt_{after}"} | others)
    assert f"evt_{refused}" not in _ids(records)
    gave_up = await db.fetchval(
        "SELECT max(at) FROM delivery_attempts WHERE outbox_id = $1 AND attempt = 3", refused
    )
    assert gave_up is not None
    sent_at = {
        dict(r.headers)["event-id"].decode(): datetime.fromtimestamp(r.timestamp / 1000, UTC)
        for r in records
    }
    assert sent_at[f"evt_{after}"] >= gave_up  # behind the refused one, in its lane
    assert max(sent_at[i] for i in others) < gave_up  # not behind it
    failed = await deliveries.failed_deliveries(sub.id)
    assert [(f.event_id, f.attempts) for f in failed] == [(refused, 3)]
    assert await deliveries.resend(sub.id, None, None, None) == 1

    async def tried_again() -> bool:
        query = "SELECT count(*) FROM delivery_attempts WHERE outbox_id = $1"
        return bool(await db.fetchval(query, refused) > 3)

    await until(tried_again, within=30)


@pytest.mark.evgate_settings(notification_retry_schedule="1s 1s")
async def test_the_operators_resend_sends_a_kafka_lanes_failed_delivery_again(
    api: httpx.AsyncClient, db: Database, kafka_broker: KafkaBroker
) -> None:
    """A record the topic refused went to its charger's lane and gave up (failed, listed);
    the topic is then made to take it, and the operator's resend (the API's action) puts it
    back in its lane: it reaches the topic, and nothing is left waiting or failed."""
    topic = await _topic(kafka_broker, 1, _SMALL_TOPIC)
    settings = kafka_settings(kafka_broker.bootstrap_plain, topic, compressionCodec="none")
    r = await api.post(
        "/public-api/notifications/v2.0",
        json={"via": "kafka", "notifications": [_DATA_TRANSFER], "kafka": settings},
    )
    assert r.status_code == 201, r.text
    sub_id = r.json()["data"]["id"]
    payload = msgspec.json.encode({"notification": _DATA_TRANSFER, "data": "x" * _TOO_LARGE})
    await emit(db, [OutboxEntry(_DATA_TRANSFER, "CP-BIG", payload)])
    (refused,) = await _outbox_ids(db)
    subscription = f"/public-api/notifications/v2.0/{sub_id}"

    async def failed() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = (await api.get(f"{subscription}/failed-deliveries")).json()[
            "data"
        ]
        return got

    (gave_up,) = await until(failed, within=60)
    assert (gave_up["eventId"], gave_up["attempts"]) == (refused, 3)
    await kafka_broker.configure_topic(topic, {"max.message.bytes": str(2 * _TOO_LARGE)})
    r = await api.post(f"/public-api/actions/notifications/v1.0/{sub_id}/resend", json={})
    assert (r.status_code, r.json()["data"]) == (202, {"deliveries": 1})
    records = await _all_of(kafka_broker, topic, {f"evt_{refused}"})
    assert [r.value for r in records] == [payload]

    async def settled() -> bool:
        counts = (await api.get(f"{subscription}/delivery-counts")).json()
        return bool(counts == {"waiting": 0, "failed": 0})

    await until(settled, within=60)


async def test_one_dispatcher_streams_a_subscription_and_another_takes_over_when_it_stops(
    db: Database,
    database_url: str,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """Two dispatchers on one database: one holds the stream (the other's records would come
    twice); stopped, it gives the stream back and the other goes on from the cursor: every
    event once, in order per charger."""
    topic = await _topic(kafka_broker, 2)
    sub = await kafka_subscription(
        subscriptions, kafka_settings(kafka_broker.bootstrap_plain, topic)
    )
    other_db = Database(database_url, pool_size=5)
    await other_db.open(migrate=False)
    try:
        pair = [dispatchers(SMALL), dispatchers(SMALL, on=other_db)]
        chargers = [ChargerRef(f"CP-{i}", i) for i in range(5)]
        await emit(db, [network_status(c, i % 2 == 0, at(i)) for i in range(100) for c in chargers])
        await _all_of(kafka_broker, topic, {f"evt_{i}" for i in await _outbox_ids(db)})
        await until(lambda: _streamed(db, 500))
        holder = await db.fetchval(
            "SELECT holder FROM stream_cursors WHERE subscription_id = $1", sub.id
        )
        first = next(d for d in pair if d._holder == holder)
        second = next(d for d in pair if d is not first)
        # Counted once its advance has returned: the cursor's row may be seen a moment before.
        await until(lambda: first._m_delivered.value("kafka") >= 500)
        assert first._m_delivered.value("kafka") == 500
        assert second._m_delivered.value("kafka") == 0
        await first.stop()
        await emit(
            db, [network_status(c, i % 2 == 0, at(i)) for i in range(100, 200) for c in chargers]
        )
        ids = await _outbox_ids(db)
        records = await _all_of(kafka_broker, topic, {f"evt_{i}" for i in ids})
        await until(lambda: _streamed(db, 1000))
        await until(lambda: second._m_delivered.value("kafka") >= 500)
        assert second._m_delivered.value("kafka") == 500
    finally:
        for d in pair:
            await d.stop()
        await other_db.close()
    seen = _ids(records)
    assert sorted(seen) == sorted(f"evt_{i}" for i in ids)  # each once
    by_charger: dict[bytes, list[str]] = defaultdict(list)
    for r in records:
        by_charger[r.key].append(msgspec.json.decode(r.value)["timestamp"])
    for stamps in by_charger.values():
        assert stamps == sorted(stamps)


async def test_a_subscription_enabled_again_starts_from_the_fan_outs_position(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    kafka_broker: KafkaBroker,
) -> None:
    """Events written while a Kafka subscription is disabled are not sent when it is enabled
    again (as for a webhook); those before and after are."""
    topic = await _topic(kafka_broker, 1)
    sub = await kafka_subscription(
        subscriptions, kafka_settings(kafka_broker.bootstrap_plain, topic)
    )
    dispatcher = dispatchers()
    await emit(db, [network_status(CP1, True, at(0))])
    await _all_of(kafka_broker, topic, {"evt_1"})
    await subscriptions.disable(sub.id, "a test")
    dispatcher.wake()
    await until(lambda: _no_cursor(db))  # the fan-out removed it
    await emit(db, [network_status(CP1, False, at(1))])  # while disabled
    await until(lambda: _fanned_out(db, 2))
    await _enable(subscriptions, sub)
    dispatcher.wake()
    await emit(db, [network_status(CP1, True, at(2))])
    records = await _all_of(kafka_broker, topic, {"evt_3"})
    assert _ids(records) == ["evt_1", "evt_3"]


CP1 = ChargerRef("CP-1", 1)


async def _streamed(db: Database, outbox_id: int) -> bool:
    """Whether the Kafka cursor has passed ``outbox_id`` (the events' one transaction)."""
    return bool(await db.fetchval("SELECT after_id >= $1 FROM stream_cursors", outbox_id))


async def _no_cursor(db: Database) -> bool:
    return not await db.fetchval("SELECT count(*) FROM stream_cursors")


async def _fanned_out(db: Database, outbox_id: int) -> bool:
    return bool(await db.fetchval("SELECT after_id >= $1 FROM outbox_cursor", outbox_id))


async def _enable(subscriptions: SubscriptionStore, sub: SubscriptionRow) -> None:
    await subscriptions.replace_subscription(
        sub.id, via="kafka", notifications=sub.notifications, callback_url=None,
        kafka=sub.kafka, kafka_password=None, keep_password=True,
    )  # fmt: skip


async def test_prune_keeps_what_a_stalled_kafka_subscription_has_not_sent(
    db: Database, subscriptions: SubscriptionStore, deliveries: DeliveryStore
) -> None:
    """The outbox's retention deletes what every cursor has passed, fanned out or streamed,
    and keeps what a Kafka subscription has still to send (its brokers away for longer than
    the retention)."""
    sub = await kafka_subscription(subscriptions, kafka_settings("127.0.0.1:9", "never"))
    assert await deliveries.fan_out(100) == 0  # makes the subscription's cursor
    await emit(db, [network_status(CP1, i % 2 == 0, at(i)) for i in range(5)])
    assert await deliveries.fan_out(100) == 5
    cursors = StreamCursorStore(db)
    start = await cursors.lease(sub.id, "a test", 60)
    assert start is not None
    window = await cursors.read(sub.id, start, 2)
    assert window.end is not None and len(window.events) == 2
    assert await cursors.advance(sub.id, "a test", window.end, [], 60)
    assert await deliveries.prune(retention=0) == 2
    assert await _outbox_ids(db) == [3, 4, 5]


_NETWORK = "NetworkStatusNotification"


def _mixed(n: int) -> list[OutboxEntry]:
    """``n`` events of CP-1, every other one a network status (the rest data transfers)."""
    return [
        network_status(CP1, True, at(i))
        if i % 2 == 0
        else OutboxEntry("chargePoint.dataTransferReceived", CP1.id, b"{}")
        for i in range(n)
    ]


async def test_the_backlog_counts_what_a_stream_has_still_to_send(
    db: Database, subscriptions: SubscriptionStore, deliveries: DeliveryStore
) -> None:
    """Review of the gauges (found 0): a Kafka stream has no delivery rows, so the backlog
    said nothing of the events waiting behind its cursor. It counts, besides the pending
    deliveries, the events each stream wants after its cursor (not those it does not want);
    over a bounded sample of rows, estimated beyond it (exact here: the mix is even)."""
    sub = await kafka_subscription(
        subscriptions, kafka_settings("127.0.0.1:9", "never"), names=[_NETWORK]
    )
    await webhook_subscription(subscriptions, "http://127.0.0.1:9/hook")
    assert await deliveries.fan_out(100) == 0  # makes the stream's cursor
    await emit(db, _mixed(40))
    assert await deliveries.fan_out(100) == 40  # 40 webhook deliveries, none for the stream
    assert await deliveries.backlog() == 40 + 20
    assert await deliveries.backlog(sample=10) == 40 + 20  # 5 of 10 wanted, 30 rows beyond
    cursors = StreamCursorStore(db)
    start = await cursors.lease(sub.id, "a test", 60)
    assert start is not None
    window = await cursors.read(sub.id, start, 10)
    assert window.end is not None
    assert await cursors.advance(sub.id, "a test", window.end, [], 60)
    assert await deliveries.backlog() == 40 + 15
    assert await deliveries.backlog(sample=10) == 40 + 15


async def test_the_backlog_gauge_shows_a_stream_whose_brokers_are_away(
    db: Database, subscriptions: SubscriptionStore, dispatchers: Callable[..., Dispatcher]
) -> None:
    """An operator's Kafka brokers are away: the dispatcher's backlog gauge (read at the
    prune's pace) shows the events its stream owes, where it said 0."""
    await kafka_subscription(
        subscriptions, kafka_settings("127.0.0.1:9", "never"), names=[_NETWORK]
    )
    dispatcher = dispatchers(dataclasses.replace(FAST, prune_interval=0.2))
    await emit(db, _mixed(30))
    await until(lambda: dispatcher._m_backlog.value() == 15, within=60)


@pytest.mark.parametrize("via", ["kafka", "webhook"])
@pytest.mark.parametrize("change", ["made a tenant's", "disabled", "switched"])
async def test_a_stream_that_stops_hands_what_it_had_not_sent_to_deliveries(
    db: Database, subscriptions: SubscriptionStore, deliveries: DeliveryStore, change: str,
    via: str,
) -> None:  # fmt: skip
    """Review of the stream (found lost): a streamed subscription (Kafka, or webhook) whose
    receiver is away has events the fan-out passed and its stream has not sent; it is made a
    tenant's (or disabled). The fan-out that removes its cursor makes them deliveries in the
    same statement: pending in their lane (a tenant's gets lanes), or failed and resendable
    (disabled); none is lost, nor pruned. Switched between webhook and Kafka, it is still
    streamed: its cursor stays, the other sink sends from it, and no delivery is made."""
    tenant = await db.fetchval("INSERT INTO sub_operators (name) VALUES ('t') RETURNING id")
    await db.execute(
        "INSERT INTO chargers (id, secret_digest, sub_operator_id) VALUES ('CP-1', $1, $2)",
        b"x" * 32,
        tenant,
    )
    kafka = kafka_settings("127.0.0.1:9", "never")
    if via == "kafka":
        sub = await kafka_subscription(subscriptions, kafka)
    else:
        sub = await webhook_subscription(subscriptions, "http://127.0.0.1:9/hook")
    assert await deliveries.fan_out(100) == 0  # the cursor
    await emit(db, [network_status(CP1, i % 2 == 0, at(i)) for i in range(5)])
    assert await deliveries.fan_out(100) == 5  # the stream has sent none of them
    if change == "disabled":
        await subscriptions.disable(sub.id, "a test")
    elif change == "made a tenant's":
        await db.execute(
            "UPDATE subscriptions SET sub_operator_id = $2 WHERE id = $1", sub.id, tenant
        )
    else:
        other = "webhook" if via == "kafka" else "kafka"
        await subscriptions.replace_subscription(
            sub.id, via=other, notifications=sub.notifications,
            callback_url="http://127.0.0.1:9/hook" if other == "webhook" else None,
            kafka=kafka if other == "kafka" else None, kafka_password=None, keep_password=False,
        )  # fmt: skip
    await emit(db, [network_status(CP1, True, at(5))])
    assert await deliveries.fan_out(100) == 1
    rows = await db.fetch(
        "SELECT outbox_id, state FROM deliveries WHERE subscription_id = $1 ORDER BY 1", sub.id
    )
    lanes = await db.fetchval(
        "SELECT count(*) FROM delivery_lanes WHERE subscription_id = $1", sub.id
    )
    if change == "switched":
        assert await db.fetchval("SELECT after_id FROM stream_cursors") == 0
        assert not rows and not lanes
        return
    assert await _no_cursor(db)
    state = "pending" if change == "made a tenant's" else "failed"
    expected = [1, 2, 3, 4, 5, 6] if state == "pending" else [1, 2, 3, 4, 5]
    assert [(r["outbox_id"], r["state"]) for r in rows] == [(i, state) for i in expected]
    assert lanes == (1 if state == "pending" else 0)
    await deliveries.prune(retention=0)  # what was written while disabled is owed to no one
    assert await _outbox_ids(db) == expected


async def test_a_tenants_kafka_subscription_gets_the_events_of_its_chargers_at_fan_out(
    db: Database, subscriptions: SubscriptionStore, deliveries: DeliveryStore
) -> None:
    """Review of the stream (found leaking): whether a charger's event is a tenant's is told
    by the charger's owner when it is read; a stream held up by its brokers read it long
    after, when the charger had moved to another tenant, which got the earlier event (and the
    first tenant never did). A sub-operator's Kafka subscription is not streamed: the
    fan-out gives it deliveries at once, as to a webhook, and the move changes nothing."""
    t1 = await db.fetchval("INSERT INTO sub_operators (name) VALUES ('t1') RETURNING id")
    t2 = await db.fetchval("INSERT INTO sub_operators (name) VALUES ('t2') RETURNING id")
    await db.execute(
        "INSERT INTO chargers (id, secret_digest, sub_operator_id) VALUES ('CP-1', $1, $2)",
        b"x" * 32,
        t1,
    )
    s1 = await kafka_subscription(subscriptions, kafka_settings("127.0.0.1:9", "a"))
    s2 = await kafka_subscription(subscriptions, kafka_settings("127.0.0.1:9", "b"))
    for sub, tenant in ((s1, t1), (s2, t2)):
        await db.execute(
            "UPDATE subscriptions SET sub_operator_id = $2 WHERE id = $1", sub.id, tenant
        )
    await emit(db, [network_status(CP1, True, at(0))])  # CP-1 is t1's
    assert await deliveries.fan_out(100) == 1
    await db.execute("UPDATE chargers SET sub_operator_id = $1 WHERE id = 'CP-1'", t2)
    assert await _no_cursor(db)
    rows = await db.fetch("SELECT subscription_id, outbox_id, state FROM deliveries")
    assert [tuple(r) for r in rows] == [(s1.id, 1, "pending")]


def _evgate(database_url: str, folder: Path) -> AbstractAsyncContextManager[subprocess.Popen[str]]:
    """``evgate serve`` on the test's database, as a process of its own (killed as a crash
    would be, or at the end)."""
    return serving(
        database_url, folder, notification_poll_interval=0.02,
    )  # fmt: skip


async def test_a_process_killed_mid_stream_is_taken_over_from_the_cursor(
    db: Database,
    database_url: str,
    subscriptions: SubscriptionStore,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
) -> None:
    """A real ``evgate serve`` killed (SIGKILL) while it streams: once its lease has run out
    another process sends on from the cursor. Every event arrives, none invented, each
    charger's first arrivals in order, and what the cursor had passed is not sent again."""
    topic = await _topic(kafka_broker, 3)
    await kafka_subscription(subscriptions, kafka_settings(kafka_broker.bootstrap_plain, topic))
    chargers = [ChargerRef(f"CP-{i}", i) for i in range(12)]
    # Several seconds of streaming (about 30,000 events a second here): the cursor row is
    # saved about once a second, and the kill comes after the first save.
    await emit(db, [network_status(c, i % 2 == 0, at(i)) for i in range(10000) for c in chargers])
    outbox = {
        f"evt_{r['id']}": bytes(r["payload"])
        for r in await db.fetch("SELECT id, payload FROM outbox")
    }

    async def streaming() -> bool:
        return bool(await db.fetchval("SELECT after_id > 0 FROM stream_cursors"))

    async with _evgate(database_url, tmp_path / "first") as first:
        await until(streaming, within=60, interval=0.005)
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
    passed = await db.fetchval("SELECT after_id FROM stream_cursors")
    assert 0 < passed < len(outbox), passed  # killed mid-stream
    # What the lease's expiry does after a minute or two: the stream is free again.
    await db.execute("UPDATE stream_cursors SET leased_until = now() - interval '1 s'")
    async with _evgate(database_url, tmp_path / "second"):
        records = await _all_of(kafka_broker, topic, set(outbox), within=120)
    for r in records:  # none invented
        assert r.value == outbox[dict(r.headers)["event-id"].decode()]
    counts: dict[str, int] = defaultdict(int)
    for event_id in _ids(records):
        counts[event_id] += 1
    assert all(n == 1 for e, n in counts.items() if int(e.removeprefix("evt_")) <= passed)
    by_charger: dict[bytes, list[str]] = defaultdict(list)
    for r in records:
        by_charger[r.key].append(msgspec.json.decode(r.value)["timestamp"])
    for stamps in by_charger.values():
        firsts = list(dict.fromkeys(stamps))
        assert firsts == sorted(firsts)
