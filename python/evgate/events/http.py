"""events room: the webhook sink's HTTP/1.1 client — POSTs to one URL over kept-alive
connections, and reads of each answer its status, headers and the start of its body.

aiohttp's request machinery cost 0.2-0.3 ms of CPU per delivery (issue 17): at 20 webhook
subscriptions that was most of what evgate spent beyond serving chargers. A webhook needs one
request shape (a POST of bytes to a fixed URL) and a few facts of the answer, so the request is
built as one ``bytes`` and written at once, and the answer is parsed here from the bytes a
protocol callback was handed (usually the whole answer in one ``data_received``): no stream
reader, no task and no timer per request beyond the timeout's.

Not a general client: no redirects (the caller reports a 3xx), no proxy, no decompression (no
``Accept-Encoding`` is sent), no request pipelining (one request in flight per connection).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast
from urllib.parse import quote, unquote, urlsplit

import aiohappyeyeballs
import idna

__all__ = [
    "Client",
    "ConnectFailed",
    "Disconnected",
    "HttpError",
    "MalformedAnswer",
    "Response",
    "Target",
    "target",
]

# aiohttp's defaults, kept from when the sink used it: the delay before racing the next address
# of a name (RFC 8305), and how long an unused connection is kept.
_HAPPY_EYEBALLS_DELAY = 0.25
_KEEPALIVE = 15.0
# An answer's head (status line and headers) larger than this is refused.
_MAX_HEAD = 65_536

SocketFactory = Callable[[tuple[Any, ...]], socket.socket]


class HttpError(Exception):
    """A request that got no answer (or none that could be read)."""


class ConnectFailed(HttpError):
    """No connection to the URL's host: the name did not resolve, every address refused (or a
    socket factory did), or TLS failed."""


class Disconnected(HttpError):
    """The receiver closed the connection before its answer was complete."""


class MalformedAnswer(HttpError):
    """The answer is not HTTP/1.x as RFC 9112 frames it."""


class Response(NamedTuple):
    """What the client reads of an answer: the final status (a 1xx is skipped), the headers
    (names lower case, the first of a repeated one), and at most the client's ``max_body``
    bytes of the body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Answer(NamedTuple):
    response: Response
    # Whether the connection can carry the next request (the whole answer was read, and
    # neither side asked to close).
    reusable: bool


