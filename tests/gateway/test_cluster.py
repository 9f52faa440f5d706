"""Scale-out: two evgate nodes on one database act as one — commands reach the process that
holds the charger, a moved charger is held only by its new node, credentials changed on one
node take effect on the other, and a killed node's chargers are freed when its lease ends."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from evgate.config import load_settings
from evgate.credentials import digest
from evgate.protocol.v16 import ResetRequest, ResetType
from support import (
    Running,
    TestCharger,
    free_port,
    ocpp_charger,
    quiet_for,
    serve_env,
    start_serve,
    until,
    want_events,
)

from .helpers import ADMIN, TOKEN, StartEvgate, close_code_of, connect

pytestmark = pytest.mark.timeout(120)


async def run_charger(url: str, charger_id: str) -> AsyncExitStack:
    """The test charger connected to ``url`` and reading, until the stack is closed."""
    stack = AsyncExitStack()
    await stack.enter_async_context(ocpp_charger(url, charger_id))
    return stack


@pytest.fixture
async def two_nodes(start_evgate: StartEvgate) -> AsyncIterator[tuple[Running, Running]]:
    """Nodes A and B: separate evgate processes' worth of parts, one database."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(start_evgate(node_id="node-a", call_timeout=2.0))
        b = await stack.enter_async_context(start_evgate(node_id="node-b", call_timeout=2.0))
        yield a, b


@pytest.fixture
async def two_nodes_short_lease(
    start_evgate: StartEvgate,
) -> AsyncIterator[tuple[Running, Running]]:
    """Nodes A and B with a 2 s ownership lease (a dead process is reaped within seconds)."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(start_evgate(node_id="node-a", ownership_lease=2.0))
        b = await stack.enter_async_context(start_evgate(node_id="node-b", ownership_lease=2.0))
        yield a, b


@pytest.fixture
async def events_wanted(database_url: str) -> None:
    """The events these tests read from the outbox subscribed to (the writer keeps only
    wanted ones)."""
    conn = await asyncpg.connect(database_url)
    try:
        await want_events(
            conn,
            "NetworkStatusNotification",
            "SessionUpdateNotification",
            "transaction.changed",
        )
    finally:
        await conn.close()


def api(node: Running) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{node.app.api_port}", headers=ADMIN, timeout=15
    )


async def test_command_on_node_a_reaches_charger_on_node_b(two_nodes) -> None:
    """POST .../commands/Reset to A, charger connected to B: 200 with the charger's answer;
    A's view of the charger names B's process."""
    a, b = two_nodes
    secret = await a.add("CP-1")
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    charger = await run_charger(b.url("CP-1", secret), "CP-1")
    try:
        assert b.app.cluster is not None
        async with api(a) as client:
            await until(lambda: b.app.cluster.gateway.connection("CP-1") is not None)
            view = await until(lambda: _connection(client))  # its row follows the connect
            assert view["connection"]["heldBy"] == b.app.cluster.instance
            r = await client.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Soft"})
            assert r.status_code == 200, r.text
            assert r.json() == {"status": "Accepted"}
            # An action the charger does not handle: its CALLERROR travels back to A (502).
            r = await client.post("/api/v1/chargers/CP-1/commands/ClearCache", json={})
            assert r.status_code == 502, r.text
            assert r.json()["errorCode"] == "NotImplemented"
    finally:
        await charger.aclose()


async def test_routed_command_times_out_with_504(two_nodes) -> None:
    """A charger on B that never answers: A's API answers 504, and nothing is left behind."""
    a, b = two_nodes
    secret = await a.add("CP-1")
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    async with connect(b.url("CP-1", secret)) as ws:  # a charger that reads nothing
        assert b.app.cluster is not None
        await until(lambda: b.gateway.connection("CP-1") is not None)
        await until(lambda: _owner(b, "CP-1"))
        async with api(a) as client:
            r = await client.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Hard"})
        assert r.status_code == 504, r.text
        assert r.headers["content-type"] == "application/problem+json"
        del ws
    assert a.app.db is not None
    assert await a.app.db.fetchval("SELECT count(*) FROM remote_calls") == 0


