"""The webhook sink's HTTP/1.1 client (events/http.py) against real servers on loopback: plain
asyncio servers that answer each request with the bytes a test gives, so that every framing an
HTTP/1.1 receiver may use (and the ways a connection ends) is on the wire as written."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from evgate.events import http
from evgate.events.http import Client, ConnectFailed, Disconnected, MalformedAnswer, _parse
from gateway.helpers import make_pki
from support import until

BODY = b'{"notification":"test"}'
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nServer: test\r\n\r\n"


@dataclass
class Step:
    """What the server does with one request: write ``data`` (after ``delay`` seconds), then
    close the connection if ``close``; ``hold``: never answer."""

    data: bytes = NO_CONTENT
    close: bool = False
    delay: float = 0.0
    hold: bool = False
    # An answer in two writes: ``then`` after ``then_delay`` seconds.
    then: bytes = b""
    then_delay: float = 0.0
    # After the first write, wait for the client to close the connection (counted in closed).
    await_close: bool = False


@dataclass
class Request:
    head: bytes
    body: bytes
    connection: int

    @property
    def headers(self) -> dict[str, str]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return {n.strip().lower(): v.strip() for n, _, v in (h.partition(":") for h in lines)}


@dataclass
class Server:
    """Answers request ``i`` (counted over every connection) with ``steps(i)``."""

    steps: Callable[[int], Step] = lambda _: Step()
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    closed: int = 0  # connections the client closed (EOF while waiting for a request)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, host: str = "127.0.0.1", context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, host, 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        connection = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed += 1
                    return
                request = Request(head, b"", connection)
                request.body = await reader.readexactly(int(request.headers["content-length"]))
                self.requests.append(request)
                step = self.steps(len(self.requests) - 1)
                if step.hold:
                    await asyncio.Event().wait()
                if step.delay:
                    await asyncio.sleep(step.delay)
                writer.write(step.data)
                await writer.drain()
                if step.await_close:
                    while await reader.read(65536):
                        pass
                    self.closed += 1
                    return
                if step.then:
                    await asyncio.sleep(step.then_delay)
                    writer.write(step.then)
                    await writer.drain()
                if step.close:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    await s.start()
    yield s
    await s.stop()


@contextlib.asynccontextmanager
async def client(
    url: str,
    *,
    within: float = 5.0,
    max_connections: int = 4,
    context: ssl.SSLContext | None = None,
    **kw: object,
) -> AsyncIterator[Client]:
    c = Client(
        url,
        timeout=within,
        max_connections=max_connections,
        ssl_context=context or ssl.create_default_context(),
        headers={"content-type": "application/json", "user-agent": "evgate/test"},
        max_body=200,
        **kw,  # type: ignore[arg-type]
    )
    try:
        yield c
    finally:
        await c.close()


def url(server: Server, path: str = "/hook?a=1&b=%20x") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def test_sequential_requests_share_one_kept_alive_connection(server: Server) -> None:
    """The request as written: the URL's path and query, Host, the client's headers, the
    request's own, the body; three requests, one connection."""
    async with client(url(server)) as c:
        for i in range(3):
            response = await c.post(BODY, {"webhook-id": f"evt_{i}"})
            assert (response.status, response.body) == (204, b"")
            assert response.headers["server"] == "test"
    assert server.connections == 1
    first = server.requests[0]
    assert first.head.startswith(b"POST /hook?a=1&b=%20x HTTP/1.1\r\n")
    assert first.headers["host"] == f"127.0.0.1:{server.port}"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["user-agent"] == "evgate/test"
    assert first.headers["content-length"] == str(len(BODY))
    assert [r.headers["webhook-id"] for r in server.requests] == ["evt_0", "evt_1", "evt_2"]
    assert all(r.body == BODY for r in server.requests)


@pytest.mark.parametrize(
    ("answer", "status", "body", "connections"),
    [
        # Content-Length: read, the connection kept.
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nnope!", 400, b"nope!", 1),
        # Connection: close: the next request connects again.
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 200, b"", 2),
        # HTTP/1.0: read, its connection not kept.
        (b"HTTP/1.0 202 Accepted\r\nContent-Length: 2\r\n\r\nok", 202, b"ok", 2),
        # Interim 1xx answers skipped (their headers are not the answer's).
        (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            201,
            b"",
            1,
        ),
    ],
    ids=["content-length", "connection-close", "http-1.0", "interim-1xx"],
)
async def test_an_answer_is_read_and_its_connection_kept_or_not(
    server: Server, answer: bytes, status: int, body: bytes, connections: int
) -> None:
    server.steps = lambda _: Step(answer)
    async with client(url(server)) as c:
        for _ in range(2):
            response = await c.post(BODY, {})
            assert (response.status, response.body) == (status, body)
            assert "link" not in response.headers
    assert server.connections == connections


