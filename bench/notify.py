"""Notification delivery: events per second from the outbox to a loopback webhook receiver and to
Kafka, against a bare client sending the same payloads; and what a stalled receiver does to the
commit latency of the transactions that write events.

What is measured, in one run, on this machine:

* **webhook**: ``--events`` outbox rows (spread over ``--chargers`` chargers, so as many lanes)
  are written first; then the dispatcher starts and the clock runs until the receiver has
  every one. The receiver is nginx (``bench/nginx_receiver.py``: Debian's nginx-light answering
  204 on 127.0.0.1, started by the bench), so that it is not the bottleneck; its own ceiling is
  measured in the same run: the same payloads POSTed by a bare ``aiohttp`` client with the same
  concurrency (``lanes_per_subscription``, 16) and no database, no signatures, no bookkeeping.
  ``--subscriptions N``: N webhook subscriptions to every event, all to that receiver; the rates
  are then deliveries per second (events x N; the bare client sends each payload N times over
  16 x N connections), to see the total rate grow with the subscriptions until the receiver or
  the CPU is the limit (issue 17). ``--webhook-only`` stops after these rates.
* **kafka**: a Kafka subscription (the test broker, tests/harness: needs a JDK and
  ``bash tests/harness/kafka/fetch.sh``; ``--no-kafka`` skips) streams ``--events`` rows
  written at once, timed from their commit until the stream's cursor passed the last (every
  record acknowledged, ``acks=all``), its producer started first by one event delivered
  before the clock. Peer: a bare idempotent ``AIOKafkaProducer`` (acks=all, gzip), started,
  sending the same records (key, payload, headers), timed from the first send to the last
  acknowledgement. Both topics are read back afterwards (not timed) to check the count.
* **commit latency**: p50/p99 of a transaction that appends 3 events (as a charger handler's
  writer submission does) while the dispatcher delivers, with a healthy receiver only, then with
  a second subscription whose receiver never answers. The ratio stalled/healthy should be ~1:
  the charger path never waits for receivers.
* **charger round trip**: a whole evgate in-process (gateway, handlers, writer, dispatcher);
  ``--chargers-live`` chargers (a bare WebSocket client each, no OCPP library overhead) start a
  transaction (each an ``evgate.protocol.endpoint.Endpoint`` in the charger role, over
  ``websockets``), then send ``--round-trips`` messages each, alternating MeterValues inside the
  transaction and StatusNotification — every one emitting events — and the clock runs from
  each CALL sent to its CALLRESULT received. Once with a healthy receiver subscribed to every
  event, once more with a second subscription whose receiver never answers: p50/p99 should not
  move, since handlers only write outbox rows and the dispatcher delivers apart.

Run from the project venv: ``python bench/notify.py`` (table) or ``--json``; ``--kafka-only``
measures the Kafka rates alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "python"), str(ROOT / "tests"), str(ROOT / "bench")]

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import uvloop  # noqa: E402
import websockets  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from evgate.app import Evgate  # noqa: E402
from evgate.auth.registry import ChargerRegistry  # noqa: E402
from evgate.config import load_settings  # noqa: E402
from evgate.events.builders import ChargerRef, network_status  # noqa: E402
from evgate.events.catalog import CATALOG  # noqa: E402
from evgate.events.dispatcher import Dispatcher, DispatcherConfig  # noqa: E402
from evgate.events.signing import hmac_state, new_webhook_secret  # noqa: E402
from evgate.protocol.endpoint import Endpoint, Role  # noqa: E402
from evgate.protocol.endpoint import Reply as CallReply  # noqa: E402
from evgate.protocol.v16 import (  # noqa: E402
    BootNotificationRequest,
    ChargePointErrorCode,
    ChargePointStatus,
    Measurand,
    MeterValue,
    MeterValuesRequest,
    SampledValue,
    StartTransactionRequest,
    StartTransactionResponse,
    StatusNotificationRequest,
)
from evgate.storage.chargers import ChargerStore  # noqa: E402
from evgate.storage.db import Database, apply_migrations  # noqa: E402
from evgate.storage.deliveries import DeliveryStore  # noqa: E402
from evgate.storage.embedded import EmbeddedPostgres  # noqa: E402
from evgate.storage.subscriptions import SubscriptionStore  # noqa: E402
from nginx_receiver import NginxReceiver  # noqa: E402
from support.receiver import Receiver, Reply  # noqa: E402

CONFIG = DispatcherConfig(poll_interval=0.01, refresh_interval=0.2)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _rows(events: int, chargers: int) -> list[tuple[str, str, bytes]]:
    refs = [ChargerRef(f"CP-{i}", i) for i in range(chargers)]
    return [
        tuple(network_status(refs[i % chargers], i % 2 == 0, T0 + timedelta(seconds=i)))  # type: ignore[misc]
        for i in range(events)
    ]


async def _fresh_dsn(pg: EmbeddedPostgres) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg.dsn)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    dsn = pg.dsn.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    await apply_migrations(conn)
    await conn.close()
    return dsn


async def _fresh_db(pg: EmbeddedPostgres) -> Database:
    db = Database(await _fresh_dsn(pg), pool_size=20)
    await db.open(migrate=False)
    return db


async def _subscribe(store: SubscriptionStore, **kw: Any) -> None:
    await store.create_subscription(
        notifications=list(CATALOG),
        webhook_secret=new_webhook_secret(),
        token_hmac_state=hmac_state(b"evg_bench-token"),
        created_by=None,
        **{"callback_url": None, "kafka": None, "kafka_password": None, **kw},
    )


async def _write(db: Database, rows: list[tuple[str, str, bytes]]) -> None:
    async with db.pool.acquire() as conn:
        await conn.copy_records_to_table(
            "outbox", records=rows, columns=("event", "charger_id", "payload")
        )


async def _received(receiver: NginxReceiver, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while receiver.count() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the receiver got {receiver.count()} of {count}")
        await asyncio.sleep(0.01)


async def webhook_rate(
    pg: EmbeddedPostgres, events: int, chargers: int, subscriptions: int = 1
) -> tuple[float, float]:
    """Deliveries per second (events x ``subscriptions``, each subscription to every event,
    all to one receiver) from the dispatcher's start to the receiver's last, and the share of
    one core this process (the dispatcher alone) used meanwhile."""
    db = await _fresh_db(pg)
    try:
        with NginxReceiver() as receiver:
            store = SubscriptionStore(db)
            for _ in range(subscriptions):
                await _subscribe(store, via="webhook", callback_url=receiver.url)
            await _write(db, _rows(events, chargers))
            dispatcher = Dispatcher(store, DeliveryStore(store.db), CONFIG)
            started, cpu = time.perf_counter(), time.process_time()
            dispatcher.start()
            await _received(receiver, events * subscriptions, within=600)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            await dispatcher.stop()
            return events * subscriptions / elapsed, cpu / elapsed
    finally:
        await db.close()


async def webhook_peer_rate(events: int, chargers: int, subscriptions: int = 1) -> float:
    """The receiver's ceiling: a bare aiohttp client sending every payload once per
    subscription, with as many connections as evgate's lanes of that many subscriptions."""
    rows = _rows(events, chargers)
    lanes = CONFIG.lanes_per_subscription * subscriptions
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for _ in range(subscriptions):
        for row in rows:
            queue.put_nowait(row[2])
    with NginxReceiver() as receiver:
        connector = aiohttp.TCPConnector(limit=lanes)
        async with aiohttp.ClientSession(connector=connector) as client:

            async def worker() -> None:
                while not queue.empty():
                    async with client.post(receiver.url, data=queue.get_nowait()) as r:
                        await r.read()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(lanes)))
            return events * subscriptions / (time.perf_counter() - started)