async def test_a_routed_command_whose_caller_goes_away_is_withdrawn(two_nodes) -> None:
    """The caller of a routed command is cancelled (its HTTP request ended) while the charger
    on B has not answered: A withdraws the call at once, leaving nothing for the reaper."""
    a, b = two_nodes
    secret = await a.add("CP-1")
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    async with connect(b.url("CP-1", secret)) as ws:  # a charger that reads nothing
        await until(lambda: b.gateway.connection("CP-1") is not None)
        await until(lambda: _owner(b, "CP-1"))
        assert a.app.cluster is not None and a.app.db is not None
        db = a.app.db
        sent = asyncio.create_task(a.app.cluster.call("CP-1", ResetRequest(type=ResetType.hard)))
        await _until_value(db, "SELECT count(*) FROM remote_calls", wanted=1)
        assert await db.fetchval("SELECT count(*) FROM remote_calls") == 1
        sent.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sent
        assert await db.fetchval("SELECT count(*) FROM remote_calls") == 0
        del ws


async def test_command_for_charger_nobody_holds_is_409(two_nodes) -> None:
    """A known charger connected to no node: 409 from either node; unknown: 404."""
    a, _ = two_nodes
    await a.add("CP-1")
    async with api(a) as client:
        r = await client.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Soft"})
        assert r.status_code == 409
        r = await client.post("/api/v1/chargers/CP-X/commands/Reset", json={"type": "Soft"})
        assert r.status_code == 404


class _SlowKeyCharger(TestCharger):
    """Accepts ChangeConfiguration only after a while (the routed caller has gone by then)."""

    received = asyncio.Event()

    @on(Action.change_configuration)
    async def on_change_configuration(self, key: str, value: str) -> Any:
        self.received.set()
        await asyncio.sleep(1.2)  # under the nodes' 2 s call timeout, over the client's 0.5 s
        return call_result.ChangeConfiguration(status="Accepted")


async def test_authorization_key_sent_through_a_is_stored_by_b_after_a_gave_up(
    two_nodes,
) -> None:
    """ChangeConfiguration(AuthorizationKey) through A's API to a charger held by B, whose
    caller on A has gone before the charger accepts: B, which sees the acceptance, stores the
    new secret's digest (else the charger, now on its new key, would be locked out at its next
    connection), both nodes' credential indexes learn it, and the connection stays up."""
    a, b = two_nodes
    secret = await a.add("CP-1")
    new_key = "Routed-Key-0123456789"
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    _SlowKeyCharger.received = asyncio.Event()
    async with ocpp_charger(b.url("CP-1", secret), "CP-1", _SlowKeyCharger):
        assert b.app.cluster is not None
        await until(lambda: _owner(b, "CP-1"))
        async with api(a) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(
                    "/api/v1/chargers/CP-1/commands/ChangeConfiguration",
                    json={"key": "AuthorizationKey", "value": new_key},
                    timeout=0.5,
                )
        assert _SlowKeyCharger.received.is_set()  # it was sent before A's caller went

        async def stored() -> bool:
            row = await a.app.db.fetchrow("SELECT secret_digest FROM chargers WHERE id='CP-1'")
            return bytes(row["secret_digest"]) == digest(new_key)

        await until(stored)
        for node in (a, b):
            await until(
                lambda node=node: (
                    node.gateway.credentials_of("CP-1").secret_digest == digest(new_key)
                )
            )
        assert b.gateway.connection("CP-1") is not None


async def test_rotating_secret_on_a_disconnects_charger_on_b(two_nodes) -> None:
    """The NOTIFY of a rotation reaches every node: B closes the charger's connection (1008)."""
    a, b = two_nodes
    secret = await a.add("CP-1")
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    async with connect(b.url("CP-1", secret)) as ws:
        await until(lambda: b.gateway.connection("CP-1") is not None)
        async with api(a) as client:
            assert (await client.post("/api/v1/chargers/CP-1/secret")).status_code == 200
        assert await close_code_of(ws) == 1008


async def test_a_secret_set_on_a_is_the_one_b_admits(two_nodes) -> None:
    """PUT .../secret on A (a known AuthorizationKey): B closes the connection made with the
    old secret (1008) and admits the charger with the new one."""
    a, b = two_nodes
    old = await a.add("CP-1")
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    known = "Known-Key-0123456789"
    async with connect(b.url("CP-1", old)) as ws:
        await until(lambda: b.gateway.connection("CP-1") is not None)
        async with api(a) as client:
            r = await client.put("/api/v1/chargers/CP-1/secret", json={"secret": known})
            assert r.status_code == 204, r.text
        assert await close_code_of(ws) == 1008
    async with ocpp_charger(b.url("CP-1", known), "CP-1") as charger:
        assert await charger.boot() == "Accepted"


