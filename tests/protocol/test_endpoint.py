"""The sans-I/O OCPP-J endpoint: both roles, unique ids, one outstanding CALL, reply matching,
refusals' bytes, lenient repairs and unreadable frames. No event loop, no socket."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evgate.protocol.endpoint import (
    CallInProgress,
    Endpoint,
    ErrorReply,
    IncomingCall,
    InvalidReply,
    OutgoingCall,
    Refusal,
    Reply,
    Role,
    UnmatchedReply,
    UnreadableReply,
)
from evgate.protocol.errors import (
    ErrorCode,
    GenericError,
    NotSupportedError,
    PropertyConstraintViolationError,
)
from evgate.protocol.v16 import (
    ACTIONS,
    AuthorizeRequest,
    Direction,
    HeartbeatRequest,
    HeartbeatResponse,
    ResetRequest,
    ResetResponse,
    ResetStatus,
    ResetType,
    StatusNotificationRequest,
)

from .oracle import load_schema
from .strategies import example

CENTRAL, CHARGER = Role.central_system, Role.charger
_NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def frame(*elements: Any) -> bytes:
    return json.dumps(list(elements)).encode()


def reset_call(endpoint: Endpoint) -> OutgoingCall:
    return endpoint.call("Reset", ResetRequest(type=ResetType.hard))


# Both roles, every action: what one side sends, the other reads as the same request.


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_travels_from_its_sender_to_its_receiver_and_back(action: str) -> None:
    """For each action and each direction it travels: the receiver reads the sender's CALL as
    the same request, the sender matches the receiver's answer to its CALL; the role the
    action does not travel to refuses it with NotSupported."""
    direction = ACTIONS[action].direction
    request_json = example(load_schema(action, "request"), load_schema(action, "request"))
    response_json = example(load_schema(action, "response"), load_schema(action, "response"))
    for sender, receiver, way in (
        (CHARGER, CENTRAL, Direction.charger_to_csms),
        (CENTRAL, CHARGER, Direction.csms_to_charger),
    ):
        to = Endpoint(receiver)
        if not direction & way:
            refusal = to.receive(frame(2, "x-1", action, request_json))
            assert isinstance(refusal, Refusal)
            assert isinstance(refusal.error, NotSupportedError)
            assert refusal.action == action
            continue
        incoming = to.receive(frame(2, "x-1", action, request_json))
        assert isinstance(incoming, IncomingCall), incoming
        assert (incoming.unique_id, incoming.action, incoming.violations) == ("x-1", action, ())
        by = Endpoint(sender)
        outgoing = by.call(action, incoming.request)
        again = to.receive(outgoing.data)
        assert isinstance(again, IncomingCall)
        assert again.request == incoming.request
        answer = by.receive(frame(3, outgoing.unique_id, response_json))
        assert isinstance(answer, Reply), answer
        assert answer.call is outgoing
        # The answer re-encoded by the receiver reads back as the same response.
        echo = by.call(action, incoming.request)
        back = by.receive(to.respond(echo.unique_id, answer.response))
        assert isinstance(back, Reply)
        assert back.response == answer.response


def test_a_role_sends_only_the_actions_that_travel_its_way() -> None:
    with pytest.raises(ValueError, match="central_system"):
        Endpoint(CENTRAL).call("Heartbeat", HeartbeatRequest())
    with pytest.raises(ValueError, match="charger"):
        Endpoint(CHARGER).call("Reset", ResetRequest(type=ResetType.soft))
    with pytest.raises(ValueError):
        Endpoint(CHARGER).call("Heartbeat", AuthorizeRequest(id_tag="x"))
    assert Endpoint(CENTRAL).outstanding is None  # nothing was left outstanding


# Unique ids and the one outstanding CALL.


@given(st.lists(st.sampled_from([CENTRAL, CHARGER]), min_size=1, max_size=30))
def test_unique_ids_never_repeat_across_endpoints(roles: list[Role]) -> None:
    """Ids come from one counter: no two CALLs of the process share one, whichever endpoint
    made them (a late answer can never match another connection's CALL)."""
    ids = []
    for role in roles:
        endpoint = Endpoint(role)
        if role is CENTRAL:
            outgoing = reset_call(endpoint)
        else:
            outgoing = endpoint.call("Heartbeat", HeartbeatRequest())
        assert json.loads(outgoing.data)[:3] == [2, outgoing.unique_id, outgoing.action]
        assert len(outgoing.unique_id) <= 36
        ids.append(outgoing.unique_id)
    assert len(set(ids)) == len(ids)


def test_one_outstanding_call_until_its_reply() -> None:
    central = Endpoint(CENTRAL)
    first = reset_call(central)
    assert central.outstanding is first
    with pytest.raises(CallInProgress):
        reset_call(central)
    assert central.outstanding is first
    reply = central.receive(frame(3, first.unique_id, {"status": "Accepted"}))
    assert isinstance(reply, Reply)
    assert reply.response == ResetResponse(status=ResetStatus.accepted)
    assert central.outstanding is None
    assert reset_call(central).unique_id != first.unique_id


def test_reply_with_another_id_is_unmatched_and_the_call_stays_outstanding() -> None:
    central = Endpoint(CENTRAL)
    outgoing = reset_call(central)
    for reply in (frame(3, "nope", {"status": "Accepted"}), frame(4, "nope", "X", "y", {})):
        unmatched = central.receive(reply)
        assert isinstance(unmatched, UnmatchedReply)
        assert unmatched.frame.unique_id == "nope"
    assert central.outstanding is outgoing


def test_a_second_reply_to_the_same_call_is_unmatched() -> None:
    central = Endpoint(CENTRAL)
    outgoing = reset_call(central)
    answer = frame(3, outgoing.unique_id, {"status": "Accepted"})
    assert isinstance(central.receive(answer), Reply)
    assert isinstance(central.receive(answer), UnmatchedReply)


def test_a_late_reply_after_abandon_is_unmatched() -> None:
    """The caller gave up (timeout): its CALL is no longer outstanding, its late answer is
    unmatched, and the next CALL may go."""
    charger = Endpoint(CHARGER)
    late = charger.call("Heartbeat", HeartbeatRequest())
    charger.abandon(late)
    assert charger.outstanding is None
    following = charger.call("Heartbeat", HeartbeatRequest())
    unmatched = charger.receive(frame(3, late.unique_id, {"currentTime": "2024-05-01T12:00:00Z"}))
    assert isinstance(unmatched, UnmatchedReply)
    charger.abandon(late)  # stale: leaves the newer CALL alone
    assert charger.outstanding is following


def test_no_reply_is_matched_when_nothing_is_outstanding() -> None:
    assert isinstance(
        Endpoint(CENTRAL).receive(frame(3, "1", {"status": "Accepted"})), UnmatchedReply
    )


# Replies: CALLERROR, invalid and unreadable.


def test_callerror_answers_its_call() -> None:
    central = Endpoint(CENTRAL)
    outgoing = reset_call(central)
    rejected = central.receive(frame(4, outgoing.unique_id, "NotSupported", "no", {"x": 1}))
    assert isinstance(rejected, ErrorReply)
    assert rejected.call is outgoing
    error = rejected.error.to_exception()
    assert (error.code, error.description, error.details) == (
        ErrorCode.not_supported,
        "no",
        {"x": 1},
    )
    assert central.outstanding is None


def test_a_result_that_breaks_the_response_schema_is_an_invalid_reply() -> None:
    central = Endpoint(CENTRAL)
    outgoing = reset_call(central)
    invalid = central.receive(frame(3, outgoing.unique_id, {"status": "Maybe"}))
    assert isinstance(invalid, InvalidReply)
    assert invalid.call is outgoing
    assert isinstance(invalid.error, PropertyConstraintViolationError)
    assert (invalid.error.unique_id, invalid.error.message_type_id) == (outgoing.unique_id, 3)
    assert central.outstanding is None
    # A payload that is not UTF-8 inside a readable envelope: the same (FormationViolation).
    outgoing = reset_call(central)
    invalid = central.receive(b'[3,"%s",{"status":"Accep\xc3ted"}]' % outgoing.unique_id.encode())
    assert isinstance(invalid, InvalidReply)
    assert invalid.error.code == ErrorCode.formation_violation


@pytest.mark.parametrize(
    "reply",
    [
        b'[4,"%s","GenericError","\xff",{}]',  # not UTF-8 in the envelope
        b'[4,"%s","GenericError","",' + b'{"a":[' * 20 + b"]}" * 20 + b"]",  # 41 deep
        b'[3,"%s"]',  # too few elements
    ],
    ids=["envelope-not-utf8", "deep-details", "short"],
)
def test_an_unreadable_reply_names_the_call_it_would_answer(reply: bytes) -> None:
    """It stays outstanding (what cannot be read is no answer); the caller decides to fail
    it. One naming another id names no CALL."""
    central = Endpoint(CENTRAL)
    outgoing = reset_call(central)
    unreadable = central.receive(reply.replace(b"%s", outgoing.unique_id.encode()))
    assert isinstance(unreadable, UnreadableReply)
    assert unreadable.call is outgoing
    assert unreadable.error.message_type_id in (3, 4)
    assert central.outstanding is outgoing
    other = central.receive(reply.replace(b"%s", b"other"))
    assert isinstance(other, UnreadableReply)
    assert other.call is None


# Refusals and their bytes.


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        (b"not json", [4, "-1", "FormationViolation", "frame is not valid JSON", {}]),
        (b"[]", [4, "-1", "ProtocolError", "frame is an empty array", {}]),
        (b'[2,"a\xff"]', [4, "-1", "ProtocolError", "a CALL has 4 elements, not 2", {}]),
        (
            b'[2,"m-1","Heartbeat"]',
            [4, "m-1", "ProtocolError", "a CALL has 4 elements, not 3", {}],
        ),
        (
            b'[2,"m-1","Heartbeat",{"x":"\\u0000"}]',
            [
                4,
                "m-1",
                "PropertyConstraintViolation",
                "x: text holds U+0000 (NUL), which is refused",
                {},
            ],
        ),
    ],
)
def test_an_unreadable_frame_is_refused_with_its_callerror(data: bytes, answer: list[Any]) -> None:
    refusal = Endpoint(CENTRAL).receive(data)
    assert isinstance(refusal, Refusal)
    assert refusal.action is None
    assert json.loads(refusal.data) == answer


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(2, "m-1", "Nope", {}), "NotImplemented"),
        (frame(2, "m-1", "Reset", {"type": "Hard"}), "NotSupported"),
        (frame(2, "m-1", "Authorize", {}), "OccurenceConstraintViolation"),  # 1.6 spells it so
        (frame(2, "m-1", "Authorize", {"idTag": 5}), "TypeConstraintViolation"),
    ],
)
def test_a_call_whose_request_is_refused_names_its_action(data: bytes, code: str) -> None:
    refusal = Endpoint(CENTRAL).receive(data)
    assert isinstance(refusal, Refusal)
    assert refusal.action == json.loads(data)[2]
    assert json.loads(refusal.data)[:3] == [4, "m-1", code]


