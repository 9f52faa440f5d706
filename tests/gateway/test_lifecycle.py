"""Connection life cycle: one connection per charger, liveness, back-pressure, shutdown, and
credential changes that end a live connection."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path

import httpx
import pytest
from picows import WSMsgType

from evgate.gateway.basic_routes import basic_routes
from evgate.gateway.server import LISTEN_BACKLOG
from evgate.handlers import ChargerContext, Routes
from evgate.protocol.v16 import DataTransferRequest, DataTransferResponse, DataTransferStatus
from evgate.storage.db import CHARGER_CHANNEL
from gateway.helpers import (
    ADMIN,
    SECRET,
    PicowsClient,
    StartGateway,
    close_code_of,
    connect,
)
from support import Running, quiet_for, until


class Recorder:
    """A connection observer that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int | None]] = []

    def charger_connected(self, info: object) -> None:
        self.events.append(("connected", info.charger_id, None))  # type: ignore[attr-defined]

    def charger_disconnected(self, info: object, close_code: int, reason: str) -> None:
        self.events.append(("disconnected", info.charger_id, close_code))  # type: ignore[attr-defined]


async def test_new_connection_replaces_old(start_gateway: StartGateway) -> None:
    """A second authenticated connection of the same charger closes the first (1000); the
    observers see connect, disconnect(replaced), connect, and the live view shows the new."""
    async with start_gateway() as g:
        recorder = Recorder()
        g.gateway.add_observer(recorder)
        async with connect(g.url(), local_addr=("127.0.0.2", 0)) as first:
            await until(lambda: g.gateway.connection("CP-1") is not None)
            async with connect(g.url(), local_addr=("127.0.0.3", 0)) as second:
                assert await close_code_of(first) == 1000
                info = g.gateway.connection("CP-1")
                assert info.remote_address.startswith("127.0.0.3:")
                assert info.security_profile == 1
                await second.send(json.dumps([2, "1", "Heartbeat", {}]))
                assert json.loads(await second.recv())[0] == 3
        await until(lambda: g.gateway.connection("CP-1") is None)
        assert [e[:2] for e in recorder.events] == [
            ("connected", "CP-1"),
            ("disconnected", "CP-1"),
            ("connected", "CP-1"),
            ("disconnected", "CP-1"),
        ]


async def test_failing_observer_does_not_break_the_gateway(start_gateway: StartGateway) -> None:
    """An observer that raises is logged and ignored; the charger connects normally."""

    class Broken:
        def charger_connected(self, info: object) -> None:
            raise RuntimeError("observer bug")

        def charger_disconnected(self, info: object, close_code: int, reason: str) -> None:
            raise RuntimeError("observer bug")

    async with start_gateway() as g:
        g.gateway.add_observer(Broken())
        async with connect(g.url()) as ws:
            await ws.send(json.dumps([2, "1", "Heartbeat", {}]))
            assert json.loads(await ws.recv())[0] == 3


async def test_no_pong_closes_the_connection(
    picows_client: PicowsClient, start_gateway: StartGateway
) -> None:
    """A charger that does not answer pings is closed after ping_interval + ping_timeout."""
    async with start_gateway(ping_interval=0.3, ping_timeout=0.2) as g:
        transport, listener = await picows_client(g.url(), enable_auto_pong=False)
        await asyncio.wait_for(transport.wait_disconnected(), 3)
        assert listener.close_code == 1001


async def test_idle_connections_cost_no_task_and_are_pinged_by_one_timer(
    picows_client: PicowsClient, start_gateway: StartGateway
) -> None:
    """An idle charger holds no task of its own (picows's auto-ping would keep one per
    connection, ~1.8 KB each): the gateway's one ping round pings every silent charger, and
    those that answer stay connected."""
    async with start_gateway(ping_interval=0.2, ping_timeout=0.2) as g:
        for i in range(20):
            g.set(f"CP-{i}")
        before = len(asyncio.all_tasks())
        clients = [await picows_client(g.url(f"CP-{i}")) for i in range(20)]
        await until(lambda: len(g.gateway._connections) == 20)
        assert len(asyncio.all_tasks()) - before < 5
        await quiet_for(1.0)  # five ping intervals: each answered (picows's auto-pong)
        assert all(not transport.is_disconnected for transport, _ in clients)
        assert len(g.gateway._connections) == 20


