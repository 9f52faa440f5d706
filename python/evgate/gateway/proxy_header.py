"""gateway room (pure part): the PROXY protocol header a TCP load balancer puts before a
connection's first byte (HAProxy's ``send-proxy`` / ``send-proxy-v2``), versions 1 and 2.

Sans-I/O, no asyncio: the listener asks :func:`bytes_wanted` how many bytes to read next —
never more than the header still holds, so the bytes after it (a TLS ClientHello, an HTTP
upgrade request) stay in the socket for whoever reads the connection next — and, once it
answers 0, gives the header to :func:`parse`. Both raise :class:`ProxyHeaderError` on
anything that is not a header of either version. Specification:
https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

__all__ = ["MAX_HEADER", "ProxyHeaderError", "SourceAddress", "bytes_wanted", "parse"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
_V1_MIN = len(b"PROXY UNKNOWN\r\n")  # the shortest header of either version (v2: 16 bytes)
_V1_MAX = 107  # the specification's bound on a v1 line, CRLF included
_V2_FIXED = 16  # signature, version/command, family/transport, length
# v2 addresses take at most 216 bytes; TLVs (ALPN, authority, TLS details) come after them.
# More than this is no load balancer's header.
_V2_MAX_PAYLOAD = 2048
MAX_HEADER = _V2_FIXED + _V2_MAX_PAYLOAD


class ProxyHeaderError(ValueError):
    """The connection does not start with a PROXY protocol header we can use."""


class SourceAddress(NamedTuple):
    """The client's address as the load balancer saw it."""

    host: str
    port: int


def bytes_wanted(received: bytes) -> int:
    """How many bytes to read next, given the ``received`` start of the connection; 0 when
    ``received`` is a whole header. Never more than the header can still hold.

    Raises:
        ProxyHeaderError: ``received`` cannot be the start of a header.
    """
    n = len(received)
    if received[:1] == V2_SIGNATURE[:1]:
        if received[:12] != V2_SIGNATURE[: min(n, 12)]:
            raise ProxyHeaderError("not a PROXY protocol v2 signature")
        if n < _V2_FIXED:
            return _V2_FIXED - n
        length = int.from_bytes(received[14:16], "big")
        if length > _V2_MAX_PAYLOAD:
            raise ProxyHeaderError(f"PROXY v2 header of {length} bytes is too long")
        if n > _V2_FIXED + length:
            raise ProxyHeaderError("read past the PROXY v2 header")
        return _V2_FIXED + length - n
    if received[:6] != _V1_PREFIX[: min(n, 6)]:
        raise ProxyHeaderError("the connection does not start with a PROXY header")
    if n < _V1_MIN:
        # Every header of either version is at least this long: no risk of reading past it.
        return _V1_MIN - n
    end = received.find(b"\r\n")
    if end != -1:
        if end + 2 != n:
            raise ProxyHeaderError("read past the PROXY v1 line")
        return 0
    if n >= _V1_MAX:
        raise ProxyHeaderError("PROXY v1 line longer than 107 bytes")
    # The line ends with CR LF: after a CR, one byte may end it; otherwise at least two.
    return 1 if received.endswith(b"\r") else min(2, _V1_MAX - n)


def parse(header: bytes) -> SourceAddress | None:
    """The client address a whole header (``bytes_wanted(header) == 0``) names, or None
    when it names none: a v1 ``UNKNOWN``, a v2 ``LOCAL`` (the balancer's own health check),
    or a v2 family other than TCP over IPv4/IPv6. Then the connection's own address stands.

    Raises:
        ProxyHeaderError: a malformed header.
    """
    if header.startswith(V2_SIGNATURE):
        return _parse_v2(header)
    return _parse_v1(header)


def _parse_v1(header: bytes) -> SourceAddress | None:
    if not header.startswith(_V1_PREFIX) or not header.endswith(b"\r\n"):
        raise ProxyHeaderError("not a PROXY v1 line")
    try:
        line = header[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    words = line.split(" ")
    if words[1] == "UNKNOWN":
        return None  # the rest of the line is to be ignored
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY v1 line is not 'PROXY TCP4|TCP6 src dst sport dport'")
    _, family, source, destination, source_port, destination_port = words
    version = 4 if family == "TCP4" else 6
    _address(source, version)
    _address(destination, version)
    _port(destination_port)
    return SourceAddress(_address(source, version), _port(source_port))


def _address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 address {text!r} is not an IP address") from None
    if address.version != version or "%" in text:
        raise ProxyHeaderError(f"PROXY v1 address {text!r} is not an IPv{version} address")
    return _host(address)


def _host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The address as text; an IPv4 client seen through IPv6 (``::ffff:a.b.c.d``) as IPv4,
    so that it has one key in the failed-upgrade limit whichever way it came."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _port(text: str) -> int:
    if not (text.isdigit() and text.isascii() and len(text) <= 5) or int(text) > 65535:
        raise ProxyHeaderError(f"PROXY v1 port {text!r} is not 0-65535")
    if len(text) > 1 and text[0] == "0":
        raise ProxyHeaderError(f"PROXY v1 port {text!r} has a leading zero")
    return int(text)


_V2_INET = 0x11  # AF_INET, STREAM
_V2_INET6 = 0x21  # AF_INET6, STREAM
_V2_ADDRESS_BYTES = {_V2_INET: 12, _V2_INET6: 36}


def _parse_v2(header: bytes) -> SourceAddress | None:
    if len(header) < _V2_FIXED or len(header) != _V2_FIXED + int.from_bytes(header[14:16], "big"):
        raise ProxyHeaderError("PROXY v2 header length does not match its length field")
    version, command = header[12] >> 4, header[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY protocol version {version} is not 2")
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2 command {command} is neither LOCAL nor PROXY")
    family = header[13]
    if family >> 4 > 3 or family & 0x0F > 2:
        raise ProxyHeaderError(f"PROXY v2 family/transport 0x{family:02x} is undefined")
    payload = header[_V2_FIXED:]
    needed = _V2_ADDRESS_BYTES.get(family)
    if needed is not None and len(payload) < needed:
        raise ProxyHeaderError("PROXY v2 addresses are cut short")
    if command == 0 or needed is None:
        # LOCAL: the balancer speaks for itself. UNSPEC, UNIX or DGRAM: no TCP client
        # address to use; the specification says to use the connection's own then.
        return None
    if family == _V2_INET:
        host = str(ipaddress.IPv4Address(payload[0:4]))
        port = int.from_bytes(payload[8:10], "big")
    else:
        host = _host(ipaddress.IPv6Address(payload[0:16]))
        port = int.from_bytes(payload[32:34], "big")
    return SourceAddress(host, port)