def _parse(buffer: bytearray, max_body: int, eof: bool) -> _Answer | None:
    """The answer at the start of ``buffer``, or None while more bytes are needed (``eof``: the
    receiver closed its side, none will come). A 1xx interim answer is removed from ``buffer``
    and skipped.

    Raises:
        MalformedAnswer: not an HTTP/1.x answer.
        Disconnected: closed before the answer was complete.
    """
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                raise MalformedAnswer(f"an answer's head longer than {_MAX_HEAD} bytes")
            if eof:
                raise Disconnected(
                    "the receiver closed the connection before its answer"
                    if not buffer
                    else "the receiver closed the connection within its answer's head"
                )
            return None
        lines = bytes(buffer[:end]).split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if (
            not version.startswith(b"HTTP/1.")
            or len(code) != 3
            or not code.isdigit()
            or rest[3:4] not in (b"", b" ")
        ):
            raise MalformedAnswer(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        if 100 <= status < 200 and status != 101:
            del buffer[: end + 4]  # an interim answer (100 Continue, 103 Early Hints)
            continue
        break
    headers: dict[str, str] = {}
    name = ""
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):  # obs-fold: a continuation of the previous value
            if not name:
                raise MalformedAnswer("a header continuation line before any header")
            headers[name] += " " + line.strip().decode("utf-8", "replace")
            continue
        raw, colon, value = line.partition(b":")
        if not colon or not raw or raw != raw.strip():
            raise MalformedAnswer(f"not a header line: {line[:80]!r}")
        name = raw.decode("latin-1").lower()
        if name not in headers:
            headers[name] = value.strip().decode("utf-8", "replace")
        elif name == "content-length" and headers[name] != value.strip().decode("latin-1"):
            raise MalformedAnswer("two different Content-Length headers")
        elif name in ("transfer-encoding", "connection"):  # lists: every value counts
            headers[name] += ", " + value.strip().decode("latin-1")
    start = end + 4
    tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    # HTTP/1.0 keeps a connection only if asked to: taken as closed (it is rare enough).
    keep = version == b"HTTP/1.1" and "close" not in tokens and status != 101
    coding = headers.get("transfer-encoding")
    if status in (204, 304):
        framing: int | None = 0
    elif coding is not None:
        if coding.lower().rsplit(",", 1)[-1].strip() != "chunked":
            framing, keep = None, False  # framed by the close (RFC 9112, 6.3)
        else:
            # Chunked wins over a Content-Length, whose presence means the connection is
            # closed afterwards (RFC 9112, 6.3: a smuggling attempt or a broken proxy).
            return _chunked(
                buffer,
                start,
                status,
                headers,
                max_body,
                eof,
                keep and "content-length" not in headers,
            )
    elif "content-length" in headers:
        length = headers["content-length"]
        # ASCII digits (str.isdigit() is true of '²', which int() refuses), fewer than int()
        # takes from a string (4300) and than any honest length has: else a ValueError.
        if not (length.isascii() and length.isdigit()) or len(length) > 18:
            raise MalformedAnswer(f"a Content-Length that is not a number: {length[:40]!r}")
        framing = int(length)
    else:
        framing, keep = None, False
    have = len(buffer) - start
    if framing is None:  # the body ends with the connection
        if have >= max_body or eof:
            return _Answer(
                Response(status, headers, bytes(buffer[start : start + max_body])), False
            )
        return None
    if have >= framing:
        # The whole body arrived: the connection carries the next request even when the body
        # is longer than what is kept of it (unless the receiver sent more than its answer).
        body = bytes(buffer[start : start + min(framing, max_body)])
        return _Answer(Response(status, headers, body), keep and have == framing)
    if have >= max_body:  # a longer body, still on its way: not drained, the connection closed
        return _Answer(Response(status, headers, bytes(buffer[start : start + max_body])), False)
    if eof:
        raise Disconnected("the receiver closed the connection within its answer's body")
    return None


