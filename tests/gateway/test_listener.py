"""The charger port's accepting side over real sockets: the PROXY protocol header of a trusted
load balancer (v1 and v2, plain and TLS) names the charger's address, for the failed-upgrade
limit too; headers from anyone else, missing or malformed, close the connection; a silent
connection is closed after the handshake timeout, with TLS too; the port's connection cap
closes connections past it at once, logged once per episode and counted."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time

import pytest
import websockets

from evgate.gateway.proxy_header import V2_SIGNATURE
from gateway.helpers import Pki, StartGateway, connect
from support import until

pytestmark = pytest.mark.timeout(60)


def v1(source: str, port: int = 56324) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    destination = "::1" if ":" in source else "127.0.0.1"
    return f"PROXY {family} {source} {destination} {port} 9000\r\n".encode()


def v2(source: str, port: int = 56324) -> bytes:
    address = ipaddress.ip_address(source)
    if address.version == 4:
        family, addresses = 0x11, address.packed + bytes([127, 0, 0, 1])
    else:
        family, addresses = 0x21, address.packed + ipaddress.IPv6Address("::1").packed
    payload = addresses + struct.pack("!HH", port, 9000)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(payload)) + payload


async def sent_first(port: int, data: bytes, local: str = "127.0.0.1") -> socket.socket:
    """A socket connected to the port from ``local`` that has sent ``data`` (a header)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((local, 0))
    await loop.sock_connect(sock, ("127.0.0.1", port))
    if data:
        await loop.sock_sendall(sock, data)
    return sock


async def closed_within(port: int, data: bytes, seconds: float, local: str = "127.0.0.1") -> bytes:
    """Send ``data`` and read until the server closes (or resets: closed with unread bytes);
    what it answered (fails past ``seconds``)."""
    sock = await sent_first(port, data, local)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        async with asyncio.timeout(seconds):
            return await reader.read()
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def refused(g, reason: str) -> float:  # type: ignore[no-untyped-def]
    counter = g.metrics.counter("evgate_charger_port_refused_total", "", ("reason",))
    return float(counter.value(reason))


@pytest.mark.parametrize("header", [v1, v2])
@pytest.mark.parametrize("source", ["192.0.2.7", "2001:db8::7"])
async def test_a_trusted_balancers_header_names_the_charger(
    start_gateway: StartGateway, header, source: str
) -> None:
    """PROXY v1 or v2 from a trusted address, then the upgrade: the charger connects and its
    address is the one the header names."""
    async with start_gateway(proxy_protocol_trusted="127.0.0.1/32") as g:
        sock = await sent_first(g.gateway.port, header(source))
        async with connect(g.url(), sock=sock) as ws:
            assert ws.subprotocol == "ocpp1.6"
            await until(lambda: g.gateway.connection("CP-1") is not None)
            remote = g.gateway.connection("CP-1").remote_address
            assert remote == (f"[{source}]:56324" if ":" in source else f"{source}:56324")


async def test_failed_upgrades_are_counted_per_address_behind_the_balancer(
    start_gateway: StartGateway,
) -> None:
    """Every connection comes from the balancer (127.0.0.1): a charger that failed its budget
    is answered 429, a charger behind the same balancer with another address is not."""
    async with start_gateway(proxy_protocol_trusted="127.0.0.1", failed_upgrades_per_minute=2) as g:
        port = g.gateway.port
        for _ in range(2):
            with pytest.raises(websockets.InvalidStatus) as answer:
                async with connect(
                    g.url(secret="0" * 24), sock=await sent_first(port, v2("192.0.2.7"))
                ):
                    pass
            assert answer.value.response.status_code == 401
        with pytest.raises(websockets.InvalidStatus) as answer:
            async with connect(g.url(), sock=await sent_first(port, v2("192.0.2.7"))):
                pass
        assert answer.value.response.status_code == 429
        async with connect(g.url(), sock=await sent_first(port, v1("192.0.2.8"))) as ws:
            assert ws.subprotocol == "ocpp1.6"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"GET /cp/CP-1?auth=x HTTP/1.1\r\nHost: x\r\n\r\n", "does not start"),
        (b"PROXY TCP4 192.0.2.999 127.0.0.1 1 2\r\n", "not an IP address"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "cut short"),
    ],
)
async def test_a_trusted_address_without_a_usable_header_is_closed(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture, data: bytes, problem: str
) -> None:
    """From a trusted address a header is required: a plain request or a malformed header is
    closed unanswered, counted, and a warning says why."""
    async with start_gateway(proxy_protocol_trusted="127.0.0.1") as g:
        with caplog.at_level(logging.WARNING, "evgate.gateway"):
            assert await closed_within(g.gateway.port, data, 5) == b""
        assert refused(g, "proxy_header") == 1
        assert any(problem in r.getMessage() for r in caplog.records), caplog.text
        assert g.gateway.connection("CP-1") is None