def test_respond_and_refuse_answer_the_peers_call() -> None:
    central = Endpoint(CENTRAL)
    incoming = central.receive(frame(2, "hb", "Heartbeat", {}))
    assert isinstance(incoming, IncomingCall)
    assert incoming.request == HeartbeatRequest()
    now = json.loads(central.respond("hb", HeartbeatResponse(current_time=_NOW)))
    assert now == [3, "hb", {"currentTime": "2024-05-01T12:00:00Z"}]
    assert json.loads(central.refuse(GenericError("busy"), "hb")) == [
        4,
        "hb",
        "GenericError",
        "busy",
        {},
    ]
    # A handler's own exception says nothing of evgate's internals.
    assert json.loads(central.refuse(KeyError("secret"), "hb")) == [
        4,
        "hb",
        "InternalError",
        "internal error",
        {},
    ]


# Lenient mode.


def test_lenient_endpoint_repairs_a_call_and_reports_each_repair() -> None:
    data = frame(
        2,
        "s-1",
        "StatusNotification",
        {"connectorId": "2", "errorCode": "noError", "status": "Charging"},
    )
    refusal = Endpoint(CENTRAL).receive(data)
    assert isinstance(refusal, Refusal)
    incoming = Endpoint(CENTRAL, lenient=True).receive(data)
    assert isinstance(incoming, IncomingCall)
    assert isinstance(incoming.request, StatusNotificationRequest)
    assert incoming.request.connector_id == 2
    assert [(v.code, v.path) for v in incoming.violations] == [
        (ErrorCode.type_constraint_violation, "connectorId"),
        (ErrorCode.property_constraint_violation, "errorCode"),
    ]


