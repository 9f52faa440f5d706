"""The frame codec, end to end: real frames in, typed messages or CALLERROR bytes out."""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from evgate.protocol import errors, frames
from evgate.protocol.errors import ErrorCode, OcppError, Violation
from evgate.protocol.v16 import (
    AuthorizationStatus,
    AuthorizeRequest,
    BootNotificationRequest,
    BootNotificationResponse,
    ChargingRateUnitType,
    ChargingSchedule,
    ChargingSchedulePeriod,
    Direction,
    GetCompositeScheduleResponse,
    GetCompositeScheduleStatus,
    HeartbeatResponse,
    IdTagInfo,
    Message,
    MeterValuesRequest,
    RegistrationStatus,
    ResetRequest,
    ResetType,
    StartTransactionResponse,
    StatusNotificationRequest,
)
from evgate.protocol.validation import nests_deeper

Handler = Callable[[Message], Message]

BOOT = {"chargePointVendor": "ACME", "chargePointModel": "Volt 22"}
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def answer(data: bytes, handler: Handler | None = None, *, lenient: bool = False) -> bytes:
    """What a CSMS sends back for ``data``: the gateway's use of the codec, in miniature."""
    call_id = None
    try:
        frame = frames.decode(data, lenient=lenient)
        assert isinstance(frame, frames.Call)
        call_id = frame.unique_id
        request, _ = frames.decode_request(frame, lenient=lenient)
        response = handler(request) if handler else HeartbeatResponse(current_time=NOW)
        return frames.encode_result(frame.unique_id, response)
    except Exception as exc:
        return frames.error_frame_for(exc, call_id)


def call(action: str, payload: object, unique_id: str = "m-1") -> bytes:
    return json.dumps([2, unique_id, action, payload], separators=(",", ":")).encode()


def error(unique_id: str, code: str, description: str) -> bytes:
    return json.dumps([4, unique_id, code, description, {}], separators=(",", ":")).encode()


# Every CALLERROR code evgate produces, with a real frame.


def test_unknown_action_is_not_implemented() -> None:
    assert answer(call("FlyToTheMoon", {})) == error(
        "m-1", "NotImplemented", "unknown action 'FlyToTheMoon'"
    )


def test_action_travelling_the_wrong_way_is_not_supported() -> None:
    """Reset is a CSMS-to-charger action: a charger may not send it to us."""
    assert answer(call("Reset", {"type": "Hard"})) == error(
        "m-1", "NotSupported", "Reset is not accepted in this direction"
    )


def test_data_transfer_is_accepted_both_ways() -> None:
    frame = frames.decode(call("DataTransfer", {"vendorId": "ACME", "data": "{}"}))
    assert isinstance(frame, frames.Call)
    for side in (Direction.charger_to_csms, Direction.csms_to_charger):
        request, _ = frames.decode_request(frame, accept_direction=side)
        assert request.vendor_id == "ACME"  # type: ignore[attr-defined]


def test_payload_not_an_object_is_a_formation_violation() -> None:
    assert answer(call("Heartbeat", [])) == error(
        "m-1", "FormationViolation", "payload: Expected `object`, got `array`"
    )


def test_envelope_element_of_the_wrong_type_is_a_formation_violation() -> None:
    assert answer(b'[2,"m-1",42,{}]') == error(
        "m-1", "FormationViolation", "Action is not a string"
    )
    assert answer(b'["2","m-1","Heartbeat",{}]') == error(
        "-1", "FormationViolation", "MessageTypeId is not an integer"
    )


def test_property_the_schema_forbids_is_a_formation_violation() -> None:
    assert answer(call("BootNotification", {**BOOT, "colour": "red"})) == error(
        "m-1", "FormationViolation", "colour: field not allowed"
    )