async def test_charger_moving_from_a_to_b_is_held_only_by_b(two_nodes) -> None:
    """Reconnecting to B closes the connection on A (1000) and the ownership row names B."""
    a, b = two_nodes
    secret = await a.add("CP-1")
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    assert a.app.cluster is not None and b.app.cluster is not None and a.app.db is not None
    async with connect(a.url("CP-1", secret)) as on_a:
        await until(lambda: a.gateway.connection("CP-1") is not None)
        await until(lambda: _owner(a, "CP-1"))
        async with connect(b.url("CP-1", secret)) as on_b:
            assert await close_code_of(on_a) == 1000
            await until(lambda: a.gateway.connection("CP-1") is None)
            owner = await until(lambda: _owner(a, "CP-1", b.app.cluster.instance))
            assert owner == b.app.cluster.instance
            assert b.gateway.connection("CP-1") is not None
            del on_b


async def test_many_chargers_spread_over_two_nodes_are_all_owned(two_nodes) -> None:
    """40 chargers, half on each node: 40 ownership rows, each naming the right node."""
    a, b = two_nodes
    assert a.app.cluster is not None and b.app.cluster is not None and a.app.db is not None
    secrets = {f"CP-{i}": await a.add(f"CP-{i}") for i in range(40)}
    await until(lambda: all(b.gateway.credentials_of(c) for c in secrets))
    async with AsyncExitStack() as stack:
        for i, (charger_id, secret) in enumerate(secrets.items()):
            node = a if i % 2 == 0 else b
            await stack.enter_async_context(connect(node.url(charger_id, secret)))
        query = "SELECT count(*) FROM charger_owners"
        await _until_value(a.app.db, query, wanted=40)
        rows = await a.app.db.fetch("SELECT charger_id, instance FROM charger_owners")
        owners = {r["charger_id"]: r["instance"] for r in rows}
        assert len(owners) == 40
        for i, charger_id in enumerate(secrets):
            expected = a.app.cluster.instance if i % 2 == 0 else b.app.cluster.instance
            assert owners[charger_id] == expected
    # Every charger gone: no ownership left.
    await _until_value(a.app.db, "SELECT count(*) FROM charger_owners", wanted=0)
    assert await a.app.db.fetchval("SELECT count(*) FROM charger_owners") == 0


@contextlib.asynccontextmanager
async def serving_node(
    database_url: str, folder: Path, node_id: str, lease: float
) -> AsyncIterator[tuple[subprocess.Popen[str], int]]:
    """``evgate serve`` as a process of its own (a test may SIGKILL it, as a crash would);
    yields it and its charger port."""
    ws_port, api_port = free_port(), free_port()
    settings = {"database_url": database_url, "node_id": node_id, "ownership_lease": lease}
    # Nodes share settings: unset, the bootstrap token would be revoked.
    env = serve_env(folder / node_id, api_port, ws_port, bootstrap_token=TOKEN, **settings)
    node, out = start_serve(env)
    try:
        await asyncio.to_thread(out.wait_count, "ready", 1)
        assert node.poll() is None, f"node {node_id} did not start"
        yield node, ws_port
    finally:
        if node.poll() is None:
            node.kill()
        node.wait(timeout=10)
        out.wait_closed()


async def test_killed_node_loses_ownership_within_the_lease(
    start_evgate: StartEvgate, database_url: str, tmp_path: Path
) -> None:
    """A node killed with SIGKILL: its charger's ownership ends within the lease (2 s here);
    then A answers 409 for it, and the charger can connect to A."""
    async with start_evgate(node_id="node-a", ownership_lease=2.0, call_timeout=2.0) as a:
        secret = await a.add("CP-1")  # before C starts: C loads it at start
        async with (
            serving_node(database_url, tmp_path, "node-c", 2.0) as (node_c, ws_port),
            api(a) as client,
        ):
            on_c = await connect(f"ws://127.0.0.1:{ws_port}/cp/CP-1?auth={secret}").__aenter__()
            view = await until(lambda: _connection(client))
            assert view["connection"]["heldBy"].startswith("node-c.")
            node_c.send_signal(signal.SIGKILL)
            node_c.wait(timeout=10)

            async def released() -> bool:
                return not (await client.get("/api/v1/chargers/CP-1")).json()["connection"]

            await until(released, within=2.0 + 1.0, message=lambda: "ownership outlived lease")
            r = await client.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Soft"})
            assert r.status_code == 409
            async with connect(a.url("CP-1", secret)):
                await until(lambda: a.gateway.connection("CP-1") is not None)
            await on_c.close()