def _chunked(
    buffer: bytearray,
    at: int,
    status: int,
    headers: dict[str, str],
    max_body: int,
    eof: bool,
    keep: bool,
) -> _Answer | None:
    """The chunked body starting at ``at`` (see :func:`_parse`)."""
    start = at
    body = bytearray()
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            break
        size_text = bytes(buffer[at:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise MalformedAnswer(f"not a chunk size: {size_text[:40]!r}") from None
        if size_text[:1] in (b"-", b"+") or size_text[:2].lower() == b"0x":
            raise MalformedAnswer(f"not a chunk size: {size_text[:40]!r}")
        if size == 0:  # the last chunk: then trailer lines (ignored) and an empty line
            trailers = line_end + 2
            if buffer[trailers : trailers + 2] == b"\r\n":
                done = trailers + 2
            elif (blank := buffer.find(b"\r\n\r\n", trailers)) >= 0:
                done = blank + 4
            else:
                break
            answer = Response(status, headers, bytes(body[:max_body]))
            return _Answer(answer, keep and done == len(buffer))
        data = line_end + 2
        if len(buffer) < data + size + 2:
            body += buffer[data : data + size]
            break
        if buffer[data + size : data + size + 2] != b"\r\n":
            raise MalformedAnswer("a chunk not ended by CRLF")
        body += buffer[data : data + size]
        at = data + size + 2
    if len(body) >= max_body:  # a longer body, still on its way: the connection closed
        return _Answer(Response(status, headers, bytes(body[:max_body])), False)
    if eof:
        raise Disconnected("the receiver closed the connection within its answer's body")
    if len(buffer) - start > max_body + _MAX_HEAD:
        # Only the body is cut at max_body: the framing around it (size lines and their
        # extensions, trailers) is bounded too, or a receiver that never ends it would have
        # the buffer grow (and be parsed again from its start) until the timeout.
        raise MalformedAnswer(f"a chunked answer's framing longer than {_MAX_HEAD} bytes")
    return None


class _Connection(asyncio.Protocol):
    """One connection to the receiver: carries one request at a time (:meth:`send`)."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[_Answer] | None = None
        self._eof = False
        # Whether any byte of the current request's answer arrived: a connection that ends
        # before one did, after it was kept alive, is retried (see Client.post).
        self.answered = False
        self.idle_since = 0.0

    @property
    def open(self) -> bool:
        return not self._eof and self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes past the answer (or while idle): the connection is out of step.
            self._eof = True
            self.close(abort=True)
            return
        self.answered = True
        self._buffer += data
        self._check()

    def eof_received(self) -> bool:
        self._eof = True
        self._check()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._check()

    def _check(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = _parse(self._buffer, self.max_body, self._eof)
        except HttpError as exc:
            waiter.set_exception(exc)
            return
        if answer is not None:
            self._buffer.clear()
            waiter.set_result(answer)

    async def send(self, request: bytes) -> _Answer:
        """Write ``request`` and wait for its answer.

        Raises:
            Disconnected: the connection ended before the whole answer (before any byte of it
                if ``answered`` is false).
            MalformedAnswer: see :func:`_parse`.
        """
        assert self.transport is not None and self._waiter is None
        self._buffer.clear()
        self.answered = False
        if not self.open:
            raise Disconnected("the receiver closed the connection before the request")
        waiter: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            self.transport.write(request)
            self._check()  # the connection may have ended in the write
            return await waiter
        finally:
            self._waiter = None

    def close(self, abort: bool = False) -> None:
        if self.transport is not None:
            self.transport.abort() if abort else self.transport.close()


class Target(NamedTuple):
    """Where a URL's requests go, and the fixed start of each one's head."""

    host: str  # ASCII: an international name IDNA-encoded
    port: int
    # The name TLS checks the certificate against: a fully qualified name's final dot is not
    # part of it (as aiohttp and browsers strip it).
    server_name: str
    tls: bool
    # The request line, Host, credentials and ``headers``, up to the Content-Length's value.
    head: bytes


def target(url: str, headers: Mapping[str, str]) -> Target:
    """What :class:`Client` sends to for ``url`` (see there), with ``headers`` on every
    request; the API checks a callback URL with it, so that a URL it takes is one the client
    can send to.

    Raises:
        ValueError: ``url`` is not an absolute http(s) URL, its port is out of range, its
            name cannot be IDNA-encoded or its credentials latin-1, or a header holds a line
            break.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    host = parts.hostname
    if not host.isascii():
        # IDNA 2008 with UTS 46 mapping, as aiohttp (yarl) sent it: Python's "idna" codec is
        # IDNA 2003, which makes straße.de strasse.de, another domain (IDNAError is a
        # ValueError).
        host = idna.encode(host, uts46=True).decode("ascii")
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port  # a port out of range: ValueError
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=~?")
    authority = f"[{host}]" if ":" in host else host
    if port != default_port:
        authority += f":{port}"
    fixed = [f"POST {path} HTTP/1.1", f"Host: {authority}"]
    if parts.username or parts.password:
        # As aiohttp sends a URL's userinfo: percent-decoded, latin-1.
        user_pass = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        credentials = base64.b64encode(user_pass.encode("latin-1")).decode("ascii")
        fixed.append(f"authorization: Basic {credentials}")
    fixed += [f"{name}: {value}" for name, value in headers.items()]
    _check_header_values(headers)
    head = ("\r\n".join(fixed) + "\r\ncontent-length: ").encode("latin-1")
    return Target(host, port, host.rstrip("."), parts.scheme == "https", head)


class Client:
    """POSTs to one URL: at most ``max_connections`` connections, one per request in flight,
    kept alive between requests (a LIFO of the idle ones; one unused for 15 s is closed when
    next looked at, without a timer of its own).

    ``url``: ``http`` or ``https``, a name or an IPv4/IPv6 literal, any port; its path and
    query are the request's target, its userinfo (if any) Basic credentials, as aiohttp sent
    them. ``ssl_context``: that of an ``https`` URL (server name indication and the hostname
    check are the context's). ``socket_factory``: makes the socket of each address the name
    resolved to before connecting (:mod:`aiohappyeyeballs`' contract: it may refuse an address
    by raising ``OSError``). ``headers``: sent with every request, after ``Host`` and the
    credentials. ``timeout``: seconds for a whole request (waiting for a connection,
    connecting, writing, the answer). ``max_body``: bytes of an answer's body kept; a longer
    one still on its way is not waited for (its connection is closed rather than drained).

    Made inside the running loop; :meth:`close` when done.

    Raises:
        ValueError: ``url`` is not an absolute http(s) URL, or a header holds a line break.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext,
        headers: Mapping[str, str],
        max_body: int,
        socket_factory: SocketFactory | None = None,
    ) -> None:
        self.target = target(url, headers)
        self.ssl = ssl_context if self.target.tls else None
        self.timeout = timeout
        self.max_body = max_body
        self._socket_factory = socket_factory
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body`` with ``headers`` (besides the client's own) and read the answer.

        A kept-alive connection that ended before any byte of the answer (the receiver closed
        it while idle, as it may at any time) is left for a new one, once: the request is sent
        again. It may have been processed (a receiver that closed right after reading it),
        which a webhook's at-least-once delivery with a stable ``webhook-id`` allows.

        Raises:
            TimeoutError: no whole answer within the client's ``timeout``.
            ConnectFailed: see there.
            Disconnected: the connection ended before the whole answer.
            MalformedAnswer: see there.
        """
        _check_header_values(headers)
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"".join(
            (self.target.head, b"%d\r\n" % len(body), extra.encode("latin-1"), b"\r\n", body)
        )
        async with asyncio.timeout(self.timeout), self._slots:
            if self._closed:
                raise ConnectFailed("the client is closed")
            connection = self._take()
            if connection is not None:
                try:
                    return self._done(connection, await connection.send(request))
                except Disconnected:
                    connection.close(abort=True)
                    if connection.answered:
                        raise
                except BaseException:
                    connection.close(abort=True)
                    raise
            connection = await self._connect()
            try:
                return self._done(connection, await connection.send(request))
            except BaseException:
                connection.close(abort=True)
                raise

    def _take(self) -> _Connection | None:
        """The most recently used idle connection still open, if any."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.open and now - connection.idle_since < _KEEPALIVE:
                return connection
            connection.close()
        return None

    def _done(self, connection: _Connection, answer: _Answer) -> Response:
        if answer.reusable and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
            # The oldest idle one, past the keep-alive: closed now rather than when next taken
            # (a LIFO may not reach it for long).
            if self._idle[0].idle_since < connection.idle_since - _KEEPALIVE:
                self._idle.pop(0).close()
        else:
            connection.close()
        return answer.response

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            addresses = await loop.getaddrinfo(
                self.target.host, self.target.port, type=socket.SOCK_STREAM
            )
            sock = await aiohappyeyeballs.start_connection(
                addresses,
                happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY,
                socket_factory=self._socket_factory,
            )
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(self.max_body),
                    sock=sock,
                    ssl=self.ssl,
                    server_hostname=self.target.server_name if self.ssl is not None else None,
                )
            except BaseException:
                sock.close()
                raise
        except OSError as exc:  # socket.gaierror, ssl.SSLError, ConnectionRefusedError, ...
            raise ConnectFailed(
                f"cannot connect to {self.target.host}:{self.target.port}"
                f"{' (TLS)' if self.ssl is not None else ''}: {exc}"
            ) from exc
        return connection

    async def close(self) -> None:
        """Close the idle connections; one in use is closed when its request ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


def _check_header_values(headers: Mapping[str, str]) -> None:
    """Refuse a header that would end the head early (a CR or LF in a value).

    Raises:
        ValueError: a header value holds CR or LF.
    """
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"a line break in header {name!r}")