async def test_a_balancers_health_check_is_closed_quietly(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A TCP health check (connect, then close without a byte) is no bad header: nothing
    counted, nothing logged; the port holds nothing after it."""
    async with start_gateway(proxy_protocol_trusted="127.0.0.1") as g:
        with caplog.at_level(logging.DEBUG, "evgate.gateway"):
            sock = await sent_first(g.gateway.port, b"")
            await until(lambda: g.gateway._port.open == 1)
            sock.close()
            await until(lambda: g.gateway._port.open == 0)
        assert refused(g, "proxy_header") == 0
        assert not [r for r in caplog.records if "proxy" in r.getMessage()], caplog.text


async def test_a_header_from_an_untrusted_address_is_not_obeyed(
    start_gateway: StartGateway,
) -> None:
    """Only the configured balancer may name an address: a PROXY header from anyone else is
    read as the start of the HTTP request, which it is not (no upgrade); the same client
    without a header connects as itself."""
    async with start_gateway(proxy_protocol_trusted="127.0.0.2") as g:
        answer = await closed_within(
            g.gateway.port, v1("192.0.2.7") + b"GET /cp/CP-1 HTTP/1.1\r\n\r\n", 5
        )
        assert not answer.startswith(b"HTTP/1.1 101")
        assert g.gateway.connection("CP-1") is None
        async with connect(g.url()):
            await until(lambda: g.gateway.connection("CP-1") is not None)
            assert g.gateway.connection("CP-1").remote_address.startswith("127.0.0.1:")


async def test_proxy_header_then_tls(start_gateway: StartGateway, pki: Pki) -> None:
    """With TLS, the header comes before the ClientHello: TLS starts after it, and the
    charger connects over wss with the header's address."""
    async with start_gateway(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        proxy_protocol_trusted="127.0.0.2/32",
    ) as g:
        url = g.url().replace("ws://", "wss://")
        sock = await sent_first(g.gateway.port, v2("198.51.100.4", 4444), local="127.0.0.2")
        async with connect(url, sock=sock, ssl=pki.client_context()) as ws:
            assert ws.subprotocol == "ocpp1.6"
            await until(lambda: g.gateway.connection("CP-1") is not None)
            info = g.gateway.connection("CP-1")
            assert (info.remote_address, info.security_profile) == ("198.51.100.4:4444", 2)
        # A client that is not the balancer gets TLS at once.
        async with connect(url, ssl=pki.client_context(), local_addr=("127.0.0.1", 0)) as ws:
            pass
        # A failed handshake (not TLS at all, after a good header) ends like any connection:
        # nothing is left counted against the cap.
        header = v1("198.51.100.5")
        assert (
            await closed_within(g.gateway.port, header + b"GET / HTTP/1.1\r\n\r\n", 5, "127.0.0.2")
            == b""
        )
        await until(lambda: g.gateway._port.open == 0)
    async with (
        start_gateway(
            tls_cert=str(pki.server_cert),
            tls_key=str(pki.server_key),
            proxy_protocol_trusted="10.0.0.1",
        ) as g,
        connect(g.url().replace("ws://", "wss://"), ssl=pki.client_context()) as ws,
    ):
        assert ws.subprotocol == "ocpp1.6"


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
async def test_a_silent_connection_is_closed_after_the_handshake_timeout_with_tls_too(
    start_gateway: StartGateway, pki: Pki, trusted: str
) -> None:
    """A TCP connection that never sends a ClientHello (nor a PROXY header) is closed in
    about 5 s, as one that never sends its upgrade request is — not 60 s."""
    async with start_gateway(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), proxy_protocol_trusted=trusted
    ) as g:
        started = time.monotonic()
        assert await closed_within(g.gateway.port, b"", 20) == b""
        assert 4.0 < time.monotonic() - started < 15.0
        await until(lambda: g.gateway._port.open == 0)


async def test_the_connection_cap_closes_new_connections_at_once(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """At max_charger_connections (3 here: two chargers and one connection still in its
    handshake) a new connection is closed at once, counted, and logged once for the whole
    episode; when connections end the port accepts again (logged once) and a charger
    connects."""
    caplog.set_level(logging.INFO, "evgate.gateway")
    async with start_gateway(max_charger_connections=3) as g:
        port = g.gateway.port
        async with connect(g.url("CP-1")), connect(g.url("CP-2")):
            idle = await sent_first(port, b"")
            await until(lambda: g.gateway._port.open == 3)
            for _ in range(5):
                assert await closed_within(port, b"GET / HTTP/1.1\r\n\r\n", 2) == b""
            assert refused(g, "cap") == 5
            full = [r for r in caplog.records if "charger port full" in r.getMessage()]
            assert len(full) == 1
            assert g.metrics.gauge("evgate_charger_port_connections", "").value() == 3
            idle.close()
        await until(lambda: g.gateway._port.open == 0)
        again = [r for r in caplog.records if "accepts connections again" in r.getMessage()]
        assert len(again) == 1
        async with connect(g.url("CP-1")) as ws:
            assert ws.subprotocol == "ocpp1.6"