async def _owner(node: Running, charger_id: str, instance: str | None = None) -> str | None:
    """The instance owning ``charger_id`` (if it is ``instance``, when given), else None."""
    assert node.app.db is not None
    owner = await node.app.db.fetchval(
        "SELECT instance FROM charger_owners WHERE charger_id = $1", charger_id
    )
    return owner if instance is None or owner == instance else None


async def _connection(client: Any) -> dict[str, Any] | None:
    """CP-1's view from the API, once it shows a connection."""
    view = (await client.get("/api/v1/chargers/CP-1")).json()
    assert "connection" in view, view
    return dict(view) if view["connection"] is not None else None


async def _network_events(db: Any, charger_id: str) -> list[str]:
    """The charger's NetworkStatusNotifications in the outbox, oldest first."""
    rows = await db.fetch(
        "SELECT payload FROM outbox WHERE charger_id = $1"
        " AND event = 'NetworkStatusNotification' ORDER BY id",
        charger_id,
    )
    return [json.loads(r["payload"])["networkStatus"] for r in rows]


async def _network_status(db: Any, charger_id: str) -> str:
    return str(await db.fetchval("SELECT network_status FROM chargers WHERE id = $1", charger_id))


async def _until_value(db: Any, query: str, *args: Any, wanted: Any, within: float = 15.0) -> None:
    """Wait until ``query`` answers ``wanted`` (what another process or task writes)."""

    async def reached() -> bool:
        return bool(await db.fetchval(query, *args) == wanted)

    await until(reached, within)


async def _until_status(db: Any, charger_id: str, wanted: str) -> None:
    query = "SELECT network_status FROM chargers WHERE id = $1"
    await _until_value(db, query, charger_id, wanted=wanted)


@pytest.mark.usefixtures("events_wanted")
async def test_killed_nodes_chargers_become_unavailable_once(
    two_nodes_short_lease: tuple[Running, Running], database_url: str, tmp_path: Path
) -> None:
    """Node C is SIGKILLed holding CP-1 and CP-2; CP-2 reconnects to A at once, CP-1 never
    does. When C's lease expires, CP-1 is set temporarily unavailable with exactly one
    NetworkStatusNotification (A and B both reap); CP-2 stays available, with no event."""
    a, _ = two_nodes_short_lease
    assert a.app.db is not None and a.app.cluster is not None
    db = a.app.db
    secrets = {c: await a.add(c) for c in ("CP-1", "CP-2")}
    async with serving_node(database_url, tmp_path, "node-c", 2.0) as (node_c, ws_port):
        on_c = [
            await connect(f"ws://127.0.0.1:{ws_port}/cp/{c}?auth={s}").__aenter__()
            for c, s in secrets.items()
        ]
        for charger_id in secrets:
            await _until_status(db, charger_id, "available")
            query = "SELECT instance LIKE 'node-c.%' FROM charger_owners WHERE charger_id = $1"
            await _until_value(db, query, charger_id, wanted=True)
        node_c.send_signal(signal.SIGKILL)
        node_c.wait(timeout=10)
        async with connect(a.url("CP-2", secrets["CP-2"])):
            await _until_status(db, "CP-1", "temporarily unavailable")
            assert await db.fetchval("SELECT count(*) FROM cluster_instances") == 2  # A and B
            await quiet_for(2.0)  # both survivors reap every lease/3: no second event
            assert await _network_events(db, "CP-1") == ["available", "temporarily unavailable"]
            assert await _network_status(db, "CP-2") == "available"
            assert await _network_events(db, "CP-2") == ["available", "available"]
            assert a.gateway.connection("CP-2") is not None
        for ws in on_c:
            await ws.close()


