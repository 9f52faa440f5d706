"""The fleet simulator (loadtest/): real simulated chargers against a real server.

The server is bench/reference_server.py (the ``ocpp`` library on websockets, asyncpg) on the
session's PostgreSQL, run in-process; the chargers run in-process (``Fleet``) or in simulator
processes (``simulate``), as ``evgate simulate`` and bench/fleet.py run them.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # loadtest/ and bench/ live in the checkout, not the package
    sys.path.insert(0, str(ROOT))

from bench.reference_server import Server, register  # noqa: E402
from loadtest.charger import Fleet, FleetStats, Scenario  # noqa: E402
from loadtest.driver import _merged, simulate  # noqa: E402
from loadtest.histogram import LatencyHistogram  # noqa: E402

from evgate.app import Evgate  # noqa: E402
from evgate.gateway.interface import CallRejected  # noqa: E402
from evgate.protocol.v16 import GetConfigurationRequest  # noqa: E402
from evgate.storage.embedded import EmbeddedPostgres  # noqa: E402
from support import create_database, until  # noqa: E402

TAG = "SIM-TAG-0001"
# A day in seconds: sessions, meter values and heartbeats all happen within the test.
FAST: dict[str, Any] = {
    "meter_interval": 0.3,
    "idle_mean": 0.5,
    "session_mean": 1.5,
    "ramp_rate": 200.0,
}


def _credentials(n: int, prefix: str = "CP-") -> list[tuple[str, str | None]]:
    return [(f"{prefix}{i:04d}", f"{i:024d}") for i in range(n)]


@pytest.fixture
async def reference(pg: EmbeddedPostgres, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The reference server with 20 registered chargers; yields its URL template."""
    name = f"ref_{request.node.name.replace('[', '_').replace(']', '')}".lower()[:60]
    dsn = await create_database(pg.dsn, name)
    digests = [(c, hashlib.sha256((s or "").encode()).digest()) for c, s in _credentials(20)]
    await register(dsn, digests, [TAG])
    server = Server(dsn, heartbeat_interval=1, pool_size=4)
    await server.open()
    try:
        async with server.serving("127.0.0.1", 0) as port:
            yield f"ws://127.0.0.1:{port}/cp/{{id}}?auth={{secret}}|{dsn}"
    finally:
        await server.close()


def _split(reference: str) -> tuple[str, str]:
    url, dsn = reference.split("|")
    return url, dsn


def test_histogram_percentiles_are_within_a_bucket() -> None:
    """Percentiles of 1..10,000 µs come out within 1/64 of the true value; merge adds."""
    a, b = LatencyHistogram(), LatencyHistogram()
    for us in range(1, 5001):
        a.record(us)
    for us in range(5001, 10001):
        b.record(us)
    a.merge(LatencyHistogram.from_wire(b.to_wire()))
    assert a.count == 10_000
    for p, exact_ms in ((50, 5.0), (99, 9.9), (99.9, 9.99)):
        assert abs(a.percentile(p) - exact_ms) <= exact_ms / 64
    assert a.percentile(100) == 10.0


async def _charge(scenario: Scenario, credentials: list[tuple[str, str | None]]) -> FleetStats:
    """Run a fleet until every charger has booted and sent meter values; return its stats
    after checking what any server must give: every CALL answered, counted and timed."""
    n = len(credentials)
    fleet = Fleet(scenario, credentials)
    running = asyncio.create_task(fleet.run())
    try:
        await until(lambda: fleet.stats.booted == n and fleet.stats.calls["MeterValues"] >= n, 30)
    finally:
        fleet.stop()
        await running
    stats = fleet.stats
    assert stats.connects == n and stats.connect_failures == 0
    assert stats.calls["BootNotification"] == n
    assert stats.calls["StatusNotification"] >= n * 3  # connectors 0, 1 and 2
    for action in ("Heartbeat", "Authorize", "StartTransaction", "MeterValues"):
        assert stats.calls[action] > 0, action
    assert not stats.call_errors and stats.timeouts == 0 and stats.auth_rejected == 0
    assert stats.latency.count == sum(stats.calls.values())
    assert 0 < stats.latency.percentile(50) <= stats.latency.percentile(99) < 5000
    return stats


