"""loadtest: simulated chargers, many on one event loop, over picows WebSocket clients.

A :class:`SimCharger` behaves as a real OCPP 1.6J charger does: it connects, sends
BootNotification (and retries it at the given interval while Pending or Rejected),
StatusNotification for every connector, Heartbeat at the interval the server gave (or one the
scenario forces), and sessions: Authorize, StartTransaction, MeterValues every
``meter_interval`` seconds (optionally aligned to the clock, so the fleet bursts together),
StopTransaction. After a lost connection it reconnects with exponential backoff and full
jitter, and a transaction in progress carries on across the reconnect, as chargers keep
charging offline. A :class:`Fleet` holds the chargers of one process and can drop them all at
once (a reconnect storm), after which they return without backoff.

Every CALL's round trip is timed from just before the frame is handed to the socket to the
moment its CALLRESULT (or CALLERROR) is read, inside picows' data callback, so the time does
not include this process's task scheduling. Each charger speaks through evgate's own protocol
core in the charger role (``evgate.protocol.endpoint``: unique ids, the one outstanding CALL,
matching a reply to its CALL), which validates every response as the charger's side of OCPP
would; the charger keeps only the socket, the timers and the futures.

One charger is one task and one connection; 15,000 fit in a process under the 20,000 fd
limit. Connections bind to the source addresses given (127.0.0.x) with
``IP_BIND_ADDRESS_NO_PORT``, so the kernel picks the local port per destination and each
source address adds a full ephemeral port range.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from evgate.protocol.endpoint import (
    Endpoint,
    ErrorReply,
    IncomingCall,
    OutgoingCall,
    Refusal,
    Reply,
    Role,
    UnmatchedReply,
    UnreadableReply,
)
from evgate.protocol.errors import ActionNotImplementedError, OcppError
from evgate.protocol.v16 import (
    AuthorizationStatus,
    AuthorizeRequest,
    AuthorizeResponse,
    BootNotificationResponse,
    ChargePointStatus,
    HeartbeatRequest,
    Message,
    Reason,
    RegistrationStatus,
    StartTransactionResponse,
)
from loadtest import messages
from loadtest.histogram import LatencyHistogram

__all__ = ["Fleet", "FleetStats", "Scenario", "SimCharger"]

# Linux: bind() only the address and let connect() choose the port for the 4-tuple.
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class Scenario(msgspec.Struct, kw_only=True, frozen=True):
    """What the simulated chargers do. Times are in seconds."""

    # The charger URL; {id} and {secret} are filled in per charger.
    url: str = "ws://127.0.0.1:9000/cp/{id}?auth={secret}"
    connectors: int = 2
    # None: heartbeat at the interval BootNotification.conf gives, as a charger must.
    heartbeat_interval: float | None = None
    meter_interval: float = 60.0
    # Send MeterValues at multiples of meter_interval on the wall clock (the whole fleet at once).
    aligned_meter_values: bool = False
    # Sampled values in each MeterValues (energy register, power, current, voltage, SoC...).
    sampled_values: int = 4
    # Mean idle time between sessions and mean session length (exponential distributions).
    idle_mean: float = 1200.0
    session_mean: float = 2700.0
    id_tags: tuple[str, ...] = ("SIM-TAG-0001",)
    call_timeout: float = 30.0
    backoff_min: float = 1.0
    backoff_max: float = 60.0
    # New connections per second for this fleet (its share of the whole fleet's ramp).
    ramp_rate: float = 500.0
    # Local addresses to connect from, round robin; empty: the kernel chooses.
    source_addresses: tuple[str, ...] = ("127.0.0.1",)
    seed: int = 1


class FleetStats:
    """What one process's chargers did. ``mark`` starts a new measurement window."""

    def __init__(self) -> None:
        self.connected = 0
        self.booted = 0
        self.connects = 0
        self.connect_failures = 0
        self.disconnects = 0
        self.storm_at: float | None = None
        self.booted_since_storm = 0
        self.last_boot_at = 0.0
        # Since the storm: the backoffs waited (a reconnect that failed or a connection that
        # ended; a Pending/Rejected boot's wait is not one), and the longest of them: each
        # adds to the storm's time and is the simulator's, not the server's.
        self.storm_retries = 0
        self.storm_backoff_max = 0.0
        self.mark()

    def mark(self) -> None:
        """Zero the per-window counters and the latency histogram."""
        self.window_start = time.monotonic()
        # This process's CPU over the window: what the load generator cost, beside the server.
        self.cpu_start = time.process_time()
        self.latency = LatencyHistogram()
        self.calls: Counter[str] = Counter()
        self.call_errors: Counter[str] = Counter()
        self.timeouts = 0
        self.auth_rejected = 0
        self.server_calls = 0

    def status(self) -> dict[str, Any]:
        """The gauges (not reset by ``mark``)."""
        return {
            "connected": self.connected,
            "booted": self.booted,
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "disconnects": self.disconnects,
            "booted_since_storm": self.booted_since_storm,
            "last_boot_at": self.last_boot_at,
            "storm_retries": self.storm_retries,
            "storm_backoff_max": self.storm_backoff_max,
        }

    def window(self) -> dict[str, Any]:
        """The current window: its length, counts and latency histogram, JSON-able."""
        return {
            "seconds": time.monotonic() - self.window_start,
            "cpu_seconds": time.process_time() - self.cpu_start,
            "calls": dict(self.calls),
            "call_errors": dict(self.call_errors),
            "timeouts": self.timeouts,
            "auth_rejected": self.auth_rejected,
            "server_calls": self.server_calls,
            "latency": self.latency.to_wire(),
        }