async def _lease_runs_out(node: Running) -> datetime:
    """Once ``node`` holds CP-1, stop its lease task (a pause, as in a long database outage;
    test-only reach into the cluster's tasks) until the other node reaped it and CP-1 is
    temporarily unavailable; returns that status's time. Restart with ``_keep_lease``."""
    assert node.app.db is not None and node.app.cluster is not None
    cluster = node.app.cluster
    await _until_status(node.app.db, "CP-1", "available")
    await until(lambda: cluster.gateway.connection("CP-1") is not None)
    keep_lease = cluster._tasks[1]
    keep_lease.cancel()
    await asyncio.gather(keep_lease, return_exceptions=True)
    await _until_status(node.app.db, "CP-1", "temporarily unavailable")
    reaped_at: datetime = await node.app.db.fetchval(
        "SELECT network_status_at FROM chargers WHERE id = 'CP-1'"
    )
    return reaped_at


@pytest.mark.usefixtures("events_wanted")
async def test_a_node_whose_lease_ran_out_while_alive_sets_its_chargers_available_again(
    two_nodes_short_lease: tuple[Running, Running],
) -> None:
    """A stops renewing its lease (as in a long database outage) and B reaps it: A's charger
    is set temporarily unavailable. When A renews again it registers anew, claims the
    charger and sets it available again: one event each way."""
    a, _ = two_nodes_short_lease
    assert a.app.db is not None and a.app.cluster is not None
    db = a.app.db
    secret = await a.add("CP-1")
    cluster = a.app.cluster
    async with connect(a.url("CP-1", secret)):
        reaped_at = await _lease_runs_out(a)
        assert await db.fetchval("SELECT count(*) FROM charger_owners") == 0
        at_query = "SELECT network_status_at FROM chargers WHERE id = 'CP-1'"
        cluster._tasks[1] = asyncio.get_running_loop().create_task(cluster._keep_lease())
        await _until_status(db, "CP-1", "available")
        # As of the reaped status + 1 µs: a disconnect written later (it is later) wins.
        assert await db.fetchval(at_query) == reaped_at + timedelta(microseconds=1)
        assert (
            await db.fetchval("SELECT instance FROM charger_owners WHERE charger_id = 'CP-1'")
            == cluster.instance
        )
        assert await _network_events(db, "CP-1") == [
            "available",
            "temporarily unavailable",
            "available",
        ]


@pytest.mark.usefixtures("events_wanted")
async def test_a_charger_that_disconnects_while_its_node_rejoins_stays_unavailable(
    two_nodes_short_lease: tuple[Running, Running],
) -> None:
    """A's lease ran out and B reaped it; A comes back and claims CP-1 again, and CP-1
    disconnects while that claim is in flight (its disconnect written before A restores):
    CP-1 stays temporarily unavailable (restoring it from the claim's snapshot set it
    available for ever). A restored status is as of the reaped one's time + 1 µs."""
    a, _ = two_nodes_short_lease
    assert a.app.db is not None and a.app.cluster is not None
    db = a.app.db
    secret = await a.add("CP-1")
    cluster = a.app.cluster
    async with connect(a.url("CP-1", secret)) as ws:
        reaped_at = await _lease_runs_out(a)
        claim = cluster.store.claim  # test-only reach: CP-1 disconnects during the claim
        claimed = asyncio.Event()

        async def claim_then_disconnect(instance: str, claims: list[Any]) -> list[str]:
            lost = await claim(instance, claims)
            if not claimed.is_set() and any(c.charger_id == "CP-1" for c in claims):
                claimed.set()
                await ws.close()
                await until(lambda: cluster.gateway.connection("CP-1") is None)
                later = "SELECT network_status_at > $2 FROM chargers WHERE id = $1"
                await _until_value(db, later, "CP-1", reaped_at, wanted=True)
            return lost

        cluster.store.claim = claim_then_disconnect  # type: ignore[method-assign]
        cluster._tasks[1] = asyncio.get_running_loop().create_task(cluster._keep_lease())
        async with asyncio.timeout(15):
            await claimed.wait()
        await until(lambda: not cluster._rejoined and not cluster._dirty, 15)
    await _until_value(db, "SELECT count(*) FROM charger_owners", wanted=0)
    assert await _network_status(db, "CP-1") == "temporarily unavailable"
    events = await _network_events(db, "CP-1")
    assert events[:2] == ["available", "temporarily unavailable"] and "available" not in events[2:]


async def test_settings_of_two_nodes_differ_only_by_identity() -> None:
    """A node's identity: the ownership lease and node id are settings (env or TOML)."""
    s = load_settings(environ={"EVGATE_NODE_ID": "n1", "EVGATE_OWNERSHIP_LEASE": "3.5"})
    assert (s.node_id, s.ownership_lease) == ("n1", 3.5)
    with pytest.raises(Exception, match="EVGATE_OWNERSHIP_LEASE"):
        load_settings(environ={"EVGATE_OWNERSHIP_LEASE": "0"})
    assert TOKEN


