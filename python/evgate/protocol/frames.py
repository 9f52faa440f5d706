"""The OCPP-J frame codec (room: protocol): bytes in, typed frames and payloads out, bytes out.

Sans-I/O: the gateway hands in the text of each WebSocket message and sends what comes back.

Frames::

    CALL        [2, "<uniqueId>", "<action>", {payload}]
    CALLRESULT  [3, "<uniqueId>", {payload}]
    CALLERROR   [4, "<uniqueId>", "<errorCode>", "<errorDescription>", {errorDetails}]

Decoding is two steps, both with decoders built once at import:

1. ``decode(data)`` reads the envelope in one msgspec pass into ``Call``, ``CallResult`` or
   ``CallError`` (a tagged union of ``array_like`` Structs). The payload stays a
   ``msgspec.Raw`` slice of the input, so nothing is decoded twice. When ``data`` is a
   borrowed buffer (picows), finish step 2 before the buffer is reused.
2. ``decode_request(call, accept_direction=...)`` decodes and validates a CALL's payload with
   the cached decoder of its action; ``decode_response(action, payload)`` does the same for
   the CALLRESULT of a CALL that we sent.

Every failure is raised as an ``OcppError`` subclass carrying ``unique_id`` (when it could be
read) and ``message_type_id``; ``error_frame_for(exc)`` turns it into CALLERROR bytes, and
turns any other exception into ``InternalError`` "internal error" without leaking anything.

Frames that cannot be read. OCPP-J 1.6 says nothing about a frame whose unique id cannot be
read; OCPP-J 2.0.1 settled it by answering with a CALLERROR whose MessageId is ``"-1"``, and
that is what evgate does (``UNKNOWN_UNIQUE_ID``): a charger that logs CALLERRORs sees why,
and one that matches ids ignores a "-1" it never sent. (The ``ocpp`` library instead logs
and drops such frames, leaving the charger to time out.) The codes, in 1.6's own words:

===============================================  ============================  ===========
frame                                            code                          unique id
===============================================  ============================  ===========
not JSON                                         FormationViolation            "-1"
arrays and objects nested over 32 deep (1)       FormationViolation            "-1"
not UTF-8 in its envelope (2)                    FormationViolation            its id or "-1"
not UTF-8 in its payload                         FormationViolation            its id
JSON but not an array                            FormationViolation            "-1"
empty array                                      ProtocolError                 "-1"
MessageTypeId not an integer                     FormationViolation            "-1"
MessageTypeId an integer other than 2, 3, 4      ProtocolError                 its id or "-1"
unique id missing or not a string                FormationViolation            "-1"
unique id longer than 36 characters              PropertyConstraintViolation   echoed
wrong number of elements for its type            ProtocolError                 its id
action, code or description not a string         FormationViolation            its id
payload or error details not a JSON object       FormationViolation            its id
===============================================  ============================  ===========

(1) ``MAX_NESTING``, the frame's array counting as one: OCPP 1.6 needs six. Nesting is
checked before any generic reading (of a bad frame, of a lenient payload, of a CALLERROR's
details: then with its id and MessageTypeId 4). A CALL's or CALLRESULT's payload is never
read deeper than its schema, which refuses a deep value in its own words first
(``{"idTag": [[...]]}`` is a TypeConstraintViolation with its id).

(2) The unique id is echoed when it is valid UTF-8 itself, and so is the MessageTypeId:
a bad CALLRESULT or CALLERROR is not answered. RFC 6455 would fail the connection (1007)
on a text message that is not UTF-8; evgate answers the one frame, as for any unreadable
frame, and the charger's other CALLs keep being answered.

A string holding a lone UTF-16 surrogate escape (``"\\ud800"``) makes the whole frame "not
valid JSON" here: msgspec refuses it, where Python's json module (and so the ``ocpp``
library) would read it. A CALL whose payload holds U+0000 (``"\\u0000"``) in any text is
answered PropertyConstraintViolation with the field's path, before its action is looked up:
OCPP's strings are printable text and PostgreSQL cannot store a NUL (the official schemas
allow it). ``decode_response`` refuses such a CALLRESULT the same way, after its schema.

The gateway answers only what may be answered: a CALLERROR is the answer to a CALL, so an
error with ``message_type_id`` 3 or 4 (a bad CALLRESULT or CALLERROR from the charger) is
logged and not answered (it fails the command it answers, when its id was read); one with
``message_type_id`` 2 or ``None`` is answered.

Lenient mode. ``decode(data, lenient=True)`` tolerates a unique id longer than 36 characters
and a CALLERROR without (or with ``null``) details; payload leniency is described in
``evgate.protocol.validation``. Payload violations are returned, never logged here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

import msgspec

from evgate.protocol.errors import (
    UNKNOWN_UNIQUE_ID,
    ActionNotImplementedError,
    ErrorCode,
    FormationViolationError,
    InternalError,
    NotSupportedError,
    OcppError,
    PropertyConstraintViolationError,
    ProtocolError,
    error_class,
)
from evgate.protocol.v16.actions import ACTION_OF_REQUEST, ACTIONS, Direction
from evgate.protocol.v16.messages import Message
from evgate.protocol.validation import (
    MAX_NESTING,
    PayloadCodec,
    Violations,
    nests_deeper,
    nul_violation,
)

__all__ = [
    "MAX_UNIQUE_ID_LENGTH",
    "Call",
    "CallError",
    "CallResult",
    "Frame",
    "decode",
    "decode_request",
    "decode_response",
    "encode_call",
    "encode_error",
    "encode_result",
    "error_frame_for",
    "refuse_nul",
]

#: OCPP-J: "The maximum of 36 characters is to allow for GUIDs".
MAX_UNIQUE_ID_LENGTH: Final = 36

UniqueId = Annotated[str, msgspec.Meta(max_length=MAX_UNIQUE_ID_LENGTH)]


class Call(
    msgspec.Struct, array_like=True, tag=2, frozen=True, gc=False, forbid_unknown_fields=True
):
    """A CALL: ``[2, unique_id, action, payload]``; decode ``payload`` with decode_request."""

    unique_id: UniqueId
    action: str
    payload: msgspec.Raw


class CallResult(
    msgspec.Struct, array_like=True, tag=3, frozen=True, gc=False, forbid_unknown_fields=True
):
    """A CALLRESULT: ``[3, unique_id, payload]``; decode ``payload`` with decode_response."""

    unique_id: UniqueId
    payload: msgspec.Raw


class CallError(
    msgspec.Struct, array_like=True, tag=4, frozen=True, gc=False, forbid_unknown_fields=True
):
    """A CALLERROR: ``[4, unique_id, error_code, error_description, error_details]``.

    ``error_code`` stays a string: a peer may send a code 1.6 does not define.
    """

    unique_id: UniqueId
    error_code: str
    error_description: str
    error_details: dict[str, Any]

    def to_exception(self) -> OcppError:
        """The ``OcppError`` this CALLERROR reports (``GenericError`` for an unknown code)."""
        try:
            cls = error_class(ErrorCode(self.error_code))
        except ValueError:
            cls = error_class(ErrorCode.generic_error)
        return cls(
            self.error_description,
            self.error_details,
            unique_id=self.unique_id,
            message_type_id=4,
        )


Frame = Call | CallResult | CallError

_FRAME_DECODER: msgspec.json.Decoder[Frame] = msgspec.json.Decoder(Frame)
_decode_frame = _FRAME_DECODER.decode
_encode = msgspec.json.Encoder().encode

# One codec per action and side, built at import: the hot path is a dict lookup.
_REQUESTS: Final[dict[str, PayloadCodec]] = {
    name: PayloadCodec(spec.request) for name, spec in ACTIONS.items()
}
_RESPONSES: Final[dict[str, PayloadCodec]] = {
    name: PayloadCodec(spec.response) for name, spec in ACTIONS.items()
}
# The CALLs each side accepts, by the direction they travel. (Looked up by identity below:
# hashing a Flag member costs more than the rest of a small payload's decode.)
_FROM_CHARGER: Final = Direction.charger_to_csms
_FROM_CSMS: Final = Direction.csms_to_charger
_CALLS_FROM_CHARGER: Final = {
    name: _REQUESTS[name] for name, spec in ACTIONS.items() if spec.direction & _FROM_CHARGER
}
_CALLS_FROM_CSMS: Final = {
    name: _REQUESTS[name] for name, spec in ACTIONS.items() if spec.direction & _FROM_CSMS
}
_ELEMENTS: Final = {2: (4, "CALL"), 3: (3, "CALLRESULT"), 4: (5, "CALLERROR")}


def decode(data: bytes | str, *, lenient: bool = False) -> Frame:
    """Decode a frame's envelope; the payload is left as ``msgspec.Raw``.

    Args:
        data: one WebSocket text message (bytes in UTF-8, or str).
        lenient: accept a unique id over 36 characters and a CALLERROR without details.

    Returns:
        ``Call``, ``CallResult`` or ``CallError``. After a ``Call``, call ``decode_request``;
        after a ``CallResult``, ``decode_response`` with the action of the CALL it answers.

    Raises:
        OcppError: the frame is not an OCPP-J frame (see the module docstring for the code
            and unique id of each case).
    """
    try:
        frame = _decode_frame(data)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        # msgspec checks UTF-8 only in the strings it decodes, and skips a payload (Raw) with
        # a recursion guard that a frame a few KB long nested a thousand deep trips.
        pass
    else:
        if type(frame) is Call:
            if _spells_nul(data):
                refuse_nul(frame.payload, frame.unique_id)
        elif type(frame) is CallError and frame.error_details and nests_deeper(data, MAX_NESTING):
            raise FormationViolationError(_TOO_DEEP, unique_id=frame.unique_id, message_type_id=4)
        return frame
    # Slow path, for bad frames only: read the frame generically to say exactly what is wrong.
    outcome = _diagnose(data, lenient)
    if isinstance(outcome, OcppError):
        raise outcome
    if type(outcome) is Call and _spells_nul(data):
        refuse_nul(outcome.payload, outcome.unique_id)
    return outcome


# JSON spells U+0000 only this way (a raw control character is not JSON). Most frames hold no
# backslash at all, and one memchr for it costs far less than a search for the escape (whose
# digits are everywhere in a meter value frame).
_NUL_ESCAPE = b"\\u0000"
_NUL_SEARCH = re.compile(re.escape(_NUL_ESCAPE))
_BACKSLASH = ord("\\")


def _spells_nul(data: bytes | str | msgspec.Raw) -> bool:
    if isinstance(data, bytes):
        return _BACKSLASH in data and _NUL_ESCAPE in data
    if isinstance(data, str):
        return "\\" in data and "\\u0000" in data
    return _NUL_SEARCH.search(data) is not None  # a borrowed buffer


def refuse_nul(
    payload: msgspec.Raw | bytes | str, unique_id: str | None = None, message_type_id: int = 2
) -> None:
    """Raise PropertyConstraintViolation when a text of ``payload`` holds U+0000
    (``validation.nul_violation``); an escaped backslash before ``u0000`` is no NUL. A payload
    that is not JSON (or not UTF-8), nests deeper than ``MAX_NESTING`` or holds a number
    beyond float64 passes, unread: its decoding tells what is wrong with it."""
    if not _spells_nul(payload) or nests_deeper(payload, MAX_NESTING - 1):
        return
    try:
        tree = _ANY.decode(payload)
    except (msgspec.MsgspecError, UnicodeError):
        return
    violation = nul_violation(tree)
    if violation is not None:
        raise violation.to_error(unique_id=unique_id, message_type_id=message_type_id)


# Numbers are read as text: a 1e999 next to a NUL is not this check's business.
_ANY = msgspec.json.Decoder(float_hook=str)


_REPLACEMENT = "\N{REPLACEMENT CHARACTER}"
_TOO_DEEP = f"frame nests deeper than {MAX_NESTING} arrays and objects"


def _diagnose(data: bytes | str, lenient: bool) -> Frame | OcppError:
    if nests_deeper(data, MAX_NESTING):
        return FormationViolationError(_TOO_DEEP)
    try:
        frame = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return FormationViolationError("frame is not valid JSON")
    except UnicodeError:
        return _not_utf8(data, lenient)
    if not isinstance(frame, list):
        return FormationViolationError("frame is not a JSON array")
    if not frame:
        return ProtocolError("frame is an empty array")
    type_id = frame[0]
    if type(type_id) is not int:
        return FormationViolationError("MessageTypeId is not an integer")
    unique_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
    if type_id not in _ELEMENTS:
        return ProtocolError(f"unknown MessageTypeId {type_id}", unique_id=unique_id)
    if unique_id is None:
        return FormationViolationError("UniqueId missing or not a string", message_type_id=type_id)
    where: dict[str, Any] = {"unique_id": unique_id, "message_type_id": type_id}
    if len(unique_id) > MAX_UNIQUE_ID_LENGTH and not lenient:
        return PropertyConstraintViolationError(
            f"UniqueId longer than {MAX_UNIQUE_ID_LENGTH} characters", **where
        )
    if type_id == 4 and lenient and len(frame) in (4, 5) and frame[4:] in ([], [None]):
        frame[4:] = [{}]
    count, kind = _ELEMENTS[type_id]
    if len(frame) != count:
        return ProtocolError(f"a {kind} has {count} elements, not {len(frame)}", **where)
    if type_id == 2:
        if not isinstance(frame[2], str):
            return FormationViolationError("Action is not a string", **where)
        if not isinstance(frame[3], dict):
            return FormationViolationError("payload is not a JSON object", path="", **where)
        return Call(unique_id, frame[2], msgspec.Raw(_encode(frame[3])))
    if type_id == 3:
        if not isinstance(frame[2], dict):
            return FormationViolationError("payload is not a JSON object", path="", **where)
        return CallResult(unique_id, msgspec.Raw(_encode(frame[2])))
    if not isinstance(frame[2], str) or not isinstance(frame[3], str):
        return FormationViolationError("ErrorCode or ErrorDescription not a string", **where)
    if not isinstance(frame[4], dict):
        return FormationViolationError("ErrorDetails is not a JSON object", **where)
    return CallError(unique_id, frame[2], frame[3], frame[4])


def _not_utf8(data: bytes | str, lenient: bool) -> OcppError:
    """The error of a frame whose strings are not all UTF-8 (a ``str`` with lone surrogates,
    or bytes): read with U+FFFD in their place, to echo the unique id and MessageTypeId when
    they are readable."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    outcome = _diagnose(raw.decode("utf-8", "replace"), lenient)
    if isinstance(outcome, OcppError):
        error = outcome  # wrong in another way too: say that
    else:
        error = FormationViolationError(
            "frame is not valid UTF-8",
            unique_id=outcome.unique_id,
            message_type_id=_TYPE_IDS[type(outcome)],
        )
    if error.unique_id is not None and _REPLACEMENT in error.unique_id:
        error.unique_id = None
    return error