async def _stored(dsn: str) -> tuple[int, int]:
    """(meter value rows, transactions) in a server's database."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM meter_values")
        transactions = await conn.fetchval("SELECT count(*) FROM transactions")
    finally:
        await conn.close()
    return rows, transactions


async def test_fleet_boots_charges_and_records_every_round_trip(reference: str) -> None:
    """20 chargers boot, report status, heartbeat, charge and send meter values to the
    reference server; every CALL is counted and timed; the rows reach PostgreSQL."""
    url, dsn = _split(reference)
    scenario = Scenario(
        url=url, id_tags=(TAG,), source_addresses=("127.0.0.1", "127.0.0.2"), **FAST
    )
    stats = await _charge(scenario, _credentials(20))
    rows, transactions = await _stored(dsn)
    assert rows >= stats.calls["MeterValues"] * scenario.sampled_values
    assert transactions == stats.calls["StartTransaction"]


async def test_fleet_against_evgate(
    evgate: Evgate, api: httpx.AsyncClient, database_url: str
) -> None:
    """The same fleet against an in-process evgate: chargers and id tag registered through
    the API (secrets shown once), every CALL answered, the meter values stored (after commit,
    so at least every acknowledged one)."""
    credentials: list[tuple[str, str | None]] = []
    for i in range(20):
        reply = await api.post("/api/v1/chargers", json={"id": f"EV-{i:04d}"})
        assert reply.status_code == 201, reply.text
        credentials.append((f"EV-{i:04d}", reply.json()["secret"]))
    reply = await api.post("/api/v1/id-tags", json={"idTag": TAG})
    assert reply.status_code == 201, reply.text
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{{id}}?auth={{secret}}"
    # evgate gives 60 s in BootNotification.conf; force a shorter one to see heartbeats.
    scenario = Scenario(url=url, id_tags=(TAG,), heartbeat_interval=0.5, **FAST)
    stats = await _charge(scenario, credentials)
    rows, transactions = await _stored(database_url)
    assert rows >= stats.calls["MeterValues"] * scenario.sampled_values
    assert transactions >= stats.calls["StartTransaction"]


async def test_wrong_secret_is_refused_and_retried_with_backoff(reference: str) -> None:
    """A charger whose secret the server refuses never boots; it retries, counting failures."""
    url, _ = _split(reference)
    scenario = Scenario(url=url, backoff_min=0.05, backoff_max=0.1, **FAST)
    fleet = Fleet(scenario, [("CP-0000", "not-the-secret")])
    running = asyncio.create_task(fleet.run())
    try:
        await until(lambda: fleet.stats.connect_failures >= 3, 10)
    finally:
        fleet.stop()
        await running
    assert fleet.stats.booted == 0 and fleet.stats.connects == 0


async def test_simulator_processes_measure_a_window_and_a_reconnect_storm(
    reference: str,
) -> None:
    """simulate() over two processes: all 20 boot, the window's CALLs and percentiles are
    merged from both, and after a storm every charger boots again."""
    url, _ = _split(reference)
    scenario = Scenario(
        url=url, id_tags=(TAG,), source_addresses=("127.0.0.1", "127.0.0.3"), **FAST
    )
    result = await simulate(
        scenario,
        _credentials(20),
        processes=2,
        duration=2.0,
        warmup=0.5,
        storm=True,
        boot_timeout=30,
    )
    assert result.processes == 2
    assert result.booted == result.connected == 20
    assert result.calls > 20 and result.calls_per_second > 10
    assert result.calls_by_action.get("MeterValues", 0) > 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.p999_ms <= result.max_ms
    assert not result.call_errors and result.timeouts == 0
    assert result.simulator_cpu_per_1k_calls > 0
    assert result.storm_booted == 20 and result.storm_seconds is not None
    assert result.storm_seconds < 30


async def test_locust_scenario_runs_headless(reference: str, tmp_path: Path) -> None:
    """The locustfile's charger users boot and charge against the server without failures."""
    url, _ = _split(reference)
    host = url.split("/cp/")[0]
    creds = tmp_path / "chargers.csv"
    creds.write_text("".join(f"{c},{s}\n" for c, s in _credentials(5)))
    locust = shutil.which("locust", path=str(Path(sys.executable).parent))
    assert locust is not None
    proc = await asyncio.create_subprocess_exec(
        locust,
        "-f",
        str(ROOT / "loadtest" / "locustfile.py"),
        "--headless",
        "--host",
        host,
        "--credentials",
        str(creds),
        "--users",
        "5",
        "--spawn-rate",
        "5",
        "--run-time",
        "4s",
        "--meter-interval",
        "0.2",
        "--meters-per-session",
        "3",
        "--id-tag",
        TAG,
        "--csv",
        str(tmp_path / "run"),
        "--only-summary",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, output.decode()[-3000:]
    stats = (tmp_path / "run_stats.csv").read_text()
    rows = {line.split(",")[1]: line.split(",") for line in stats.splitlines()[1:]}
    assert int(rows["BootNotification"][2]) == 5  # requests
    assert int(rows["MeterValues"][2]) > 0
    assert int(rows["Aggregated"][3]) == 0  # failures


async def test_simulated_charger_declines_a_command_and_keeps_its_own_calls_matched(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """A command from evgate reaches the simulator's charger-role endpoint as a CALL, which it
    declines with NotImplemented (evgate's gateway, the central system's endpoint, matches that
    CALLERROR to its command); the charger's own CALLs go on being answered and matched."""
    reply = await api.post("/api/v1/chargers", json={"id": "EV-CMD"})
    assert reply.status_code == 201, reply.text
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{{id}}?auth={{secret}}"
    scenario = Scenario(url=url, id_tags=(TAG,), heartbeat_interval=0.2, **FAST)
    fleet = Fleet(scenario, [("EV-CMD", reply.json()["secret"])])
    running = asyncio.create_task(fleet.run())
    try:
        await until(lambda: fleet.stats.booted == 1, 30)
        assert evgate.gateway is not None
        with pytest.raises(CallRejected) as rejected:
            await evgate.gateway.call("EV-CMD", GetConfigurationRequest())
        assert rejected.value.code == "NotImplemented"
        assert fleet.stats.server_calls == 1
        heartbeats = fleet.stats.calls["Heartbeat"]
        await until(lambda: fleet.stats.calls["Heartbeat"] > heartbeats + 1, 30)
    finally:
        fleet.stop()
        await running
    assert not fleet.stats.call_errors and fleet.stats.timeouts == 0


def test_the_fleets_gauges_sum_its_processes_but_take_the_latest_and_longest() -> None:
    one = {"booted": 3, "storm_retries": 2, "storm_backoff_max": 1.5, "last_boot_at": 10.0}
    two = {"booted": 4, "storm_retries": 5, "storm_backoff_max": 0.7, "last_boot_at": 12.0}
    assert _merged([one, two]) == {
        "booted": 7,
        "storm_retries": 7,
        "storm_backoff_max": 1.5,
        "last_boot_at": 12.0,
    }
