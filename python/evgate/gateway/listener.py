"""gateway room: the charger port's accepting side — the connection cap, the PROXY protocol
header of a trusted load balancer, and the TLS handshake.

Every TCP connection the port accepts first meets :class:`_Accepted`, which

1. closes it at once when the port already holds ``limit`` connections (counted and logged
   once per episode: the process's file descriptors are shared with the API port, the
   database and the log, and a charger port that took them all would starve those);
2. from a trusted load balancer, reads the PROXY header (v1 or v2, byte-exact: see
   :mod:`evgate.gateway.proxy_header`); from any other address, reads nothing;
3. hands the connection over — to the picows protocol (``set_protocol``), or to the TLS
   layer wrapped around it, exactly as the loop's own TLS server would have.

After the hand-over the charger's bytes flow from the loop to picows (or TLS then picows)
directly: nothing here is on the path of a frame. Every stage before the WebSocket upgrade
(PROXY header, TLS handshake, HTTP request) has the same handshake timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in the stubs

from evgate.gateway.proxy_header import ProxyHeaderError, SourceAddress, bytes_wanted, parse
from evgate.limits import CapEpisode
from evgate.metrics import Registry

__all__ = ["ChargerPort", "ChargerProtocol", "Network"]

log = logging.getLogger("evgate.gateway")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_PROXY_WARNING_EVERY = 60.0  # seconds between two warnings about bad headers from a proxy


class _Slot:
    """One connection's place under the cap: given back once, whichever side sees the end."""

    __slots__ = ("_held", "_port")

    def __init__(self, port: ChargerPort) -> None:
        self._port = port
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._port.connection_ended()


class ChargerProtocol(WSProtocol):  # type: ignore[misc]  # picows's class is untyped
    """picows's server protocol, giving its connection's place under the cap back when the
    connection ends. Only the connection's start and end pass through Python here."""

    # No instance dict: picows's class has none, and the one attribute added here would
    # otherwise cost every connection a dict of its own (~340 bytes).
    __slots__ = ("slot",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.slot: _Slot | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.slot is not None:
            self.slot.release()
        # The TLS layer may report the end of a connection whose handshake failed, before
        # picows ever saw it: picows cannot handle that.
        if self.transport is not None:
            super().connection_lost(exc)


def _tls_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The loop's own TLS protocol, which its TLS servers wrap around an application
    protocol: uvloop's under uvloop (evgate's loop), asyncio's otherwise."""
    try:
        import uvloop.loop

        if isinstance(loop, uvloop.loop.Loop):
            return uvloop.loop.SSLProtocol
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    import asyncio.sslproto

    return asyncio.sslproto.SSLProtocol


