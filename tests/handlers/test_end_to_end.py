"""Real chargers (the ``ocpp`` library's ChargePoint over ``websockets``) against a running
evgate: a whole session, PostgreSQL stopped and started while chargers keep sending, and
``evgate serve`` killed with SIGKILL and restarted (every acknowledged message is stored)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from ocpp.exceptions import PropertyConstraintViolationError
from ocpp.v16 import ChargePoint, call
from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus

from evgate.app import Evgate
from evgate.auth.registry import ChargerRegistry
from evgate.storage.chargers import ChargerStore
from evgate.storage.db import Database
from evgate.storage.embedded import EmbeddedPostgres
from support import (
    asyncpg_copy_waiter_unretrieved,
    free_port,
    gateway_knows,
    ocpp_charger,
    quiet_for,
    running_evgate,
    serve_env,
    start_serve,
    until,
    want_events,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


async def register(database_url: str, *ids: str) -> dict[str, str]:
    """Register chargers; their secrets by id."""
    db = Database(database_url, pool_size=2)
    await db.open(migrate=False)
    try:
        registry = ChargerRegistry(ChargerStore(db))
        return {i: (await registry.create(i))[1] for i in ids}
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def charger(port: int, charger_id: str, secret: str) -> AsyncIterator[ChargePoint]:
    """A connected ocpp ChargePoint, its reader running (a long response timeout: the fault
    tests keep calls waiting through a PostgreSQL outage)."""
    url = f"ws://127.0.0.1:{port}/cp/{charger_id}?auth={secret}"
    async with ocpp_charger(url, charger_id, response_timeout=60) as cp:
        yield cp


def meter_values(connector: int, at: datetime, value: float, tx: int | None = None) -> Any:
    extra = {} if tx is None else {"transaction_id": tx}
    return call.MeterValues(
        connector_id=connector,
        meter_value=[
            {
                "timestamp": at.isoformat(),
                "sampledValue": [
                    {
                        "value": f"{value}",
                        "measurand": "Energy.Active.Import.Register",
                        "unit": "Wh",
                    }
                ],
            }
        ],
        **extra,
    )


async def test_a_whole_session(evgate: Evgate, api: httpx.AsyncClient, database_url: str) -> None:
    """Boot, status, authorize, start, meter values, stop; the API shows the transaction."""
    secrets = await register(database_url, "CP-1")
    r = await api.post("/api/v1/id-tags", json={"idTag": "TAG1"})
    assert r.status_code == 201, r.text
    assert evgate.ws_port is not None
    async with charger(evgate.ws_port, "CP-1", secrets["CP-1"]) as cp:
        boot = await cp.call(
            call.BootNotification(charge_point_model="X1", charge_point_vendor="ACME")
        )
        assert boot.status == "Accepted" and boot.interval == 60
        await cp.call(
            call.StatusNotification(
                connector_id=1,
                error_code=ChargePointErrorCode.no_error,
                status=ChargePointStatus.preparing,
            )
        )
        auth = await cp.call(call.Authorize(id_tag="TAG1"))
        assert auth.id_tag_info["status"] == "Accepted"
        start = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG1", meter_start=1000, timestamp=T0.isoformat()
            )
        )
        tx = start.transaction_id
        assert start.id_tag_info["status"] == "Accepted"
        for i in range(3):
            await cp.call(meter_values(1, T0 + timedelta(minutes=i), 1000 + 500 * (i + 1), tx))
        stop = await cp.call(
            call.StopTransaction(
                meter_stop=4000,
                timestamp=(T0 + timedelta(hours=1)).isoformat(),
                transaction_id=tx,
                reason="EVDisconnected",
            )
        )
        assert stop.id_tag_info is None
    got = (await api.get(f"/api/v1/transactions/{tx}")).json()
    assert (got["energyWh"], got["stopReason"], got["active"]) == (3000, "EVDisconnected", False)
    listed = (await api.get("/api/v1/transactions", params={"chargerId": "CP-1"})).json()
    assert [t["id"] for t in listed["data"]] == [tx]
    connectors = (await api.get("/api/v1/chargers/CP-1/connectors")).json()
    assert connectors[0]["status"] == "Preparing"
    values = (
        await api.get(
            "/api/v1/chargers/CP-1/meter-values",
            params={"from": T0.isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()},
        )
    ).json()
    assert [v["value"] for v in values["data"]] == [1500, 2000, 2500]
    minutes = (
        await api.get(
            "/api/v1/chargers/CP-1/meter-values",
            params={
                "from": T0.isoformat(),
                "resolution": "1h",
                "to": (T0 + timedelta(hours=1)).isoformat(),
            },
        )
    ).json()
    assert minutes["data"][0]["count"] == 3 and minutes["data"][0]["last"] == 2500


def text_meter_values(connector: int, at: datetime, text: str) -> dict[str, Any]:
    """A MeterValues payload whose one sampled value is ``text`` (not a number: stored as
    text, the field that rides a batch's COMMIT as a literal)."""
    sampled = {"value": text, "measurand": "Temperature", "unit": "Celsius"}
    return {
        "connectorId": connector,
        "meterValue": [{"timestamp": at.isoformat(), "sampledValue": [sampled]}],
    }


async def test_a_text_postgresql_cannot_hold_gets_a_callerror_and_stalls_no_other_charger(
    evgate: Evgate, database_url: str
) -> None:
    """A charger's MeterValues whose text holds U+0000 is answered PropertyConstraintViolation
    (a property's value outside what evgate can store, named by its path), one holding a lone
    surrogate escape FormationViolation (not JSON that msgspec reads); another charger's
    messages, and the same charger's next one, are acknowledged and stored meanwhile."""
    secrets = await register(database_url, "CP-1", "CP-2")
    assert evgate.ws_port is not None
    await gateway_knows(evgate, "CP-1")
    await gateway_knows(evgate, "CP-2")
    errors: list[list[Any]] = []
    async with (
        charger(evgate.ws_port, "CP-1", secrets["CP-1"]) as cp1,
        charger(evgate.ws_port, "CP-2", secrets["CP-2"]) as cp2,
    ):
        with pytest.raises(PropertyConstraintViolationError, match="U\\+0000"):
            await cp1.call(
                call.MeterValues(**snake(text_meter_values(1, T0, "hot\x00"))), suppress=False
            )
        cp1.script = errors.append  # the CALLERRORs that the library cannot match
        surrogate = json.dumps([2, "s-1", "MeterValues", text_meter_values(1, T0, "\ud800")])
        assert "\\ud800" in surrogate  # json.dumps escapes it, as a charger's library would
        await cp1.ws.send(surrogate)
        await until(lambda: bool(errors))
        assert errors[0][0] == 4 and errors[0][2] == "FormationViolation", errors
        cp1.script = None
        await cp2.call(call.MeterValues(**snake(text_meter_values(1, T0, "cool"))))
        await cp1.call(call.MeterValues(**snake(text_meter_values(1, T0, "warm"))))
    db = await asyncpg.connect(database_url)
    try:
        stored = await db.fetch("SELECT charger_id, raw_value FROM meter_values ORDER BY 1")
    finally:
        await db.close()
    assert [tuple(r) for r in stored] == [("CP-1", "warm"), ("CP-2", "cool")]


def snake(payload: dict[str, Any]) -> dict[str, Any]:
    """A MeterValues payload's keys as the ``ocpp`` library's call takes them."""
    return {"connector_id": payload["connectorId"], "meter_value": payload["meterValue"]}


async def test_request_ids_beyond_int32_are_stored_and_beyond_int64_refused(
    evgate: Evgate, database_url: str
) -> None:
    """A real charger's requestId 2^31 is stored as sent (an integer column refused it:
    InternalError); 2^63 is answered PropertyConstraintViolation naming requestId (issue 15)."""
    secrets = await register(database_url, "CP-1")
    assert evgate.ws_port is not None and evgate.gateway is not None
    await gateway_knows(evgate, "CP-1")
    async with charger(evgate.ws_port, "CP-1", secrets["CP-1"]) as cp:
        await cp.call(call.LogStatusNotification(status="Uploaded", request_id=2**31))
        await cp.call(
            call.SignedFirmwareStatusNotification(status="SignatureVerified", request_id=2**31)
        )
        for action in (call.LogStatusNotification, call.SignedFirmwareStatusNotification):
            status = "Uploaded" if action is call.LogStatusNotification else "Installed"
            with pytest.raises(PropertyConstraintViolationError) as refused:
                await cp.call(action(status=status, request_id=2**63), suppress=False)
            assert refused.value.description.startswith("requestId: ")
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT kind, request_id FROM charger_messages ORDER BY id")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        ("LogStatusNotification", 2**31),
        ("SignedFirmwareStatusNotification", 2**31),
    ]