async def _authorize(ws: Any, id_tag: str, unique_id: str) -> str:
    """Send Authorize on a raw connection; the idTagInfo status of the answer. CALLs from
    evgate in between (the installation's offline configuration push) are accepted."""
    await ws.send(json.dumps([2, unique_id, "Authorize", {"idTag": id_tag}]))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if frame[0] == 2:
            await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
            continue
        assert frame[:2] == [3, unique_id], frame
        return str(frame[2]["idTagInfo"]["status"])


async def _status_within(ws: Any, id_tag: str, wanted: str, seconds: float) -> float:
    """Ask Authorize until it answers ``wanted``; the seconds it took (fails past ``seconds``)."""
    started = time.monotonic()
    numbers = itertools.count()
    statuses: list[str] = []

    async def answered() -> bool:
        statuses.append(await _authorize(ws, id_tag, f"auth-{next(numbers)}"))
        return statuses[-1] == wanted

    await until(answered, seconds, message=lambda: f"still {statuses[-1]}, wanted {wanted}")
    return time.monotonic() - started


async def test_id_tag_blocked_on_a_is_blocked_on_b_within_a_second(two_nodes) -> None:
    """The id-tag cache of every node follows the database: an id-tag blocked through A's API
    is answered Blocked to a charger on B within a second (and unblocking it, Accepted)."""
    a, b = two_nodes
    secret = await a.add("CP-1")
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    async with api(a) as client:
        r = await client.post("/api/v1/id-tags", json={"idTag": "TAG-1", "status": "Accepted"})
        assert r.status_code == 201, r.text
        async with connect(b.url("CP-1", secret)) as ws:
            await _status_within(ws, "TAG-1", "Accepted", 1.0)
            r = await client.patch("/api/v1/id-tags/TAG-1", json={"status": "Blocked"})
            assert r.status_code == 200, r.text
            await _status_within(ws, "tag-1", "Blocked", 1.0)
            r = await client.patch("/api/v1/id-tags/TAG-1", json={"status": "Accepted"})
            assert r.status_code == 200, r.text
            await _status_within(ws, "TAG-1", "Accepted", 1.0)
            assert (await client.delete("/api/v1/id-tags/TAG-1")).status_code == 204
            await _status_within(ws, "TAG-1", "Invalid", 1.0)


async def test_installation_change_on_a_applies_on_b_within_a_second(two_nodes) -> None:
    """Installation settings are cached per node too: a charger on B that joins an acceptAll
    installation through A's API accepts an unknown id-tag within a second, and is back on the
    id-tag list (Invalid) within a second of leaving it."""
    a, b = two_nodes
    secret = await a.add("CP-1")
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    async with api(a) as client, connect(b.url("CP-1", secret)) as ws:
        assert await _authorize(ws, "NOBODY", "first") == "Invalid"
        r = await client.post(
            "/api/v1/installations", json={"name": "free vend", "authorizationMode": "acceptAll"}
        )
        assert r.status_code == 201, r.text
        installation = r.json()["id"]
        r = await client.patch("/api/v1/chargers/CP-1", json={"installationId": installation})
        assert r.status_code == 200, r.text
        await _status_within(ws, "NOBODY", "Accepted", 1.0)
        r = await client.patch("/api/v1/chargers/CP-1", json={"installationId": None})
        assert r.status_code == 200, r.text
        await _status_within(ws, "NOBODY", "Invalid", 1.0)