async def test_a_chunked_answer_is_read_and_the_connection_kept(server: Server) -> None:
    """Chunk extensions and trailers are allowed; an answer in two writes is waited for."""
    server.steps = lambda _: Step(
        b"HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\nsome\r\n",
        then=b"6\r\n thing\r\n0\r\nx-trailer: t\r\n\r\n",
        then_delay=0.05,
    )
    async with client(url(server)) as c:
        for _ in range(2):
            response = await c.post(BODY, {})
            assert (response.status, response.body) == (500, b"some thing")
    assert server.connections == 1


async def test_an_answer_without_length_is_read_until_the_close(server: Server) -> None:
    server.steps = lambda _: Step(
        b"HTTP/1.1 502 Bad Gateway\r\n\r\npart one, ", then=b"part two", then_delay=0.05, close=True
    )
    async with client(url(server)) as c:
        for _ in range(2):
            response = await c.post(BODY, {})
            assert (response.status, response.body) == (502, b"part one, part two")
    assert server.connections == 2


async def test_a_long_body_on_its_way_is_cut_and_its_connection_closed(server: Server) -> None:
    """The first ``max_body`` bytes are the answer's; the rest is not waited for."""
    server.steps = lambda _: Step(
        b"HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n" + b"x" * 300, await_close=True
    )
    async with client(url(server)) as c:
        response = await c.post(BODY, {})
        assert (response.status, response.body) == (500, b"x" * 200)
        assert not c._idle  # closed, not kept for the next request
        await until(lambda: server.closed == 1)


