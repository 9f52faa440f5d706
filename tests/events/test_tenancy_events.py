"""A sub-operator's notification subscriptions receive only its tenant's events (issue 20).

Tested as an attacker would: two tenants, each with a charger connected through the real
gateway (the ``ocpp`` library's ChargePoint) and a subscription made with its own token
through the subscription API, beside the operator's; each tenant's receiver (a real HTTP server
on loopback) must get exactly its own events, never one of the other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from ocpp.v16 import call
from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus

from evgate.app import Evgate
from evgate.credentials import digest
from evgate.events.builders import PhaseCurrent, circuit_changed, circuit_consumption
from evgate.events.catalog import EMITTED
from evgate.storage.circuits import CircuitStore
from evgate.storage.db import Database, acting_for
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.outbox import About, insert_outbox
from evgate.storage.stream_cursors import Position, StreamCursorStore
from evgate.storage.subscriptions import SubscriptionStore
from harness.kafka import KafkaBroker
from support import Receiver, gateway_knows, ocpp_charger, until

from .events_helpers import AT, account_events, emit, webhook_subscription

# The tenants' receivers are on loopback, which only this setting lets a sub-operator's token
# name as a target (api/targets.py; tests/api/test_tenant_targets.py tests the refusal).
pytestmark = pytest.mark.evgate_settings(tenant_private_targets=True)

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


@dataclass
class Tenant:
    """A sub-operator, an API client with its (admin) token, and its webhook receiver."""

    id: int
    api: httpx.AsyncClient
    receiver: Receiver
    subscription: int = 0
    topic: str = ""


@contextlib.asynccontextmanager
async def tenant(evgate: Evgate, name: str) -> AsyncIterator[Tenant]:
    """A sub-operator and an admin token scoped to it (made in the database: the sub-operator
    API is not what this test is about), with a receiver on loopback."""
    assert evgate.db is not None
    sub_operator = await evgate.db.fetchval(
        "INSERT INTO sub_operators (name) VALUES ($1) RETURNING id", name
    )
    token = f"token-of-{name}"
    await evgate.db.execute(
        "INSERT INTO api_tokens (name, scope, digest, sub_operator_id)"
        " VALUES ($1, 'admin', $2, $3)",
        name,
        digest(token),
        sub_operator,
    )
    receiver = Receiver()
    await receiver.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{evgate.api_port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ) as api:
            yield Tenant(sub_operator, api, receiver)
    finally:
        await receiver.stop()


async def subscribe(api: httpx.AsyncClient, receiver: Receiver) -> int:
    """A webhook subscription to every event evgate emits, made with ``api``'s token."""
    r = await api.post(
        "/public-api/notifications/v2.0",
        json={
            "notifications": sorted(EMITTED),
            "via": "webhook",
            "webhook": {"callbackUrl": receiver.url},
        },
    )
    assert r.status_code == 201, r.text
    return int(r.json()["data"]["id"])


async def add_charger(evgate: Evgate, api: httpx.AsyncClient, charger_id: str) -> str:
    """Register a charger with ``api``'s token (a tenant's: the tenant's charger); its
    secret, once the gateway knows it."""
    r = await api.post("/api/v1/chargers", json={"id": charger_id})
    assert r.status_code == 201, r.text
    await gateway_knows(evgate, charger_id)
    return str(r.json()["secret"])


async def a_short_day(evgate: Evgate, charger_id: str, secret: str, id_tag: str) -> None:
    """Connect, boot, a status, a transaction started and stopped, disconnect."""
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{charger_id}?auth={secret}"
    async with ocpp_charger(url, charger_id) as cp:
        await cp.call(call.BootNotification(charge_point_model="X1", charge_point_vendor="ACME"))
        await cp.call(
            call.StatusNotification(
                connector_id=1,
                error_code=ChargePointErrorCode.no_error,
                status=ChargePointStatus.preparing,
            )
        )
        start = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag=id_tag, meter_start=1000, timestamp=T0.isoformat()
            )
        )
        await cp.call(
            call.StopTransaction(
                meter_stop=4000,
                timestamp=(T0 + timedelta(hours=1)).isoformat(),
                transaction_id=int(start.transaction_id),
                id_tag=id_tag,
                reason="EVDisconnected",
            )
        )


async def status(evgate: Evgate, charger_id: str, secret: str) -> None:
    """Connect, send one StatusNotification, disconnect."""
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{charger_id}?auth={secret}"
    async with ocpp_charger(url, charger_id) as cp:
        await cp.call(
            call.StatusNotification(
                connector_id=1,
                error_code=ChargePointErrorCode.no_error,
                status=ChargePointStatus.available,
            )
        )