class ConnectionLost(Exception):
    """The charger's connection closed while it waited."""


class CallTimedOut(Exception):
    """No answer to a CALL within the scenario's ``call_timeout``."""


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class SimCharger(WSListener):
    """One simulated charger: its connection (it is its own picows listener) and behaviour.

    Call :meth:`run` as a task; it returns after the fleet stops.
    """

    def __init__(self, fleet: Fleet, index: int, charger_id: str, secret: str | None) -> None:
        self.fleet = fleet
        self.index = index
        self.id = charger_id
        self.url = fleet.scenario.url.format(id=charger_id, secret=secret or "")
        sources = fleet.scenario.source_addresses
        self.source = sources[index % len(sources)] if sources else None
        self.rng = random.Random(fleet.scenario.seed * 1_000_003 + index)
        self.transport: WSTransport | None = None
        self.endpoint = Endpoint(Role.charger)
        # The outstanding CALL, when it was sent (perf_counter ns), its waiter and its timer.
        self._pending: tuple[OutgoingCall, int, asyncio.Future[Message], Any] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._storm = False
        # Charging state survives a reconnect, as a real charger keeps charging offline.
        self.connector = 0
        self.transaction_id: int | None = None
        self.id_tag = fleet.scenario.id_tags[index % len(fleet.scenario.id_tags)]
        self.energy_wh = self.rng.randrange(0, 5_000_000)
        self.power_w = 11_000.0

    # picows callbacks: they run inside the socket's data callback; decode at once and keep
    # nothing of the borrowed frame buffer.

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            received = time.perf_counter_ns()
            self._on_text(transport, frame.get_payload_as_bytes(), received)
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def _on_text(self, transport: WSTransport, data: bytes, received: int) -> None:
        stats = self.fleet.stats
        happening = self.endpoint.receive(data)
        if isinstance(happening, IncomingCall):
            # A CALL from the server (GetConfiguration, TriggerMessage...): this simulator
            # implements none, and says so as a charger would.
            stats.server_calls += 1
            transport.send(
                WSMsgType.TEXT,
                self.endpoint.refuse(
                    ActionNotImplementedError("not simulated"), happening.unique_id
                ),
            )
            return
        if isinstance(happening, Refusal):
            if happening.action is None:
                stats.call_errors["<bad frame>"] += 1
            else:  # a server CALL this charger cannot read: answered as any charger would
                stats.server_calls += 1
                transport.send(WSMsgType.TEXT, happening.data)
            return
        if isinstance(happening, UnreadableReply):
            stats.call_errors["<bad frame>"] += 1  # what it answers, if anything, times out
            return
        if isinstance(happening, UnmatchedReply):
            return  # an answer after its timeout
        pending, self._pending = self._pending, None
        if pending is None:
            return
        outgoing, sent, fut, timer = pending
        timer.cancel()
        stats.latency.record((received - sent) // 1000)
        if isinstance(happening, Reply):
            stats.calls[outgoing.action] += 1
            fut.set_result(happening.response)
        elif isinstance(happening, ErrorReply):
            stats.call_errors[outgoing.action] += 1
            fut.set_exception(happening.error.to_exception())
        else:  # an answer that breaks the response schema
            stats.calls[outgoing.action] += 1
            fut.set_exception(happening.error)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.transport = None
        pending, self._pending = self._pending, None
        if pending is not None:
            outgoing, _sent, fut, timer = pending
            self.endpoint.abandon(outgoing)
            timer.cancel()
            if not fut.done():
                fut.set_exception(ConnectionLost())
        if self._wakeup is not None:
            _wake(self._wakeup)

    # Requests

    async def call(self, action: str, request: Message) -> Message:
        """Send a CALL and wait for its validated response.

        Raises:
            ConnectionLost: the connection closed first.
            CallTimedOut: no answer within the scenario's ``call_timeout``.
            OcppError: the server answered with a CALLERROR, or with a response that breaks
                its schema.
        """
        transport = self.transport
        if transport is None:
            raise ConnectionLost()
        outgoing = self.endpoint.call(action, request)
        loop = self.fleet.loop
        fut: asyncio.Future[Message] = loop.create_future()
        timer = loop.call_later(self.fleet.scenario.call_timeout, self._time_out, outgoing)
        self._pending = (outgoing, time.perf_counter_ns(), fut, timer)
        transport.send(WSMsgType.TEXT, outgoing.data)
        return await fut

    def _time_out(self, outgoing: OutgoingCall) -> None:
        pending = self._pending
        if pending is not None and pending[0] is outgoing:
            self._pending = None
            self.endpoint.abandon(outgoing)
            self.fleet.stats.timeouts += 1
            if not pending[2].done():
                pending[2].set_exception(CallTimedOut())

    async def _call_ok(self, action: str, request: Message) -> None:
        """A CALL whose answer the charger does not need: a CALLERROR or timeout is counted
        (in ``call``) and the charger carries on, as firmware does."""
        with contextlib.suppress(OcppError, CallTimedOut):
            await self.call(action, request)

    async def _status(self, connector: int, status: ChargePointStatus) -> None:
        await self._call_ok("StatusNotification", messages.status(connector, status))

    # Time

    async def _sleep(self, delay: float) -> None:
        """Sleep, woken early by a lost connection (then raises ConnectionLost) or a stop."""
        if delay > 0:
            await self._idle(delay)
        if self.transport is None or not self.fleet.running:
            raise ConnectionLost()

    async def _idle(self, delay: float) -> None:
        """Sleep ``delay`` seconds unless woken (``wake``, or the connection closing).

        A future and a timer rather than ``asyncio.sleep`` in a task that gets cancelled:
        15,000 chargers a process make cancellation's cost show.
        """
        fut = self.fleet.loop.create_future()
        self._wakeup = fut
        timer = self.fleet.loop.call_later(delay, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._wakeup = None

    def wake(self) -> None:
        """Interrupt the current sleep (the fleet is stopping)."""
        if self._wakeup is not None:
            _wake(self._wakeup)

    def drop(self) -> None:
        """Lose the connection abruptly, as a network outage does, and come back at once.

        The socket is reset (SO_LINGER 0) rather than closed, so no TIME_WAIT is left behind
        and the server sees what it sees when a modem drops.
        """
        self._storm = True
        transport = self.transport
        if transport is None:
            return
        sock = transport.underlying_transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.underlying_transport.abort()

    # Behaviour

    def _socket_factory(self, _url: object) -> socket.socket | None:
        if self.source is None:
            return None  # picows connects the usual way
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source, 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def run(self) -> None:
        """Connect, live, and reconnect until the fleet stops."""
        failures = 0
        while self.fleet.running:
            try:
                await ws_connect(
                    lambda: self,
                    self.url,
                    extra_headers={"Sec-WebSocket-Protocol": "ocpp1.6"},
                    socket_factory=self._socket_factory,
                    read_buffer_init_size=2048,
                    websocket_handshake_timeout=self.fleet.scenario.call_timeout,
                )
            except Exception:  # refused, reset, handshake timeout, HTTP 401/404 (WSError)
                self.fleet.stats.connect_failures += 1
                failures += 1
                await self._idle(self._backoff(failures))
                continue
            stats = self.fleet.stats
            stats.connects += 1
            stats.connected += 1
            booted = False
            try:
                booted = await self._live()
                failures = 0
            except (ConnectionLost, CallTimedOut, OcppError):
                pass
            finally:
                stats.connected -= 1
                if booted:
                    stats.booted -= 1
                if self.transport is not None:
                    self.transport.disconnect(graceful=False)
                    self.transport = None
                if self.fleet.running:
                    stats.disconnects += 1
            if not self.fleet.running:
                break
            if self._storm:
                self._storm = False  # a storm's chargers return at once
            else:
                failures += 1
                await self._idle(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        s = self.fleet.scenario
        ceiling = min(s.backoff_max, s.backoff_min * 2 ** min(failures - 1, 16))
        delay = self.rng.uniform(s.backoff_min / 2, ceiling)
        stats = self.fleet.stats
        if stats.storm_at is not None:
            stats.storm_retries += 1
            stats.storm_backoff_max = max(stats.storm_backoff_max, delay)
        return delay

    async def _boot(self) -> int:
        """BootNotification until Accepted; returns the heartbeat interval to use."""
        request = messages.boot(self.index)
        while True:
            reply = await self.call("BootNotification", request)
            assert isinstance(reply, BootNotificationResponse)
            if reply.status == RegistrationStatus.accepted:
                return max(1, reply.interval)
            await self._sleep(reply.interval or 60)

    async def _live(self) -> bool:
        """One connection's life; returns when it ends (raising ConnectionLost)."""
        s = self.fleet.scenario
        stats = self.fleet.stats
        server_interval = await self._boot()
        stats.booted += 1
        now = time.monotonic()
        stats.last_boot_at = now
        if stats.storm_at is not None and now >= stats.storm_at:
            stats.booted_since_storm += 1
        heartbeat = s.heartbeat_interval or server_interval
        for connector in range(0, s.connectors + 1):
            charging = self.transaction_id is not None and connector == self.connector
            await self._status(
                connector, ChargePointStatus.charging if charging else ChargePointStatus.available
            )
        rng = self.rng
        next_heartbeat = time.monotonic() + rng.uniform(0, heartbeat)
        if self.transaction_id is not None:
            next_change = time.monotonic() + rng.expovariate(1 / s.session_mean)
        else:
            # Start the fleet in its steady mix: the right share charging straight away.
            share = s.session_mean / (s.session_mean + s.idle_mean)
            wait = rng.uniform(0, s.meter_interval) if rng.random() < share else 0.0
            next_change = time.monotonic() + (wait or rng.expovariate(1 / s.idle_mean))
        next_meter = self._next_meter()
        while True:
            now = time.monotonic()
            if now >= next_heartbeat:
                await self._call_ok("Heartbeat", HeartbeatRequest())
                next_heartbeat = now + heartbeat
            if now >= next_change:
                if self.transaction_id is None:
                    await self._start_session()
                    next_change = now + rng.expovariate(1 / s.session_mean)
                    next_meter = self._next_meter()
                else:
                    await self._stop_session()
                    next_change = now + rng.expovariate(1 / s.idle_mean)
            if self.transaction_id is not None and now >= next_meter:
                await self._meter_values(now - (next_meter - s.meter_interval))
                next_meter = self._next_meter()
            due = min(next_heartbeat, next_change)
            if self.transaction_id is not None:
                due = min(due, next_meter)
            await self._sleep(due - time.monotonic())

    def _next_meter(self) -> float:
        s = self.fleet.scenario
        now = time.monotonic()
        if s.aligned_meter_values:
            wall = time.time()
            return now + (math.floor(wall / s.meter_interval) + 1) * s.meter_interval - wall
        return now + s.meter_interval

    async def _start_session(self) -> None:
        connector = self.rng.randint(1, self.fleet.scenario.connectors)
        await self._status(connector, ChargePointStatus.preparing)
        try:
            transaction_id = await self._authorize_and_start(connector)
        except (OcppError, CallTimedOut):
            transaction_id = None
        if transaction_id is None:
            self.fleet.stats.auth_rejected += 1
            await self._status(connector, ChargePointStatus.available)
            return
        self.connector = connector
        self.transaction_id = transaction_id
        self.power_w = self.rng.choice((3_700.0, 7_400.0, 11_000.0, 22_000.0))
        await self._status(connector, ChargePointStatus.charging)

    async def _authorize_and_start(self, connector: int) -> int | None:
        """Authorize, then StartTransaction; the transaction id, or None if refused."""
        auth = await self.call("Authorize", AuthorizeRequest(id_tag=self.id_tag))
        assert isinstance(auth, AuthorizeResponse)
        if auth.id_tag_info.status != AuthorizationStatus.accepted:
            return None
        start = await self.call(
            "StartTransaction", messages.start_transaction(connector, self.id_tag, self.energy_wh)
        )
        assert isinstance(start, StartTransactionResponse)
        if start.id_tag_info.status != AuthorizationStatus.accepted:
            # The server opened the transaction but refuses the tag: end it, as OCPP says.
            await self._call_ok(
                "StopTransaction",
                messages.stop_transaction(
                    start.transaction_id, self.id_tag, self.energy_wh, Reason.deauthorized
                ),
            )
            return None
        return start.transaction_id

    async def _stop_session(self) -> None:
        assert self.transaction_id is not None
        connector = self.connector
        await self._call_ok(
            "StopTransaction",
            messages.stop_transaction(self.transaction_id, self.id_tag, self.energy_wh),
        )
        self.transaction_id = None
        await self._status(connector, ChargePointStatus.finishing)
        await self._status(connector, ChargePointStatus.available)

    async def _meter_values(self, elapsed: float) -> None:
        assert self.transaction_id is not None
        self.energy_wh += int(self.power_w * max(elapsed, 0.0) / 3600)
        await self._call_ok(
            "MeterValues",
            messages.meter_values(
                self.connector,
                self.transaction_id,
                self.energy_wh,
                self.power_w,
                self.fleet.scenario.sampled_values,
                self.rng,
            ),
        )


class Fleet:
    """The chargers of one process, on the running loop.

    Call :meth:`run` (it returns after :meth:`stop`); :meth:`storm` drops every connection at
    once. :attr:`stats` holds what they did.
    """

    def __init__(
        self,
        scenario: Scenario,
        credentials: list[tuple[str, str | None]],
        first_index: int = 0,
        stats: FleetStats | None = None,
    ) -> None:
        self.scenario = scenario
        self.stats = stats or FleetStats()
        self.running = True
        self.loop = asyncio.get_running_loop()
        self.chargers = [
            SimCharger(self, first_index + i, cid, secret)
            for i, (cid, secret) in enumerate(credentials)
        ]

    async def run(self, on_started: Callable[[], None] | None = None) -> None:
        """Start the chargers at the scenario's ramp rate; return once all have stopped."""
        rate = self.scenario.ramp_rate
        began = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            for i, charger in enumerate(self.chargers):
                if not self.running:
                    break
                tasks.create_task(charger.run())
                ahead = began + (i + 1) / rate - time.monotonic()
                if ahead > 0.005:
                    await asyncio.sleep(ahead)
            if on_started is not None:
                on_started()

    def storm(self) -> float:
        """Drop every connection now; returns the instant (monotonic) of the drop."""
        at = time.monotonic()
        self.stats.storm_at = at
        self.stats.booted_since_storm = 0
        self.stats.storm_retries = 0
        self.stats.storm_backoff_max = 0.0
        for charger in self.chargers:
            charger.drop()
        return at

    def stop(self) -> None:
        """Close every connection and end every charger's task."""
        self.running = False
        for charger in self.chargers:
            if charger.transport is not None:
                charger.transport.send_close()
                charger.transport.disconnect()
            charger.wake()
