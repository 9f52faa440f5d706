"""The PROXY protocol header parser (pure): v1 and v2 headers read exactly to their end and
give the client's address; anything else is refused."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evgate.gateway.proxy_header import (
    MAX_HEADER,
    V2_SIGNATURE,
    ProxyHeaderError,
    SourceAddress,
    bytes_wanted,
    parse,
)


def v2(command: int = 1, family: int = 0x11, payload: bytes = b"", version: int = 2) -> bytes:
    return (
        V2_SIGNATURE
        + bytes([version << 4 | command, family])
        + struct.pack("!H", len(payload))
        + payload
    )


def v2_inet(source: str, port: int, tlvs: bytes = b"") -> bytes:
    addresses = ipaddress.IPv4Address(source).packed + bytes([10, 0, 0, 1])
    return v2(payload=addresses + struct.pack("!HH", port, 9000) + tlvs)


def v2_inet6(source: str, port: int) -> bytes:
    addresses = ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address("::1").packed
    return v2(family=0x21, payload=addresses + struct.pack("!HH", port, 9000))


def read_like_a_socket(stream: bytes) -> tuple[bytes, bytes]:
    """Read as the listener does, asking bytes_wanted each time: (header, what is left)."""
    received = b""
    while (wanted := bytes_wanted(received)) > 0:
        chunk = stream[len(received) : len(received) + wanted]
        assert chunk, "the stream ended inside the header"
        received += chunk
    return received, stream[len(received) :]


REST = b"\x16\x03\x01\x02\x00GET /cp/CP-1 HTTP/1.1\r\n"  # whatever follows: TLS or HTTP


@pytest.mark.parametrize(
    ("header", "address"),
    [
        (b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 9000\r\n", SourceAddress("192.0.2.7", 56324)),
        (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", ("255.255.255.255", 65535)),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n", ("2001:db8::7", 4000)),
        (b"PROXY TCP6 ::ffff:192.0.2.7 ::1 0 443\r\n", ("192.0.2.7", 0)),  # IPv4 via IPv6
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN whatever follows is ignored\r\n", None),
        (v2_inet("192.0.2.7", 56324), ("192.0.2.7", 56324)),
        (v2_inet("192.0.2.7", 1, tlvs=b"\x01\x00\x02h2" + b"\x04" * 300), ("192.0.2.7", 1)),
        (v2_inet6("2001:db8::7", 4000), ("2001:db8::7", 4000)),
        (v2_inet6("::ffff:192.0.2.7", 4000), ("192.0.2.7", 4000)),
        (v2(command=0, family=0x00), None),  # LOCAL: the balancer's own health check
        (v2(command=0, family=0x11, payload=bytes(12)), None),  # LOCAL with addresses
        (v2(family=0x00), None),  # UNSPEC
        (v2(family=0x31, payload=bytes(216)), None),  # UNIX
        (v2(family=0x12, payload=bytes(12)), None),  # UDP
    ],
)
def test_a_header_is_read_exactly_to_its_end_and_names_the_client(header, address) -> None:
    """Read byte-exact (the TLS ClientHello or HTTP request after it stays unread)."""
    got, rest = read_like_a_socket(header + REST)
    assert (got, rest) == (header, REST)
    assert parse(got) == address


@pytest.mark.parametrize(
    "stream",
    [
        b"GET /cp/CP-1 HTTP/1.1\r\nHost: x\r\n\r\n",  # no header from a trusted balancer
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(20),  # a bare ClientHello
        b"PROXY",  # cut short: wants more, never decides wrongly
        b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2" + b" " * 100 + b"\r\n",  # longer than 107 bytes
        b"PROXY " + b"A" * 200,
        b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + bytes(12),  # bad signature
        v2(payload=bytes(MAX_HEADER)),  # too long
    ],
)
def test_anything_but_a_header_is_refused(stream) -> None:
    with pytest.raises(ProxyHeaderError):
        header, _ = read_like_a_socket(stream + b"\x00" * 4096)
        parse(header)


def test_a_cut_short_start_wants_more() -> None:
    assert bytes_wanted(b"") == 15  # the shortest header of either version
    assert bytes_wanted(b"PRO") == 12
    assert bytes_wanted(V2_SIGNATURE[:3]) == 13
    assert bytes_wanted(V2_SIGNATURE + b"\x21\x11") == 2
    assert bytes_wanted(V2_SIGNATURE + b"\x21\x11\x00\x0c") == 12
    assert bytes_wanted(b"PROXY TCP4 1.2.3") == 2
    assert bytes_wanted(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r") == 1


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # a field missing
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",  # one too many
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",  # two spaces
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",  # family and address disagree
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",  # leading zero: ambiguous (octal?)
        b"PROXY TCP4 example.org 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",  # a zone names no client
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n",  # a non-ASCII digit
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r\n",
        b"PROXY \r\n",
        v2(version=1),
        v2(command=2),
        v2(family=0x41),
        v2(family=0x13),
        v2(family=0x11, payload=bytes(11)),  # IPv4 addresses cut short
        v2(family=0x21, payload=bytes(35)),
        v2_inet("1.2.3.4", 5)[:-1],  # shorter than its length field
    ],
)
def test_a_malformed_header_is_refused(header) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(header)


def test_reading_past_the_header_is_refused() -> None:
    with pytest.raises(ProxyHeaderError):
        bytes_wanted(b"PROXY UNKNOWN\r\nGET")
    with pytest.raises(ProxyHeaderError):
        bytes_wanted(v2_inet("1.2.3.4", 5) + b"G")


@given(st.binary(max_size=300))
def test_any_bytes_are_read_at_most_to_a_header_end_and_never_crash(stream: bytes) -> None:
    """Whatever a client sends: bounded reads, and only ProxyHeaderError."""
    received = b""
    try:
        while (wanted := bytes_wanted(received)) > 0:
            assert wanted <= MAX_HEADER - len(received)
            chunk = stream[len(received) : len(received) + wanted]
            if not chunk:
                return
            received += chunk
        parse(received)
    except ProxyHeaderError:
        pass


@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(0, 65535),
    st.booleans(),
)
def test_every_address_round_trips(address, port: int, version_two: bool) -> None:
    if version_two:
        header = (
            v2_inet(str(address), port) if address.version == 4 else v2_inet6(str(address), port)
        )
    else:
        family = "TCP4" if address.version == 4 else "TCP6"
        other = "10.0.0.1" if address.version == 4 else "::1"
        header = f"PROXY {family} {address} {other} {port} 9000\r\n".encode()
    got, rest = read_like_a_socket(header + REST)
    assert rest == REST
    plain = getattr(address, "ipv4_mapped", None) or address
    assert parse(got) == SourceAddress(str(plain), port)
