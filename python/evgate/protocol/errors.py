"""OCPP-J 1.6 error codes and the exceptions that carry them (room: protocol).

Every failure the codec can name is an ``OcppError`` subclass whose ``code`` is the CALLERROR
code of OCPP-J 1.6 section 4.2.3, spelled as 1.6 spells it (``FormationViolation``,
``OccurenceConstraintViolation``). The gateway turns any of them into a CALLERROR with
``evgate.protocol.frames.error_frame_for``; handlers raise them to refuse a CALL with a chosen
code. No class is named like a Python builtin: "NotImplemented" is ``ActionNotImplementedError``.

Lenient decoding does not raise for what it can repair; it returns ``Violation`` records
instead, so the gateway can log and count them (this room does no logging).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

import msgspec

__all__ = [
    "UNKNOWN_UNIQUE_ID",
    "ActionNotImplementedError",
    "ErrorCode",
    "FormationViolationError",
    "GenericError",
    "InternalError",
    "NotSupportedError",
    "OccurenceConstraintViolationError",
    "OcppError",
    "PropertyConstraintViolationError",
    "ProtocolError",
    "SecurityError",
    "TypeConstraintViolationError",
    "Violation",
    "error_class",
]

#: The unique id of a CALLERROR answering a frame whose own id could not be read (see
#: ``evgate.protocol.frames``).
UNKNOWN_UNIQUE_ID = "-1"


class ErrorCode(StrEnum):
    """CALLERROR codes of OCPP-J 1.6 (section 4.2.3), with their meaning from the spec."""

    #: Requested Action is not known by receiver.
    not_implemented = "NotImplemented"
    #: Requested Action is recognized but not supported by the receiver.
    not_supported = "NotSupported"
    #: An internal error occurred and the receiver was not able to process the Action.
    internal_error = "InternalError"
    #: Payload for Action is incomplete.
    protocol_error = "ProtocolError"
    #: During the processing of Action a security issue occurred.
    security_error = "SecurityError"
    #: Payload for Action is syntactically incorrect or not conform the PDU structure.
    formation_violation = "FormationViolation"
    #: Payload is syntactically correct but at least one field contains an invalid value.
    property_constraint_violation = "PropertyConstraintViolation"
    #: Payload is syntactically correct but at least one field violates occurrence constraints.
    occurence_constraint_violation = "OccurenceConstraintViolation"
    #: Payload is syntactically correct but at least one field violates data type constraints.
    type_constraint_violation = "TypeConstraintViolation"
    #: Any other error not covered by the previous ones.
    generic_error = "GenericError"


class OcppError(Exception):
    """An error that has an OCPP-J CALLERROR code.

    Attributes:
        code: the CALLERROR code (a class attribute of each subclass).
        description: human-readable; for payload errors it names the offending field path.
        details: the CALLERROR's ErrorDetails object (JSON-encodable, usually empty).
        unique_id: the id of the frame that failed, when it could be read; ``None`` when it
            could not (the CALLERROR then uses ``UNKNOWN_UNIQUE_ID``).
        message_type_id: 2, 3 or 4 when the failing frame's MessageTypeId was read, else
            ``None``. OCPP answers only a CALL with a CALLERROR: the gateway should answer when
            this is 2 or ``None`` and only log a bad CALLRESULT or CALLERROR.
        path: the offending field path inside the payload (``"meterValue[0].timestamp"``),
            ``""`` for the payload as a whole, ``None`` when the error is not about a field.
    """

    code: ClassVar[ErrorCode] = ErrorCode.generic_error

    def __init__(
        self,
        description: str,
        details: dict[str, Any] | None = None,
        *,
        unique_id: str | None = None,
        message_type_id: int | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.details: dict[str, Any] = {} if details is None else details
        self.unique_id = unique_id
        self.message_type_id = message_type_id
        self.path = path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r}, unique_id={self.unique_id!r})"


class ActionNotImplementedError(OcppError):
    """``NotImplemented``: the action is not an OCPP 1.6J action."""

    code = ErrorCode.not_implemented


class NotSupportedError(OcppError):
    """``NotSupported``: a known action that this side does not accept (wrong direction)."""

    code = ErrorCode.not_supported


class InternalError(OcppError):
    """``InternalError``: the receiver failed; the description must not leak internals."""

    code = ErrorCode.internal_error


class ProtocolError(OcppError):
    """``ProtocolError``: the frame is incomplete (wrong element count, unknown type id)."""

    code = ErrorCode.protocol_error


class SecurityError(OcppError):
    """``SecurityError``: a security issue occurred while processing the action."""

    code = ErrorCode.security_error


class FormationViolationError(OcppError):
    """``FormationViolation``: not JSON, not an OCPP-J frame, or a field the schema forbids."""

    code = ErrorCode.formation_violation


class PropertyConstraintViolationError(OcppError):
    """``PropertyConstraintViolation``: bad enum value, too long, out of range, bad date-time."""

    code = ErrorCode.property_constraint_violation


class OccurenceConstraintViolationError(OcppError):
    """``OccurenceConstraintViolation``: a required field is missing or a list is too short."""

    code = ErrorCode.occurence_constraint_violation


class TypeConstraintViolationError(OcppError):
    """``TypeConstraintViolation``: a field has the wrong JSON type."""

    code = ErrorCode.type_constraint_violation


class GenericError(OcppError):
    """``GenericError``: any other error."""

    code = ErrorCode.generic_error


_CLASSES: dict[ErrorCode, type[OcppError]] = {
    cls.code: cls
    for cls in (
        ActionNotImplementedError,
        NotSupportedError,
        InternalError,
        ProtocolError,
        SecurityError,
        FormationViolationError,
        PropertyConstraintViolationError,
        OccurenceConstraintViolationError,
        TypeConstraintViolationError,
        GenericError,
    )
}


def error_class(code: ErrorCode) -> type[OcppError]:
    """Return the ``OcppError`` subclass for ``code`` (to raise one chosen at run time)."""
    return _CLASSES[code]


class Violation(msgspec.Struct, frozen=True, gc=False):
    """One schema violation found in a payload.

    Strict decoding raises the first one as an ``OcppError``; lenient decoding returns all
    that it repaired or tolerated, for the gateway to log and count.

    Attributes:
        code: the CALLERROR code strict mode would have answered with.
        path: the field path inside the payload (``"meterValue[0].timestamp"``; ``""`` for
            the payload itself).
        message: what was wrong and, in lenient mode, what was done about it.
    """

    code: ErrorCode
    path: str
    message: str

    @property
    def description(self) -> str:
        """The CALLERROR description for this violation: the path, then the message."""
        return f"{self.path or 'payload'}: {self.message}"

    def to_error(
        self, *, unique_id: str | None = None, message_type_id: int | None = None
    ) -> OcppError:
        """Return the ``OcppError`` that strict mode raises for this violation."""
        return _CLASSES[self.code](
            self.description,
            unique_id=unique_id,
            message_type_id=message_type_id,
            path=self.path,
        )