async def test_a_long_body_that_arrived_whole_keeps_its_connection(server: Server) -> None:
    server.steps = lambda _: Step(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
    async with client(url(server)) as c:
        for _ in range(2):
            response = await c.post(BODY, {})
            assert (response.status, response.body) == (200, b"x" * 200)
    assert server.connections == 1


async def test_a_request_without_an_answer_times_out(server: Server) -> None:
    server.steps = lambda _: Step(hold=True)
    async with client(url(server), within=0.3) as c:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await c.post(BODY, {})
        assert 0.3 <= time.monotonic() - started < 2
        assert not c._idle


async def test_a_refused_connection_is_connect_failed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once closed
    async with client(f"http://127.0.0.1:{port}/") as c:
        with pytest.raises(
            ConnectFailed, match=f"127.0.0.1:{port}: \\[Errno {errno.ECONNREFUSED}\\]"
        ):
            await c.post(BODY, {})


async def test_a_socket_factory_that_refuses_the_address_is_connect_failed(server: Server) -> None:
    def refuse(addr_info: tuple[object, ...]) -> socket.socket:
        raise OSError(13, "refused: a private address")

    async with client(url(server), socket_factory=refuse) as c:
        with pytest.raises(ConnectFailed, match="refused: a private address"):
            await c.post(BODY, {})
    assert server.connections == 0


async def test_a_kept_alive_connection_closed_before_answering_is_retried_once(
    server: Server,
) -> None:
    """The keep-alive race: the receiver closed the connection as the request went out; the
    request is sent again on a new connection."""
    server.steps = lambda i: Step(b"", close=True) if i == 1 else Step()
    async with client(url(server)) as c:
        assert (await c.post(BODY, {"webhook-id": "evt_1"})).status == 204
        assert (await c.post(BODY, {"webhook-id": "evt_2"})).status == 204
    assert [(r.headers["webhook-id"], r.connection) for r in server.requests] == [
        ("evt_1", 1),
        ("evt_2", 1),
        ("evt_2", 2),
    ]


async def test_a_connection_closed_while_idle_is_not_used_again(server: Server) -> None:
    server.steps = lambda _: Step(NO_CONTENT, close=True)  # closed, without saying so
    async with client(url(server)) as c:
        assert (await c.post(BODY, {})).status == 204
        await until(lambda: not c._idle[0].open)
        assert (await c.post(BODY, {})).status == 204
    assert [r.connection for r in server.requests] == [1, 2]


async def test_a_connection_idle_past_the_keep_alive_is_not_used_again(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection unused for longer than the keep-alive (15 s, aiohttp's) is closed when
    next looked at, not reused: the receiver may close it at any moment by then."""
    monkeypatch.setattr(http, "_KEEPALIVE", 0.1)
    server.steps = lambda _: Step(NO_CONTENT)
    async with client(url(server)) as c:
        assert (await c.post(BODY, {})).status == 204
        assert (await c.post(BODY, {})).status == 204  # within the keep-alive: the same one
        idle = c._idle[0]
        await asyncio.sleep(0.2)
        assert (await c.post(BODY, {})).status == 204
        assert not idle.open
    assert [r.connection for r in server.requests] == [1, 1, 2]


async def test_bytes_after_an_answer_end_its_connection(server: Server) -> None:
    """A receiver that sends more than its answer is out of step: its connection is not used
    for the next request."""
    server.steps = lambda i: (
        Step(then=b"HTTP/1.1 200 OK\r\n\r\n", then_delay=0.05) if i == 0 else Step()
    )
    async with client(url(server)) as c:
        assert (await c.post(BODY, {})).status == 204
        await until(lambda: not c._idle[0].open)
        assert (await c.post(BODY, {})).status == 204
    assert [r.connection for r in server.requests] == [1, 2]


async def test_a_new_connection_closed_before_answering_is_not_retried(server: Server) -> None:
    server.steps = lambda _: Step(b"", close=True)
    async with client(url(server)) as c:
        with pytest.raises(Disconnected, match="before its answer"):
            await c.post(BODY, {})
    assert len(server.requests) == 1


async def test_a_connection_closed_within_the_answer_is_not_retried(server: Server) -> None:
    """Part of an answer came: the request was processed, and is not sent again."""
    server.steps = lambda i: (
        Step(b"HTTP/1.1 200 OK\r\nContent-Le", close=True) if i == 1 else Step()
    )
    async with client(url(server)) as c:
        await c.post(BODY, {})
        with pytest.raises(Disconnected, match="within its answer"):
            await c.post(BODY, {})
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP 220 hello\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_a_malformed_answer_is_refused(server: Server, answer: bytes) -> None:
    server.steps = lambda _: Step(answer)
    async with client(url(server)) as c:
        with pytest.raises(MalformedAnswer):
            await c.post(BODY, {})
        assert not c._idle


async def test_requests_in_flight_never_share_a_connection(server: Server) -> None:
    """At most ``max_connections`` connections, one per request in flight."""
    server.steps = lambda _: Step(delay=0.1)
    async with client(url(server), max_connections=2) as c:
        answers = await asyncio.gather(*(c.post(BODY, {}) for _ in range(6)))
    assert [a.status for a in answers] == [204] * 6
    assert server.connections == 2
    by_connection = [r.connection for r in server.requests]
    assert sorted(by_connection) == [1, 1, 1, 2, 2, 2]


async def test_userinfo_is_sent_as_basic_credentials(server: Server) -> None:
    """As aiohttp sent a URL's userinfo: percent-decoded, latin-1, Basic."""
    async with client(f"http://us%40er:p%C3%A4ss@127.0.0.1:{server.port}/") as c:
        await c.post(BODY, {})
    credentials = base64.b64encode("us@er:päss".encode("latin-1")).decode()
    (request,) = server.requests
    assert request.headers["authorization"] == f"Basic {credentials}"
    assert request.head.startswith(b"POST / HTTP/1.1\r\n")


async def test_a_header_value_with_a_line_break_is_refused(server: Server) -> None:
    async with client(url(server)) as c:
        with pytest.raises(ValueError, match="line break"):
            await c.post(BODY, {"x-evil": "a\r\nx-injected: 1"})
    assert server.requests == []


async def test_https_checks_the_certificate_and_the_hostname(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)  # a test CA and a server certificate for 127.0.0.1
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(pki.server_cert, pki.server_key)
    tls = Server()
    await tls.start(context=served)
    trusting = ssl.create_default_context(cafile=str(pki.ca))
    try:
        async with client(f"https://127.0.0.1:{tls.port}/hook", context=trusting) as c:
            for _ in range(2):
                assert (await c.post(BODY, {})).status == 204
        assert tls.connections == 1
        async with client(f"https://localhost:{tls.port}/hook", context=trusting) as c:
            with pytest.raises(ConnectFailed, match=r"(?i)certificate verify failed"):
                await c.post(BODY, {})  # the certificate names 127.0.0.1 only
        async with client(f"https://127.0.0.1:{tls.port}/hook") as c:
            with pytest.raises(ConnectFailed, match=r"(?i)certificate verify failed"):
                await c.post(BODY, {})  # not a root the default context trusts
    finally:
        await tls.stop()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_an_ipv6_literal_host() -> None:
    v6 = Server()
    await v6.start(host="::1")
    try:
        async with client(f"http://[::1]:{v6.port}/hook") as c:
            assert (await c.post(BODY, {})).status == 204
        assert v6.requests[0].headers["host"] == f"[::1]:{v6.port}"
    finally:
        await v6.stop()


async def test_a_named_host_and_the_default_port_in_host() -> None:
    """A name is resolved; a default port is left out of Host, as browsers and aiohttp do."""
    c = Client(
        "http://localhost/a",
        timeout=1,
        max_connections=1,
        ssl_context=ssl.create_default_context(),
        headers={},
        max_body=200,
    )
    assert c.target.head.startswith(b"POST /a HTTP/1.1\r\nHost: localhost\r\n")
    await c.close()


async def test_a_fully_qualified_names_final_dot_is_not_in_the_tls_server_name() -> None:
    c = Client(
        "https://receiver.example.com.:8443/a",
        timeout=1,
        max_connections=1,
        ssl_context=ssl.create_default_context(),
        headers={},
        max_body=200,
    )
    assert c.target.server_name == "receiver.example.com"
    assert c.target.head.startswith(b"POST /a HTTP/1.1\r\nHost: receiver.example.com.:8443\r\n")
    await c.close()


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello"),
        (
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\nsome\r\n6\r\n thing\r\n0\r\nx-trailer: t\r\n\r\n",
            500,
            b"some thing",
        ),
        (
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            400,
            b"abc",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nA: b\r\n\r\n", 204, b""),
    ],
)
def test_an_answer_is_whole_only_at_its_last_byte(answer: bytes, status: int, body: bytes) -> None:
    """Every prefix of a kept-alive answer is incomplete; the whole of it is read and leaves
    its connection reusable (sans I/O: the parser on each prefix)."""
    for end in range(len(answer)):
        assert _parse(bytearray(answer[:end]), 200, eof=False) is None, answer[:end]
    parsed = _parse(bytearray(answer), 200, eof=False)
    assert parsed is not None
    assert (parsed.response.status, parsed.response.body, parsed.reusable) == (status, body, True)
    extra = _parse(bytearray(answer + b"HTTP/1.1"), 200, eof=False)
    assert extra is not None and not extra.reusable  # bytes past the answer: out of step


@pytest.mark.parametrize(
    "tail",
    [
        b"1;" + b"x" * 1_000_000,  # a chunk-size line that never ends (its extension)
        b"0\r\nx-trailer: " + b"x" * 1_000_000,  # a trailer section that never ends
        b"1;" + b"e" * 60_000 + b"\r\nx\r\n",  # chunks of one byte, each a 60 KB extension
    ],
)
def test_a_chunked_answer_whose_framing_never_ends_is_refused_before_it_fills_memory(
    tail: bytes,
) -> None:
    """Only a body is cut at ``max_body``: the chunked framing around it (size lines, their
    extensions, trailers) is bounded too, or a receiver holds the client's buffer growing for
    as long as the timeout lets it (sans I/O: the parser on a megabyte of framing)."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = head + tail * (1 if len(tail) > 100_000 else 20)
    with pytest.raises(MalformedAnswer):
        _parse(bytearray(answer), 200, eof=False)


async def test_an_endless_chunk_extension_fails_the_request_without_waiting_for_the_timeout(
    server: Server,
) -> None:
    """A receiver that streams a chunk-size line without end: the request fails as a malformed
    answer once the line is longer than any honest one, not after the timeout with all of it
    buffered."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;"
    server.steps = lambda _: Step(head + b"x" * (4 << 20), await_close=True)
    async with client(url(server), within=3.0) as c:
        started = time.monotonic()
        with pytest.raises(MalformedAnswer):
            await c.post(BODY, {})
        assert time.monotonic() - started < 2.0
        assert not c._idle


@pytest.mark.parametrize("length", ["²".encode(), b"1" * 5000])
async def test_a_content_length_int_refuses_is_a_malformed_answer(
    server: Server, length: bytes
) -> None:
    """``str.isdigit`` is true of '²', and of 5000 digits, which ``int`` refuses: the answer is
    malformed (not a ValueError out of the protocol's callback, the request then waiting for
    its timeout)."""
    server.steps = lambda _: Step(b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\nxx")
    async with client(url(server), within=1.0) as c:
        with pytest.raises(MalformedAnswer):
            await c.post(BODY, {})
        assert not c._idle


async def test_an_international_name_is_encoded_as_aiohttp_did_idna_2008() -> None:
    """A non-ASCII host name goes to the host aiohttp (yarl: IDNA 2008, UTS 46) connected to:
    'straße.de' is xn--strae-oqa.de, not strasse.de (Python's 'idna' codec is IDNA 2003,
    which maps ß to ss: another domain, perhaps another owner's, whose certificate would pass
    the hostname check)."""
    async with client("https://straße.de/hook") as c:
        assert c.target.host == c.target.server_name == "xn--strae-oqa.de"