async def test_database_stopped_and_started_while_chargers_send(
    private_pg: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    """PostgreSQL down: no MeterValues acknowledged, connections stay up; back: every value
    written exactly once."""
    pg, database_url = private_pg
    secrets = await register(database_url, "CP-A", "CP-B")
    async with running_evgate(database_url, tmp_path) as evgate:
        await _send_through_an_outage(pg, evgate, secrets)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT charger_id, ts, count(*) FROM meter_values GROUP BY 1, 2")
    finally:
        await conn.close()
    assert len(rows) == 1 + 3 + 3 + 1 and all(r[2] == 1 for r in rows)


async def _send_through_an_outage(
    pg: EmbeddedPostgres, evgate: Evgate, secrets: dict[str, str]
) -> None:
    assert evgate.ws_port is not None
    async with (
        charger(evgate.ws_port, "CP-A", secrets["CP-A"]) as a,
        charger(evgate.ws_port, "CP-B", secrets["CP-B"]) as b,
    ):
        await a.call(meter_values(1, T0, 1.0))
        await asyncio.to_thread(pg.kill)
        sends = [
            asyncio.ensure_future(cp.call(meter_values(1, T0 + timedelta(seconds=i), float(i))))
            for cp in (a, b)
            for i in range(1, 4)
        ]
        await quiet_for(1.5)  # an outage: nothing is acknowledged
        assert not any(s.done() for s in sends), "acknowledged while PostgreSQL was down"
        await asyncio.to_thread(pg.restart_same_port)
        await asyncio.wait_for(asyncio.gather(*sends), 60)
        await a.call(meter_values(1, T0 + timedelta(seconds=10), 10.0))  # still connected


async def _serve(
    database_url: str, tmp_path: Path, ws: int, api_port: int
) -> subprocess.Popen[str]:
    """``evgate serve`` on the test's database, as a process of its own (the test kills it),
    once it is ready."""
    proc, out = start_serve(serve_env(tmp_path, api_port, ws, database_url=database_url))
    try:
        await asyncio.to_thread(out.wait_count, "ready", 1)
    except AssertionError:
        proc.kill()
        proc.wait()
        raise
    return proc


@pytest.mark.timeout(120)
async def test_sigkill_loses_no_acknowledged_message(database_url: str, tmp_path: Path) -> None:
    """Chargers send while ``evgate serve`` is killed with SIGKILL: after a restart every
    acknowledged MeterValues is in the database."""
    ids = [f"CP-{i}" for i in range(5)]
    # Recent times: the restarted evgate's retention must not remove them.
    base = datetime.now(UTC).replace(microsecond=0)
    secrets = await register(database_url, *ids)
    ws, api_port = free_port(), free_port()
    proc = await _serve(database_url, tmp_path, ws, api_port)
    acked: list[tuple[str, datetime]] = []
    enough = asyncio.Event()

    async def send(charger_id: str) -> None:
        with contextlib.suppress(Exception):
            async with charger(ws, charger_id, secrets[charger_id]) as cp:
                for i in range(10_000):
                    at = base + timedelta(seconds=i)
                    if await cp.call(meter_values(1, at, float(i)), suppress=False) is None:
                        raise AssertionError("no answer")
                    acked.append((charger_id, at))
                    if len(acked) >= 200:
                        enough.set()

    try:
        senders = [asyncio.create_task(send(c)) for c in ids]
        await asyncio.wait_for(enough.wait(), 60)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        # A call in flight at the kill was never answered (the ocpp library would wait for
        # its timeout): it is unacknowledged, so stop waiting for it.
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        proc = await _serve(database_url, tmp_path, ws, api_port)  # restarts cleanly
    finally:
        proc.kill()
        proc.wait()
    conn = await asyncpg.connect(database_url)
    try:
        stored = {(r[0], r[1]) for r in await conn.fetch("SELECT charger_id, ts FROM meter_values")}
    finally:
        await conn.close()
    assert acked and set(acked) <= stored


@pytest.mark.timeout(120)
async def test_an_offline_backlog_replayed_at_any_pace_is_all_acknowledged(
    database_url: str, tmp_path: Path
) -> None:
    """A charger back online replays its backlog as OCPP-J requires (each CALL after the
    previous answer): 1,000 MeterValues of a transaction, then its StopTransaction, faster
    than its message rate. Every one is acknowledged (none refused: a charger that gives up
    after TransactionMessageAttempts would lose them) and stored, at the configured pace."""
    rate, burst = 100.0, 10
    secrets = await register(database_url, "CP-1")
    async with running_evgate(
        database_url, tmp_path, message_rate=rate, message_burst=burst
    ) as evgate:
        assert evgate.ws_port is not None
        async with charger(evgate.ws_port, "CP-1", secrets["CP-1"]) as cp:
            start = await cp.call(
                call.StartTransaction(
                    connector_id=1, id_tag="TAG1", meter_start=0, timestamp=T0.isoformat()
                ),
                suppress=False,
            )
            tx = start.transaction_id
            began = asyncio.get_running_loop().time()
            for i in range(1000):
                at = T0 + timedelta(seconds=i + 1)
                # suppress=False: a CALLERROR raises instead of returning None.
                assert await cp.call(meter_values(1, at, float(i), tx), suppress=False) is not None
            stop = call.StopTransaction(
                meter_stop=1000, timestamp=(T0 + timedelta(hours=1)).isoformat(), transaction_id=tx
            )
            assert await cp.call(stop, suppress=False) is not None
            elapsed = asyncio.get_running_loop().time() - began
        assert evgate.gateway is not None
        refused = evgate.metrics.counter("evgate_messages_refused_total", "", ("reason",))
        assert refused.value("rate") == 0
    # 1,002 CALLs; the burst (less the StartTransaction's token) goes at once, the rest at
    # the rate.
    assert elapsed >= (1001 - (burst - 1)) / rate * 0.95
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM meter_values WHERE transaction_id = $1", tx
        )
        closed = await conn.fetchval(
            "SELECT stopped_at IS NOT NULL FROM transactions WHERE id = $1", tx
        )
    finally:
        await conn.close()
    assert stored == 1000 and closed


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_database_stopped_under_load_answers_no_error_and_emits_each_value_once(
    private_pg: tuple[EmbeddedPostgres, str], tmp_path: Path, mode: str
) -> None:
    """Chargers in a transaction send MeterValues one after the other, resending what gets no
    answer within 2 s (as chargers retry), while PostgreSQL is stopped (``pg_ctl stop -m
    fast`` or ``immediate``) and started again: no CALL is answered with a CALLERROR, every
    acknowledged value is stored once, and SessionMeterValuesNotification carries each
    stored value once (the resends emit nothing)."""
    pg, database_url = private_pg
    ids = [f"CP-{i}" for i in range(4)]
    secrets = await register(database_url, *ids)
    subscriber = await asyncpg.connect(database_url)
    try:
        await want_events(subscriber, "SessionMeterValuesNotification")
    finally:
        await subscriber.close()
    acked: list[tuple[str, datetime]] = []
    stop_sending = asyncio.Event()

    async def send(port: int, charger_id: str) -> None:
        url = f"ws://127.0.0.1:{port}/cp/{charger_id}?auth={secrets[charger_id]}"
        async with ocpp_charger(url, charger_id, response_timeout=2) as cp:
            begin = call.StartTransaction(
                connector_id=1, id_tag="TAG1", meter_start=0, timestamp=T0.isoformat()
            )
            tx = (await cp.call(begin, suppress=False)).transaction_id
            i = 0
            while not stop_sending.is_set():
                i += 1
                at = T0 + timedelta(seconds=i)
                request = meter_values(1, at, float(i), tx)
                while True:  # suppress=False: a CALLERROR raises and fails the test
                    try:
                        await cp.call(request, suppress=False)
                        break
                    except TimeoutError:
                        continue  # unacknowledged: the charger sends it again
                acked.append((charger_id, at))

    async with running_evgate(database_url, tmp_path) as evgate:
        assert evgate.ws_port is not None
        senders = [asyncio.create_task(send(evgate.ws_port, c)) for c in ids]
        # asyncpg's own loop error when the server goes away around a COPY (see support).
        with asyncpg_copy_waiter_unretrieved():
            try:
                await until(lambda: len(acked) >= 40, within=60)
                await asyncio.to_thread(pg.stop, mode)
                await asyncio.sleep(3)  # the behaviour under test: longer than the chargers'
                # answer timeout, so they resend
                await asyncio.to_thread(pg.restart_same_port)
                resumed = len(acked)
                await until(lambda: len(acked) >= resumed + 40, within=60)
                stop_sending.set()
                await asyncio.wait_for(asyncio.gather(*senders), 30)
            finally:
                for sender in senders:
                    sender.cancel()
                await asyncio.gather(*senders, return_exceptions=True)
        callerrors = evgate.metrics.counter("evgate_callerrors_sent_total", "", ("code",))
        assert not callerrors._values, f"CALLERRORs answered: {callerrors._values}"
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch("SELECT charger_id, ts, count(*) FROM meter_values GROUP BY 1, 2")
        payloads = await conn.fetch(
            "SELECT payload FROM outbox WHERE event = 'SessionMeterValuesNotification'"
        )
    finally:
        await conn.close()
    assert all(r[2] == 1 for r in stored)
    assert set(acked) <= {(r[0], r[1]) for r in stored}
    emitted = [
        (p["sessionId"], v["timestamp"])
        for row in payloads
        for p in [json.loads(row[0])]
        for v in p["meterValues"]
    ]
    assert len(emitted) == len(set(emitted)) == len(stored)