async def _consume_count(bootstrap: str, topic: str, count: int) -> None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got = 0
    try:
        while got < count:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got += len(records)
    finally:
        await consumer.stop()


async def _acknowledged(db: Database, last_id: int, within: float) -> None:
    """Until the Kafka stream's cursor passed outbox row ``last_id``: every record up to it
    was acknowledged by the brokers (``acks=all``), which is what the bare producer's clock
    stops at."""
    deadline = time.monotonic() + within
    while not await db.fetchval(
        "SELECT coalesce(bool_and(after_id >= $1), false) FROM stream_cursors", last_id
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Kafka stream did not pass outbox row {last_id}")
        await asyncio.sleep(0.005)


def _headers(event: str, outbox_id: int) -> list[tuple[str, bytes]]:
    return [("notification", event.encode()), ("event-id", f"evt_{outbox_id}".encode())]


async def kafka_rates(pg: EmbeddedPostgres, events: int, chargers: int) -> tuple[float, float]:
    """evgate's Kafka stream and a bare idempotent producer, each timed from the first record
    to the brokers' acknowledgement of the last, with a started producer (evgate's: a first
    event delivered before the clock), the same records (key, payload and headers); both
    topics are then read back (not timed) to check every record arrived."""
    from harness.kafka import KafkaBroker

    broker = KafkaBroker()
    await asyncio.to_thread(broker.start)
    db = await _fresh_db(pg)
    try:
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        await broker.create_topic(topic, partitions=4)
        store = SubscriptionStore(db)
        kafka = {"topic": topic, "brokers": [broker.bootstrap_plain], "compressionCodec": "gzip",
                 "securityProtocol": "PLAINTEXT"}  # fmt: skip
        await _subscribe(store, via="kafka", kafka=kafka)
        rows = _rows(events, chargers)
        await _write(db, rows[:1])
        dispatcher = Dispatcher(store, DeliveryStore(store.db), CONFIG)
        dispatcher.start()
        try:
            await _acknowledged(db, await db.fetchval("SELECT max(id) FROM outbox"), 120)
            await _write(db, rows)
            last_id = await db.fetchval("SELECT max(id) FROM outbox")
            started = time.perf_counter()
            dispatcher.wake()
            await _acknowledged(db, last_id, 600)
            ours = events / (time.perf_counter() - started)
        finally:
            await dispatcher.stop()
        await _consume_count(broker.bootstrap_plain, topic, events + 1)

        peer_topic = topic + "-peer"
        await broker.create_topic(peer_topic, partitions=4)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_plain, acks="all",
                                    enable_idempotence=True, compression_type="gzip")  # fmt: skip
        await producer.start()
        try:
            started = time.perf_counter()
            futures = [
                await producer.send(peer_topic, r[2], key=r[1].encode(), headers=_headers(r[0], i))
                for i, r in enumerate(rows, 1)
            ]
            await asyncio.gather(*futures)
            peer = events / (time.perf_counter() - started)
        finally:
            await producer.stop()
        await _consume_count(broker.bootstrap_plain, peer_topic, events)
        return ours, peer
    finally:
        await db.close()
        await asyncio.to_thread(broker.close)