def test_nested_forbidden_property_names_its_path() -> None:
    payload = {
        "connectorId": 1,
        "meterValue": [
            {"timestamp": "2024-05-01T12:00:00Z", "sampledValue": [{"value": "1", "x": 1}]}
        ],
    }
    assert answer(call("MeterValues", payload)) == error(
        "m-1", "FormationViolation", "meterValue[0].sampledValue[0].x: field not allowed"
    )


def test_missing_required_field_is_an_occurence_constraint_violation() -> None:
    assert answer(call("BootNotification", {"chargePointVendor": "ACME"})) == error(
        "m-1", "OccurenceConstraintViolation", "chargePointModel: required field missing"
    )


def test_empty_list_where_one_is_required_is_an_occurence_constraint_violation() -> None:
    payload = {
        "connectorId": 1,
        "meterValue": [{"timestamp": "2024-05-01T12:00:00Z", "sampledValue": []}],
    }
    assert answer(call("MeterValues", payload)) == error(
        "m-1",
        "OccurenceConstraintViolation",
        "meterValue[0].sampledValue: Expected `array` of length >= 1",
    )


def test_wrong_json_type_is_a_type_constraint_violation() -> None:
    assert answer(
        call(
            "StatusNotification",
            {"connectorId": "1", "errorCode": "NoError", "status": "Available"},
        )
    ) == error("m-1", "TypeConstraintViolation", "connectorId: Expected `int`, got `str`")


def test_null_for_an_optional_field_is_a_type_constraint_violation() -> None:
    payload = {"connectorId": 1, "errorCode": "NoError", "status": "Available", "info": None}
    assert answer(call("StatusNotification", payload)) == error(
        "m-1", "TypeConstraintViolation", "info: Expected `str`, got `null`"
    )


def test_float_for_an_integer_is_a_type_constraint_violation() -> None:
    """Draft 4 and msgspec agree: 1.0 is a number, not an integer."""
    payload = {"connectorId": 1.0, "errorCode": "NoError", "status": "Available"}
    assert answer(call("StatusNotification", payload)) == error(
        "m-1", "TypeConstraintViolation", "connectorId: Expected `int`, got `float`"
    )


@pytest.mark.parametrize(
    ("payload", "description"),
    [
        (
            {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"},
            "status: Invalid enum value 'Sleeping'",
        ),
        (
            {"connectorId": 1, "errorCode": "NoError", "status": "Available", "info": "x" * 51},
            "info: Expected `str` of length <= 50",
        ),
        (
            {
                "connectorId": 1,
                "errorCode": "NoError",
                "status": "Available",
                "timestamp": "2024-02-30T00:00:00Z",
            },
            "timestamp: Invalid RFC3339 encoded datetime",
        ),
        (
            {
                "connectorId": 1,
                "errorCode": "NoError",
                "status": "Available",
                "timestamp": "2024-05-01T12:00:00",
            },
            "timestamp: Expected `datetime` with a timezone component",
        ),
        (
            {
                "connectorId": 1,
                "errorCode": "NoError",
                "status": "Available",
                "timestamp": "2024-05-01 12:00:00Z",
            },
            "timestamp: '2024-05-01 12:00:00Z' is not an RFC 3339 date-time",
        ),
    ],
    ids=["enum", "too-long", "calendar", "no-zone", "space-for-T"],
)
def test_bad_value_is_a_property_constraint_violation(payload: object, description: str) -> None:
    assert answer(call("StatusNotification", payload)) == error(
        "m-1", "PropertyConstraintViolation", description
    )


def test_number_out_of_range_is_a_property_constraint_violation() -> None:
    """A limit of 1e400 does not fit a float."""
    frame = json.dumps([3, "m-1", {"status": "Accepted"}])
    result = frames.decode(frame)
    assert isinstance(result, frames.CallResult)
    payload = (
        b'{"status":"Accepted","chargingSchedule":{"chargingRateUnit":"A",'
        b'"chargingSchedulePeriod":[{"startPeriod":0,"limit":1e400}]}}'
    )
    with pytest.raises(errors.PropertyConstraintViolationError) as caught:
        frames.decode_response("GetCompositeSchedule", payload, unique_id="m-1")
    assert frames.error_frame_for(caught.value) == error(
        "m-1",
        "PropertyConstraintViolation",
        "chargingSchedule.chargingSchedulePeriod[0].limit: Number out of range",
    )


def test_limit_with_two_decimals_is_a_property_constraint_violation() -> None:
    payload = {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 21.4},
                    {"startPeriod": 60, "limit": 16.05},
                ],
            },
        },
    }
    frame = frames.decode(call("SetChargingProfile", payload))
    assert isinstance(frame, frames.Call)
    with pytest.raises(errors.PropertyConstraintViolationError) as caught:
        frames.decode_request(frame, accept_direction=Direction.csms_to_charger)
    assert frames.error_frame_for(caught.value) == error(
        "m-1",
        "PropertyConstraintViolation",
        "csChargingProfiles.chargingSchedule.chargingSchedulePeriod[1].limit:"
        " 16.05 is not a multiple of 0.1",
    )