@pytest.mark.timeout(120)
async def test_a_charger_reconnecting_during_an_outage_is_left_unanswered_not_refused(
    private_pg: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    """PostgreSQL is down when a charger reconnects and resends a MeterValues of its
    transaction, which the new connection has to look up in the database: no answer (never
    InternalError) while the database is away; acknowledged once it is back."""
    pg, database_url = private_pg
    secrets = await register(database_url, "CP-1")
    async with running_evgate(database_url, tmp_path) as evgate:
        assert evgate.ws_port is not None
        url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-1?auth={secrets['CP-1']}"
        async with ocpp_charger(url, "CP-1") as cp:
            begin = call.StartTransaction(
                connector_id=1, id_tag="TAG1", meter_start=0, timestamp=T0.isoformat()
            )
            tx = (await cp.call(begin, suppress=False)).transaction_id
        await asyncio.to_thread(pg.kill)
        request = meter_values(1, T0 + timedelta(seconds=1), 1.0, tx)
        async with ocpp_charger(url, "CP-1", response_timeout=2) as cp:
            with pytest.raises(TimeoutError):  # suppress=False: a CALLERROR would raise
                await cp.call(request, suppress=False)
            await asyncio.to_thread(pg.restart_same_port)
            async with asyncio.timeout(60):
                while True:
                    try:
                        await cp.call(request, suppress=False)
                        break
                    except TimeoutError:
                        continue  # the charger resends it
        callerrors = evgate.metrics.counter("evgate_callerrors_sent_total", "", ("code",))
        assert not callerrors._values, f"CALLERRORs answered: {callerrors._values}"
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM meter_values WHERE transaction_id = $1", tx
        )
    finally:
        await conn.close()
    assert stored == 1
