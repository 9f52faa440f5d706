"""gateway room: the charger front end — picows listener, upgrade-time auth, connection
registry, commands to chargers.

:class:`Gateway` owns the listening server, the live connections (one per charger) and the
gateway's metrics, and consults the credential index (``gateway/credentials.py``) at each
upgrade. It knows sockets, not SQL. What an accepted AuthorizationKey changes beyond the
live connection (its stored digest) is a command effect (``handlers/commands.py``).

Close codes the gateway sends:

====  ==============================================================================
1000  replaced by a newer connection of the same charger
1001  evgate is shutting down (after in-flight replies were sent); or no pong in time
1002  no ``ocpp1.6`` subprotocol offered; a broken fragment sequence
1003  a binary frame
1008  credentials no longer hold: secret rotated, charger deleted, profile raised
1009  a message over ``max_message_size``
====  ==============================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)

from evgate.config import ConfigError, Settings, parse_networks
from evgate.credentials import digest
from evgate.gateway.connection import ChargerConnection, MessageLog
from evgate.gateway.credentials import CredentialIndex, CredentialLoader
from evgate.gateway.interface import (
    REPLACED,
    ChargerNotConnected,
    ConnectionInfo,
    ConnectionObserver,
    InvalidCommand,
    OcppFrame,
    authorization_key,
)
from evgate.gateway.listener import ChargerPort, ChargerProtocol
from evgate.gateway.proxy_header import SourceAddress
from evgate.gateway.upgrade import SUBPROTOCOL, FailureLimiter, Refuse, decide, offers_ocpp16
from evgate.handlers.contract import Routes, check_routes
from evgate.limits import default_connection_caps
from evgate.metrics import Counter, Registry
from evgate.outages import Dependency
from evgate.protocol.v16 import (
    ACTION_OF_REQUEST,
    ACTIONS,
    ChangeConfigurationResponse,
    ConfigurationStatus,
    Direction,
    Message,
)
from evgate.storage.chargers import ChargerCredentials

__all__ = ["LISTEN_BACKLOG", "Gateway"]

log = logging.getLogger("evgate.gateway")

# picows reads into a buffer that starts this small and grows only for big messages: an idle
# connection's share of memory is mostly this buffer.
_READ_BUFFER = 2048
#: Connections the kernel queues for accept (``app.bind_socket`` and the loop's listen).
LISTEN_BACKLOG = 4096
# Each stage before a charger's upgrade — a load balancer's PROXY header, the TLS handshake,
# the HTTP upgrade request — must be over in this long: a silent connection costs 5 s.
_HANDSHAKE_TIMEOUT = 5.0


_PARSER_ERROR = "WS parser error"
# Message logs kept of chargers that left (each at most message_log_size messages).
_LOGS_KEPT = 1024


class _PicowsLog(logging.LoggerAdapter[logging.Logger]):
    """picows's logger (an adapter: picows then makes no per-connection child logger).

    picows's frame parser logs a client's frame that breaks RFC 6455 (unmasked, over
    ``max_message_size``, a CLOSE with a bad code or reason, ...) at ERROR, then closes the
    connection with the code it names. That is a charger's mistake, not evgate's: it is
    counted by close code and logged at DEBUG. picows's other lines keep their level (a
    failure inside picows itself stays an ERROR with its traceback).
    """

    def __init__(self, logger: logging.Logger, errors: Counter) -> None:
        super().__init__(logger)
        self._errors = errors

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= logging.ERROR and isinstance(msg, str) and msg.startswith(_PARSER_ERROR):
            # picows passes the WSProtocolError's args: (close code, description).
            reason = args[0] if args and isinstance(args[0], tuple) else ()
            code = reason[0] if reason and isinstance(reason[0], int) else 0
            self._errors.inc(str(int(code)))
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


def _certificate_cn(ssl_object: Any) -> str | None:
    """The commonName of a client certificate the TLS layer verified, if any."""
    certificate = ssl_object.getpeercert() if ssl_object is not None else None
    if not certificate:
        return None
    for rdn in certificate.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


def _address(peer: Any) -> tuple[str, str]:
    """(ip, ip:port) of a peername; IPv6 addresses are bracketed in the second form."""
    if not peer:
        return "", ""
    host, port = peer[0], peer[1]
    return host, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the charger port, or ``None`` for plain ws.

    Raises:
        ConfigError: a key without a certificate (or the reverse), a client CA without TLS,
            or a file that cannot be read.
    """
    if not settings.tls_cert and not settings.tls_key:
        if settings.tls_client_ca:
            raise ConfigError("EVGATE_TLS_CLIENT_CA needs EVGATE_TLS_CERT and EVGATE_TLS_KEY")
        return None
    if not settings.tls_cert or not settings.tls_key:
        raise ConfigError("EVGATE_TLS_CERT and EVGATE_TLS_KEY go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # OCPP 1.6 security whitepaper
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.tls_client_ca:
            context.load_verify_locations(settings.tls_client_ca)
            # Optional: profile-2 chargers send no certificate; one that is sent must verify.
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS files: {exc}") from None
    return context


class Gateway:
    """The charger gateway of one evgate process.

    Args:
        settings: limits, TLS and timeouts (``max_message_size``, ``ping_interval``, ...).
        routes: action → handler (the handlers' routing table); actions without an entry
            answer ``NotImplemented``. Checked here (``check_routes``: RoutesError).
        load_credentials: see :data:`~evgate.gateway.credentials.CredentialLoader`.
        metrics: the process's metrics registry.

    After construction: ``await start(sock)``; wire ``credentials_changed`` and
    ``credentials_reset`` to the database's notifications; ``await stop()`` at the end.
    """

    def __init__(
        self,
        settings: Settings,
        routes: Routes,
        load_credentials: CredentialLoader,
        *,
        metrics: Registry | None = None,
        unavailable: Callable[[BaseException], bool] | None = None,
        health: Dependency | None = None,
        store_key: Callable[[str, bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        # Stores the digest of an AuthorizationKey a charger of this process accepted
        # (``AuthorizationKeys.accepted``): here, where the connection is, whoever sent the
        # command; without it such a command is refused.
        self._store_key = store_key
        check_routes(routes)  # a handler filed under the wrong action fails here, at start
        # Where a CALL left unanswered in an outage goes (the database's outages:
        # Database.health); the credential index reports its failed refreshes there too.
        self._health = health or Dependency("the database", lambda _: False)
        self.routes = routes
        # Whether a handler's exception says a dependency is away (the database), so that its
        # CALL is left unanswered, as an outage must look (the charger resends it).
        self.unavailable = unavailable or (lambda _exc: False)
        self.known_actions = frozenset(ACTIONS)
        self.credentials = CredentialIndex(
            load_credentials, self._credentials_applied, self._health
        )
        self._connections: dict[str, ChargerConnection] = {}
        # The message logs of chargers that left (the last _LOGS_KEPT), in the order they left.
        self._logs_left: dict[str, MessageLog] = {}
        self._observers: list[ConnectionObserver] = []
        self._limiter = FailureLimiter(settings.failed_upgrades_per_minute)
        self._server: asyncio.AbstractServer | None = None
        self._ssl: ssl.SSLContext | None = None
        self._stopping = False
        self.port: int | None = None
        self._ping_timer: asyncio.TimerHandle | None = None

        metrics = metrics if metrics is not None else Registry()
        metrics.gauge(
            "evgate_chargers_connected", "Chargers connected to this process"
        ).set_function(lambda: len(self._connections))
        self.m_frames_in = metrics.counter(
            "evgate_frames_received_total", "OCPP messages received from chargers", ("action",)
        )
        self.m_frames_out = metrics.counter(
            "evgate_frames_sent_total", "OCPP messages sent to chargers", ("action",)
        )
        self.m_callerrors_sent = metrics.counter(
            "evgate_callerrors_sent_total", "CALLERRORs evgate answered chargers with", ("code",)
        )
        self.m_callerrors_received = metrics.counter(
            "evgate_callerrors_received_total", "CALLERRORs chargers answered with", ("code",)
        )
        self.m_upgrade_failures = metrics.counter(
            "evgate_upgrade_failures_total", "Refused or unusable upgrades", ("reason",)
        )
        self.m_violations = metrics.counter(
            "evgate_protocol_violations_total",
            "Schema violations tolerated (lenient) or refused in chargers' replies",
            ("action", "code"),
        )
        self.m_refused = metrics.counter(
            "evgate_messages_refused_total",
            "CALLs not handled: over the rate limit (answered), inbox full or a dependency"
            " unavailable (left unanswered)",
            ("reason",),
        )
        self.m_paced = metrics.counter(
            "evgate_messages_paced_total",
            "CALLs over the rate limit handled late (the charger waited for each answer)",
        )
        self.m_closed = metrics.counter(
            "evgate_connections_closed_total", "Charger connections closed", ("code",)
        )
        self.m_reads_paused = metrics.counter(
            "evgate_charger_reads_paused_total",
            "Times a charger's reads were paused because it did not read its answers (the"
            " connection's write buffer above write_buffer_limit)",
        )
        self.m_websocket_errors = metrics.counter(
            "evgate_websocket_errors_total",
            "Frames breaking RFC 6455 that a charger connection was closed for",
            ("code",),
        )
        self._picows_log = _PicowsLog(
            logging.getLogger("evgate.gateway.picows"), self.m_websocket_errors
        )
        self._port = ChargerPort(
            self._protocol,
            tls=None,  # known at start()
            trusted=parse_networks(settings.proxy_protocol_trusted),
            limit=settings.max_charger_connections or default_connection_caps().chargers,
            handshake_timeout=_HANDSHAKE_TIMEOUT,
            metrics=metrics,
        )

    # Life cycle

    async def start(self, sock: socket.socket) -> None:
        """Load the credentials and serve chargers on ``sock`` (bound and listening)."""
        self._ssl = server_ssl_context(self.settings)
        await self.credentials.start()
        loop = asyncio.get_running_loop()
        # No ssl= here: the port starts TLS itself, after a load balancer's PROXY header.
        self._port.tls = self._ssl
        # The loop listens again with its own backlog (100 by default) on a socket it is
        # given: a reconnect storm's SYNs beyond it are dropped and come back only after
        # TCP's 1 s retransmission, which was most of a 500-charger storm's time.
        self._server = await loop.create_server(self._port, sock=sock, backlog=LISTEN_BACKLOG)
        self.port = sock.getsockname()[1]
        self._schedule_pings()

    def _schedule_pings(self) -> None:
        s = self.settings
        tick = max(0.05, min(s.ping_interval, s.ping_timeout) / 4)
        self._ping_timer = asyncio.get_running_loop().call_later(tick, self._ping_round)

    def _ping_round(self) -> None:
        """Ping the chargers silent for ``ping_interval``, close those that did not answer
        within ``ping_timeout``: one timer for all (a task per connection, picows's way,
        costs ~1.8 KB each), a round every quarter of the shorter of the two, so a ping goes
        at most that much late."""
        s = self.settings
        now = time.monotonic()
        timeout = min(s.ping_timeout, s.ping_interval)
        try:
            for connection in list(self._connections.values()):
                connection.keep_alive(now, s.ping_interval, timeout)
        finally:
            # One connection's failure must not end the keep-alive of every charger.
            self._schedule_pings()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight CALLs finish and send their replies, then close every
        charger with 1001. Each of the three waits is bounded by ``grace`` seconds. Safe to
        call more than once."""
        self._stopping = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self._server is not None:
            self._server.close()
        connections = list(self._connections.values())
        for connection in connections:
            connection.draining = True
        workers = [c.worker for c in connections if c.worker is not None]
        if workers:
            _, late = await asyncio.wait(workers, timeout=grace)
            for task in late:
                task.cancel()
        for connection in connections:
            connection.close(WSCloseCode.GOING_AWAY, "evgate is shutting down")
        waiting = [c.transport.wait_disconnected() for c in connections if c.transport]
        if waiting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*waiting, return_exceptions=True)
        await self.credentials.stop()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._server.wait_closed()
            self._server = None

    # Observers and the live view

    def add_observer(self, observer: ConnectionObserver) -> None:
        """Tell ``observer`` of every charger that connects or disconnects from now on."""
        self._observers.append(observer)

    def connection(self, charger_id: str) -> ConnectionInfo | None:
        connection = self._connections.get(charger_id)
        return connection.info if connection is not None else None

    async def locate(self, charger_id: str) -> ConnectionInfo | None:
        """This process only: the gateway alone knows no other process (see Cluster)."""
        return self.connection(charger_id)

    def close_charger(self, charger_id: str, code: int, reason: str) -> None:
        """Close the charger's connection here, if it has one (it moved elsewhere)."""
        connection = self._connections.get(charger_id)
        if connection is not None:
            connection.close(WSCloseCode(code), reason)

    def connections(self) -> list[ConnectionInfo]:
        return [c.info for c in self._connections.values()]

    def message_log(self, charger_id: str) -> MessageLog:
        """The in-memory log of ``charger_id``'s messages that a new connection appends to:
        its live connection's, the one it had when it left, or a new one."""
        live = self._connections.get(charger_id)
        if live is not None:
            return live.messages
        kept = self._logs_left.pop(charger_id, None)
        return kept if kept is not None else MessageLog(self.settings.message_log_size)

    def recent_messages(self, charger_id: str) -> list[OcppFrame] | None:
        """The charger's last messages both ways, oldest first (connected or left), or None
        when this process has no log of it."""
        live = self._connections.get(charger_id)
        log_ = live.messages if live is not None else self._logs_left.get(charger_id)
        if log_ is None:
            return None
        return [
            OcppFrame(
                at=datetime.fromtimestamp(at, UTC),
                direction="in" if incoming else "out",
                text=data.decode(errors="replace"),
                size=size,
            )
            for at, incoming, data, size in log_
        ]

    def credentials_of(self, charger_id: str) -> ChargerCredentials | None:
        """What the upgrade check currently holds for the charger (None: unknown)."""
        return self.credentials.get(charger_id)

    # Upgrades

    def _protocol(self, source: SourceAddress | None) -> ChargerProtocol:
        """A picows protocol whose upgrade callback can see its own transport (the peer
        address and TLS state that ``ws_create_server``'s factory is not given) and the
        client's address a load balancer's PROXY header named (``source``), if any."""
        protocol: ChargerProtocol | None = None

        def upgrade(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
            assert protocol is not None
            return self._upgrade(request, protocol.transport, source)

        s = self.settings
        protocol = ChargerProtocol(
            None,  # host and port: client side only
            None,  # path: client side only
            False,  # is_client_side
            upgrade,
            self._picows_log,  # an adapter: picows makes no per-connection child logger
            True,  # disconnect_on_exception
            _HANDSHAKE_TIMEOUT,
            False,  # enable_auto_ping: the gateway's ping round does it (_ping_round)
            s.ping_interval,
            min(s.ping_timeout, s.ping_interval),  # picows requires reply <= idle
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # enable_auto_pong
            s.max_message_size,
            None,  # extra headers: client side only
            _READ_BUFFER,
        )
        return protocol

    def _upgrade(
        self, request: WSUpgradeRequest, transport: WSTransport, source: SourceAddress | None
    ) -> WSUpgradeResponseWithListener:
        underlying = transport.underlying_transport
        ip, remote = _address(source or underlying.get_extra_info("peername"))
        ssl_object = underlying.get_extra_info("ssl_object")
        if self._stopping:
            decision: Any = Refuse(503, "stopping", "evgate is shutting down", False)
        else:
            decision = decide(
                request.path.decode("latin-1"),
                request.headers.get("Authorization"),
                address=ip,
                tls=ssl_object is not None,
                certificate_cn=_certificate_cn(ssl_object),
                index=self.credentials.by_id,
                limiter=self._limiter,
            )
        if isinstance(decision, Refuse):
            self.m_upgrade_failures.inc(decision.reason)
            if decision.counts_as_failure:
                self._limiter.failed(ip)
            headers: list[tuple[str, str]] = []
            if decision.status == 401:
                headers.append(("WWW-Authenticate", 'Basic realm="evgate", charset="UTF-8"'))
            if decision.retry_after is not None:
                headers.append(("Retry-After", str(decision.retry_after)))
            log.info("upgrade from %s refused: %s (%s)", remote, decision.status, decision.reason)
            response = WSUpgradeResponse.create_error_response(
                decision.status, decision.message.encode() + b"\n", headers
            )
            return WSUpgradeResponseWithListener(response, None)
        offered = offers_ocpp16(request.headers.getall("Sec-WebSocket-Protocol", []))
        if not offered:
            self.m_upgrade_failures.inc("no_subprotocol")
        listener = ChargerConnection(self, decision, remote, offered)
        extra = [("Sec-WebSocket-Protocol", SUBPROTOCOL)] if offered else []
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(extra), listener)

    # Connection registry (called by ChargerConnection)

    def register(self, connection: ChargerConnection) -> None:
        """A charger connected: it replaces its previous connection, if any."""
        previous = self._connections.get(connection.charger_id)
        self._connections[connection.charger_id] = connection
        connection.registered = True
        if previous is not None:
            previous.registered = False
            previous.close(WSCloseCode.OK, "replaced by a new connection")
            self._notify("charger_disconnected", previous.info, 1000, REPLACED)
        log.info(
            "charger %s connected from %s (profile %d)",
            connection.charger_id,
            connection.info.remote_address,
            connection.security_profile,
        )
        self._notify("charger_connected", connection.info)

    def unregister(self, connection: ChargerConnection) -> None:
        """A registered connection ended."""
        connection.registered = False
        if self._connections.get(connection.charger_id) is connection:
            del self._connections[connection.charger_id]
            # Kept for a charger that may come back, never for one deleted meanwhile (its
            # id may be given to a new charger, which must not inherit its messages).
            known = self.credentials.get(connection.charger_id) is not None
            if connection.messages and known:
                self._logs_left[connection.charger_id] = connection.messages
                if len(self._logs_left) > _LOGS_KEPT:
                    del self._logs_left[next(iter(self._logs_left))]
        self.m_closed.inc(str(connection.close_code))
        log.info(
            "charger %s disconnected (%d %s)",
            connection.charger_id,
            connection.close_code,
            connection.close_reason,
        )
        self._notify(
            "charger_disconnected", connection.info, connection.close_code, connection.close_reason
        )

    def _notify(self, event: str, *args: Any) -> None:
        for observer in self._observers:
            try:
                getattr(observer, event)(*args)
            except Exception:
                log.exception("connection observer %r failed on %s", observer, event)

    def left_unanswered(self, exc: BaseException, action: str) -> None:
        """A charger's ``action`` CALL is left unanswered because its handler met an outage
        (``unavailable``): counted, and reported to the dependency's health, whose log says
        once that it is away (an outage's first failure may be a charger's CALL)."""
        self.m_refused.inc("unavailable")
        if self._health.is_outage(exc):  # not the writer stopping at shutdown
            self._health.failed(exc, f"the {action} handler")

    # Credentials kept in sync with the database (the index does; a change may close a charger)

    def credentials_changed(self, charger_id: str) -> None:
        """The database says this charger's credentials changed (or it was created/deleted)."""
        self.credentials.changed(charger_id)

    def credentials_reset(self) -> None:
        """Notifications may have been missed (the listening connection dropped): reload all."""
        self.credentials.reset()

    def _credentials_applied(self, charger_id: str, credentials: ChargerCredentials | None) -> None:
        """Drop a live connection that the index's change invalidates."""
        if credentials is None:
            self._logs_left.pop(charger_id, None)
        connection = self._connections.get(charger_id)
        if connection is None:
            return
        if credentials is None:
            connection.close(WSCloseCode.POLICY_VIOLATION, "charger deleted")
        elif connection.auth_digest is not None and connection.auth_digest != (
            credentials.secret_digest
        ):
            connection.close(WSCloseCode.POLICY_VIOLATION, "credentials changed")
        elif connection.security_profile < credentials.security_profile:
            connection.close(WSCloseCode.POLICY_VIOLATION, "security profile raised")
        else:
            connection.set_lenient(credentials.lenient)

    # Commands to chargers

    async def call(self, charger_id: str, request: Message) -> Message:
        """Send ``request`` to the charger as a CALL and return its validated answer.

        One CALL is outstanding per charger; later ones wait their turn. The timeout
        (``Settings.call_timeout``) counts from this call, waiting included. An accepted
        ChangeConfiguration of ``AuthorizationKey`` makes the new key the charger's secret here
        (the connection that changed it stays up, the index admits the new key at once) and is
        stored (``store_key``) before this returns, or retried by the store until it is.

        Raises:
            InvalidCommand: ``request`` is not a CSMS→charger request, or an AuthorizationKey
                that is weak or cannot be stored here.
            ChargerNotConnected: the charger has no connection to this process.
            ChargerBusy: too many commands already wait for this charger.
            ChargerDisconnected: the connection closed before the answer.
            CallTimeout: no answer in time.
            CallRejected: the charger answered with a CALLERROR.
            InvalidResponse: the answer does not conform to the response schema.
        """
        action = ACTION_OF_REQUEST.get(type(request))
        if action is None or Direction.csms_to_charger not in ACTIONS[action].direction:
            raise InvalidCommand(f"{type(request).__name__} is not a command to a charger")
        new_key = authorization_key(request)
        if new_key is not None and self._store_key is None:
            raise InvalidCommand("AuthorizationKey cannot be stored by this evgate")
        connection = self._connections.get(charger_id)
        if connection is None:
            raise ChargerNotConnected(f"charger {charger_id!r} is not connected")
        response = await connection.call(action, request)
        if new_key is not None and self._store_key is not None:
            assert isinstance(response, ChangeConfigurationResponse)
            if response.status in (
                ConfigurationStatus.accepted,
                ConfigurationStatus.reboot_required,
            ):
                new_digest = self._key_accepted(connection, new_key)
                await self._store_key(charger_id, new_digest)
        return response

    def _key_accepted(self, connection: ChargerConnection, key: str) -> bytes:
        """The charger took a new Basic-auth password: the live connection proved the old key
        and the charger itself chose the new one, so it stays up; the index admits the new
        key now, so that a reconnect with it before the NOTIFY round trip succeeds."""
        new_digest = digest(key)
        if connection.auth_digest is not None:
            connection.auth_digest = new_digest
        self.credentials.adopt_secret(connection.charger_id, new_digest)
        log.info("charger %s accepted a new AuthorizationKey", connection.charger_id)
        return new_digest