_TYPE_IDS: Final[dict[type[Frame], int]] = {Call: 2, CallResult: 3, CallError: 4}


def decode_request(
    call: Call,
    *,
    accept_direction: Direction = _FROM_CHARGER,
    lenient: bool = False,
) -> tuple[Message, Violations]:
    """Decode and validate a CALL's payload as the request of its action.

    Args:
        call: a CALL from ``decode``.
        accept_direction: the direction of the CALLs this side accepts; a CSMS accepts
            ``charger_to_csms`` (the default), a charger simulator ``csms_to_charger``;
            ``both`` accepts every action.
        lenient: repair and report what can be understood (see ``validation``).

    Returns:
        The request Struct (``BootNotificationRequest`` ...) and the violations lenient mode
        repaired or tolerated (empty in strict mode).

    Raises:
        OcppError: ``NotImplemented`` for an unknown action, ``NotSupported`` for an action
            travelling the other way, a constraint violation for a bad payload; ``unique_id``
            is the CALL's.
    """
    if accept_direction is _FROM_CHARGER:
        codec = _CALLS_FROM_CHARGER.get(call.action)
    elif accept_direction is _FROM_CSMS:
        codec = _CALLS_FROM_CSMS.get(call.action)
    else:
        codec = _REQUESTS.get(call.action)
    try:
        if codec is None:
            if call.action in ACTIONS:
                raise NotSupportedError(f"{call.action} is not accepted in this direction")
            raise ActionNotImplementedError(f"unknown action {call.action!r}")
        return codec.decode(call.payload, lenient=lenient)
    except OcppError as exc:
        exc.unique_id = call.unique_id
        exc.message_type_id = 2
        raise


