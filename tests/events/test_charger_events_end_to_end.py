"""Events produced from real state changes, end to end: real chargers (the ``ocpp`` library over
WebSockets) → evgate's handlers, gateway observer and command hooks → the outbox, committed with
the state → a real webhook receiver on loopback and the real Kafka broker. Every emitted event
type arrives with the catalog's fields, signed, in order per charger."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
from aiokafka import AIOKafkaConsumer
from ocpp.v16 import call
from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus

from evgate.app import Evgate
from evgate.events.catalog import EMITTED, PAYLOAD_TYPES
from evgate.storage.reservations import ReservationStore
from harness.kafka import KafkaBroker
from support import BOOTSTRAP_TOKEN, Receiver, TestCharger, ocpp_charger, register_charger

from .events_helpers import ACCOUNT_EVENTS, verify_standard_webhook, verify_x_signature

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
# Made by the operator's changes of locations and tariffs, not in a charger's day: they reach
# receivers in test_priced_transaction_end_to_end.py.
A_DAYS_EVENTS = EMITTED - {"LocationChangedNotification", "TariffChangedNotification"}


@contextlib.asynccontextmanager
async def connected(evgate: Evgate, charger_id: str, secret: str) -> AsyncIterator[TestCharger]:
    """The charger connected and reading for the block; disconnected after it."""
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{charger_id}?auth={secret}"
    async with ocpp_charger(url, charger_id) as charger:
        yield charger


async def subscribe(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await api.post(
        "/public-api/notifications/v2.0", json={"notifications": sorted(EMITTED), **body}
    )
    assert r.status_code == 201, r.text
    return dict(r.json()["data"])


async def add_charger(evgate: Evgate, api: httpx.AsyncClient, charger_id: str) -> str:
    """Register a charger and wait for the gateway to know it (its NOTIFY); its secret."""
    return await register_charger(evgate, api, charger_id)


async def command(api: httpx.AsyncClient, charger_id: str, action: str, **body: Any) -> Any:
    r = await api.post(f"/api/v1/chargers/{charger_id}/commands/{action}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def a_whole_day(evgate: Evgate, api: httpx.AsyncClient, charger_id: str, secret: str) -> int:
    """Everything a charger and its operator do that makes events; the transaction id."""
    async with connected(evgate, charger_id, secret) as cp:
        await cp.call(call.BootNotification(charge_point_model="X1", charge_point_vendor="ACME"))
        await cp.call(
            call.StatusNotification(
                connector_id=1,
                error_code=ChargePointErrorCode.no_error,
                status=ChargePointStatus.preparing,
            )
        )
        await cp.call(call.Authorize(id_tag="TAG1"))
        start = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG1", meter_start=1000, timestamp=T0.isoformat()
            )
        )
        tx = int(start.transaction_id)
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=tx,
                meter_value=[
                    {
                        "timestamp": (T0 + timedelta(minutes=5)).isoformat(),
                        "sampledValue": [
                            {"value": "1.6", "measurand": "Energy.Active.Import.Register",
                             "unit": "kWh"},
                            {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"},
                        ],
                    }
                ],
            )
        )  # fmt: skip
        await cp.call(
            call.StopTransaction(
                meter_stop=4000,
                timestamp=(T0 + timedelta(hours=1)).isoformat(),
                transaction_id=tx,
                id_tag="TAG1",
                reason="EVDisconnected",
            )
        )
        await cp.call(call.DataTransfer(vendor_id="acme", message_id="hello", data="world"))
        await command(api, charger_id, "GetDiagnostics", location="ftp://example.com/up")
        await cp.call(call.DiagnosticsStatusNotification(status="Uploaded"))
        await cp.call(
            call.SecurityEventNotification(
                type="ResetOrReboot", timestamp=T0.isoformat(), tech_info="watchdog"
            )
        )
        await command(api, charger_id, "GetConfiguration")
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        await command(
            api, charger_id, "ReserveNow",
            connectorId=1, expiryDate=later, idTag="TAG1", reservationId=501,
        )  # fmt: skip
        await command(api, charger_id, "CancelReservation", reservationId=501)
        soon = (datetime.now(UTC) + timedelta(milliseconds=200)).isoformat()
        await command(
            api, charger_id, "ReserveNow",
            connectorId=1, expiryDate=soon, idTag="TAG1", reservationId=502,
        )  # fmt: skip
    await asyncio.sleep(0.3)  # the behaviour under test: reservation 502 expires (200 ms)
    assert evgate.db is not None
    assert await ReservationStore(evgate.db).expire_due() == 1  # as the expiry task does
    return tx


# What one charger's lane receives for a_whole_day, in order (evse.changed precedes the
# status of a new connector; a command's event comes once the charger answered it).
DAY = [
    "chargePoint.changed",
    "ChargePointChangedNotification",
    "NetworkStatusNotification",
    "BootNotification",
    "evse.changed",
    "HardwareStatusNotification",
    "AuthorizationNotification",
    "authorization.changed",
    "SessionStartStopNotification",
    "session.start.stop.notification",
    "SessionUpdateNotification",
    "transaction.changed",
    "SessionMeterValuesNotification",
    "SessionUpdateNotification",
    "SessionStartStopNotification",
    "session.start.stop.notification",
    "SessionUpdateNotification",
    "transaction.changed",
    "cdr.received",
    "chargePoint.dataTransferReceived",
    "DiagnosticsStatusNotification",
    "SecurityEventNotification",
    "ChargePointSyncConfigurationNotification",
    "reservation.changed",
    "reservation.changed",
    "reservation.changed",
    "NetworkStatusNotification",
    "reservation.changed",
]


# Load management's events need circuits: their own end-to-end test is
# tests/handlers/test_smart_charging.py (three chargers on a circuit, a webhook subscriber).
LOAD_MANAGEMENT = frozenset({"circuit.changed", "chargingProfile.applied",
                             "CircuitConsumptionNotification"})  # fmt: skip
# What a charger's day emits: not the operator's changes (locations, tariffs, users and what
# they pay) nor load management's (they need circuits: tests/handlers/test_smart_charging.py).
A_DAY = A_DAYS_EVENTS - ACCOUNT_EVENTS - LOAD_MANAGEMENT


def decoded(body: bytes) -> tuple[str, Any, dict[str, Any]]:
    """(event name, the payload decoded strictly as its catalog Struct, the raw JSON)."""
    raw = msgspec.json.decode(body)
    name = raw["notification"]
    return name, msgspec.json.decode(body, type=PAYLOAD_TYPES[name]), raw


async def test_every_event_of_a_chargers_day_reaches_the_webhook_in_order(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """Every emitted event type arrives at a real webhook receiver with the catalog's fields
    and valid signatures (Standard Webhooks and X-Signature), one charger's in the order they
    happened, their values those of the messages."""
    subscription = await subscribe(api, via="webhook", webhook={"callbackUrl": receiver.url})
    secret = base64.b64decode(subscription["webhook"]["secret"].removeprefix("whsec_"))
    r = await api.post("/api/v1/id-tags", json={"idTag": "TAG1"})
    assert r.status_code == 201, r.text
    charger_secret = await add_charger(evgate, api, "CP-E")
    tx = await a_whole_day(evgate, api, "CP-E", charger_secret)

    got = await receiver.wait_for(len(DAY) + 1)
    for request in got:
        assert verify_standard_webhook(secret, request.headers, request.body)
        assert verify_x_signature(BOOTSTRAP_TOKEN, request.headers, request.body)
    events = [decoded(request.body) for request in got]
    assert {name for name, _, _ in events} == A_DAY
    lane = [(name, payload, raw) for name, payload, raw in events if name != "idTag.changed"]
    assert [name for name, _, _ in lane] == DAY

    number = lane[0][1].chargePointId
    for name, _, raw in lane:
        if "chargePointId" in raw:
            assert (raw["chargePointId"], raw["networkId"]) == (number, "CP-E"), name
    by_name: dict[str, list[Any]] = {}
    for name, payload, _ in lane:
        by_name.setdefault(name, []).append(payload)
    assert [p.networkStatus for p in by_name["NetworkStatusNotification"]] == [
        "available",
        "temporarily unavailable",
    ]
    assert by_name["BootNotification"][0].bootNotification.vendor == "ACME"
    assert by_name["evse.changed"][0].evseId == 1
    assert by_name["HardwareStatusNotification"][0].hardwareStatus == "preparing"
    assert by_name["AuthorizationNotification"][0].status == "Accepted"
    start, stop = by_name["SessionStartStopNotification"]
    assert (start.action, start.sessionId, start.meterStart) == ("start", tx, 1000)
    assert (stop.action, stop.energyConsumed, stop.reason) == ("stop", 3000.0, "standard_stop")
    [meter] = by_name["SessionMeterValuesNotification"]
    assert [(v.measurand, v.value, v.unit) for v in meter.meterValues] == [
        ("Energy Active Import Register", 1600.0, "Wh"),
        ("Power Active Import", 7200.0, "W"),
    ]
    updates = by_name["SessionUpdateNotification"]
    assert [(u.session.status, u.session.energy) for u in updates] == [
        ("active", 0.0),
        ("active", 600.0),
        ("finished", 3000.0),
    ]
    assert updates[1].session.power.latest == 7200.0
    assert [t.action for t in by_name["transaction.changed"]] == ["created", "updated"]
    [cdr] = by_name["cdr.received"]
    stored = (await api.get(f"/api/v1/cdrs/{cdr.id}")).json()
    assert (stored["transactionId"], stored["energyWh"]) == (tx, 3000)
    assert by_name["chargePoint.dataTransferReceived"][0].data == "world"
    assert by_name["DiagnosticsStatusNotification"][0].requestId > 0
    assert by_name["SecurityEventNotification"][0].critical is True
    [sync] = by_name["ChargePointSyncConfigurationNotification"]
    assert [c.key for c in sync.configuration] == ["HeartbeatInterval"] and sync.requestId > 0
    assert [(r.reservationId, r.status) for r in by_name["reservation.changed"]] == [
        (501, "active"),
        (501, "canceled"),
        (502, "active"),
        (502, "expired"),
    ]


async def test_a_chargers_events_reach_kafka_keyed_and_in_order(
    evgate: Evgate, api: httpx.AsyncClient, kafka_broker: KafkaBroker
) -> None:
    """The same day through a Kafka subscription: every event type is a record keyed by the
    charger id (idTag.changed: no charger), in order, its value the catalog payload."""
    topic = f"emission-{uuid.uuid4().hex[:8]}"
    await kafka_broker.create_topic(topic, partitions=3)
    kafka = {"topic": topic, "brokers": [kafka_broker.bootstrap_plain],
             "compressionCodec": "gzip", "securityProtocol": "PLAINTEXT"}  # fmt: skip
    await subscribe(api, via="kafka", kafka=kafka)
    r = await api.post("/api/v1/id-tags", json={"idTag": "TAG1"})
    assert r.status_code == 201, r.text
    charger_secret = await add_charger(evgate, api, "CP-K")
    await a_whole_day(evgate, api, "CP-K", charger_secret)

    consumer = AIOKafkaConsumer(
        topic, **kafka_broker.client_config(), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(60):
            while len(records) < len(DAY) + 1:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    lane = [decoded(r.value) for r in records if r.key == b"CP-K"]
    assert [name for name, _, _ in lane] == DAY
    assert {decoded(r.value)[0] for r in records} == A_DAY


async def test_a_replaced_connection_leaves_the_charger_available(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """A charger that connects again while its old connection is open is taken over, not
    disconnected: NetworkStatusNotification says available twice, the charger row too; the
    last close says temporarily unavailable."""
    await subscribe(api, via="webhook", webhook={"callbackUrl": receiver.url})
    charger_secret = await add_charger(evgate, api, "CP-R")
    async with (
        connected(evgate, "CP-R", charger_secret),
        connected(evgate, "CP-R", charger_secret),
    ):
        await receiver.wait_for(4)
        assert evgate.db is not None
        status = await evgate.db.fetchval("SELECT network_status FROM chargers WHERE id = 'CP-R'")
        assert status == "available"
    got = await receiver.wait_for(5)
    statuses = [
        raw["networkStatus"]
        for _, _, raw in map(decoded, (g.body for g in got))
        if raw["notification"] == "NetworkStatusNotification"
    ]
    assert statuses == ["available", "available", "temporarily unavailable"]
    assert evgate.db is not None
    status = await evgate.db.fetchval("SELECT network_status FROM chargers WHERE id = 'CP-R'")
    assert status == "temporarily unavailable"
