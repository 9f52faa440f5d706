"""Charger gateway: idle chargers one process holds, and Heartbeat round trips per second,
evgate's gateway against a server built the usual way, measured in the same run.

What is measured:

1. Idle capacity. evgate's :class:`~evgate.gateway.server.Gateway` runs alone in a server
   subprocess (in-memory credentials, the basic routes, default limits and pings). Several
   client processes (the fd limit is per process) open ``--chargers`` WebSocket connections
   from several loopback source addresses (127.0.0.2, 127.0.0.3, ...), each authenticated
   by its secret and answered one Heartbeat, then stay idle. The server's resident memory
   (psutil RSS) before and after gives the memory per idle connection.
2. Round trips. The same client (picows, ``--rt-connections`` connections, each sending a
   Heartbeat CALL and waiting for its CALLRESULT, in a loop for ``--seconds``) runs against
   evgate's gateway and against the ``ocpp`` library's ``ChargePoint`` on a ``websockets``
   server (one ChargePoint per connection, answering Heartbeat through its ``@on`` routing
   and jsonschema validation: how a CSMS is usually built in Python). Each server is its own
   subprocess on one core; the ratio is evgate's round trips per second over the other's.

Run from the project venv: ``python bench/gateway.py`` (table) or ``--json`` (one object:
``idle_chargers``, ``kib_per_connection``, ``evgate_rtps``, ``ocpp_rtps``, ``ratio``).

``--where TOP`` measures neither: it runs the gateway in this process under ``tracemalloc``,
holds ``--chargers`` idle chargers as in 1., and prints the bytes traced per connection and
the ``TOP`` allocation sites (bytes per connection, with their tracebacks): where an idle
connection's memory goes. Tracing costs far more memory than it traces, so no RSS is read;
``--chargers 1000`` is plenty.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import evgate  # noqa: F401
except ImportError:  # a plain checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

import psutil
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

SECRET = "424242424242424242424242"
HEARTBEAT = b'[2,"1","Heartbeat",{}]'
CLIENT_FDS = 4000  # connections per client process, well under its fd limit


def _charger_id(i: int) -> str:
    return f"CP-{i:06d}"


# Servers (run as subprocesses: ``--role serve-evgate`` / ``--role serve-ocpp``)


async def serve_evgate(port: int, chargers: int) -> None:
    await start_evgate(port, chargers)
    print("READY", flush=True)
    await asyncio.Event().wait()


async def start_evgate(port: int, chargers: int) -> Any:
    """evgate's gateway serving ``chargers`` chargers on ``port`` (returned, started)."""
    from evgate.app import bind_socket
    from evgate.config import load_settings
    from evgate.credentials import digest
    from evgate.gateway.basic_routes import basic_routes
    from evgate.gateway.server import Gateway
    from evgate.storage.chargers import ChargerCredentials

    secret_digest = digest(SECRET)
    index = [ChargerCredentials(_charger_id(i), secret_digest, 1, False) for i in range(chargers)]

    async def load(charger_id: str | None) -> list[ChargerCredentials]:
        return index if charger_id is None else []

    # Rates and budgets high enough for a benchmark, limits and pings as in production.
    settings = load_settings(
        environ={}, message_rate=1e9, message_burst=10**9, failed_upgrades_per_minute=10**9
    )
    gateway = Gateway(settings, basic_routes(), load)
    await gateway.start(bind_socket("127.0.0.1", port))
    return gateway


async def serve_ocpp(port: int) -> None:
    import websockets
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint, call_result

    class Charger(ChargePoint):
        @on("Heartbeat")
        def heartbeat(self) -> call_result.Heartbeat:
            return call_result.Heartbeat(current_time=datetime.now(UTC).isoformat())

    async def handler(ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):  # the client's end of a run
            await Charger(ws.request.path.rsplit("/", 1)[-1], ws).start()

    async with websockets.serve(
        handler,
        "127.0.0.1",
        port,
        subprotocols=["ocpp1.6"],
        compression=None,  # type: ignore[list-item]
    ):
        print("READY", flush=True)
        await asyncio.Event().wait()


