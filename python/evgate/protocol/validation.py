"""Payload decoding and validation for one message type (room: protocol).

A ``PayloadCodec`` decodes one action's request or response payload into its Struct and
validates it exactly as the official JSON schemas do. Most of the work is msgspec's: the
Struct types carry required fields, JSON types, enums, ``maxLength``, ``minItems``, zoned
date-times and ``additionalProperties: false``. This module adds what a type cannot say, in
a check that runs after a successful decode and only for the types that need it:

* ``multipleOf 0.1`` on ``limit`` and ``minChargingRate`` (SetChargingProfile.req,
  RemoteStartTransaction.req, GetCompositeSchedule.conf). The test is ``round(x, 1) == x``
  on the decoded float, which is exact for every number whose JSON text is the shortest
  spelling of its float (what every encoder writes); a text with more than 17 significant
  digits, such as ``21.40000000000000001``, is judged by its float (``21.4``) where the
  ``ocpp`` library's Decimal parse would refuse it.
* MeterValues.req: each ``sampledValue`` list non-empty (StopTransaction.req's may be empty).
* StopTransaction.req: ``unit`` may not be ``Hertz`` (the official schema's list lacks it).
* Date-time spelling. msgspec parses RFC 3339 and also two spellings RFC 3339's grammar does
  not have (a space instead of ``T``, an offset without colon, ``+0200``); the official
  ``date-time`` check (``rfc3339-validator``) refuses both. Payload types holding
  date-times get a second, skimming decode of just their date-time strings (a "view" Struct
  built once per type at import), checked against the RFC 3339 pattern.

Errors are msgspec's, mapped to OCPP-J codes from the message without validating again:

========================================  ==================================
msgspec says                              OCPP-J 1.6 code
========================================  ==================================
Object missing required field             OccurenceConstraintViolation
Expected `array` of length >= N           OccurenceConstraintViolation
Object contains unknown field             FormationViolation
Expected `object`, got ... (the payload)  FormationViolation
Expected `T`, got `U`                     TypeConstraintViolation
Invalid enum value / length <= N          PropertyConstraintViolation
Invalid RFC3339 / no timezone / range     PropertyConstraintViolation
(evgate's own) a text holding U+0000      PropertyConstraintViolation
========================================  ==================================

Lenient mode (``lenient=True``) first tries the strict decoder; only when it fails does it
fall back to a slow repair loop on the generic JSON tree, one repair per failure, each
reported as a ``Violation``: unknown fields are dropped, ``null`` optional fields dropped,
numbers sent as strings (and strings sent as numbers, booleans as strings, integral floats
for integers) converted, a date-time without zone read as UTC, an enum value in the wrong
letter case matched. What cannot be understood (a missing required field, an unknown enum
value, an over-long string) is still refused with the code strict mode would use. After a
successful decode, the post-decode checks above are reported instead of raised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any, Final

import msgspec
import msgspec.inspect as mi

from evgate.protocol.errors import ErrorCode, FormationViolationError, Violation
from evgate.protocol.v16.enums import UnitOfMeasure
from evgate.protocol.v16.messages import (
    ChargingSchedule,
    GetCompositeScheduleResponse,
    Message,
    MeterValuesRequest,
    RemoteStartTransactionRequest,
    SetChargingProfileRequest,
    StopTransactionRequest,
)

__all__ = [
    "MAX_NESTING",
    "NO_VIOLATIONS",
    "PayloadCodec",
    "Violations",
    "nests_deeper",
    "violation_from",
]

Violations = tuple[Violation, ...]

#: The (shared, immutable) result of a clean decode.
NO_VIOLATIONS: Final[Violations] = ()

_OCCURENCE = ErrorCode.occurence_constraint_violation
_FORMATION = ErrorCode.formation_violation
_TYPE = ErrorCode.type_constraint_violation
_PROPERTY = ErrorCode.property_constraint_violation

# RFC 3339 date-time as JSON Schema's "date-time" format checks it (rfc3339-validator): only
# the spelling, since msgspec has already checked the calendar (day of month, year 0).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"  # full-date
    r"[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"  # "T" partial-time
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"  # time-offset
)

_RFC3339_STR = Annotated[str, msgspec.Meta(pattern=f"^{_RFC3339.pattern}\\Z")]

# Lenient repairs stop after this many, so a hostile payload cannot make the loop long.
_MAX_REPAIRS = 64

_AT = re.compile(r"^(?P<message>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_NAMED_FIELD = re.compile(r"^Object (missing required|contains unknown) field `(?P<name>.*)`$")
_WRONG_TYPE = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`$")

Path = tuple[str | int, ...]

#: The deepest nesting of arrays and objects read in a frame, the frame's own array counting
#: as one. OCPP 1.6's deepest payloads need six (a frame, a MeterValues payload, its
#: meterValue array, a meter value, its sampledValue array, a sampled value); a CALLERROR's
#: details are free-form. Deeper is refused before a generic reading (``nests_deeper``),
#: far below the depth at which msgspec's recursion guard would raise RecursionError.
MAX_NESTING: Final = 32

# JSON strings, whose brackets are text; DOTALL so that a raw newline cannot end one early.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPENS = (ord("["), ord("{"))


def nests_deeper(data: bytes | str | msgspec.Raw, levels: int) -> bool:
    """Whether the JSON text ``data`` nests arrays and objects more than ``levels`` deep.

    Exact for valid JSON (brackets inside strings are text); for other text, whether its
    brackets outside strings ever leave more than ``levels`` open. Costs two byte counts when
    the text has at most ``levels`` brackets, else a pass over its brackets (about 1 ms for
    64 KB of them): call it on slow paths only, before a generic decode.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= levels:
        return False
    depth = 0
    for byte in _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET):
        if byte in _OPENS:
            depth += 1
            if depth > levels:
                return True
        else:
            depth -= 1
    return False


