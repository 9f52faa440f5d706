"""gateway room: one charger's WebSocket connection (a picows listener).

A :class:`ChargerConnection` turns frames into OCPP messages and back:

* Text frames only, with no RSV bit set (evgate negotiates no extension; else 1002); a
  fragmented message is reassembled (and held to the size limit, like a single frame). Each
  whole message is copied out of picows's borrowed buffer once, then decoded by the
  protocol core.
* CALLs from the charger are answered strictly in arrival order by one worker task that
  exists only while there is work (an idle charger costs no task). A CALL that finds the
  inbox full (handlers stalled, say the database is down) is dropped unanswered, so the
  charger retries it later, as OCPP chargers do with unacknowledged messages; so is a CALL
  whose handler failed because a dependency is away (the gateway's ``unavailable``).
* The charger's message rate (a token bucket: ``message_rate`` a second, ``message_burst``
  at once) paces a charger that keeps OCPP-J's rule of one outstanding CALL: a CALL over the
  rate with none of its others unanswered is handled once the bucket has refilled for it
  (at most ``1 / message_rate`` seconds later), and the charger's reads are paused until
  then, so it is slowed, never refused (a charger replaying its offline backlog gets all of
  it acknowledged). Refusals are kept for what breaks the protocol: a CALL over the rate sent
  while another is unanswered is answered ``GenericError``; an unreadable frame or an
  unexpected reply over the rate is dropped without an answer or a log line (a flood of junk
  costs little).
* CALLs to the charger (:meth:`call`) go one at a time (OCPP allows one outstanding CALL per
  direction); later ones wait in FIFO order, up to ``MAX_QUEUED_CALLS``. A reply that
  cannot be read (not UTF-8, nested too deep, ...) but names the pending CALL fails it at
  once with InvalidResponse.
* Writing is bounded: above the write-buffer high-water mark the charger's reads are paused,
  so a charger that does not read cannot make evgate buffer without end.

What a frame means (decoding, unique ids, which CALL a reply answers) is the connection's
:class:`~evgate.protocol.endpoint.Endpoint` (central system role); the connection keeps the
socket, the rate, the inbox, the timers and the futures. The connection does not know the
database or the registry of connections: it reports to its
:class:`~evgate.gateway.server.Gateway`, which owns it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from evgate.gateway.interface import (
    CallRejected,
    CallTimeout,
    ChargerBusy,
    ChargerDisconnected,
    ConnectionInfo,
    InvalidResponse,
)
from evgate.gateway.upgrade import Admit
from evgate.handlers.contract import ChargerContext
from evgate.protocol.endpoint import (
    Endpoint,
    ErrorReply,
    IncomingCall,
    InvalidReply,
    Refusal,
    Reply,
    Role,
    UnmatchedReply,
    UnreadableReply,
)
from evgate.protocol.errors import ActionNotImplementedError, GenericError, OcppError, Violation
from evgate.protocol.v16 import Message
from evgate.tasks import service_task

if TYPE_CHECKING:
    from evgate.gateway.server import Gateway

__all__ = ["MAX_INBOX", "MAX_QUEUED_CALLS", "MESSAGE_LOG_BYTES", "ChargerConnection", "MessageLog"]

log = logging.getLogger("evgate.gateway")

#: CALLs from one charger waiting for their handler; beyond this they are dropped unanswered.
MAX_INBOX = 16
#: CALLs to one charger waiting for their turn; beyond this ``call`` raises ChargerBusy.
MAX_QUEUED_CALLS = 32
#: After our CLOSE frame, how long the charger has to answer it before the socket is closed.
CLOSE_TIMEOUT = 2.0

#: One message of a charger's log: (time.time(), from the charger?, the message's first
#: MESSAGE_LOG_BYTES, its size). The bytes are the ones already made (copied out of picows, or
#: encoded to send): no copy is added, except of the head of a longer message, so that a
#: charger sending big messages holds no more than MESSAGE_LOG_BYTES an entry.
LogEntry = tuple[float, bool, bytes, int]
MESSAGE_LOG_BYTES = 2048


class MessageLog:
    """A charger's last ``maxlen`` messages, oldest first (iterate): a ring over a list.

    Not a ``deque(maxlen=...)``: a deque costs 760 bytes however few it holds (a block of 64
    slots), about as much as all of evgate's other objects of an idle connection; this costs
    a list of the entries it holds (16 by default: 184 bytes when full).
    """

    __slots__ = ("_entries", "_oldest", "maxlen")

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._entries: list[LogEntry] = []
        self._oldest = 0  # once the list is full: the index of its oldest entry

    def append(self, entry: LogEntry) -> None:
        """Add the newest entry; a full log forgets its oldest."""
        entries = self._entries
        if len(entries) < self.maxlen:
            entries.append(entry)
        elif entries:
            entries[self._oldest] = entry
            self._oldest = (self._oldest + 1) % len(entries)

    def __iter__(self) -> Iterator[LogEntry]:
        entries, oldest = self._entries, self._oldest
        return iter(entries[oldest:] + entries[:oldest])

    def __len__(self) -> int:
        return len(self._entries)


# A CALL from the charger as the endpoint read it: to handle, or to refuse.
_Received = IncomingCall | Refusal


def _forget_upgrade(transport: WSTransport) -> None:
    """Empty the upgrade request and response that picows keeps for the connection's life.

    Its transport's ``request`` and ``response`` are read-only, but the objects are not:
    once the 101 is sent, neither picows (server side) nor evgate reads them again, and their
    headers (two CIMultiDicts of strings) and the request target were ~2.5 KB of an idle
    connection's memory. Nor is the charger's secret (``?auth=``, the Authorization header)
    held for the connection's life any more.
    """
    request, response = transport.request, transport.response
    if request is not None:
        request.headers.clear()
        request.path = b""
    if response is not None:
        response.headers.clear()


class ChargerConnection(WSListener):
    """The listener of one authenticated charger connection. Made by the gateway's upgrade
    callback; picows calls ``on_ws_connected`` right after the 101 response."""

    __slots__ = (
        "_call_lock",
        "_close_timer",
        "_fragments",
        "_future",
        "_inbox",
        "_pacing",
        "_ping_deadline",
        "_queued_calls",
        "_seen",
        "_stamp",
        "_tokens",
        "_worker",
        "_writes_paused",
        "auth_digest",
        "close_code",
        "close_reason",
        "context",
        "draining",
        "endpoint",
        "gateway",
        "info",
        "messages",
        "registered",
        "subprotocol_ok",
        "transport",
        "violations",
    )

    def __init__(
        self, gateway: Gateway, admit: Admit, remote_address: str, subprotocol_ok: bool
    ) -> None:
        super().__init__()
        self.gateway = gateway
        credentials = admit.credentials
        self.context = ChargerContext(
            credentials.id,
            remote_address,
            admit.security_profile,
            credentials.lenient,
            number=credentials.number,
        )
        self.info = ConnectionInfo(
            charger_id=credentials.id,
            connected_at=datetime.now(UTC),
            remote_address=remote_address,
            security_profile=admit.security_profile,
        )
        # The digest of the secret this connection proved; None for a client certificate.
        self.auth_digest = admit.auth_digest
        # The charger's last messages both ways (time, from the charger?, bytes): the
        # gateway's in-memory log, shared with the charger's other connections.
        self.messages = gateway.message_log(credentials.id)
        self.subprotocol_ok = subprotocol_ok
        self.transport: WSTransport | None = None
        self.registered = False
        self.draining = False
        self.violations = 0
        self.close_code = WSCloseCode.ABNORMAL_CLOSURE.value
        self.close_reason = ""
        self._fragments: bytearray | None = None
        # CALLs waiting for their handler (which ``_accept`` checked exists).
        self._inbox: deque[IncomingCall] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.endpoint = Endpoint(Role.central_system, lenient=credentials.lenient)
        # Whoever waits for the answer to the endpoint's outstanding CALL.
        self._future: asyncio.Future[Message] | None = None
        self._call_lock: asyncio.Lock | None = None
        self._queued_calls = 0
        self._close_timer: asyncio.TimerHandle | None = None
        self._tokens = float(gateway.settings.message_burst)
        self._stamp = time.monotonic()
        # When the charger last sent a frame, and by when it must answer our ping (0: no
        # ping out): the gateway's ping round reads them (see keep_alive).
        self._seen = self._stamp
        self._ping_deadline = 0.0
        # Why reads are paused: the charger does not read us, or one of its CALLs is paced.
        self._writes_paused = False
        self._pacing = False

    @property
    def charger_id(self) -> str:
        return self.context.charger_id

    @property
    def security_profile(self) -> int:
        return self.context.security_profile

    def set_lenient(self, lenient: bool) -> None:
        """Read this charger's next frames leniently (or strictly): its credentials changed."""
        self.context.lenient = lenient
        self.endpoint.lenient = lenient

    @property
    def worker(self) -> asyncio.Task[None] | None:
        """The task answering this charger's CALLs, while there is one."""
        return self._worker

    # picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        _forget_upgrade(transport)
        if not self.subprotocol_ok:
            # OCPP-J 1.6 section 3.1.2: complete the handshake without a subprotocol, then close.
            self.close(WSCloseCode.PROTOCOL_ERROR, "subprotocol ocpp1.6 required")
            return
        limit = self.gateway.settings.write_buffer_limit
        transport.underlying_transport.set_write_buffer_limits(high=limit, low=limit // 4)
        self.gateway.register(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The frame borrows picows's read buffer: copy what we keep before returning.
        kind = frame.msg_type
        # Any frame (a PONG, or anything else) shows the charger is there.
        self._seen = time.monotonic()
        self._ping_deadline = 0.0
        if transport.is_close_frame_sent and kind != WSMsgType.CLOSE:
            # We are closing this connection (credentials gone, no ocpp1.6, replaced, ...):
            # what the charger still sends is discarded (RFC 6455 7.1.1), never handled.
            return
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            # RFC 6455 5.2: no extension is negotiated (evgate offers none), so these are 0.
            self.gateway.m_websocket_errors.inc("1002")
            self.close(WSCloseCode.PROTOCOL_ERROR, "RSV bits set without an extension")
            return
        if kind == WSMsgType.TEXT:
            if self._fragments is not None:
                self.close(WSCloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
            elif frame.fin:
                self._message(frame.get_payload_as_bytes())
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
        elif kind == WSMsgType.CONTINUATION:
            fragments = self._fragments
            if fragments is None:
                self.close(WSCloseCode.PROTOCOL_ERROR, "continuation without a message")
            elif len(fragments) + frame.payload_size > self.gateway.settings.max_message_size:
                self._fragments = None
                self.close(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
            else:
                fragments += frame.get_payload_as_memoryview()
                if frame.fin:
                    self._fragments = None
                    self._message(bytes(fragments))
        elif kind == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                self.close_code = frame.get_close_code().value
                transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif kind == WSMsgType.BINARY:
            self.close(WSCloseCode.UNSUPPORTED_DATA, "OCPP-J uses text frames only")
        # PING is answered by picows; a PONG only counts as a sign of life (RFC 6455 5.5.3).

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        handshake = transport.close_handshake
        if handshake is not None:
            info = handshake.sent or handshake.recv
            if info is not None:
                self.close_code = info.code.value
                self.close_reason = self.close_reason or info.reason
        # Unstarted CALLs were never acknowledged: the charger sends them again.
        self._inbox = None
        future = self._future
        if future is not None and not future.done():
            future.set_exception(ChargerDisconnected("the charger disconnected"))
        if self.registered:
            self.gateway.unregister(self)

    def pause_writing(self) -> None:
        # The charger is not reading what we send: stop reading what it sends until it does.
        self._writes_paused = True
        self.gateway.m_reads_paused.inc()
        self._reading()

    def resume_writing(self) -> None:
        self._writes_paused = False
        self._reading()

    def _reading(self) -> None:
        """Read from the charger unless it does not read us or one of its CALLs is paced."""
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return
        if self._writes_paused or self._pacing:
            transport.underlying_transport.pause_reading()
        else:
            transport.underlying_transport.resume_reading()

    # Closing

    def close(self, code: WSCloseCode, reason: str) -> None:
        """Send a CLOSE frame and disconnect once the charger answers it (or after a delay).
        Safe to call more than once."""
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return
        if not transport.is_close_frame_sent:
            self.close_code = code.value
            self.close_reason = reason
            transport.send_close(code, reason.encode())
        if self._close_timer is None:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT, transport.disconnect)

    def keep_alive(self, now: float, interval: float, timeout: float) -> None:
        """One round of the gateway's pings (one timer for every connection, where picows
        would keep a task per connection): ping a charger silent for ``interval`` seconds,
        and close one that has not answered within ``timeout`` (1001)."""
        transport = self.transport
        if transport is None or transport.is_disconnected or transport.is_close_frame_sent:
            return
        if self._ping_deadline:
            if now >= self._ping_deadline:
                self._ping_deadline = 0.0
                self.close(WSCloseCode.GOING_AWAY, f"no pong within {timeout:g} s")
                transport.disconnect()  # it does not answer: no wait for its CLOSE either
        elif now - self._seen >= interval:
            transport.send_ping()
            self._ping_deadline = now + timeout

    @property
    def closed(self) -> bool:
        transport = self.transport
        return transport is None or transport.is_disconnected or transport.is_close_frame_sent

    # Incoming messages

    def _send(self, data: bytes, action: str) -> None:
        transport = self.transport
        if transport is None or transport.is_close_frame_sent or transport.is_disconnected:
            return  # the charger is gone: it will retry what we could not acknowledge
        transport.send(WSMsgType.TEXT, data)
        if self.messages.maxlen:  # EVGATE_MESSAGE_LOG_SIZE=0: no clock read, no entry
            self.messages.append((time.time(), False, data[:MESSAGE_LOG_BYTES], len(data)))
        self.gateway.m_frames_out.inc(action)

    def _refuse(self, exc: OcppError, action: str) -> None:
        self.gateway.m_callerrors_sent.inc(exc.code.value)
        self._send(self.endpoint.refuse(exc), action)

    def _message(self, data: bytes) -> None:
        if self.messages.maxlen:
            self.messages.append((time.time(), True, data[:MESSAGE_LOG_BYTES], len(data)))
        happening = self.endpoint.receive(data)
        if isinstance(happening, IncomingCall):
            self._call_received(happening, happening.action)
        elif isinstance(happening, Refusal):
            if happening.action is not None:  # a CALL, read but refused: a CALL to pace
                self._call_received(happening, happening.action)
            else:
                self._unreadable(happening.error, None)
        elif isinstance(happening, UnreadableReply):
            self._unreadable(happening.error, happening)
        elif isinstance(happening, UnmatchedReply):
            self._unmatched(happening)
        else:
            self._reply_received(happening)

    def _unreadable(self, exc: OcppError, reply: UnreadableReply | None) -> None:
        """A frame that cannot be read: answered when it may be a CALL, else (a reply) it
        fails the command it names, if any."""
        gateway = self.gateway
        gateway.m_frames_in.inc("(unreadable)")
        if reply is not None and reply.call is not None:
            # Over the rate or not: only one command is pending, so a flood cannot make this
            # cost more, and the command need not wait out its timeout.
            future = self._future
            if future is not None and not future.done():
                gateway.m_violations.inc(reply.call.action, exc.code.value)
                future.set_exception(InvalidResponse(exc))
        if not self._take_token():
            # A flood of junk costs no answer and no log line, like CALLs over the rate.
            gateway.m_refused.inc("rate")
        elif reply is None:  # OCPP answers only CALLs
            self._refuse(exc, "(unreadable)")
        else:
            log.info("%s sent a bad reply: %s", self.charger_id, exc.description)

    def _call_received(self, call: _Received, action: str) -> None:
        gateway = self.gateway
        gateway.m_frames_in.inc(action if action in gateway.known_actions else "(unknown)")
        if self.draining:
            return  # shutting down: unanswered, the charger sends it again to the next process
        delay = self._pace()
        if delay is None:
            gateway.m_refused.inc("rate")
            self._refuse(
                GenericError(
                    "message rate limit exceeded (a CALL sent before the previous was answered)",
                    unique_id=call.unique_id,
                ),
                action,
            )
        elif delay:
            gateway.m_paced.inc()
            self._worker = service_task(self._paced(call, action, delay))
        else:
            self._accept(call, action)

    def _accept(self, call: _Received, action: str) -> None:
        """Queue ``call`` for its handler (or refuse it at once)."""
        gateway = self.gateway
        if isinstance(call, Refusal):
            self._refuse(call.error, action)
            return
        if call.violations:
            self._record(action, call.violations)
        if action not in gateway.routes:
            self._refuse(
                ActionNotImplementedError(f"{action} is not implemented", unique_id=call.unique_id),
                action,
            )
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        elif len(inbox) >= MAX_INBOX:
            gateway.m_refused.inc("busy")
            return
        inbox.append(call)
        if self._worker is None:
            self._worker = service_task(self._work())

    def _pace(self) -> float | None:
        """Take a token for a CALL. Returns 0.0 when there was one; when there was none and no
        other CALL of the charger is unanswered, the delay after which the bucket will have
        refilled for this one (taken now, on credit: the charger's next CALL finds the bucket
        empty again, which is the pace); None for a CALL over the rate while another is
        unanswered (OCPP-J allows one at a time)."""
        if self._take_token():
            return 0.0
        if self._worker is not None:
            return None
        self._tokens -= 1.0  # was below 1.0, so now in [-1, 0): at most 1 / rate to wait
        return -self._tokens / self.gateway.settings.message_rate

    async def _paced(self, call: _Received, action: str, delay: float) -> None:
        """Handle ``call`` after ``delay`` seconds, reading nothing more of the charger
        meanwhile (what it floods us with waits in the kernel and then its TCP window, not in
        evgate); this task is the connection's worker, so the CALL counts as unanswered."""
        try:
            self._pacing = True
            self._reading()
            try:
                await asyncio.sleep(delay)
            finally:
                self._pacing = False
                self._reading()
            if not (self.draining or self.closed):  # else unanswered: the charger resends it
                self._accept(call, action)
            await self._work()
        finally:
            self._worker = None

    def _take_token(self) -> bool:
        settings = self.gateway.settings
        now = time.monotonic()
        tokens = self._tokens + (now - self._stamp) * settings.message_rate
        self._stamp = now
        if tokens > settings.message_burst:
            tokens = settings.message_burst
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def _record(self, action: str, violations: tuple[Violation, ...]) -> None:
        self.violations += len(violations)
        for violation in violations:
            self.gateway.m_violations.inc(action, violation.code.value)
        log.info(
            "%s: %s tolerated (lenient): %s",
            self.charger_id,
            action,
            "; ".join(v.description for v in violations),
        )

    async def _work(self) -> None:
        """Answer the inbox's CALLs in order; ends when the inbox is empty."""
        try:
            endpoint, routes = self.endpoint, self.gateway.routes
            while self._inbox:
                call = self._inbox.popleft()
                unique_id, action = call.unique_id, call.action
                try:
                    response = await routes[action](self.context, call.request)
                    data = endpoint.respond(unique_id, response)
                except OcppError as exc:
                    self.gateway.m_callerrors_sent.inc(exc.code.value)
                    data = endpoint.refuse(exc, unique_id)
                except Exception as exc:
                    if self.gateway.unavailable(exc):
                        # An outage looks like one: no answer, the charger resends the CALL
                        # (reported to the dependency's health: no line per CALL).
                        self.gateway.left_unanswered(exc, action)
                        continue
                    log.exception("%s: the %s handler failed", self.charger_id, action)
                    self.gateway.m_callerrors_sent.inc("InternalError")
                    data = endpoint.refuse(exc, unique_id)
                self._send(data, action)
            self._inbox = None  # an idle charger holds no queue
        finally:
            self._worker = None

    def _unmatched(self, reply: UnmatchedReply) -> None:
        gateway = self.gateway
        gateway.m_frames_in.inc("(unmatched)")
        if self._take_token():
            log.info(
                "%s answered a CALL we are not waiting for: %s",
                self.charger_id,
                reply.frame.unique_id,
            )
        else:
            gateway.m_refused.inc("rate")

    def _reply_received(self, reply: Reply | ErrorReply | InvalidReply) -> None:
        gateway = self.gateway
        action = reply.call.action
        gateway.m_frames_in.inc(action)
        future = self._future
        if future is None or future.done():  # the caller gave up (timeout) in this loop turn
            return
        if isinstance(reply, Reply):
            if reply.violations:
                self._record(action, reply.violations)
            future.set_result(reply.response)
        elif isinstance(reply, ErrorReply):
            error = reply.error
            gateway.m_callerrors_received.inc(error.error_code)
            future.set_exception(
                CallRejected(error.error_code, error.error_description, error.error_details)
            )
        else:
            gateway.m_violations.inc(action, reply.error.code.value)
            future.set_exception(InvalidResponse(reply.error))

    # Outgoing calls

    async def call(self, action: str, request: Message) -> Message:
        """Send a CALL and wait for its answer; see :meth:`Gateway.call`.

        Raises:
            ChargerBusy, ChargerDisconnected, CallTimeout, CallRejected, InvalidResponse.
        """
        if self._queued_calls >= MAX_QUEUED_CALLS:
            raise ChargerBusy(f"{MAX_QUEUED_CALLS} commands are already waiting for this charger")
        self._queued_calls += 1
        timeout = self.gateway.settings.call_timeout
        try:
            async with asyncio.timeout(timeout):
                if self._call_lock is None:
                    self._call_lock = asyncio.Lock()
                async with self._call_lock:
                    return await self._call_now(action, request)
        except TimeoutError:
            raise CallTimeout(f"no answer within {timeout:g} s") from None
        finally:
            self._queued_calls -= 1

    async def _call_now(self, action: str, request: Message) -> Message:
        if self.closed:
            raise ChargerDisconnected("the charger disconnected")
        outgoing = self.endpoint.call(action, request)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._future = future
        try:
            self._send(outgoing.data, action)
            return await future
        finally:
            self._future = None
            self.endpoint.abandon(outgoing)  # its answer, if it ever comes, is unmatched