def test_hertz_is_a_unit_of_meter_values_but_not_of_stop_transaction() -> None:
    """The official StopTransaction schema's unit list lacks Hertz; evgate follows it."""
    sampled = [{"value": "50", "measurand": "Frequency", "unit": "Hertz"}]
    meter_values = {
        "connectorId": 1,
        "meterValue": [{"timestamp": "2024-05-01T12:00:00Z", "sampledValue": sampled}],
    }
    assert answer(call("MeterValues", meter_values)).startswith(b'[3,"m-1",')
    stop = {
        "transactionId": 1,
        "meterStop": 10,
        "timestamp": "2024-05-01T12:00:00Z",
        "transactionData": [{"timestamp": "2024-05-01T12:00:00Z", "sampledValue": sampled}],
    }
    assert answer(call("StopTransaction", stop)) == error(
        "m-1",
        "PropertyConstraintViolation",
        "transactionData[0].sampledValue[0].unit:"
        " Invalid enum value 'Hertz' (not in StopTransaction's unit list)",
    )


def test_handler_failure_is_an_internal_error_that_leaks_nothing() -> None:
    def broken(request: Message) -> Message:
        raise KeyError("password=hunter2 in /srv/evgate/secrets.py line 12")

    assert answer(call("BootNotification", BOOT), broken) == error(
        "m-1", "InternalError", "internal error"
    )


def test_handler_may_refuse_with_a_chosen_code() -> None:
    def refuse(request: Message) -> Message:
        raise errors.SecurityError("certificate revoked", {"serial": "42"})

    assert answer(call("BootNotification", BOOT), refuse) == (
        b'[4,"m-1","SecurityError","certificate revoked",{"serial":"42"}]'
    )


def test_wrong_number_of_elements_is_a_protocol_error() -> None:
    assert answer(b'[2,"m-1","Heartbeat"]') == error(
        "m-1", "ProtocolError", "a CALL has 4 elements, not 3"
    )
    assert answer(b'[2,"m-1","Heartbeat",{},{}]') == error(
        "m-1", "ProtocolError", "a CALL has 4 elements, not 5"
    )


def test_unknown_message_type_is_a_protocol_error() -> None:
    assert answer(b'[5,"m-1","Heartbeat",{}]') == error(
        "m-1", "ProtocolError", "unknown MessageTypeId 5"
    )


# Frames whose unique id cannot be read are answered with unique id "-1".


