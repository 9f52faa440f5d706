"""POST /api/v1/transactions/{id}/stop: the operator closes a transaction whose StopTransaction
the charger lost — with the events and CDR a StopTransaction makes, marked as the operator's —
and the charger's own StopTransaction for it later changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from ocpp.v16 import call

from evgate.app import Evgate
from support import (
    BOOTSTRAP_TOKEN,
    TestCharger,
    ocpp_charger,
    register_charger,
    running_evgate,
    want_events,
)

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
STOP_EVENTS = [
    "SessionStartStopNotification",
    "session.start.stop.notification",
    "SessionUpdateNotification",
    "transaction.changed",
    "cdr.received",
]


@pytest.fixture
async def strict(database_url: str, tmp_path: Path) -> AsyncIterator[Evgate]:
    """An evgate where an id-tag may have one open transaction (ConcurrentTx otherwise), with
    every event subscribed to (the writer keeps only wanted ones; the tests read them all)."""
    conn = await asyncpg.connect(database_url)
    try:
        await want_events(conn)
    finally:
        await conn.close()
    async with running_evgate(database_url, tmp_path, allow_concurrent_tx=False) as app:
        yield app


@pytest.fixture
async def client(strict: Evgate) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{strict.api_port}",
        headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"},
        timeout=10,
    ) as c:
        yield c


async def _started(app: Evgate, api: httpx.AsyncClient, cp: TestCharger) -> int:
    """Boot the charger and start a transaction of TAG-1 (meterStart 1000, a reading of 1500
    since); its id."""
    await cp.boot()
    start = await cp.call(
        call.StartTransaction(connector_id=1, id_tag="TAG-1", meter_start=1000, timestamp=_at(0))
    )
    assert start.id_tag_info["status"] == "Accepted"
    reading = {"value": "1.5", "unit": "kWh", "measurand": "Energy.Active.Import.Register"}
    await cp.call(
        call.MeterValues(
            connector_id=1,
            transaction_id=start.transaction_id,
            meter_value=[{"timestamp": _at(10), "sampled_value": [reading]}],
        )
    )
    return int(start.transaction_id)


def _at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


async def _rows(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def test_operator_closes_a_stuck_transaction(
    strict: Evgate, client: httpx.AsyncClient, database_url: str
) -> None:
    """The stop closes it (meterStop: the latest reading), marks it as the operator's, emits a
    StopTransaction's events and CDR and frees the id-tag (ConcurrentTx before, Accepted
    after); a later StopTransaction from the charger is answered and changes nothing; a
    second stop is 409."""
    assert (await client.post("/api/v1/id-tags", json={"idTag": "TAG-1"})).status_code == 201
    secret = await register_charger(strict, client, "CP-1")
    url = f"ws://127.0.0.1:{strict.ws_port}/cp/CP-1?auth={secret}"
    async with ocpp_charger(url, "CP-1") as cp:
        tx = await _started(strict, client, cp)
        blocked = await cp.call(call.Authorize(id_tag="TAG-1"))
        assert blocked.id_tag_info["status"] == "ConcurrentTx"
        [before] = await _rows(database_url, "SELECT max(id) FROM outbox")

        reason = "charger replaced; its StopTransaction was lost"
        r = await client.post(f"/api/v1/transactions/{tx}/stop", json={"reason": reason})
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["active"], got["meterStop"], got["energyWh"]) == (False, 1500, 500)
        assert (got["stopReason"], got["operatorStopReason"]) == ("Other", reason)
        events = await _rows(
            database_url, "SELECT event FROM outbox WHERE id > $1 ORDER BY id", before[0]
        )
        assert [e["event"] for e in events] == STOP_EVENTS
        cdrs = await _rows(database_url, "SELECT transaction_id, energy_wh FROM cdrs")
        assert [tuple(c) for c in cdrs] == [(tx, 500)]
        freed = await cp.call(call.Authorize(id_tag="TAG-1"))
        assert freed.id_tag_info["status"] == "Accepted"

        # The charger's own StopTransaction turns up after all: answered, nothing changes.
        [before] = await _rows(database_url, "SELECT max(id) FROM outbox")
        late = await cp.call(
            call.StopTransaction(
                meter_stop=9000, timestamp=_at(90), transaction_id=tx, reason="Local"
            )
        )
        assert late.id_tag_info is None
        after = await _rows(database_url, "SELECT event FROM outbox WHERE id > $1", before[0])
        assert after == []
        assert (await client.get(f"/api/v1/transactions/{tx}")).json() == got
        assert len(await _rows(database_url, "SELECT 1 FROM cdrs")) == 1

    again = await client.post(f"/api/v1/transactions/{tx}/stop", json={"reason": "again"})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_operator_stop_with_meter_and_time(
    strict: Evgate, client: httpx.AsyncClient, database_url: str
) -> None:
    """meterStop and timestamp, when given, are the stop's, in the CDR too."""
    assert (await client.post("/api/v1/id-tags", json={"idTag": "TAG-1"})).status_code == 201
    secret = await register_charger(strict, client, "CP-1")
    url = f"ws://127.0.0.1:{strict.ws_port}/cp/CP-1?auth={secret}"
    async with ocpp_charger(url, "CP-1") as cp:
        tx = await _started(strict, client, cp)
    body = {"reason": "read off the meter", "meterStop": 4200, "timestamp": _at(60)}
    r = await client.post(f"/api/v1/transactions/{tx}/stop", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["meterStop"], got["energyWh"]) == (4200, 3200)
    assert datetime.fromisoformat(got["stoppedAt"]) == T0 + timedelta(minutes=60)
    [cdr] = await _rows(database_url, "SELECT stopped_at, meter_stop_wh, stop_reason FROM cdrs")
    assert tuple(cdr) == (T0 + timedelta(minutes=60), 4200, "Other")


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({}, 422, "reason"),
        ({"reason": ""}, 422, "reason"),
        ({"reason": "x", "extra": 1}, 422, "extra"),
        ({"reason": "x", "meterStop": "12"}, 422, "meterStop"),
        ({"reason": "x", "meterStop": 2**62}, 422, "meterStop"),
        ({"reason": "x", "meterStop": 999}, 422, "below the transaction's meterStart"),
        ({"reason": "x", "timestamp": "2030-01-01T00:00:00"}, 422, "time zone"),
        ({"reason": "x", "timestamp": "2000-01-01T00:00:00Z"}, 422, "before the transaction"),
        ({"reason": "x", "timestamp": 5}, 422, "timestamp"),
        # PostgreSQL cannot store U+0000: refused by the writer alone, not a 500 nor a stall.
        ({"reason": "x\u0000y"}, 422, "SQLSTATE 22021"),
    ],
)
async def test_bad_stops_are_problems(
    strict: Evgate, client: httpx.AsyncClient, body: dict, status: int, says: str
) -> None:
    """Each bad body is a problem document naming what is wrong; the transaction stays open."""
    assert (await client.post("/api/v1/id-tags", json={"idTag": "TAG-1"})).status_code == 201
    secret = await register_charger(strict, client, "CP-1")
    url = f"ws://127.0.0.1:{strict.ws_port}/cp/CP-1?auth={secret}"
    async with ocpp_charger(url, "CP-1") as cp:
        tx = await _started(strict, client, cp)
    r = await client.post(f"/api/v1/transactions/{tx}/stop", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert says in r.json()["detail"]
    assert (await client.get(f"/api/v1/transactions/{tx}")).json()["active"] is True


async def test_stop_of_an_unknown_transaction_is_404(api: httpx.AsyncClient) -> None:
    """No such transaction (or an id no transaction can have): 404; not JSON: 400."""
    for tx in (999, 0, 2**31):
        r = await api.post(f"/api/v1/transactions/{tx}/stop", json={"reason": "x"})
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
    r = await api.post("/api/v1/transactions/999/stop", json={"reason": "x"})
    assert r.json()["detail"] == "no transaction 999"  # not a route that is missing
    r = await api.post(
        "/api/v1/transactions/1/stop", content=b"{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


async def test_meter_values_after_an_operator_stop_are_not_a_running_transactions(
    strict: Evgate, client: httpx.AsyncClient, database_url: str
) -> None:
    """The charger's connection remembered the transaction as open (its MeterValues events);
    after the operator's stop, its MeterValues for that transaction are stored and
    acknowledged but make no SessionUpdateNotification or transaction.changed of a running
    transaction, as for any transaction that is not open."""
    assert (await client.post("/api/v1/id-tags", json={"idTag": "TAG-1"})).status_code == 201
    secret = await register_charger(strict, client, "CP-1")
    url = f"ws://127.0.0.1:{strict.ws_port}/cp/CP-1?auth={secret}"
    async with ocpp_charger(url, "CP-1") as cp:
        tx = await _started(strict, client, cp)
        r = await client.post(f"/api/v1/transactions/{tx}/stop", json={"reason": "stuck"})
        assert r.status_code == 200, r.text
        [before] = await _rows(database_url, "SELECT max(id) FROM outbox")
        reading = {"value": "1.7", "unit": "kWh", "measurand": "Energy.Active.Import.Register"}
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=tx,
                meter_value=[{"timestamp": _at(20), "sampled_value": [reading]}],
            )
        )
        # Acknowledged: its rows and events (none) are committed; read before the disconnect's.
        after = await _rows(database_url, "SELECT event FROM outbox WHERE id > $1", before[0])
    assert [e["event"] for e in after] == []
    stored = await _rows(
        database_url, "SELECT value FROM meter_values WHERE ts = $1", T0 + timedelta(minutes=20)
    )
    assert [s["value"] for s in stored] == [1700.0]