async def test_an_idle_connection_keeps_nothing_of_its_upgrade(
    picows_client: PicowsClient, start_gateway: StartGateway
) -> None:
    """Once a charger is connected, the upgrade request and response that picows keeps for
    the connection's life hold no header and no request target (~2.5 KB of an idle
    connection, and the charger's secret: ``?auth=`` and Basic); and picows's protocol gets
    no instance dict (~340 bytes)."""
    async with start_gateway() as g:
        basic = base64.b64encode(f"CP-1:{SECRET}".encode()).decode()
        transport, listener = await picows_client(
            g.url(),
            extra_headers=[
                ("Sec-WebSocket-Protocol", "ocpp1.6"),
                ("Authorization", f"Basic {basic}"),
            ],
        )
        transport.send(WSMsgType.TEXT, json.dumps([2, "1", "Heartbeat", {}]).encode())
        assert json.loads(await asyncio.wait_for(listener.messages.get(), 5))[0] == 3
        served = g.gateway._connections["CP-1"].transport
        assert served is not None
        request, response = served.request, served.response
        assert len(request.headers) == 0
        assert request.path == b""
        assert len(response.headers) == 0
        assert not hasattr(served.underlying_transport.get_protocol(), "__dict__")
        # The connection works on as before.
        transport.send(WSMsgType.TEXT, json.dumps([2, "2", "Heartbeat", {}]).encode())
        assert json.loads(await asyncio.wait_for(listener.messages.get(), 5))[:2] == [3, "2"]


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
async def test_the_charger_port_queues_a_storm_of_connections(
    start_gateway: StartGateway,
) -> None:
    """The loop listens on the charger port with evgate's backlog, not its default of 100:
    in a reconnect storm, SYNs beyond the backlog are dropped and come back only after TCP's
    1 s retransmission."""
    async with start_gateway() as g:
        ss = await asyncio.create_subprocess_exec(
            "ss", "-ltnH", f"sport = :{g.gateway.port}", stdout=asyncio.subprocess.PIPE
        )
        listing, _ = await ss.communicate()
        backlog = int(listing.split()[2])  # Send-Q of a listening socket: its backlog
        somaxconn = int(await asyncio.to_thread(Path("/proc/sys/net/core/somaxconn").read_text))
        assert backlog == min(LISTEN_BACKLOG, somaxconn)


async def test_answering_pings_keeps_the_connection(start_gateway: StartGateway) -> None:
    """A charger that answers pings stays connected across several ping intervals."""
    async with start_gateway(ping_interval=0.2, ping_timeout=0.1) as g, connect(g.url()) as ws:
        await quiet_for(1.0)  # five ping intervals: the connection stays
        await ws.send(json.dumps([2, "1", "Heartbeat", {}]))
        assert json.loads(await ws.recv())[0] == 3


async def test_slow_reader_pauses_its_reads(
    picows_client: PicowsClient, start_gateway: StartGateway
) -> None:
    """A charger that does not read its answers makes the gateway stop reading it once the
    write buffer passes its limit, and resume when it drains: memory stays bounded. Each
    pause is counted (a metric)."""

    async def bulky(ctx: ChargerContext, request: DataTransferRequest) -> DataTransferResponse:
        return DataTransferResponse(status=DataTransferStatus.accepted, data="x" * 60_000)

    routes: Routes = {"DataTransfer": bulky}
    async with start_gateway(routes=routes, write_buffer_limit=64 * 1024) as g:
        transport, _ = await picows_client(g.url())
        transport.underlying_transport.pause_reading()
        server_side = g.gateway._connections["CP-1"].transport.underlying_transport
        for i in range(400):  # ~24 MB of answers: more than the kernel's socket buffers hold
            transport.send(
                WSMsgType.TEXT, json.dumps([2, str(i), "DataTransfer", {"vendorId": "v"}])
            )
            await asyncio.sleep(0.002)  # one CALL at a time, as a charger sends them
            if not server_side.is_reading():
                break
        assert not server_side.is_reading()
        transport.underlying_transport.resume_reading()
        await until(lambda: server_side.is_reading())
        pauses = g.metrics.counter("evgate_charger_reads_paused_total", "")
        assert pauses.value() >= 1