@pytest.mark.parametrize(
    ("data", "code", "description"),
    [
        (b"Heartbeat please", "FormationViolation", "frame is not valid JSON"),
        (b'[2,"m-1","Heartbeat",{]', "FormationViolation", "frame is not valid JSON"),
        (b"\xff\xfe[2]", "FormationViolation", "frame is not valid JSON"),
        (b'{"action":"Heartbeat"}', "FormationViolation", "frame is not a JSON array"),
        (b"[]", "ProtocolError", "frame is an empty array"),
        (b'[2,1234,"Heartbeat",{}]', "FormationViolation", "UniqueId missing or not a string"),
        (b"[2]", "FormationViolation", "UniqueId missing or not a string"),
    ],
    ids=["text", "truncated", "not-utf8", "object", "empty", "numeric-id", "no-id"],
)
def test_unreadable_frame_is_answered_with_unique_id_minus_one(
    data: bytes, code: str, description: str
) -> None:
    assert answer(data) == error("-1", code, description)


def refusal(data: bytes | str, *, lenient: bool = False) -> OcppError:
    """The OcppError that reading ``data`` as a CALL raises: no other exception may escape."""
    try:
        frame = frames.decode(data, lenient=lenient)
        assert isinstance(frame, frames.Call)
        frames.decode_request(frame, lenient=lenient)
    except OcppError as exc:
        return exc
    raise AssertionError(f"{data!r} was read")


TOO_DEEP = "frame nests deeper than 32 arrays and objects"


@pytest.mark.parametrize(
    ("data", "unique_id", "description"),
    [
        (b'[2,"\xff","Heartbeat",{}]', None, "frame is not valid UTF-8"),
        ('[2,"\ud800","Heartbeat",{}]', None, "frame is not valid UTF-8"),  # a str frame
        (b'[2,"m-1","Heart\xc3beat",{}]', "m-1", "frame is not valid UTF-8"),
        (b'[2,"m-1","Authorize",{"idTag":"\xc3"}]', "m-1", "payload is not valid UTF-8"),
        (b'[2,"m-1","Heartbeat",{"\xff":1}]', "m-1", "payload is not valid UTF-8"),
        (b"[" * 1000 + b"]" * 1000, None, TOO_DEEP),
        (b'[2,"m-1","Heartbeat",' + b"[" * 1000 + b"]" * 1000 + b"]", None, TOO_DEEP),
        (b'[2,"m-1","Heartbeat",' + b"[" * 32 + b"]" * 32 + b",1]", None, TOO_DEEP),
    ],
    ids=["id", "id-str", "action", "payload", "key", "deep", "deep-payload", "33-deep"],
)
def test_frame_not_utf8_or_nested_too_deep_is_a_formation_violation(
    data: bytes | str, unique_id: str | None, description: str
) -> None:
    """Answered FormationViolation, with "-1" when the id itself is unreadable (issue 15)."""
    for lenient in (False, True):
        exc = refusal(data, lenient=lenient)
        assert (exc.code, exc.unique_id, exc.description) == (
            ErrorCode.formation_violation,
            unique_id,
            description,
        )
        assert exc.message_type_id in (2, None)  # answered


def test_payload_nested_deeper_than_its_schema_is_refused_by_the_schema() -> None:
    """A payload's type never reads deeper than its schema: a deep value is refused in the
    schema's words; lenient mode's generic reading stops at 32 levels, before reading it."""
    value: object = "a"
    for _ in range(48):
        value = [value]
    deep = {"idTag": value}
    exc = refusal(call("Authorize", deep))
    assert (exc.code, exc.path) == (ErrorCode.type_constraint_violation, "idTag")
    exc = refusal(call("Authorize", deep), lenient=True)
    assert (exc.code, exc.unique_id, exc.description) == (
        ErrorCode.formation_violation,
        "m-1",
        "payload nests deeper than 31 arrays and objects",
    )
    # 32 levels, brackets inside strings not counted: read (and repaired) as usual.
    nested: object = "[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"
    for _ in range(30):
        nested = [nested]
    request, violations = _lenient("Authorize", {"idTag": "a", "x": nested})
    assert request == AuthorizeRequest(id_tag="a")
    assert [v.path for v in violations] == ["x"]