async def commit_latency(pg: EmbeddedPostgres, writes: int, stalled: bool) -> dict[str, float]:
    db = await _fresh_db(pg)
    healthy = NginxReceiver().start()
    stuck = Receiver(lambda _: Reply(delay=60))
    await stuck.start()
    store = SubscriptionStore(db)
    await _subscribe(store, via="webhook", callback_url=healthy.url)
    if stalled:
        await _subscribe(store, via="webhook", callback_url=stuck.url)
    dispatcher = Dispatcher(store, DeliveryStore(store.db), CONFIG)
    dispatcher.start()
    samples = []
    try:
        for i in range(writes):
            rows = _rows(3, 1)
            rows = [(e, f"CP-{i % 50}", p) for e, _, p in rows]
            started = time.perf_counter()
            async with db.pool.acquire() as conn, conn.transaction():
                await conn.executemany(
                    "INSERT INTO outbox (event, charger_id, payload) VALUES ($1, $2, $3)", rows
                )
            samples.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.002)
        await _received(healthy, 3 * writes, within=120)
    finally:
        await dispatcher.stop()
        healthy.stop()
        await stuck.stop()
        await db.close()
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[int(len(samples) * 0.99) - 1],
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[max(int(len(samples) * 0.99) - 1, 0)],
    }