class ChargerPort:
    """The protocol factory of the charger port's server (``loop.create_server(port, ...)``).

    Args:
        make_protocol: a new picows protocol for a connection whose client is at the given
            address (None: the connection's own peer address).
        tls: the TLS context, or None for plain ws.
        trusted: the addresses of load balancers that send a PROXY header (and must).
        limit: connections the port may hold at once, handshakes included.
        handshake_timeout: seconds for the PROXY header and for the TLS handshake each.
        metrics: the process's metrics registry.
    """

    def __init__(
        self,
        make_protocol: Callable[[SourceAddress | None], ChargerProtocol],
        *,
        tls: ssl.SSLContext | None,
        trusted: Sequence[Network],
        limit: int,
        handshake_timeout: float,
        metrics: Registry,
    ) -> None:
        self.make_protocol = make_protocol
        self.tls = tls
        self.trusted = tuple(trusted)
        self.limit = limit
        self.handshake_timeout = handshake_timeout
        self.open = 0
        self._episode = CapEpisode(
            log, "charger port", "EVGATE_MAX_CHARGER_CONNECTIONS", "closed at once"
        )
        self._last_proxy_warning = -_PROXY_WARNING_EVERY
        self._tls_class: Any = None
        metrics.gauge(
            "evgate_charger_port_connections",
            "TCP connections the charger port holds, handshakes included",
        ).set_function(lambda: self.open)
        self.m_refused = metrics.counter(
            "evgate_charger_port_refused_total",
            "Connections the charger port closed before any upgrade: its cap was reached"
            " (cap), a trusted proxy's PROXY header was missing or malformed (proxy_header)",
            ("reason",),
        )

    def __call__(self) -> asyncio.BaseProtocol:
        return _Accepted(self)

    # The cap

    def take_slot(self) -> _Slot | None:
        """A place for a new connection, or None when the port is full (counted; logged
        once per episode)."""
        if self.open >= self.limit:
            self.m_refused.inc("cap")
            self._episode.refused(self.open)
            return None
        self.open += 1
        return _Slot(self)

    def connection_ended(self) -> None:
        self.open -= 1
        self._episode.ended(self.open, self.limit)

    # PROXY header

    def is_trusted(self, host: str) -> bool:
        if not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        return any(address in network for network in self.trusted)

    def bad_header(self, peer: str, problem: str) -> None:
        """A trusted address sent no usable PROXY header: most likely a load balancer not
        configured to send one (``send-proxy-v2``), so it is worth a warning — once a
        minute, as every connection through it fails the same way."""
        self.m_refused.inc("proxy_header")
        now = time.monotonic()
        if now - self._last_proxy_warning >= _PROXY_WARNING_EVERY:
            self._last_proxy_warning = now
            log.warning("connection from proxy %s closed: %s", peer, problem)
        else:
            log.debug("connection from proxy %s closed: %s", peer, problem)

    # Hand-over

    def hand_over(
        self, transport: asyncio.Transport, slot: _Slot, source: SourceAddress | None
    ) -> None:
        """Give the connection to picows (through TLS when configured)."""
        protocol = self.make_protocol(source)
        protocol.slot = slot
        if self.tls is None:
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            return
        # What the loop's TLS server does for each connection, done here because the TLS
        # handshake starts only after the PROXY header: the loop's TLS protocol around
        # picows's, with the same handshake timeout as a plain connection's upgrade.
        loop = asyncio.get_running_loop()
        if self._tls_class is None:
            self._tls_class = _tls_protocol_class(loop)
        handshake: asyncio.Future[None] = loop.create_future()
        tls_protocol = self._tls_class(
            loop,
            protocol,
            self.tls,
            handshake,
            server_side=True,
            server_hostname=None,
            ssl_handshake_timeout=self.handshake_timeout,
        )

        def handshake_done(future: asyncio.Future[None]) -> None:
            failed = future.cancelled() or future.exception() is not None
            if failed or protocol.transport is None:
                # The handshake failed or the connection ended during it: picows never saw
                # the connection and will not give its place back.
                slot.release()
                transport.abort()

        handshake.add_done_callback(handshake_done)
        transport.set_protocol(tls_protocol)
        tls_protocol.connection_made(transport)


class _Accepted(asyncio.BufferedProtocol):
    """A connection's first protocol: the cap, then the PROXY header if its peer is a
    trusted load balancer, then the hand-over (see the module docstring)."""

    def __init__(self, port: ChargerPort) -> None:
        self._port = port
        self._transport: asyncio.Transport | None = None
        self._slot: _Slot | None = None
        self._peer = ""
        self._received = b""
        self._chunk = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop's TCPTransport is not a subclass
        port = self._port
        self._slot = port.take_slot()
        if self._slot is None:
            transport.abort()
            return
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
        if not port.is_trusted(self._peer):
            port.hand_over(transport, self._slot, None)
            return
        self._transport = transport
        self._chunk = bytearray(bytes_wanted(b""))
        self._timer = asyncio.get_running_loop().call_later(
            port.handshake_timeout, self._refuse, "no PROXY header in time"
        )

    def get_buffer(self, sizehint: int) -> memoryview:
        # Exactly what the header may still hold: the bytes after it stay in the socket.
        return memoryview(self._chunk)

    def buffer_updated(self, nbytes: int) -> None:
        self._received += self._chunk[:nbytes]
        try:
            wanted = bytes_wanted(self._received)
            source = parse(self._received) if wanted == 0 else None
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if wanted > 0:
            self._chunk = bytearray(wanted)
            return
        transport, slot = self._transport, self._slot
        assert transport is not None and slot is not None
        self._stop_timer()
        self._transport = None  # from now on the connection is the next protocol's
        self._port.hand_over(transport, slot, source)

    def eof_received(self) -> bool:
        # Ended before a byte: the balancer's TCP health check (HAProxy's plain ``check``),
        # not a mistake.
        if self._transport is not None and self._received:
            self._port.bad_header(self._peer, "the connection ended inside the PROXY header")
        self._transport = None
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        # Only while this protocol still owns the connection (refused, or ended during the
        # header); after the hand-over the transport reports to the next protocol.
        self._stop_timer()
        if self._slot is not None:
            self._slot.release()

    def _refuse(self, problem: str) -> None:
        self._stop_timer()  # also when refused before it fired: no timer left pending
        if self._transport is not None:
            self._port.bad_header(self._peer, problem)
            self._transport.abort()
            self._transport = None

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