def test_reply_not_utf8_or_nested_too_deep_is_refused_and_not_answered() -> None:
    """A CALLRESULT or CALLERROR that cannot be read is an OcppError of type 3 or 4, with
    its id when readable: the pending command fails at once instead of timing out."""
    with pytest.raises(errors.FormationViolationError, match="payload is not valid UTF-8") as e:
        payload = b'{"status":"Accepted","data":"\xff"}'
        frames.decode_response("DataTransfer", payload, unique_id="c")
    assert (e.value.unique_id, e.value.message_type_id) == ("c", 3)
    bad_replies = [
        (b'[4,"c-1","GenericError","\xff",{}]', "frame is not valid UTF-8"),
        (b'[3,"c-1",{"a":"b"},"\xff"]', "a CALLRESULT has 3 elements, not 4"),
        (b'[4,"c-1","GenericError","",' + b'{"a":[' * 20 + b"]}" * 20 + b"]", TOO_DEEP),
    ]
    for data, description in bad_replies:
        with pytest.raises(OcppError) as e:
            frames.decode(data)
        assert (e.value.unique_id, e.value.description) == ("c-1", description)
        assert e.value.message_type_id in (3, 4)


def test_lenient_mode_refuses_invalid_utf8_after_a_violation_it_would_repair() -> None:
    """Strict mode stops at the first violation, before the bad string; lenient mode reads
    on, and answers FormationViolation with the CALL's id (found by the fuzz test)."""
    data = b'[2,"m-1","Authorize",{"idTag":"a","x":1,"y":"\xed"}]'
    assert refusal(data).description == "x: field not allowed"
    exc = refusal(data, lenient=True)
    assert (exc.code, exc.unique_id, exc.description) == (
        ErrorCode.formation_violation,
        "m-1",
        "payload is not valid UTF-8",
    )


def test_lenient_mode_refuses_a_number_beyond_float64_as_strict_mode_does() -> None:
    data = b'[2,"m-1","Heartbeat",{"x":1e999}]'
    assert refusal(data, lenient=True).description == refusal(data).description


def test_nests_deeper_counts_brackets_outside_strings_only() -> None:
    assert not nests_deeper(b'[[["]]]]]][[[[[\\"\\""]]]', 3)
    assert nests_deeper(b'[[["]]]]]][[[[[\\"\\""]]]', 2)
    assert not nests_deeper('[{}, [], {"a": [1]}]', 3)
    assert nests_deeper(msgspec.Raw(b'{"a":[{"b":[]}]}'), 3)


def test_unique_id_longer_than_36_characters_is_echoed_with_a_property_violation() -> None:
    long_id = "x" * 37
    assert answer(call("Heartbeat", {}, long_id)) == error(
        long_id, "PropertyConstraintViolation", "UniqueId longer than 36 characters"
    )
    assert answer(call("Heartbeat", {}, long_id), lenient=True).startswith(
        b'[3,"' + long_id.encode()
    )


def test_error_says_whether_the_failed_frame_may_be_answered() -> None:
    """A bad CALLRESULT (type 3) is logged, not answered; a bad CALL (type 2) is answered."""
    with pytest.raises(OcppError) as bad_result:
        frames.decode(b'[3,"m-1"]')
    assert bad_result.value.message_type_id == 3
    with pytest.raises(OcppError) as bad_payload:
        frames.decode_response("Reset", b"[]", unique_id="m-1")
    assert bad_payload.value.message_type_id == 3
    with pytest.raises(OcppError) as bad_call:
        frames.decode(b'[2,"m-1",7,{}]')
    assert bad_call.value.message_type_id == 2


# Encoding.


def test_absent_optional_fields_are_omitted_never_null() -> None:
    response = StartTransactionResponse(
        id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted), transaction_id=7
    )
    assert frames.encode_result("m-1", response) == (
        b'[3,"m-1",{"idTagInfo":{"status":"Accepted"},"transactionId":7}]'
    )