# Clients


class _Client(WSListener):
    """Counts CALLRESULTs; in round-trip mode sends the next Heartbeat on each answer."""

    def __init__(self, loop_mode: bool, done: asyncio.Future[None] | None = None) -> None:
        super().__init__()
        self.loop_mode = loop_mode
        self.answers = 0
        self.first = asyncio.get_running_loop().create_future() if done is None else done

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        self.answers += 1
        if not self.first.done():
            self.first.set_result(None)
        if self.loop_mode:
            transport.send(WSMsgType.TEXT, HEARTBEAT)


async def _open(url: str, source: str, loop_mode: bool) -> tuple[WSTransport, _Client]:
    transport, client = await ws_connect(
        lambda: _Client(loop_mode),
        url,
        extra_headers=[("Sec-WebSocket-Protocol", "ocpp1.6")],
        local_addr=(source, 0),
        read_buffer_init_size=2048,
        websocket_handshake_timeout=60,
    )
    assert isinstance(client, _Client)
    return transport, client


async def idle_clients(port: int, first: int, count: int, source: str) -> None:
    """Open ``count`` chargers, answer one Heartbeat each, report, then hold them."""
    gate = asyncio.Semaphore(64)  # handshakes in flight

    async def one(i: int) -> WSTransport:
        url = f"ws://127.0.0.1:{port}/cp/{_charger_id(i)}?auth={SECRET}"
        async with gate:
            transport, client = await _open(url, source, loop_mode=False)
            transport.send(WSMsgType.TEXT, HEARTBEAT)
            await asyncio.wait_for(client.first, 30)
            return transport

    transports = await asyncio.gather(*(one(i) for i in range(first, first + count)))
    print(f"CONNECTED {len(transports)}", flush=True)
    await asyncio.Event().wait()


async def round_trip_clients(port: int, connections: int, seconds: float, path: str) -> None:
    """``connections`` chargers, each in a Heartbeat ping-pong; prints round trips/s."""
    opened = []
    for i in range(connections):
        url = f"ws://127.0.0.1:{port}/{path}/{_charger_id(i)}?auth={SECRET}"
        opened.append(await _open(url, "127.0.0.1", loop_mode=True))
    for transport, _ in opened:  # warm-up round
        transport.send(WSMsgType.TEXT, HEARTBEAT)
    await asyncio.sleep(0.5)
    before = sum(c.answers for _, c in opened)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    answered = sum(c.answers for _, c in opened) - before
    elapsed = time.perf_counter() - started
    print(f"RTPS {answered / elapsed:.1f}", flush=True)
    for transport, _ in opened:
        transport.disconnect()