def _path_text(path: Path) -> str:
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            out.append(f".{part}" if out else part)
    return "".join(out)


def _parse(exc: msgspec.ValidationError) -> tuple[Violation, Path, str]:
    """Split a msgspec error into a Violation, its path as parts, and msgspec's message."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    message = match["message"]
    path: Path = tuple(
        name if name else int(index) for name, index in _SEGMENT.findall(match["path"] or "")
    )
    if named := _NAMED_FIELD.match(message):
        path = (*path, named["name"])
        if message.startswith("Object missing"):
            return Violation(_OCCURENCE, _path_text(path), "required field missing"), path, message
        return Violation(_FORMATION, _path_text(path), "field not allowed"), path, message
    if message.startswith("Expected `array` of length >="):
        code = _OCCURENCE
    elif _WRONG_TYPE.match(message):
        # The payload itself not being an object is a formation error, not a field's type.
        code = _TYPE if path else _FORMATION
    else:
        # Invalid enum value, length <= N, Invalid RFC3339, timezone component, out of range.
        code = _PROPERTY
    return Violation(code, _path_text(path), message), path, message


def violation_from(exc: msgspec.ValidationError) -> Violation:
    """Map a msgspec ValidationError to the OCPP-J violation it reports."""
    return _parse(exc)[0]


def _nul_path(tree: Any, path: Path) -> Path | None:
    if isinstance(tree, str):
        return path if "\x00" in tree else None
    if isinstance(tree, dict):
        items: Any = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return None
    for key, value in items:
        if isinstance(key, str) and "\x00" in key:
            return (*path, key)
        found = _nul_path(value, (*path, key))
        if found is not None:
            return found
    return None


def nul_violation(tree: Any) -> Violation | None:
    """The first text of a payload (its generic JSON tree) that holds U+0000, if any.

    OCPP's strings are printable text, and no PostgreSQL ``text`` can hold a NUL: evgate
    refuses such a payload with PropertyConstraintViolation (strict and lenient alike) rather
    than fail to store it, which would answer InternalError to every resend.
    """
    try:
        path = _nul_path(tree, ())
    except RecursionError:  # nesting no OCPP payload has: its schema errors tell the rest
        return None
    if path is None:
        return None
    # The path names a key that may itself hold the NUL: spelled as JSON would, so that the
    # description can be stored and logged.
    text = _path_text(path).replace("\x00", "\\u0000")
    return Violation(_PROPERTY, text, "text holds U+0000 (NUL), which is refused")


# Post-decode checks.


def _tenths(value: float) -> bool:
    return round(value, 1) == value


def _check_schedule(schedule: ChargingSchedule, path: str, found: list[Violation]) -> None:
    for i, period in enumerate(schedule.charging_schedule_period):
        if not _tenths(period.limit):
            found.append(
                Violation(
                    _PROPERTY,
                    f"{path}.chargingSchedulePeriod[{i}].limit",
                    f"{period.limit!r} is not a multiple of 0.1",
                )
            )
    rate = schedule.min_charging_rate
    if rate is not msgspec.UNSET and not _tenths(rate):
        found.append(
            Violation(_PROPERTY, f"{path}.minChargingRate", f"{rate!r} is not a multiple of 0.1")
        )


def _check_set_charging_profile(msg: SetChargingProfileRequest, found: list[Violation]) -> None:
    schedule = msg.cs_charging_profiles.charging_schedule
    _check_schedule(schedule, "csChargingProfiles.chargingSchedule", found)


def _check_remote_start(msg: RemoteStartTransactionRequest, found: list[Violation]) -> None:
    if msg.charging_profile is not msgspec.UNSET:
        _check_schedule(
            msg.charging_profile.charging_schedule, "chargingProfile.chargingSchedule", found
        )


def _check_composite_schedule(msg: GetCompositeScheduleResponse, found: list[Violation]) -> None:
    if msg.charging_schedule is not msgspec.UNSET:
        _check_schedule(msg.charging_schedule, "chargingSchedule", found)


def _check_meter_values(msg: MeterValuesRequest, found: list[Violation]) -> None:
    for i, meter_value in enumerate(msg.meter_value):
        if not meter_value.sampled_value:
            found.append(
                Violation(
                    _OCCURENCE,
                    f"meterValue[{i}].sampledValue",
                    "Expected `array` of length >= 1",
                )
            )


def _check_stop_transaction(msg: StopTransactionRequest, found: list[Violation]) -> None:
    if msg.transaction_data is msgspec.UNSET:
        return
    for i, meter_value in enumerate(msg.transaction_data):
        for j, sampled in enumerate(meter_value.sampled_value):
            if sampled.unit is UnitOfMeasure.hertz:
                found.append(
                    Violation(
                        _PROPERTY,
                        f"transactionData[{i}].sampledValue[{j}].unit",
                        "Invalid enum value 'Hertz' (not in StopTransaction's unit list)",
                    )
                )


# The schema rules a Struct type cannot state, by payload type.
_EXTRA_CHECKS: dict[type[Message], Callable[[Any, list[Violation]], None]] = {
    SetChargingProfileRequest: _check_set_charging_profile,
    RemoteStartTransactionRequest: _check_remote_start,
    GetCompositeScheduleResponse: _check_composite_schedule,
    MeterValuesRequest: _check_meter_values,
    StopTransactionRequest: _check_stop_transaction,
}


def _date_time_view(info: mi.Type, leaf: Any) -> Any:
    """The type that decodes only the date-time strings under ``info`` as ``leaf``, or None."""
    if isinstance(info, mi.DateTimeType):
        return leaf
    if isinstance(info, mi.ListType):
        item = _date_time_view(info.item_type, leaf)
        return None if item is None else list[item]  # type: ignore[valid-type]
    if isinstance(info, mi.StructType):
        fields = []
        for field in info.fields:
            view = _date_time_view(field.type, leaf)
            if view is not None:
                fields.append((field.encode_name, view | msgspec.UnsetType, msgspec.UNSET))
        if not fields:
            return None
        return msgspec.defstruct(f"{info.cls.__name__}DateTimes", fields, gc=False)
    return None


def _walk_date_times(view: msgspec.Struct, prefix: str, found: list[Violation]) -> None:
    for name in view.__struct_fields__:
        value = getattr(view, name)
        if value is msgspec.UNSET:
            continue
        if isinstance(value, str):
            if _RFC3339.fullmatch(value) is None:
                found.append(
                    Violation(_PROPERTY, prefix + name, f"{value!r} is not an RFC 3339 date-time")
                )
        elif isinstance(value, list):
            for i, item in enumerate(value):
                _walk_date_times(item, f"{prefix}{name}[{i}].", found)
        else:
            _walk_date_times(value, f"{prefix}{name}.", found)


class _PostDecodeChecks:
    """The checks of one payload type that run after its Struct decoded."""

    __slots__ = ("_all_dates", "_checked_dates", "_extra")

    def __init__(self, message_type: type[Message]) -> None:
        info = mi.type_info(message_type)
        checked = _date_time_view(info, _RFC3339_STR)
        self._checked_dates = None if checked is None else msgspec.json.Decoder(checked).decode
        plain = _date_time_view(info, str)
        self._all_dates = None if plain is None else msgspec.json.Decoder(plain).decode
        self._extra = _EXTRA_CHECKS.get(message_type)

    @property
    def needed(self) -> bool:
        return self._checked_dates is not None or self._extra is not None

    def run(self, msg: Any, data: bytes | msgspec.Raw | str, lenient: bool) -> list[Violation]:
        """Return what the checks found; in strict mode, raise the first instead.

        The date-time strings are read again by a skimming decoder whose strings must match
        the RFC 3339 pattern (msgspec runs the regex); only when one fails are they read
        once more and walked, to name each offending field.
        """
        found: list[Violation] = []
        if self._checked_dates is not None:
            try:
                self._checked_dates(data)
            except msgspec.ValidationError:
                assert self._all_dates is not None
                _walk_date_times(self._all_dates(data), "", found)
        if self._extra is not None:
            self._extra(msg, found)
        if found and not lenient:
            raise found[0].to_error()
        return found


# Lenient repairs.


@lru_cache(maxsize=256)
def _type_at(message_type: type[Message], path: Path) -> mi.Type | None:
    info: mi.Type = mi.type_info(message_type)
    for part in path:
        if isinstance(info, mi.ListType) and isinstance(part, int):
            info = info.item_type
        elif isinstance(info, mi.StructType) and isinstance(part, str):
            for field in info.fields:
                if field.encode_name == part:
                    info = field.type
                    break
            else:
                return None
        else:
            return None
    return info


def _container(tree: Any, path: Path) -> Any:
    node = tree
    for part in path[:-1]:
        node = node[part]
    return node


def _converted(expected: str, value: Any) -> Any:
    """``value`` converted to the expected JSON type, or ``_NO_REPAIR``."""
    if expected == "int":
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
            value = _converted("float", value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif expected == "float" and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return _NO_REPAIR
        if math.isfinite(number):
            return number
    elif expected == "str" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    elif expected == "bool" and isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    return _NO_REPAIR


_NO_REPAIR: Final = object()
_BOOLS: Final = {"true": True, "false": False}


def _repair(
    message_type: type[Message], tree: Any, path: Path, message: str, violation: Violation
) -> Violation | None:
    """Repair ``tree`` in place for one msgspec error; return what to report, or None."""
    if not path:
        return None
    parent: Any = None
    try:
        parent = _container(tree, path)
        key = path[-1]
        value = parent[key]
    except (KeyError, IndexError, TypeError):
        value = _NO_REPAIR
    if message.startswith("Object contains unknown field") and isinstance(parent, dict):
        del parent[key]
        return Violation(_FORMATION, violation.path, "field not allowed; ignored")
    if value is _NO_REPAIR:
        return None
    if wrong_type := _WRONG_TYPE.match(message):
        if wrong_type["got"] == "null" and isinstance(parent, dict):
            del parent[key]
            return Violation(_TYPE, violation.path, "null for an optional field; ignored")
        fixed = _converted(wrong_type["expected"], value)
        if fixed is _NO_REPAIR:
            return None
        parent[key] = fixed
        got = wrong_type["got"]
        return Violation(_TYPE, violation.path, f"{got} {value!r} read as {wrong_type['expected']}")
    if message == "Expected `datetime` with a timezone component" and isinstance(value, str):
        parent[key] = value + "Z"
        return Violation(_PROPERTY, violation.path, f"{value!r} has no zone offset; read as UTC")
    if message.startswith("Invalid enum value") and isinstance(value, str):
        info = _type_at(message_type, path)
        if isinstance(info, mi.EnumType):
            wanted = value.strip().casefold()
            matches = [m.value for m in info.cls if str(m.value).casefold() == wanted]
            if len(matches) == 1:
                parent[key] = matches[0]
                return Violation(_PROPERTY, violation.path, f"{value!r} read as {matches[0]!r}")
    return None


class PayloadCodec:
    """Decodes and validates the payload of one message type; build one per type at import.

    Args:
        message_type: the payload Struct (``BootNotificationRequest`` ...).
    """

    __slots__ = ("_check", "_decode", "message_type")

    def __init__(self, message_type: type[Message]) -> None:
        self.message_type = message_type
        self._decode = msgspec.json.Decoder(message_type).decode
        checks = _PostDecodeChecks(message_type)
        self._check = checks if checks.needed else None

    def decode(
        self, data: bytes | msgspec.Raw | str, *, lenient: bool = False
    ) -> tuple[Message, Violations]:
        """Decode and validate one payload.

        Args:
            data: the payload's JSON text (a CALL's or CALLRESULT's ``payload``).
            lenient: repair and report what can be understood instead of raising.

        Returns:
            The payload Struct and the violations repaired or tolerated (always empty when
            ``lenient`` is false).

        Raises:
            OcppError: the first violation, as its OCPP-J code (strict mode), or one that
                cannot be repaired (lenient mode). ``unique_id`` is not set here.
        """
        try:
            msg = self._decode(data)
        except msgspec.ValidationError as exc:
            if lenient:
                return self._decode_lenient(data, exc)
            raise violation_from(exc).to_error() from None
        except msgspec.DecodeError:
            raise FormationViolationError("payload is not valid JSON", path="") from None
        except UnicodeError:
            # msgspec checks UTF-8 only in the strings it decodes: this one, or one after a
            # schema violation (then strict mode answers the violation).
            raise FormationViolationError("payload is not valid UTF-8", path="") from None
        if self._check is None:
            return msg, NO_VIOLATIONS
        found = self._check.run(msg, data, lenient)
        return msg, tuple(found) if found else NO_VIOLATIONS

    def _decode_lenient(
        self, data: bytes | msgspec.Raw | str, first: msgspec.ValidationError
    ) -> tuple[Message, Violations]:
        # A payload is the second level of its frame.
        if nests_deeper(data, MAX_NESTING - 1):
            raise FormationViolationError(
                f"payload nests deeper than {MAX_NESTING - 1} arrays and objects", path=""
            )
        try:
            tree = msgspec.json.decode(data)
        except msgspec.ValidationError:  # a number beyond float64
            raise violation_from(first).to_error() from None
        except UnicodeError:  # after the strict decoder stopped short of the bad string
            raise FormationViolationError("payload is not valid UTF-8", path="") from None
        reported: list[Violation] = []
        repaired: dict[str, Violation] = {}
        exc = first
        for _ in range(_MAX_REPAIRS):
            violation, path, message = _parse(exc)
            if violation.path in repaired:
                # The repair did not help (a dropped null was required, a converted value is
                # still wrong): refuse with what strict mode would have said.
                raise repaired[violation.path].to_error()
            fix = _repair(self.message_type, tree, path, message, violation)
            if fix is None:
                raise violation.to_error()
            repaired[violation.path] = violation
            reported.append(fix)
            data = msgspec.json.encode(tree)
            try:
                msg = self._decode(data)
            except msgspec.ValidationError as again:
                exc = again
                continue
            if self._check is not None:
                reported.extend(self._check.run(msg, data, True))
            return msg, tuple(reported)
        raise FormationViolationError(
            f"payload: more than {_MAX_REPAIRS} schema violations", path=""
        )