class _Charger:
    """One charger on a bare WebSocket: its protocol state is evgate's ``Endpoint`` in the
    charger role (unique ids, reply matching); a CALL waits for its CALLRESULT."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.endpoint = Endpoint(Role.charger)

    async def call(self, action: str, request: Any) -> Any:
        outgoing = self.endpoint.call(action, request)
        await self.ws.send(outgoing.data.decode())
        happening = self.endpoint.receive(await self.ws.recv())
        assert isinstance(happening, CallReply), happening
        return happening.response


def _meter_values(transaction_id: int, i: int, when: datetime) -> MeterValuesRequest:
    sample = SampledValue(value=str(10 * i), measurand=Measurand.energy_active_import_register)
    return MeterValuesRequest(
        connector_id=1,
        transaction_id=transaction_id,
        meter_value=[MeterValue(timestamp=when, sampled_value=[sample])],
    )


async def _drive(url: str, round_trips: int, samples: list[float]) -> None:
    async with websockets.connect(url, subprotocols=["ocpp1.6"], compression=None) as ws:
        cp = _Charger(ws)
        await cp.call(
            "BootNotification",
            BootNotificationRequest(charge_point_vendor="B", charge_point_model="M"),
        )
        at = datetime.now(UTC)
        start = await cp.call(
            "StartTransaction",
            StartTransactionRequest(connector_id=1, id_tag="TAG", meter_start=0, timestamp=at),
        )
        assert isinstance(start, StartTransactionResponse)
        tx = start.transaction_id
        for i in range(round_trips):
            when = at + timedelta(seconds=i + 1)
            if i % 2:
                status = (
                    ChargePointStatus.charging if i % 4 == 1 else ChargePointStatus.suspended_ev
                )
                action, request = "StatusNotification", StatusNotificationRequest(
                    connector_id=1, error_code=ChargePointErrorCode.no_error, status=status,
                    timestamp=when,
                )  # fmt: skip
            else:
                action, request = "MeterValues", _meter_values(tx, i, when)
            started = time.perf_counter()
            await cp.call(action, request)
            samples.append((time.perf_counter() - started) * 1000)


async def charger_round_trip(
    pg: EmbeddedPostgres, chargers: int, round_trips: int, stalled: bool
) -> dict[str, float]:
    """Charger CALL → CALLRESULT latency through a whole evgate that emits events."""
    dsn = await _fresh_dsn(pg)
    healthy = NginxReceiver().start()
    stuck = Receiver(lambda _: Reply(delay=60))
    await stuck.start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            environ={},
            database_url=dsn,
            data_dir=tmp,
            ws_host="127.0.0.1",
            ws_port=0,
            api_port=0,
            notification_delivery="inline",  # this process's loop: the dispatcher measured here
        )
        app = Evgate(settings)
        await app.start()
        try:
            assert app.db is not None and app.gateway is not None
            store = SubscriptionStore(app.db)
            await _subscribe(store, via="webhook", callback_url=healthy.url)
            if stalled:
                await _subscribe(store, via="webhook", callback_url=stuck.url)
            registry = ChargerRegistry(ChargerStore(app.db))
            urls = []
            for i in range(chargers):
                charger_id = f"CP-{i}"
                _, secret = await registry.create(charger_id)
                urls.append(f"ws://127.0.0.1:{app.ws_port}/cp/{charger_id}?auth={secret}")
            known = app.gateway.credentials_of
            while any(known(f"CP-{i}") is None for i in range(chargers)):  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the chargers' NOTIFY round trip: no event to await
            samples: list[float] = []
            await asyncio.gather(*(_drive(url, round_trips, samples) for url in urls))
            result = _percentiles(samples)
            # Every event reached the healthy receiver (2 registry + 1 connect + boot + 4 at
            # start + 2 per MeterValues + 1 per StatusNotification (+1 for the first), per
            # charger): the stalled one held up nobody else.
            per_charger = 2 + 1 + 1 + 4 + 2 * ((round_trips + 1) // 2) + round_trips // 2 + 1
            await _received(healthy, chargers * per_charger, within=120)
            result["events_delivered"] = float(healthy.count())
            return result
        finally:
            await app.stop()
            healthy.stop()
            await stuck.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(tmp)
        await asyncio.to_thread(pg.start)
        try:
            result: dict[str, Any] = {"events": args.events, "chargers": args.chargers}
            if args.kafka_only:
                ours, peer = await kafka_rates(pg, args.events, args.chargers)
                result["kafka"] = {"evgate_eps": ours, "bare_producer_eps": peer,
                                   "ratio": ours / peer}  # fmt: skip
                return result
            ours, core = await webhook_rate(pg, args.events, args.chargers, args.subscriptions)
            peer = await webhook_peer_rate(args.events, args.chargers, args.subscriptions)
            result["webhook"] = {"subscriptions": args.subscriptions, "evgate_eps": ours,
                                 "evgate_core_share": core, "bare_aiohttp_eps": peer,
                                 "ratio": ours / peer}  # fmt: skip
            if args.webhook_only:
                return result
            if not args.no_kafka:
                ours, peer = await kafka_rates(pg, args.events, args.chargers)
                result["kafka"] = {"evgate_eps": ours, "bare_producer_eps": peer,
                                   "ratio": ours / peer}  # fmt: skip
            healthy = await commit_latency(pg, args.writes, stalled=False)
            stalled = await commit_latency(pg, args.writes, stalled=True)
            result["commit_latency"] = {
                "healthy": healthy,
                "with_stalled_receiver": stalled,
                "p99_ratio": stalled["p99_ms"] / healthy["p99_ms"],
            }
            healthy = await charger_round_trip(pg, args.chargers_live, args.round_trips, False)
            stalled = await charger_round_trip(pg, args.chargers_live, args.round_trips, True)
            result["charger_round_trip"] = {
                "chargers": args.chargers_live,
                "round_trips": args.round_trips,
                "healthy": healthy,
                "with_stalled_receiver": stalled,
                "p99_ratio": stalled["p99_ms"] / healthy["p99_ms"],
            }
            return result
        finally:
            await asyncio.to_thread(pg.stop)


def _print_kafka(k: dict[str, Any]) -> None:
    print(f"kafka    evgate {k['evgate_eps']:8.0f} ev/s   bare producer"
          f" {k['bare_producer_eps']:8.0f} ev/s   evgate/bare {k['ratio']:.2f}")  # fmt: skip


def _print(r: dict[str, Any]) -> None:
    print(f"{r['events']} events over {r['chargers']} chargers")
    if "webhook" not in r:  # --kafka-only
        _print_kafka(r["kafka"])
        return
    w = r["webhook"]
    print(f"webhook  evgate {w['evgate_eps']:8.0f} ev/s   bare aiohttp {w['bare_aiohttp_eps']:8.0f}"
          f" ev/s   evgate/bare {w['ratio']:.2f}")  # fmt: skip
    print(f"         ({w['subscriptions']} subscriptions: deliveries/s; the dispatcher used"
          f" {w['evgate_core_share']:.2f} of a core)")  # fmt: skip
    if "commit_latency" not in r:  # --webhook-only
        return
    if "kafka" in r:
        _print_kafka(r["kafka"])
    c = r["commit_latency"]
    healthy, stalled = c["healthy"], c["with_stalled_receiver"]
    print("commit latency of an event-writing transaction (ms):")
    print(f"  healthy receiver  p50 {healthy['p50_ms']:.2f}  p99 {healthy['p99_ms']:.2f}")
    print(f"  + stalled one     p50 {stalled['p50_ms']:.2f}  p99 {stalled['p99_ms']:.2f}")
    print(f"  p99 stalled/healthy {c['p99_ratio']:.2f} (about 1: receivers never hold the writer)")
    t = r["charger_round_trip"]
    healthy, stalled = t["healthy"], t["with_stalled_receiver"]
    print(f"charger round trip, {t['chargers']} chargers x {t['round_trips']} messages that"
          " emit events (ms):")  # fmt: skip
    print(f"  healthy receiver  p50 {healthy['p50_ms']:.2f}  p99 {healthy['p99_ms']:.2f}")
    print(f"  + stalled one     p50 {stalled['p50_ms']:.2f}  p99 {stalled['p99_ms']:.2f}")
    print(f"  p99 stalled/healthy {t['p99_ratio']:.2f} (about 1: receivers never hold chargers)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--chargers", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--chargers-live", type=int, default=20)
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument(
        "--kafka-only", action="store_true", help="only the Kafka rates (evgate and bare producer)"
    )
    parser.add_argument(
        "--subscriptions",
        type=int,
        default=1,
        help="webhook subscriptions to every event (one receiver): the webhook rates are"
        " deliveries per second, events x subscriptions",
    )
    parser.add_argument(
        "--webhook-only", action="store_true", help="only the webhook rates (evgate and bare)"
    )
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    outcome = uvloop.run(main(arguments))
    print(json.dumps(outcome) if arguments.json else "", end="\n" if arguments.json else "")
    if not arguments.json:
        _print(outcome)