def decode_response(
    action: str,
    payload: msgspec.Raw | bytes | str,
    *,
    lenient: bool = False,
    unique_id: str | None = None,
) -> tuple[Message, Violations]:
    """Decode and validate a CALLRESULT's payload as the response to ``action``.

    Args:
        action: the action of the CALL we sent, which this CALLRESULT answers.
        payload: the CALLRESULT's ``payload``.
        lenient: repair and report what can be understood.
        unique_id: set on a raised error, for the log.

    Returns:
        The response Struct and the violations lenient mode repaired or tolerated.

    Raises:
        OcppError: as ``decode_request``. Do not answer it with a CALLERROR (OCPP answers
            only CALLs); fail the pending call instead.
    """
    codec = _RESPONSES.get(action)
    try:
        if codec is None:
            raise ActionNotImplementedError(f"unknown action {action!r}")
        decoded = codec.decode(payload, lenient=lenient)
        refuse_nul(payload, unique_id, 3)  # a command's answer: rare enough to search here
        return decoded
    except OcppError as exc:
        exc.unique_id = unique_id
        exc.message_type_id = 3
        raise


def encode_call(unique_id: str, action: str, request: Message) -> bytes:
    """Encode a CALL: ``[2, unique_id, action, request]``, compact, absent fields omitted.

    Raises:
        ValueError: ``request`` is not the request type of ``action``.
    """
    if ACTION_OF_REQUEST.get(type(request)) != action:
        raise ValueError(f"{type(request).__name__} is not the request of {action!r}")
    return _encode((2, unique_id, action, request))


