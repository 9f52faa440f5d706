"""The issue's acceptance, end to end: a location, a tariff of 1.00 start fee + 0.30/kWh +
0.05/minute (21 % tax), a charger there; a real OCPP charger (the ``ocpp`` library over
WebSockets) charges 10,000 Wh over 30 minutes: the CDR's total is 5.50 excluding tax with its
breakdown, shown by the API and carried by the events, and LocationChangedNotification and
TariffChangedNotification reach a real webhook receiver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import msgspec
from ocpp.v16 import call
from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus

from evgate.app import Evgate
from support import Receiver, ocpp_charger, register_charger

T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
EVENTS = [
    "LocationChangedNotification",
    "TariffChangedNotification",
    "SessionUpdateNotification",
    "cdr.received",
]


def _exact(value: Any) -> Any:
    """``value`` with every Decimal as its text (its digits as sent)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return value


async def _post(api: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post(url, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _ok(response: Any) -> dict[str, Any]:
    r = await response
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _a_priced_charger(
    evgate: Evgate, api: httpx.AsyncClient, charger_id: str, **terms: str | int
) -> str:
    """The issue's requests, as written: a location, a tariff (with ``terms`` besides), a
    group, the charger there."""
    location = await _post(api, "/api/v1/locations", {
        "name": "Car park",
        "address": {"street": "Main 1", "city": "Utrecht", "postalCode": "3511", "country": "NL"},
        "geoposition": {"latitude": 52.09, "longitude": 5.12},
        "timezone": "Europe/Amsterdam",
    })  # fmt: skip
    tariff = await _post(api, "/api/v1/tariffs", {
        "name": "Standard", "currency": "EUR", "connectionFee": "1.00", "pricePerKwh": "0.30",
        "pricePerMinute": "0.05", "taxPercent": "21", **terms,
    })  # fmt: skip
    group = await _post(api, "/api/v1/tariff-groups",
                        {"name": "Public", "tariffs": [{"tariffId": tariff["id"]}]})  # fmt: skip
    await _ok(api.patch(f"/api/v1/locations/{location['id']}", json={"tariffGroupId": group["id"]}))
    secret = await register_charger(evgate, api, charger_id)
    await _ok(api.patch(f"/api/v1/chargers/{charger_id}", json={"locationId": location["id"]}))
    return secret


async def _status(cp: Any, status: ChargePointStatus, minute: int) -> None:
    await cp.call(call.StatusNotification(
        connector_id=1, error_code=ChargePointErrorCode.no_error, status=status,
        timestamp=(T0 + timedelta(minutes=minute)).isoformat(),
    ))  # fmt: skip


async def _charge(
    evgate: Evgate,
    api: httpx.AsyncClient,
    charger_id: str,
    secret: str,
    between: Any = None,
    statuses: tuple[tuple[ChargePointStatus, int], ...] = ((ChargePointStatus.suspended_ev, 25),),
) -> int:
    """10,000 Wh over 30 minutes, a meter reading at 10 minutes, the connector's ``statuses``
    (status, minute) after it; the transaction id."""
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{charger_id}?auth={secret}"
    async with ocpp_charger(url, charger_id) as cp:
        start = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG1", meter_start=1000, timestamp=T0.isoformat()
        ))  # fmt: skip
        tx = int(start.transaction_id)
        if between is not None:
            await between()
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{
            "timestamp": (T0 + timedelta(minutes=10)).isoformat(),
            "sampledValue": [{"value": "4000", "measurand": "Energy.Active.Import.Register",
                              "unit": "Wh"}],
        }]))  # fmt: skip
        for status, minute in statuses:
            await _status(cp, status, minute)
        await cp.call(call.StopTransaction(
            meter_stop=11_000, timestamp=(T0 + timedelta(minutes=30)).isoformat(),
            transaction_id=tx, id_tag="TAG1",
        ))  # fmt: skip
    return tx


