"""Helpers of the gateway tests: real clients (websockets, the ocpp library, picows), test
certificates, and handles on a running evgate or a standalone gateway."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from picows import WSFrame, WSListener, WSMsgType, WSTransport

from evgate.credentials import digest
from evgate.gateway.server import Gateway
from evgate.metrics import Registry
from evgate.storage.chargers import ChargerCredentials
from support import Running

OCPP = ["ocpp1.6"]
SECRET = "123456789012345678901234"
TOKEN = "gateway-tests-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


StartEvgate = Callable[..., AbstractAsyncContextManager[Running]]


def connect(url: str, **kw: Any) -> Any:
    """A websockets client offering ocpp1.6 (override with ``subprotocols=``)."""
    kw.setdefault("subprotocols", OCPP)
    kw.setdefault("open_timeout", 5)
    return websockets.connect(url, proxy=None, compression=None, **kw)


async def close_code_of(ws: Any, within: float = 5.0) -> int | None:
    """Read until the server closes the connection; the close code it sent."""
    async with asyncio.timeout(within):
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code


class RecordingListener(WSListener):
    """A picows client listener that records text messages and the close it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()
        self.close_code: int | None = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.messages.put_nowait(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value
            transport.send_close(frame.get_close_code())
            transport.disconnect()


PicowsClient = Callable[..., Awaitable[tuple[WSTransport, RecordingListener]]]


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client: dict[str, tuple[Path, Path]]  # CN → (cert, key)
    stranger: tuple[Path, Path]  # a client certificate from another CA

    def client_context(self, cn: str | None = None, stranger: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if stranger:
            context.load_cert_chain(*map(str, self.stranger))
        elif cn is not None:
            context.load_cert_chain(*map(str, self.client[cn]))
        return context


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Standalone:
    """A Gateway serving on loopback with in-memory credentials (``chargers``: id → them)."""

    gateway: Gateway
    chargers: dict[str, ChargerCredentials]
    metrics: Registry

    def url(self, charger_id: str = "CP-1", secret: str = SECRET) -> str:
        return f"ws://127.0.0.1:{self.gateway.port}/cp/{charger_id}?auth={secret}"

    def set(self, charger_id: str, secret: str = SECRET, **kw: Any) -> None:
        """Create or change a charger, as a NOTIFY from the database would announce it."""
        self.chargers[charger_id] = ChargerCredentials(
            charger_id, digest(secret), kw.get("security_profile", 1), kw.get("lenient", False)
        )
        self.gateway.credentials_changed(charger_id)


StartGateway = Callable[..., AbstractAsyncContextManager[Standalone]]


def make_pki(folder: Path) -> Pki:
    """A test CA, a server certificate for 127.0.0.1, client certificates for CP-3 and
    CP-OTHER, and one client certificate from an unrelated CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("evgate test CA", _name("evgate test CA"), ca_key, ca_key, ca=True)
    ca_path, _ = _write(folder, "ca", ca_cert, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _write(
        folder,
        "server",
        _issue("127.0.0.1", ca_cert.subject, ca_key, server_key, server=True),
        server_key,
    )
    clients = {}
    for cn in ("CP-3", "CP-OTHER"):
        key = ec.generate_private_key(ec.SECP256R1())
        clients[cn] = _write(folder, cn, _issue(cn, ca_cert.subject, ca_key, key), key)
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _write(
        folder,
        "stranger",
        _issue("CP-3", _name("other CA"), other_ca_key, stranger_key),
        stranger_key,
    )
    return Pki(ca_path, *server, clients, stranger)


# A raw WebSocket client, for frames no client library will send (unmasked, RSV1, bad CLOSE).


@dataclass
class RawClient:
    """One upgraded connection on plain asyncio streams; ``send`` writes any frame bytes."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self, within: float = 5.0) -> tuple[int, bytes]:
        """The next frame from the server (unmasked, unfragmented): (opcode, payload); (-1, b"")
        once the server has closed the socket."""
        async with asyncio.timeout(within):
            try:
                head = await self.reader.readexactly(2)
                length = head[1] & 0x7F
                if length == 126:
                    length = int.from_bytes(await self.reader.readexactly(2), "big")
                elif length == 127:
                    length = int.from_bytes(await self.reader.readexactly(8), "big")
                return head[0] & 0x0F, await self.reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                return -1, b""

    async def close_code(self, within: float = 5.0) -> int | None:
        """Read frames until the server's CLOSE; its code (None if the socket just closed)."""
        async with asyncio.timeout(within):
            while True:
                opcode, payload = await self.read_frame(within)
                if opcode == 0x8:
                    return int.from_bytes(payload[:2], "big")
                if opcode == -1:
                    return None


def ws_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False, mask: bool = True
) -> bytes:
    """The bytes of one client frame (RFC 6455 5.2), masked unless told otherwise."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + size.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@contextlib.asynccontextmanager
async def raw_connect(url: str) -> AsyncIterator[RawClient]:
    """Upgrade a plain TCP connection to ``url`` (ws://, ocpp1.6 offered), raw from then on."""
    address, _, target = url.removeprefix("ws://").partition("/")
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"GET /{target} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n".encode()
        )
        async with asyncio.timeout(5):
            response = await reader.readuntil(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101"), response
        yield RawClient(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