def encode_result(unique_id: str, response: Message) -> bytes:
    """Encode a CALLRESULT: ``[3, unique_id, response]``, compact, absent fields omitted."""
    return _encode((3, unique_id, response))


def encode_error(
    unique_id: str | None,
    code: ErrorCode,
    description: str,
    details: dict[str, Any] | None = None,
) -> bytes:
    """Encode a CALLERROR; a ``None`` unique id (unreadable) is written as ``"-1"``."""
    return _encode(
        (
            4,
            UNKNOWN_UNIQUE_ID if unique_id is None else unique_id,
            code,
            description,
            {} if details is None else details,
        )
    )


def error_frame_for(exc: BaseException, unique_id: str | None = None) -> bytes:
    """The CALLERROR bytes answering ``exc``.

    Args:
        exc: an ``OcppError`` (answered with its code, description and details), or any
            other exception: a handler's failure, answered ``InternalError`` "internal error"
            with no detail, so nothing about evgate's internals reaches the charger.
        unique_id: the CALL's id, when ``exc`` does not carry one (a handler's exception).
    """
    if isinstance(exc, OcppError):
        return encode_error(
            exc.unique_id if exc.unique_id is not None else unique_id,
            exc.code,
            exc.description,
            exc.details,
        )
    return encode_error(unique_id, InternalError.code, "internal error")
