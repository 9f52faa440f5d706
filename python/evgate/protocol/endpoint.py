"""One side of an OCPP-J connection, sans I/O (room: protocol): what a frame means to it.

An :class:`Endpoint` is the protocol state of one WebSocket connection, in either role: the
central system (evgate's gateway) or a charger (the fleet simulator, the locustfile). It
owns what OCPP-J asks of a connection beyond the frame codec:

* unique ids for its own CALLs (from one counter per process, so an id is never reused
  while the process runs, not even across a charger's reconnects);
* the one-outstanding-CALL rule for its own CALLs (``call`` raises ``CallInProgress`` while
  one is unanswered; the caller queues, it has the clock). The peer's CALLs are read as they
  come: a peer that sends a CALL before its last is answered breaks OCPP-J, but refusing it
  would refuse what a slow answer made look early, so what to do about it (evgate's gateway
  paces such a charger) belongs to whoever holds the clock;
* reply matching: a CALLRESULT or CALLERROR whose id is the outstanding CALL's answers it;
  any other is unmatched (a late answer, after the caller gave up with ``abandon``);
* which CALLs it accepts (those travelling towards its role), decoded and validated, with
  the repairs lenient mode made.

It does no I/O and keeps no time: bytes in (``receive``), a typed happening out; requests
in (``call``, ``respond``, ``refuse``), bytes out. The caller sends, paces, times out and
wakes whoever waits. ``receive`` runs for every frame: it allocates one happening beyond
what ``frames`` allocates, and encodes a refusal only when its ``data`` is read.

Happenings (``receive``'s result) and what the caller does with them:

=================  ========================================================================
happening          meaning
=================  ========================================================================
IncomingCall       a CALL from the peer, request decoded; answer with ``respond`` or
                   ``refuse`` (in arrival order)
Refusal            a frame to answer with a CALLERROR (``data``): a CALL whose request is
                   refused (``action`` set), or an unreadable frame (``action`` None)
Reply              the CALLRESULT of the outstanding CALL, response decoded
ErrorReply         the CALLERROR answering the outstanding CALL
InvalidReply       the CALLRESULT of the outstanding CALL, but its payload breaks the schema
UnreadableReply    a CALLRESULT or CALLERROR that cannot be read; ``call`` is the outstanding
                   CALL when it names it (which stays outstanding: the caller decides)
UnmatchedReply     a CALLRESULT or CALLERROR that answers no outstanding CALL
=================  ========================================================================

A reply that matches ends its CALL (``outstanding`` is None after it); OCPP answers only
CALLs, so no reply is ever answered.
"""

from __future__ import annotations

import enum
import itertools
from typing import Final

import msgspec

from evgate.protocol.errors import OcppError
from evgate.protocol.frames import (
    Call,
    CallError,
    CallResult,
    decode,
    decode_request,
    decode_response,
    encode_call,
    encode_result,
    error_frame_for,
)
from evgate.protocol.v16.actions import ACTION_OF_REQUEST, ACTIONS, Direction
from evgate.protocol.v16.messages import Message
from evgate.protocol.validation import Violations

__all__ = [
    "CallInProgress",
    "Endpoint",
    "ErrorReply",
    "Happening",
    "IncomingCall",
    "InvalidReply",
    "OutgoingCall",
    "Refusal",
    "Reply",
    "Role",
    "UnmatchedReply",
    "UnreadableReply",
]


class Role(enum.Enum):
    """Which side of the connection an endpoint is."""

    central_system = "central_system"
    charger = "charger"


class CallInProgress(Exception):
    """``call`` while another CALL of this endpoint is unanswered (OCPP-J allows one)."""


class OutgoingCall(msgspec.Struct, frozen=True, gc=False):
    """A CALL this endpoint sends: send ``data``; its reply comes back as a ``Reply``,
    ``ErrorReply`` or ``InvalidReply`` naming it."""

    unique_id: str
    action: str
    data: bytes


class IncomingCall(msgspec.Struct, frozen=True, gc=False):
    """A CALL from the peer, its request decoded and validated.

    ``violations`` are what lenient mode repaired or tolerated (empty in strict mode).
    """

    unique_id: str
    action: str
    request: Message
    violations: Violations


class Refusal(msgspec.Struct, frozen=True, gc=False):
    """A frame answered with a CALLERROR (``data``, encoded when read).

    ``action`` is the refused CALL's action when its envelope was read (its request is
    refused: unknown action, wrong direction, bad payload); None when the frame itself
    cannot be read (the CALLERROR then names its id, or ``"-1"``).
    """

    error: OcppError
    action: str | None

    @property
    def unique_id(self) -> str | None:
        """The refused frame's unique id, when it could be read."""
        return self.error.unique_id

    @property
    def data(self) -> bytes:
        """The CALLERROR frame to send."""
        return error_frame_for(self.error)


class Reply(msgspec.Struct, frozen=True, gc=False):
    """The CALLRESULT answering ``call``, its response decoded and validated."""

    call: OutgoingCall
    response: Message
    violations: Violations


class ErrorReply(msgspec.Struct, frozen=True, gc=False):
    """The CALLERROR answering ``call`` (``error.to_exception()`` raises it as typed)."""

    call: OutgoingCall
    error: CallError