def test_boot_notification_response_encodes_with_wire_names() -> None:
    response = BootNotificationResponse(
        status=RegistrationStatus.accepted, current_time=NOW, interval=60
    )
    assert frames.encode_result("b", response) == (
        b'[3,"b",{"status":"Accepted","currentTime":"2024-05-01T12:00:00Z","interval":60}]'
    )


def test_numbers_stay_numbers_on_the_wire() -> None:
    schedule = ChargingSchedule(
        charging_rate_unit=ChargingRateUnitType.a,
        charging_schedule_period=[ChargingSchedulePeriod(start_period=0, limit=21.4)],
        min_charging_rate=6.0,
    )
    response = GetCompositeScheduleResponse(
        status=GetCompositeScheduleStatus.accepted, charging_schedule=schedule
    )
    encoded = frames.encode_result("g", response)
    assert b'"limit":21.4' in encoded and b'"minChargingRate":6.0' in encoded
    result = frames.decode(encoded)
    assert isinstance(result, frames.CallResult)
    decoded, _ = frames.decode_response("GetCompositeSchedule", result.payload)
    assert decoded == response


def test_encode_call_round_trips_and_checks_the_action() -> None:
    data = frames.encode_call("r-9", "Reset", ResetRequest(type=ResetType.soft))
    assert data == b'[2,"r-9","Reset",{"type":"Soft"}]'
    frame = frames.decode(data)
    assert isinstance(frame, frames.Call)
    request, _ = frames.decode_request(frame, accept_direction=Direction.csms_to_charger)
    assert request == ResetRequest(type=ResetType.soft)
    with pytest.raises(ValueError, match="not the request of 'Heartbeat'"):
        frames.encode_call("r-9", "Heartbeat", ResetRequest(type=ResetType.soft))


def test_encode_error_without_unique_id_uses_minus_one() -> None:
    assert (
        frames.encode_error(None, ErrorCode.generic_error, "x") == b'[4,"-1","GenericError","x",{}]'
    )


def test_call_result_decodes_as_the_response_of_the_call_we_sent() -> None:
    frame = frames.decode(b'[3,"r-9",{"status":"Accepted"}]')
    assert isinstance(frame, frames.CallResult)
    response, violations = frames.decode_response("Reset", frame.payload)
    assert response.status == "Accepted" and violations == ()  # type: ignore[attr-defined]


def test_call_error_from_a_charger_becomes_an_exception() -> None:
    frame = frames.decode(b'[4,"r-9","NotSupported","no reset here",{"why":1}]')
    assert isinstance(frame, frames.CallError)
    exc = frame.to_exception()
    assert isinstance(exc, errors.NotSupportedError)
    assert (exc.unique_id, exc.description, exc.details) == ("r-9", "no reset here", {"why": 1})
    odd = frames.decode(b'[4,"r-9","Weird","?",{}]')
    assert isinstance(odd, frames.CallError)
    assert isinstance(odd.to_exception(), errors.GenericError)


def test_call_error_without_details_is_accepted_in_lenient_mode_only() -> None:
    with pytest.raises(errors.ProtocolError):
        frames.decode(b'[4,"r-9","GenericError","x"]')
    frame = frames.decode(b'[4,"r-9","GenericError","x"]', lenient=True)
    assert frame == frames.CallError("r-9", "GenericError", "x", {})


# Lenient mode.


def _lenient(action: str, payload: object) -> tuple[Message, tuple[Violation, ...]]:
    frame = frames.decode(call(action, payload))
    assert isinstance(frame, frames.Call)
    return frames.decode_request(frame, lenient=True)