# The conductor


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _expect(process: subprocess.Popen[str], prefix: str, timeout: float = 300) -> str:
    """The first stdout line of ``process`` that starts with ``prefix`` (its remainder)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{process.args[2:]} ended before {prefix!r}")
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise TimeoutError(prefix)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()


def measure_idle(chargers: int) -> dict[str, float]:
    port = _free_port()
    server = _spawn("--role", "serve-evgate", "--port", str(port), "--chargers", str(chargers))
    clients: list[subprocess.Popen[str]] = []
    try:
        _expect(server, "READY")
        time.sleep(0.5)
        rss_before = psutil.Process(server.pid).memory_info().rss
        held = _spawn_idle_clients(port, chargers, clients)
        time.sleep(2.0)  # let the server settle (freed handshake buffers, timers)
        rss_after = psutil.Process(server.pid).memory_info().rss
    finally:
        _stop(*clients, server)
    return {
        "idle_chargers": held,
        "server_rss_mib": rss_after / 2**20,
        "kib_per_connection": (rss_after - rss_before) / held / 1024,
    }


def _spawn_idle_clients(port: int, chargers: int, clients: list[subprocess.Popen[str]]) -> int:
    """Client processes holding ``chargers`` idle chargers (appended to ``clients``, for the
    caller to stop), one after the other: two cores are shared by everyone. Returns the
    chargers they connected."""
    held = 0
    for n, first in enumerate(range(0, chargers, CLIENT_FDS)):
        count = min(CLIENT_FDS, chargers - first)
        clients.append(
            _spawn(
                "--role",
                "idle-clients",
                "--port",
                str(port),
                "--first",
                str(first),
                "--count",
                str(count),
                "--source",
                f"127.0.0.{n + 2}",
            )
        )
        held += int(_expect(clients[-1], "CONNECTED "))
    return held


async def where_idle_memory_goes(chargers: int, top: int) -> None:
    """Print the bytes per idle connection traced (``tracemalloc``, started by the caller)
    and the ``top`` allocation sites by bytes per connection, with their tracebacks."""
    gateway = await start_evgate(_free_port(), chargers)
    await asyncio.sleep(0.5)
    gc.collect()
    before = tracemalloc.take_snapshot()
    clients: list[subprocess.Popen[str]] = []
    try:
        held = await asyncio.to_thread(_spawn_idle_clients, gateway.port, chargers, clients)
        await asyncio.sleep(2.0)  # settled, as in measure_idle
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        _stop(*clients)
    stats = after.compare_to(before, "traceback")
    traced = sum(s.size_diff for s in stats) / held
    print(f"{held:,} idle chargers: {traced:,.0f} bytes traced each")
    for stat in sorted(stats, key=lambda s: -s.size_diff)[:top]:
        print(f"\n{stat.size_diff / held:8,.0f} bytes in {stat.count_diff / held:.2f} blocks")
        for line in stat.traceback.format(most_recent_first=True):
            print("   ", line)


def measure_round_trips(role: str, path: str, connections: int, seconds: float) -> float:
    port = _free_port()
    server = _spawn("--role", role, "--port", str(port), "--chargers", str(connections))
    try:
        _expect(server, "READY")
        client = _spawn(
            "--role",
            "rt-clients",
            "--port",
            str(port),
            "--count",
            str(connections),
            "--seconds",
            str(seconds),
            "--path",
            path,
        )
        try:
            return float(_expect(client, "RTPS "))
        finally:
            _stop(client)
    finally:
        _stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--chargers", type=int, default=15_000, help="idle chargers to hold")
    parser.add_argument("--rt-connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0, help="per round-trip run")
    parser.add_argument(
        "--where",
        type=int,
        metavar="TOP",
        help="instead: where an idle connection's memory goes (tracemalloc, in this process;"
        " --chargers 1000 is plenty), the TOP allocation sites",
    )
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--source", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="cp", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role or args.where is not None:  # thousands of sockets in this process
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.role:
        roles = {
            "serve-evgate": lambda: serve_evgate(args.port, args.chargers),
            "serve-ocpp": lambda: serve_ocpp(args.port),
            "idle-clients": lambda: idle_clients(args.port, args.first, args.count, args.source),
            "rt-clients": lambda: round_trip_clients(
                args.port, args.count, args.seconds, args.path
            ),
        }
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(roles[args.role]())
        return

    if args.where is not None:
        tracemalloc.start(16)
        uvloop.run(where_idle_memory_goes(args.chargers, args.where))
        return

    idle = measure_idle(args.chargers)
    evgate_rtps = measure_round_trips("serve-evgate", "cp", args.rt_connections, args.seconds)
    ocpp_rtps = measure_round_trips("serve-ocpp", "ocpp", args.rt_connections, args.seconds)
    result = {
        **idle,
        "evgate_rtps": evgate_rtps,
        "ocpp_rtps": ocpp_rtps,
        "ratio": evgate_rtps / ocpp_rtps,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"idle chargers held by one process   {idle['idle_chargers']:>10,}")
    print(f"server RSS                          {idle['server_rss_mib']:>10.1f} MiB")
    print(f"resident memory per idle connection {idle['kib_per_connection']:>10.1f} KiB")
    print(f"Heartbeat round trips/s, evgate     {evgate_rtps:>10,.0f}")
    print(f"Heartbeat round trips/s, ocpp lib   {ocpp_rtps:>10,.0f}")
    print(f"ratio                               {result['ratio']:>10.1f}x")


if __name__ == "__main__":
    main()
