"""api room: the HTTP server the API runs on (uvicorn's h11 protocol), and its limits.

The API port shares the process's file descriptors with the chargers, so no client may hold
them at will (issue 15: 20,000 idle sockets to the API made every charger's upgrade fail):

* at most ``api_max_connections`` connections are open (default: 5 % of the file descriptors
  left after :data:`evgate.limits.RESERVED_FDS`, at most 1000); one more is answered 503 and
  closed at once (a log line when the cap is reached, one when the connections are well below
  it again, and the ``evgate_api_connections_refused_total`` counter);
* a client has ``api_read_timeout`` seconds to send a whole request, from its connection or
  from its request's first byte (uvicorn's h11 protocol has no such timeout: a socket that
  never sends a byte, or sends one a minute, was held for ever);
* an idle keep-alive connection is closed after ``api_keepalive_timeout`` seconds;
* requests in flight, counting those whose client has left (a command waits for its charger
  up to ``call_timeout``), are at most as many as the connection cap; beyond it, 503
  (uvicorn's ``limit_concurrency`` would answer ``text/plain``, which the OpenAPI document
  does not list: :class:`_InFlightLimit` answers the problem document).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from evgate.limits import CapEpisode
from evgate.metrics import Counter, Registry
from evgate.tasks import service_task

__all__ = ["ApiLimits", "ApiServer"]

log = logging.getLogger(__name__)

_REFUSAL_BODY = (
    b'{"type":"about:blank","title":"Service Unavailable","status":503,'
    b'"detail":"too many connections or requests to the API; retry later"}'
)
_REFUSAL_HEADERS = [
    (b"content-type", b"application/problem+json"),
    (b"retry-after", b"1"),
    (b"content-length", str(len(_REFUSAL_BODY)).encode()),
]
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    + b"".join(name + b": " + value + b"\r\n" for name, value in _REFUSAL_HEADERS)
    + b"connection: close\r\n\r\n"
    + _REFUSAL_BODY
)


class ApiLimits:
    """The API port's limits, and the state of the cap that its connections share."""

    def __init__(
        self, max_connections: int, read_timeout: float, metrics: Registry | None = None
    ) -> None:
        metrics = metrics if metrics is not None else Registry()
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.episode = CapEpisode(
            log, "API port", "EVGATE_API_MAX_CONNECTIONS", "answered 503 and closed"
        )
        self.m_refused: Counter = metrics.counter(
            "evgate_api_connections_refused_total",
            "API connections answered 503 and closed at once: api_max_connections were open",
        )
        self.m_timed_out: Counter = metrics.counter(
            "evgate_api_read_timeouts_total",
            "API connections closed because a request did not arrive within api_read_timeout",
        )

    def refused(self, open_connections: int) -> None:
        self.m_refused.inc()
        self.episode.refused(open_connections)

    def closed(self, open_connections: int) -> None:
        self.episode.ended(open_connections, self.max_connections)


class _InFlightLimit:
    """ASGI: at most ``limit`` requests in the app at once; more are answered 503 at once."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif self.in_flight >= self.limit:
            await send({"type": "http.response.start", "status": 503, "headers": _REFUSAL_HEADERS})
            await send({"type": "http.response.body", "body": _REFUSAL_BODY})
        else:
            self.in_flight += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.in_flight -= 1


class _ApiConfig(uvicorn.Config):
    """uvicorn's settings plus evgate's limits (the protocol reads them from its config)."""

    def __init__(self, app: Any, limits: ApiLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class _ApiProtocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a request read timeout."""

    config: _ApiConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.config.limits
        if len(self.connections) > limits.max_connections:
            self.connections.discard(self)
            limits.refused(len(self.connections))
            transport.write(_REFUSAL)
            transport.close()
            return
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)
        self.config.limits.closed(len(self.connections))

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm_read_timer()  # a request starts: its first byte starts the clock
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._cancel_read_timer()  # the whole request is in (or the connection is done)

    def _arm_read_timer(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(
                self.config.limits.read_timeout, self._read_timed_out
            )

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.config.limits.m_timed_out.inc()
            self.transport.close()


class ApiServer(uvicorn.Server):
    """uvicorn on evgate's loop and socket, with the API's limits; evgate, not uvicorn,
    handles the signals."""

    def __init__(
        self,
        app: Any,
        limits: ApiLimits,
        keepalive_timeout: int,
        metrics: Registry | None = None,
    ) -> None:
        self.in_flight = _InFlightLimit(app, limits.max_connections)
        config = _ApiConfig(
            self.in_flight,
            limits,
            http=_ApiProtocol,
            lifespan="off",
            # uvicorn warns once per unparseable request: the internet's noise, not an alert
            # (a client's mistake is answered 400, as the chargers' are counted, not logged).
            log_level="error",
            access_log=False,
            timeout_keep_alive=keepalive_timeout,
        )
        super().__init__(config)
        self._serving: asyncio.Task[None] | None = None
        if metrics is not None:
            gauge = metrics.gauge("evgate_api_connections", "Open connections to the API port")
            gauge.set_function(lambda: len(self.server_state.connections))
            metrics.gauge(
                "evgate_api_requests_in_flight",
                "API requests being handled, counting those whose client has left",
            ).set_function(lambda: self.in_flight.in_flight)

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound and listening; the server's from now on: closed when it
        stops, or at once if it cannot start) in a task of its own; returns once it accepts
        connections."""
        self._serving = service_task(self.serve(sockets=[sock]))
        try:
            while not self.started:
                if self._serving.done():
                    self._serving.result()  # raises what stopped it
                await asyncio.sleep(0.01)
        except BaseException:
            self._serving = None
            sock.close()
            raise

    async def stop(self) -> None:
        """Stop serving: its open requests end first. Safe to call twice, or unstarted."""
        serving, self._serving = self._serving, None
        if serving is None:
            return
        self.should_exit = True
        with contextlib.suppress(Exception):
            await serving

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