def test_lenient_mode_repairs_what_real_chargers_break_and_reports_each() -> None:
    payload = {
        "connectorId": "2",
        "errorCode": "noError",
        "status": "Charging",
        "timestamp": "2024-05-01T12:00:00",
        "info": None,
        "vendorSpecific": {"temp": 41},
    }
    request, violations = _lenient("StatusNotification", payload)
    assert isinstance(request, StatusNotificationRequest)
    assert request.connector_id == 2
    assert request.error_code == "NoError"
    assert request.timestamp == NOW
    assert request.info is msgspec.UNSET
    assert [(v.code, v.path) for v in violations] == [
        (ErrorCode.type_constraint_violation, "connectorId"),
        (ErrorCode.property_constraint_violation, "errorCode"),
        (ErrorCode.property_constraint_violation, "timestamp"),
        (ErrorCode.type_constraint_violation, "info"),
        (ErrorCode.formation_violation, "vendorSpecific"),
    ]
    assert (
        violations[2].description
        == "timestamp: '2024-05-01T12:00:00' has no zone offset; read as UTC"
    )


def test_lenient_mode_reads_numbers_sent_as_strings_and_back() -> None:
    payload = {
        "connectorId": 1,
        "transactionId": "17",
        "meterValue": [
            {"timestamp": "2024-05-01T12:00:00+02:00", "sampledValue": [{"value": 1234.5}]}
        ],
    }
    request, violations = _lenient("MeterValues", payload)
    assert isinstance(request, MeterValuesRequest)
    assert request.transaction_id == 17
    assert request.meter_value[0].sampled_value[0].value == "1234.5"
    assert request.meter_value[0].timestamp == NOW - timedelta(hours=2) + timedelta(hours=0)
    assert request.meter_value[0].timestamp.utcoffset() == timezone(timedelta(hours=2)).utcoffset(
        None
    )
    assert len(violations) == 2


def test_lenient_mode_tolerates_non_rfc3339_spellings_and_reports_them() -> None:
    payload = {"currentTime": "2024-05-01 12:00:00+0000"}
    response, violations = frames.decode_response("Heartbeat", json.dumps(payload), lenient=True)
    assert response == HeartbeatResponse(current_time=NOW)
    assert violations == (
        Violation(
            ErrorCode.property_constraint_violation,
            "currentTime",
            "'2024-05-01 12:00:00+0000' is not an RFC 3339 date-time",
        ),
    )


def test_lenient_mode_still_refuses_what_cannot_be_understood() -> None:
    with pytest.raises(errors.OccurenceConstraintViolationError):
        _lenient("BootNotification", {"chargePointVendor": "ACME"})
    with pytest.raises(errors.PropertyConstraintViolationError):
        _lenient(
            "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}
        )
    with pytest.raises(errors.PropertyConstraintViolationError):
        _lenient("BootNotification", {**BOOT, "chargePointModel": "x" * 21})
    with pytest.raises(errors.TypeConstraintViolationError) as caught:
        _lenient("BootNotification", {**BOOT, "chargePointModel": None})
    assert caught.value.path == "chargePointModel"  # a required null is the type error, as strict
    with pytest.raises(errors.TypeConstraintViolationError):
        _lenient(
            "StatusNotification",
            {"connectorId": "two", "errorCode": "NoError", "status": "Available"},
        )


def test_lenient_mode_is_strict_mode_for_a_valid_payload() -> None:
    request, violations = _lenient("BootNotification", BOOT)
    assert request == BootNotificationRequest(
        charge_point_vendor="ACME", charge_point_model="Volt 22"
    )
    assert violations == ()


def test_lenient_mode_gives_up_after_many_violations() -> None:
    payload = {**BOOT, **{f"extra{i}": i for i in range(100)}}
    with pytest.raises(errors.FormationViolationError, match="more than 64"):
        _lenient("BootNotification", payload)


# Errors.


def test_error_codes_are_spelled_as_ocpp_j_1_6_spells_them() -> None:
    assert [code.value for code in ErrorCode] == [
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    ]