async def delivered(db: Database) -> None:
    """Wait until every outbox row is fanned out and streamed past by every Kafka
    subscription, and every delivery made (delivered ones are deleted): what a receiver has
    then is all it will ever get of them."""

    async def done() -> bool:
        return bool(
            await db.fetchval(
                "SELECT NOT EXISTS (SELECT 1 FROM outbox o, outbox_cursor c"
                "  WHERE (o.xid, o.id) > (c.after_xid, c.after_id))"
                " AND NOT EXISTS (SELECT 1 FROM outbox o, stream_cursors k"
                "  WHERE (o.xid, o.id) > (k.after_xid, k.after_id))"
                " AND NOT EXISTS (SELECT 1 FROM deliveries)"
            )
        )

    await until(done, within=60)


def bodies(receiver: Receiver) -> list[bytes]:
    return [r.body for r in receiver.received]


def name(body: bytes) -> str:
    return str(msgspec.json.decode(body)["notification"])


async def chargers_of(db: Database) -> dict[bytes, str]:
    """The charger each event is about ('' for none), by its body (received byte for byte as
    the outbox keeps it): not every payload names its charger."""
    return {bytes(r["payload"]): r["charger_id"] for r in await db.fetch("SELECT * FROM outbox")}


async def test_each_tenants_subscription_gets_only_its_chargers_events(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """Two tenants' chargers boot, report a status, start and stop a transaction: each
    tenant's webhook gets exactly the events of its own charger (and of its id tag), the
    operator's every event of both; a charger moved from A to B takes its later events to B."""
    assert evgate.db is not None
    operator = Receiver()
    await operator.start()
    try:
        async with tenant(evgate, "A") as a, tenant(evgate, "B") as b:
            await subscribe(api, operator)
            a.subscription = await subscribe(a.api, a.receiver)
            b.subscription = await subscribe(b.api, b.receiver)
            owners = await evgate.db.fetch(
                "SELECT id, sub_operator_id FROM subscriptions ORDER BY id"
            )
            assert [r["sub_operator_id"] for r in owners] == [None, a.id, b.id]
            secrets: dict[str, str] = {}
            for t, tag in ((a, "A"), (b, "B")):
                r = await t.api.post("/api/v1/id-tags", json={"idTag": f"TAG-{tag}"})
                assert r.status_code == 201, r.text
                secrets[tag] = await add_charger(evgate, t.api, f"CP-{tag}")
            await asyncio.gather(
                a_short_day(evgate, "CP-A", secrets["A"], "TAG-A"),
                a_short_day(evgate, "CP-B", secrets["B"], "TAG-B"),
            )
            await delivered(evgate.db)

            charger = await chargers_of(evgate.db)
            tags = {
                r["number"]: r["sub_operator_id"]
                for r in await evgate.db.fetch("SELECT number, sub_operator_id FROM id_tags")
            }
            everything = bodies(operator)
            for t, cp in ((a, "CP-A"), (b, "CP-B")):
                of_charger = [e for e in everything if charger[e] == cp]
                assert {name(e) for e in of_charger} >= {
                    "chargePoint.changed",
                    "NetworkStatusNotification",
                    "BootNotification",
                    "HardwareStatusNotification",
                    "SessionStartStopNotification",
                    "SessionUpdateNotification",
                    "cdr.received",
                }
                of_tag = [
                    e
                    for e in everything
                    if name(e) == "idTag.changed"
                    and tags[msgspec.json.decode(e)["idTagsId"]] == t.id
                ]
                assert len(of_tag) == 1
                got = bodies(t.receiver)
                # Exactly the operator's events about the tenant's charger (in its order)
                # and id tag: nothing of the other tenant's, nothing lost.
                assert [e for e in got if charger[e] != ""] == of_charger
                assert [e for e in got if charger[e] == ""] == of_tag

            # CP-A moves to B: its next events are B's, no longer A's.
            before = {n: len(t.receiver.received) for n, t in (("A", a), ("B", b))}
            await evgate.db.execute(
                "UPDATE chargers SET sub_operator_id = $1 WHERE id = 'CP-A'", b.id
            )
            await status(evgate, "CP-A", secrets["A"])
            await delivered(evgate.db)
            assert len(a.receiver.received) == before["A"]
            moved = bodies(b.receiver)[before["B"] :]
            assert [name(e) for e in moved] == [
                "NetworkStatusNotification",
                "HardwareStatusNotification",
                "NetworkStatusNotification",
            ]
            charger = await chargers_of(evgate.db)
            assert {charger[e] for e in moved} == {"CP-A"}
    finally:
        await operator.stop()


LOCATION = {
    "name": "Car park",
    "address": {"street": "Main 1", "city": "Utrecht", "postalCode": "3511", "country": "NL"},
    "geoposition": {"latitude": 52.09, "longitude": 5.12},
    "timezone": "Europe/Amsterdam",
}
TARIFF = {"name": "Standard", "currency": "EUR", "pricePerKwh": "0.30"}


async def created(api: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Any:
    r = await api.post(url, json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"] if "id" in r.json() else r.json()


async def ok(response: Any, status: int = 200) -> None:
    r = await response
    assert r.status_code == status, r.text


async def test_operators_changes_of_a_tenants_resources_reach_only_that_tenant(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """The operator changes and deletes A's location, tariff, circuit and id tag, and deletes
    A's charger: A's subscription gets each event (stamped with A), B's none; the operator's
    own resources' events and a user's reach neither tenant; what B's token creates reaches
    B, not A."""
    assert evgate.db is not None
    operator = Receiver()
    await operator.start()
    try:
        async with tenant(evgate, "A") as a, tenant(evgate, "B") as b:
            await subscribe(api, operator)
            await subscribe(a.api, a.receiver)
            await subscribe(b.api, b.receiver)
            location = await created(api, "/api/v1/locations", LOCATION)
            tariff = await created(api, "/api/v1/tariffs", TARIFF)
            circuit = await created(api, "/api/v1/circuits", {"name": "D", "maxCurrent": 32})
            await created(api, "/api/v1/id-tags", {"idTag": "TAG-A"})
            own = await created(api, "/api/v1/locations", {**LOCATION, "name": "Depot"})
            # Given to A (as the sub-operator API's subOperatorId would): what the operator
            # does to them from now on is A's.
            for table, key, value in (
                ("locations", "id", location),
                ("tariffs", "id", tariff),
                ("circuits", "id", circuit),
                ("id_tags", "id_tag", "TAG-A"),
            ):
                await evgate.db.execute(
                    f"UPDATE {table} SET sub_operator_id = $1 WHERE {key} = $2", a.id, value
                )
            await ok(api.patch(f"/api/v1/locations/{location}", json={"name": "Garage"}))
            await ok(api.patch(f"/api/v1/tariffs/{tariff}", json={"currency": "USD"}))
            await ok(api.patch(f"/api/v1/circuits/{circuit}", json={"maxCurrent": 40}))
            await ok(api.patch("/api/v1/id-tags/TAG-A", json={"status": "Blocked"}))
            await ok(api.patch(f"/api/v1/locations/{own}", json={"name": "Depot 2"}))
            await created(api, "/api/v1/users", {"email": "ada@example.com"})
            await ok(api.delete(f"/api/v1/tariffs/{tariff}"), 204)
            await ok(api.delete(f"/api/v1/circuits/{circuit}"), 204)
            await ok(api.delete("/api/v1/id-tags/TAG-A"), 204)
            await ok(api.delete(f"/api/v1/locations/{location}"), 204)
            await created(b.api, "/api/v1/locations", {**LOCATION, "name": "B's"})
            await created(api, "/api/v1/chargers", {"id": "CP-X"})
            await delivered(evgate.db)  # its creation fanned out while it was the operator's
            await evgate.db.execute(
                "UPDATE chargers SET sub_operator_id = $1 WHERE id = 'CP-X'", a.id
            )
            # Gone when the event fans out: it reaches A by its stamp.
            await ok(api.delete("/api/v1/chargers/CP-X"), 204)
            await delivered(evgate.db)

            def said(receiver: Receiver) -> list[tuple[str, str]]:
                return [
                    (name(e), str(msgspec.json.decode(e).get("action"))) for e in bodies(receiver)
                ]

            a_s = [
                ("LocationChangedNotification", "updated"),
                ("TariffChangedNotification", "updated"),
                ("circuit.changed", "updated"),
                ("idTag.changed", "updated"),
                ("TariffChangedNotification", "deleted"),
                ("circuit.changed", "deleted"),
                ("idTag.changed", "deleted"),
                ("LocationChangedNotification", "deleted"),
            ]
            charger = await chargers_of(evgate.db)
            assert [(name(e), charger[e]) for e in bodies(a.receiver) if charger[e] != ""] == [
                ("chargePoint.changed", "CP-X"),
                ("ChargePointChangedNotification", "CP-X"),
            ]
            a.receiver.received = [e for e in a.receiver.received if charger[e.body] == ""]
            assert said(a.receiver) == a_s
            assert said(b.receiver) == [("LocationChangedNotification", "created")]
            everything = said(operator)
            assert ("UserChangedNotification", "created") in everything
            assert everything.count(("LocationChangedNotification", "updated")) == 2
            # 5 created, A's, Depot's update, the user, B's location, CP-X's 2 + 2
            assert len(everything) == 5 + len(a_s) + 3 + 4
    finally:
        await operator.stop()


async def test_the_fan_out_gives_a_tenant_its_stamped_events_and_not_the_operators(
    db: Database, subscriptions: SubscriptionStore, deliveries: DeliveryStore
) -> None:
    """In the store: a subscription made acting for a tenant is the tenant's (the column's
    default); a circuit's consumption report is stamped with the circuit's tenant, an event
    about a sub-operator with that sub-operator; users', partners', plans' and balances'
    events (no charger, no stamp) go to the operator's subscription only."""
    a = await db.fetchval("INSERT INTO sub_operators (name) VALUES ('A') RETURNING id")
    b = await db.fetchval("INSERT INTO sub_operators (name) VALUES ('B') RETURNING id")
    url = "http://127.0.0.1:9/hook"  # never called: nothing is dispatched here
    operators = await webhook_subscription(subscriptions, url)
    with acting_for(a):
        a_s = await webhook_subscription(subscriptions, url)
    with acting_for(b):
        b_s = await webhook_subscription(subscriptions, url)
    circuit = await db.fetchval(
        "INSERT INTO circuits (name, max_current, sub_operator_id) VALUES ('D', 32, $1)"
        " RETURNING id",
        a,
    )
    await CircuitStore(db).append_events(
        {
            circuit: circuit_consumption(
                circuit, 32.0, 6.0, [PhaseCurrent(phase="L1", current=9.8, at=AT)]
            )
        }
    )
    async with db.pool.acquire() as conn, conn.transaction():
        await insert_outbox(conn, [circuit_changed(99, "updated", AT)], About("sub_operators", b))
    await emit(db, account_events())
    assert await deliveries.fan_out(1000) == 2 + len(account_events())

    rows = await db.fetch("SELECT subscription_id, event FROM deliveries ORDER BY outbox_id")
    got: dict[int, list[str]] = {}
    for r in rows:
        got.setdefault(r["subscription_id"], []).append(r["event"])
    assert got[a_s.id] == ["CircuitConsumptionNotification"]
    assert got[b_s.id] == ["circuit.changed"]
    # The operator's subscription is streamed (no deliveries): what it gets is what its
    # stream reads, by the same rule.
    assert operators.id not in got
    window = await StreamCursorStore(db).read(operators.id, Position(0, 0), 1000)
    assert {e.event for e in window.events} == {
        "CircuitConsumptionNotification",
        "circuit.changed",
    } | {e.event for e in account_events()}


async def kafka_records(broker: KafkaBroker, topic: str) -> list[Any]:
    """Every record of ``topic`` (one partition), read to its end."""
    consumer = AIOKafkaConsumer(
        topic, **broker.client_config(), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        await until(lambda: consumer.assignment(), within=30)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        async with asyncio.timeout(60):
            while len(records) < sum(ends.values()):
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def test_a_tenants_kafka_subscription_gets_only_its_events(
    evgate: Evgate, kafka_broker: KafkaBroker
) -> None:
    """The same fan-out for Kafka: each tenant's Kafka subscription (made with its token)
    gets the records of its own charger and id tag, none of the other's."""
    assert evgate.db is not None
    async with tenant(evgate, "A") as a, tenant(evgate, "B") as b:
        for t, tag in ((a, "A"), (b, "B")):
            topic = f"tenant-{tag}-{uuid.uuid4().hex[:8]}"
            await kafka_broker.create_topic(topic, partitions=1)
            r = await t.api.post(
                "/public-api/notifications/v2.0",
                json={
                    "notifications": sorted(EMITTED),
                    "via": "kafka",
                    "kafka": {"topic": topic, "brokers": [kafka_broker.bootstrap_plain],
                              "compressionCodec": "gzip", "securityProtocol": "PLAINTEXT"},
                },
            )  # fmt: skip
            assert r.status_code == 201, r.text
            t.topic = topic
            assert (await t.api.post("/api/v1/id-tags", json={"idTag": f"TAG-{tag}"})).is_success
            secret = await add_charger(evgate, t.api, f"CP-{tag}")
            await a_short_day(evgate, f"CP-{tag}", secret, f"TAG-{tag}")
        await delivered(evgate.db)
        for t, tag in ((a, "A"), (b, "B")):
            expected = {
                bytes(r["payload"])
                for r in await evgate.db.fetch(
                    "SELECT payload FROM outbox WHERE charger_id = $1"
                    " OR (event = 'idTag.changed' AND sub_operator_id = $2)",
                    f"CP-{tag}",
                    t.id,
                )
            }
            records = await kafka_records(kafka_broker, t.topic)
            assert len(records) == len(expected) > 10
            assert {r.value for r in records} == expected
            assert {r.key for r in records} - {None, b""} == {f"CP-{tag}".encode()}