async def test_a_priced_transaction_end_to_end(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    r = await api.post("/public-api/notifications/v2.0", json={
        "notifications": EVENTS, "via": "webhook", "webhook": {"callbackUrl": receiver.url},
    })  # fmt: skip
    assert r.status_code == 201, r.text
    await _post(api, "/api/v1/id-tags", {"idTag": "TAG1"})
    secret = await _a_priced_charger(evgate, api, "CP-P")

    async def change_the_tariff() -> None:
        # A later change of the tariff does not reprice the running transaction.
        await _ok(api.patch("/api/v1/tariffs/1", json={"pricePerKwh": "0.50"}))

    tx = await _charge(evgate, api, "CP-P", secret, between=change_the_tariff)

    shown = await _ok(api.get(f"/api/v1/transactions/{tx}"))
    price = shown["price"]
    assert shown["pricing"] == "priced" and shown["tariff"]["tariff"]["pricePerKwh"] == "0.30"
    assert (price["currency"], price["totalExclTax"], price["totalInclTax"], price["tax"]) == (
        "EUR", "5.50", "6.66", "1.16",
    )  # fmt: skip
    assert [(b["component"], b["quantity"], b["unitPrice"], b["amount"])
            for b in price["breakdown"]] == [
        ("connectionFee", "1.000", "1.00", "1.00"),
        ("energy", "10.000", "0.30", "3.00"),
        ("time", "30.000", "0.05", "1.50"),
    ]  # fmt: skip
    assert price["idleMinutes"] == "5.000"  # SuspendedEV from minute 25: no idle fee here

    received = await receiver.wait_for(9)
    # Amounts in events are JSON numbers (the catalog's type) with their exact decimal digits:
    # read as Decimal and shown as text, "5.50" proves both.
    exact = msgspec.json.Decoder(float_hook=Decimal)
    events = [_exact(exact.decode(request.body)) for request in received]
    names = [e["notification"] for e in events]
    locations = [
        e["location"] for e in events if e["notification"] == "LocationChangedNotification"
    ]
    # Created, given its tariff group, the charger moved in.
    assert [loc["public_charge_points"] for loc in locations] == [0, 0, 1]
    assert names.count("TariffChangedNotification") == 2  # created, updated
    [cdr_event] = [e for e in events if e["notification"] == "cdr.received"]
    cdr = await _ok(api.get(f"/api/v1/cdrs/{cdr_event['id']}"))
    assert cdr["transactionId"] == tx and cdr["price"] == price and cdr["pricing"] == "priced"
    assert cdr_event["price"]["totalExclTax"] == "5.50"
    assert cdr_event["price"]["breakdown"] == [
        {"component": c, "quantity": q, "unit": u, "unitPrice": p, "amount": a}
        for c, q, u, p, a in (("connectionFee", "1.000", "session", "1.00", "1.00"),
                              ("energy", "10.000", "kWh", "0.30", "3.00"),
                              ("time", "30.000", "min", "0.05", "1.50"))
    ]  # fmt: skip
    updates = [e["session"] for e in events if e["notification"] == "SessionUpdateNotification"]
    assert [(u["status"], u.get("amount")) for u in updates] == [
        ("active", "1.00"),  # at the start: the connection fee
        ("active", "2.40"),  # 10 minutes, 3 kWh: 1.00 + 0.90 + 0.50
        ("finished", "5.50"),
    ]
    assert updates[-1]["totalAmount"] == {"withTax": "6.66", "withoutTax": "5.50"}
    assert updates[-1]["currency"] == "EUR" and updates[-1]["tariffSnapshotId"] == 1


async def test_idle_time_comes_from_the_connectors_statuses(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """SuspendedEV 20-22, Charging again (no energy), SuspendedEVSE 25 to the stop at 30; the
    register last rose by minute 10: 7 idle minutes, 2 of grace, 5 x 0.10 = 0.50 more."""
    await _post(api, "/api/v1/id-tags", {"idTag": "TAG1"})
    secret = await _a_priced_charger(
        evgate, api, "CP-I", idleFeePerMinute="0.10", idleGraceMinutes=2
    )
    statuses = (
        (ChargePointStatus.suspended_ev, 20),
        (ChargePointStatus.charging, 22),
        (ChargePointStatus.suspended_evse, 25),
    )
    tx = await _charge(evgate, api, "CP-I", secret, statuses=statuses)
    price = (await _ok(api.get(f"/api/v1/transactions/{tx}")))["price"]
    assert price["idleMinutes"] == "7.000" and price["totalExclTax"] == "6.00"
    assert price["breakdown"][-1] == {
        "component": "idle", "quantity": "5.000", "unit": "min", "unitPrice": "0.10",
        "amount": "0.50",
    }  # fmt: skip


async def test_a_transaction_no_tariff_applies_to_has_no_price(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """No price, stated as such: not a price of 0."""
    await _post(api, "/api/v1/id-tags", {"idTag": "TAG1"})
    secret = await register_charger(evgate, api, "CP-F")
    tx = await _charge(evgate, api, "CP-F", secret)
    shown = await _ok(api.get(f"/api/v1/transactions/{tx}"))
    assert shown["price"] is None and shown["pricing"] == "noTariff" and shown["tariff"] is None
    number = await _ok(api.get("/api/v1/chargers/CP-F"))
    assert number["locationId"] is None


async def test_time_of_day_prices_follow_the_stops_transaction_data(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """10:00-10:30 Amsterdam, 0.30/kWh until 10:15 and 0.60 after; the stop's transactionData
    says 9 of the 10 kWh were in by 10:15: 1.00 + 9 x 0.30 + 1 x 0.60 + 1.50 = 5.80 (spread
    evenly it would be 7.00)."""
    await _post(api, "/api/v1/id-tags", {"idTag": "TAG1"})
    periods = [{"start": "10:00", "pricePerKwh": "0.30"}, {"start": "10:15", "pricePerKwh": "0.60"}]
    secret = await _a_priced_charger(evgate, api, "CP-T", energyPeriods=periods)  # type: ignore[arg-type]
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-T?auth={secret}"
    async with ocpp_charger(url, "CP-T") as cp:
        start = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG1", meter_start=1000, timestamp=T0.isoformat()
        ))  # fmt: skip
        tx = int(start.transaction_id)
        await cp.call(call.StopTransaction(
            meter_stop=11_000, timestamp=(T0 + timedelta(minutes=30)).isoformat(),
            transaction_id=tx, transaction_data=[{
                "timestamp": (T0 + timedelta(minutes=15)).isoformat(),
                "sampledValue": [{"value": "10.0", "unit": "kWh"}],
            }],
        ))  # fmt: skip
    price = (await _ok(api.get(f"/api/v1/transactions/{tx}")))["price"]
    energy = [(b["quantity"], b["unitPrice"]) for b in price["breakdown"]
              if b["component"] == "energy"]  # fmt: skip
    assert energy == [("9.000", "0.30"), ("1.000", "0.60")]
    assert price["totalExclTax"] == "5.80"


async def test_a_transaction_the_operator_stops_is_priced(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """A stuck priced transaction closed through POST /api/v1/transactions/{id}/stop is priced
    as a StopTransaction would be (the same follow-ups: price, CDR, events): 10,000 Wh over
    30 minutes under the issue's tariff is 5.50 excluding tax, on the transaction and its CDR."""
    await _post(api, "/api/v1/id-tags", {"idTag": "TAG1"})
    secret = await _a_priced_charger(evgate, api, "CP-O")
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-O?auth={secret}"
    async with ocpp_charger(url, "CP-O") as cp:
        start = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG1", meter_start=1000, timestamp=T0.isoformat()
        ))  # fmt: skip
    tx = int(start.transaction_id)  # the charger went away without its StopTransaction
    stopped = await _ok(api.post(f"/api/v1/transactions/{tx}/stop", json={
        "reason": "lost StopTransaction", "meterStop": 11_000,
        "timestamp": (T0 + timedelta(minutes=30)).isoformat(),
    }))  # fmt: skip
    assert stopped["pricing"] == "priced" and stopped["operatorStopReason"]
    assert (stopped["price"]["totalExclTax"], stopped["price"]["totalInclTax"]) == ("5.50", "6.66")
    assert evgate.db is not None
    cdr_id = await evgate.db.fetchval("SELECT id FROM cdrs WHERE transaction_id = $1", tx)
    cdr = await _ok(api.get(f"/api/v1/cdrs/{cdr_id}"))
    assert cdr["price"]["totalExclTax"] == "5.50"


async def test_a_priced_stop_is_charged_to_the_prepaid_users_balance(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """Issue 20's acceptance through a real charger: a prepaid user's id tag, a top-up of
    10.00, a session priced 5.50 (the issue 19 tariff without tax) leaves 4.50, with two
    userBalance.changed (the top-up's credit, the transaction's debit naming it); a resent
    StopTransaction charges nothing again."""
    user = await _post(api, "/api/v1/users", {
        "email": "ada@example.com", "firstName": "Ada", "lastName": "L", "prepaid": True,
        "currency": "EUR",
    })  # fmt: skip
    await _post(api, "/api/v1/id-tags", {"idTag": "TAG1", "userId": user["id"]})
    await _post(api, f"/api/v1/users/{user['id']}/balance", {"amount": "10.00", "type": "topUp"})
    secret = await _a_priced_charger(evgate, api, "CP-U", taxPercent="0")
    tx = await _charge(evgate, api, "CP-U", secret)
    shown = await _ok(api.get(f"/api/v1/transactions/{tx}"))
    assert shown["price"]["totalInclTax"] == "5.50"
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-U?auth={secret}"
    async with ocpp_charger(url, "CP-U") as cp:  # the stop again, as a charger resends it
        await cp.call(call.StopTransaction(
            meter_stop=11_000, timestamp=(T0 + timedelta(minutes=30)).isoformat(),
            transaction_id=tx, id_tag="TAG1",
        ))  # fmt: skip
    balance = await _ok(api.get(f"/api/v1/users/{user['id']}/balance"))
    assert balance["amount"] == "4.50"
    assert evgate.db is not None
    rows = await evgate.db.fetch(
        "SELECT payload FROM outbox WHERE event = 'userBalance.changed' ORDER BY id"
    )
    events = [msgspec.json.decode(r["payload"]) for r in rows]
    assert [(e.get("credit"), e.get("debit"), e.get("transactionId")) for e in events] == [
        (10, 0, None),
        (0, 5.5, tx),
    ]