async def test_late_owner_notification_does_not_close_a_newer_connection(two_nodes) -> None:
    """A charger that went A -> B -> A: B's "owner" notification reaching A after the charger
    is back on A must not close A's newer connection; A keeps (and owns) it, and a truly
    older connection on A is still closed when B announces a newer one."""
    a, b = two_nodes
    secret = await a.add("CP-1")
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    assert a.app.cluster is not None and b.app.cluster is not None and a.app.db is not None

    async def owner() -> str | None:
        return await a.app.db.fetchval(  # type: ignore[union-attr]
            "SELECT instance FROM charger_owners WHERE charger_id = 'CP-1'"
        )

    async with connect(a.url("CP-1", secret)) as on_a:
        await until(lambda: _owner(a, "CP-1", a.app.cluster.instance))
        # B's announcement of an older connection, arriving late.
        a.app.cluster.notified(f"owner {b.app.cluster.instance} CP-1")
        await quiet_for(0.5)  # A does not close its connection
        assert a.gateway.connection("CP-1") is not None
        assert await owner() == a.app.cluster.instance
        await on_a.send(json.dumps([2, "hb", "Heartbeat", {}]))
        assert json.loads(await asyncio.wait_for(on_a.recv(), 5))[:2] == [3, "hb"]
        # A real move to B still closes the connection on A.
        async with connect(b.url("CP-1", secret)):
            assert await close_code_of(on_a) == 1000
            await until(lambda: _owner(a, "CP-1", b.app.cluster.instance))
            assert await owner() == b.app.cluster.instance


async def test_a_routed_outcome_holding_nul_can_be_stored(two_nodes) -> None:
    """A charger's CALLERROR may carry U+0000, which jsonb refuses: the routed outcome travels
    with U+FFFD in its place (stored, so the origin answers at once instead of timing out)."""
    from evgate.gateway.cluster import _error_of, _Failure, _Outcome, _storable

    a, _ = two_nodes
    failure = _Failure("CallRejected", "x", "GenericError", "bad\x00text", {"k\x00": "v\x00"})
    stored = _storable(_Outcome(error=failure))
    assert b"\\u0000" not in stored
    assert a.app.db is not None
    back = await a.app.db.fetchval("SELECT $1::text::jsonb::text", stored.decode())
    outcome = msgspec.json.decode(back, type=_Outcome)
    assert outcome.error is not None
    error = _error_of(outcome.error)
    assert (error.description, error.details) == ("bad\ufffdtext", {"k\ufffd": "v\ufffd"})  # type: ignore[attr-defined]


@pytest.mark.usefixtures("events_wanted")
async def test_an_operator_stop_through_a_reaches_the_chargers_connection_on_b(
    two_nodes,
) -> None:
    """The charger is connected to B, the operator stops its transaction through A's API: B's
    connection takes the transaction for closed (the stop's notification), so the charger's
    next MeterValues for it make no event of a running transaction, as after a stop made on
    B itself; not only once the charger reconnects."""
    a, b = two_nodes
    assert a.app.db is not None
    db = a.app.db
    secret = await a.add("CP-1")
    await until(lambda: b.gateway.credentials_of("CP-1") is not None)
    async with api(a) as client:
        r = await client.post("/api/v1/id-tags", json={"idTag": "TAG-1"})
        assert r.status_code == 201, r.text
        async with ocpp_charger(b.url("CP-1", secret), "CP-1") as cp:
            await cp.boot()

            async def accepted() -> bool:
                answer = await cp.call(call.Authorize(id_tag="TAG-1"))
                return bool(answer.id_tag_info["status"] == "Accepted")

            await until(accepted)  # B's id-tag list has it
            now = datetime.now(UTC)
            start = await cp.call(
                call.StartTransaction(
                    connector_id=1, id_tag="TAG-1", meter_start=0, timestamp=now.isoformat()
                )
            )
            tx = int(start.transaction_id)
            readings = itertools.count(1)

            async def running_events_of_a_meter_value() -> list[str]:
                """The events of a running transaction that a new MeterValues of ``tx`` made."""
                before = await db.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
                wh = next(readings) * 100
                value = {"value": str(wh), "measurand": "Energy.Active.Import.Register"}
                at = (now + timedelta(seconds=wh)).isoformat()
                await cp.call(
                    call.MeterValues(
                        connector_id=1,
                        transaction_id=tx,
                        meter_value=[{"timestamp": at, "sampled_value": [value]}],
                    )
                )
                rows = await db.fetch(
                    "SELECT event FROM outbox WHERE id > $1 AND event IN"
                    " ('SessionUpdateNotification', 'transaction.changed')",
                    before,
                )
                return [row["event"] for row in rows]

            assert await running_events_of_a_meter_value()  # B takes it for running
            r = await client.post(f"/api/v1/transactions/{tx}/stop", json={"reason": "lost"})
            assert r.status_code == 200, r.text

            async def closed_on_b() -> bool:
                return await running_events_of_a_meter_value() == []

            await until(closed_on_b, within=15, interval=0.2)