def test_lenient_endpoint_repairs_a_reply_and_tolerates_a_callerror_without_details() -> None:
    strict, lenient = Endpoint(CENTRAL), Endpoint(CENTRAL, lenient=True)
    for endpoint in (strict, lenient):
        outgoing = reset_call(endpoint)
        reply = endpoint.receive(frame(3, outgoing.unique_id, {"status": "accepted"}))
        if endpoint is strict:
            assert isinstance(reply, InvalidReply)
        else:
            assert isinstance(reply, Reply)
            assert reply.response == ResetResponse(status=ResetStatus.accepted)
            assert [v.path for v in reply.violations] == ["status"]
        outgoing = reset_call(endpoint)
        bare = frame(4, outgoing.unique_id, "GenericError", "x")
        rejected = endpoint.receive(bare)
        if endpoint is strict:
            assert isinstance(rejected, UnreadableReply)
            assert rejected.call is outgoing
            endpoint.abandon(outgoing)
        else:
            assert isinstance(rejected, ErrorReply)
            assert rejected.error.error_details == {}


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_nothing_the_peer_sends_raises(data: bytes | str) -> None:
    """Any bytes or text give a happening; a refusal's bytes are a CALLERROR frame."""
    for role in (CENTRAL, CHARGER):
        happening = Endpoint(role).receive(data)
        if isinstance(happening, Refusal):
            assert json.loads(happening.data)[0] == 4