def test_each_code_has_one_exception_class_none_named_like_a_builtin() -> None:
    classes = [errors.error_class(code) for code in ErrorCode]
    assert [cls.code for cls in classes] == list(ErrorCode)
    assert all(issubclass(cls, OcppError) for cls in classes)
    assert not {cls.__name__ for cls in classes} & set(dir(builtins))


# Known deviations from the oracle, pinned so that a change is noticed.


def test_deviation_fraction_rounding_overflows_on_the_last_second_of_9999() -> None:
    """msgspec rounds beyond microseconds; at 9999-12-31T23:59:59.9999995 that overflows."""
    with pytest.raises(errors.PropertyConstraintViolationError):
        frames.decode_response("Heartbeat", b'{"currentTime":"9999-12-31T23:59:59.9999995Z"}')
    response, _ = frames.decode_response(
        "Heartbeat", b'{"currentTime":"9999-12-31T23:59:59.999999Z"}'
    )
    assert response.current_time.year == 9999  # type: ignore[attr-defined]


def test_deviation_multiple_of_is_judged_on_the_float() -> None:
    """ocpp's Decimal parse refuses 21.40000000000000001; its float is 21.4, which passes."""
    payload = (
        b'{"status":"Accepted","chargingSchedule":{"chargingRateUnit":"A",'
        b'"chargingSchedulePeriod":[{"startPeriod":0,"limit":21.40000000000000001}]}}'
    )
    response, _ = frames.decode_response("GetCompositeSchedule", payload)
    assert response.charging_schedule.charging_schedule_period[0].limit == 21.4  # type: ignore[attr-defined]


def test_deviation_lone_surrogate_escape_is_not_json() -> None:
    """Python's json reads "\\ud800"; msgspec refuses it, so the whole frame is unreadable."""
    assert answer(b'[2,"m-1","Authorize",{"idTag":"\\ud800"}]') == error(
        "-1", "FormationViolation", "frame is not valid JSON"
    )


def test_deviation_a_text_holding_nul_is_refused() -> None:
    """The schemas allow U+0000 in any string; evgate answers PropertyConstraintViolation with
    the field's path (PostgreSQL cannot store it), in lenient mode too. An escaped backslash
    before "u0000" is text like any other."""
    frame = (
        b'[2,"m-1","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":'
        b'"2024-01-01T00:00:00Z","sampledValue":[{"value":"1"},{"value":"2\\u0000"}]}]}]'
    )
    description = "meterValue[0].sampledValue[1].value: text holds U+0000 (NUL), which is refused"
    for lenient in (False, True):
        assert answer(frame, lenient=lenient) == error(
            "m-1", "PropertyConstraintViolation", description
        )
    with pytest.raises(errors.PropertyConstraintViolationError, match=r"^idTag: text holds"):
        frames.decode('[2,"m-2","Authorize",{"idTag":"a\\u0000"}]')  # a str frame
    with pytest.raises(errors.PropertyConstraintViolationError, match=r"^data: text holds") as e:
        frames.decode_response("DataTransfer", b'{"status":"Accepted","data":"\\u0000"}')
    assert e.value.message_type_id == 3
    # A NUL in a key is named as JSON spells it; beside a number beyond float64 the frame is
    # still answered (the number is the payload's own error), never an exception.
    assert answer(b'[2,"m-5","Heartbeat",{"k\\u0000":1}]') == error(
        "m-5", "PropertyConstraintViolation", "k\\u0000: text holds U+0000 (NUL), which is refused"
    )
    assert answer(b'[2,"m-6","Authorize",{"idTag":"a","x":1e999,"y":"\\u0000"}]')[:2] == b"[4"
    deep = b'[2,"m-7","Heartbeat",' + b'{"a":[' * 600 + b'"\\u0000"' + b"]}" * 600 + b"]"
    assert answer(deep)[:2] == b"[4"
    escaped = b'[2,"m-3","Heartbeat",{}]', b'[2,"m-4","Authorize",{"idTag":"a\\\\u0000"}]'
    for data in escaped:
        assert frames.decode(data)