async def test_shutdown_sends_in_flight_replies_then_1001(start_gateway: StartGateway) -> None:
    """stop(): the CALL being handled is answered first, then every charger gets 1001."""
    entered = asyncio.Event()

    async def slow(ctx: ChargerContext, request: DataTransferRequest) -> DataTransferResponse:
        entered.set()
        await asyncio.sleep(0.3)  # the behaviour under test: a handler still busy at stop()
        return DataTransferResponse(status=DataTransferStatus.accepted)

    routes: Routes = {**basic_routes(), "DataTransfer": slow}
    async with (
        start_gateway(routes=routes) as g,
        connect(g.url()) as busy,
        connect(g.url("CP-2")) as idle,
    ):
        await busy.send(json.dumps([2, "inflight", "DataTransfer", {"vendorId": "v"}]))
        await entered.wait()
        stopping = asyncio.create_task(g.gateway.stop(grace=5))
        reply = json.loads(await busy.recv())
        assert reply[:2] == [3, "inflight"]
        assert await close_code_of(busy) == 1001
        assert await close_code_of(idle) == 1001
        await stopping


async def test_deleted_or_changed_charger_is_closed_1008(start_gateway: StartGateway) -> None:
    """When the credential index learns that a charger's secret changed, it was deleted, or
    its profile was raised above the connection's, the live connection closes with 1008; a
    change that keeps it valid (lenient) leaves it up."""
    async with start_gateway() as g:
        async with connect(g.url("CP-1")) as ws:
            await until(lambda: g.gateway.connection("CP-1") is not None)
            g.set("CP-1", lenient=True)  # still valid
            await until(lambda: g.gateway.credentials_of("CP-1").lenient)
            g.set("CP-1", secret="999999999999999999999999")
            assert await close_code_of(ws) == 1008
        async with connect(g.url("CP-2")) as ws:
            await until(lambda: g.gateway.connection("CP-2") is not None)
            g.set("CP-2", security_profile=2)
            assert await close_code_of(ws) == 1008
        g.set("CP-3")
        await until(lambda: g.gateway.credentials_of("CP-3") is not None)
        async with connect(g.url("CP-3")) as ws:
            await until(lambda: g.gateway.connection("CP-3") is not None)
            del g.chargers["CP-3"]
            g.gateway.credentials_changed("CP-3")
            assert await close_code_of(ws) == 1008


async def test_rotation_and_deletion_through_the_api_disconnect_at_once(
    running: Running,
) -> None:
    """Through the database's NOTIFY: rotating a secret or deleting a charger via the API
    closes its live connection (1008); the old secret is then refused 401."""
    secret = await running.add("CP-1")
    await running.add("CP-2")
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{running.app.api_port}", headers=ADMIN
    ) as api:
        async with connect(running.url("CP-1", secret)) as ws:
            await until(lambda: running.gateway.connection("CP-1") is not None)
            assert (await api.post("/api/v1/chargers/CP-1/secret")).status_code == 200
            assert await close_code_of(ws) == 1008
        assert running.gateway.credentials_of("CP-1").secret_digest != b""
        secret2 = await running.add("CP-9")
        async with connect(running.url("CP-9", secret2)) as ws:
            await until(lambda: running.gateway.connection("CP-9") is not None)
            assert (await api.delete("/api/v1/chargers/CP-9")).status_code == 204
            assert await close_code_of(ws) == 1008


async def test_index_reloads_after_the_listener_reconnects(running: Running) -> None:
    """Notifications missed while the LISTEN connection was down are caught up by a full
    reload once it is back."""
    await running.add("CP-1")
    assert running.app.db is not None
    # A change that sends no NOTIFY stands for one sent while the connection was down...
    await running.app.db.execute("UPDATE chargers SET lenient = true WHERE id = 'CP-1'")
    await quiet_for(0.1)  # no NOTIFY: the index does not change
    assert not running.gateway.credentials_of("CP-1").lenient
    # ...and the reconnect reloads everything.
    (listener,) = [li for li in running.app.db._listeners if li.channel == CHARGER_CHANNEL]
    listener.drop_connection()
    await until(lambda: running.gateway.credentials_of("CP-1").lenient)