class InvalidReply(msgspec.Struct, frozen=True, gc=False):
    """The CALLRESULT answering ``call``, whose payload is not its action's response."""

    call: OutgoingCall
    error: OcppError


class UnreadableReply(msgspec.Struct, frozen=True, gc=False):
    """A CALLRESULT or CALLERROR that cannot be read (``error`` says why).

    ``call`` is the outstanding CALL when the frame names it; it stays outstanding (what
    cannot be read is no answer), and the caller may fail it at once and ``abandon`` it.
    """

    error: OcppError
    call: OutgoingCall | None


class UnmatchedReply(msgspec.Struct, frozen=True, gc=False):
    """A CALLRESULT or CALLERROR that answers no outstanding CALL (a late answer, say)."""

    frame: CallResult | CallError


Happening = (
    IncomingCall | Refusal | Reply | ErrorReply | InvalidReply | UnreadableReply | UnmatchedReply
)

# One counter for every endpoint of the process: ids are unique in the process, so a late
# answer from a charger's previous connection can never match a CALL of its next one.
_ids = itertools.count(1)

# The CALLs each role accepts, and the CALLs each role may send: the other role's.
_ACCEPTS: Final = {
    Role.central_system: Direction.charger_to_csms,
    Role.charger: Direction.csms_to_charger,
}
_SENDS: Final = {
    Role.central_system: Direction.csms_to_charger,
    Role.charger: Direction.charger_to_csms,
}


class Endpoint:
    """The OCPP-J protocol state of one connection, for ``role``.

    Args:
        role: the side this endpoint plays.
        lenient: repair and report what can be understood of the peer's frames (see
            ``evgate.protocol.validation``); strict otherwise.
    """

    __slots__ = ("_accepts", "_outstanding", "lenient", "role")

    def __init__(self, role: Role, *, lenient: bool = False) -> None:
        self.role = role
        self.lenient = lenient
        self._accepts = _ACCEPTS[role]
        self._outstanding: OutgoingCall | None = None

    @property
    def outstanding(self) -> OutgoingCall | None:
        """This endpoint's CALL that awaits its answer, if any."""
        return self._outstanding

    def receive(self, data: bytes | str) -> Happening:
        """What one WebSocket text message from the peer means.

        Args:
            data: the message, bytes in UTF-8 (owned, not a borrowed buffer) or str.

        Returns:
            A happening (see the module docstring). Never raises for anything the peer sends.
        """
        try:
            frame = decode(data, lenient=self.lenient)
        except OcppError as exc:
            if exc.message_type_id in (2, None):
                return Refusal(exc, None)
            outstanding = self._outstanding
            if outstanding is not None and outstanding.unique_id != exc.unique_id:
                outstanding = None
            return UnreadableReply(exc, outstanding)
        if isinstance(frame, Call):
            try:
                request, violations = decode_request(
                    frame, accept_direction=self._accepts, lenient=self.lenient
                )
            except OcppError as exc:
                return Refusal(exc, frame.action)
            return IncomingCall(frame.unique_id, frame.action, request, violations)
        outstanding = self._outstanding
        if outstanding is None or outstanding.unique_id != frame.unique_id:
            return UnmatchedReply(frame)
        self._outstanding = None
        if isinstance(frame, CallError):
            return ErrorReply(outstanding, frame)
        try:
            response, violations = decode_response(
                outstanding.action,
                frame.payload,
                lenient=self.lenient,
                unique_id=outstanding.unique_id,
            )
        except OcppError as exc:
            return InvalidReply(outstanding, exc)
        return Reply(outstanding, response, violations)

    def call(self, action: str, request: Message) -> OutgoingCall:
        """Make a CALL of ``request``; send its ``data``, then wait for its reply.

        Raises:
            CallInProgress: another CALL of this endpoint is unanswered; wait for its reply
                or ``abandon`` it first.
            ValueError: ``request`` is not the request of ``action``, or ``action`` is not
                one this role sends.
        """
        if self._outstanding is not None:
            raise CallInProgress(f"{self._outstanding.action} is still unanswered")
        if ACTION_OF_REQUEST.get(type(request)) != action or not (
            ACTIONS[action].direction & _SENDS[self.role]
        ):
            raise ValueError(f"{type(request).__name__} is not a {action} a {self.role.name} sends")
        unique_id = str(next(_ids))
        outgoing = OutgoingCall(unique_id, action, encode_call(unique_id, action, request))
        self._outstanding = outgoing
        return outgoing

    def abandon(self, call: OutgoingCall) -> None:
        """Stop waiting for ``call``'s reply (timed out, failed, the connection closed):
        a reply that comes later is unmatched. Nothing happens when ``call`` is no longer
        outstanding."""
        if self._outstanding is call:
            self._outstanding = None

    @staticmethod
    def respond(unique_id: str, response: Message) -> bytes:
        """The CALLRESULT answering the peer's CALL ``unique_id`` with ``response``."""
        return encode_result(unique_id, response)

    @staticmethod
    def refuse(error: BaseException, unique_id: str | None = None) -> bytes:
        """The CALLERROR answering the peer's CALL ``unique_id`` with ``error``: an
        ``OcppError`` with its code, anything else as InternalError "internal error" (see
        ``frames.error_frame_for``)."""
        return error_frame_for(error, unique_id)
