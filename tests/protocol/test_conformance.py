"""evgate accepts exactly what the official OCPP 1.6J schemas accept, for every action.

For each of the 39 actions, request and response, hypothesis writes valid and near-valid
payloads (``strategies``), frames them, and asserts that evgate's codec and the oracle (the
schema files of the ``ocpp`` package under jsonschema, ``oracle``) agree on accept or
reject. Where the oracle finds exactly one error, evgate must also name the same OCPP-J code
and field path; where both accept, evgate's re-encoding must be accepted by the oracle too.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evgate.protocol import frames
from evgate.protocol.errors import ErrorCode, OcppError
from evgate.protocol.v16 import ACTIONS, Direction

from .oracle import FORMAT_CHECKER, judge, load_schema, path_text, schema_actions, validator
from .strategies import example, mistakes, payloads, sites

TO_CSMS = Direction.charger_to_csms
TO_CHARGER = Direction.csms_to_charger
EITHER = Direction.both

# Every OCPP 1.6J action, written out so that none can be forgotten: (action, who calls).
ALL_ACTIONS: list[tuple[str, Direction]] = [
    # Core and the other 1.6 feature profiles: 28.
    ("Authorize", TO_CSMS),
    ("BootNotification", TO_CSMS),
    ("CancelReservation", TO_CHARGER),
    ("ChangeAvailability", TO_CHARGER),
    ("ChangeConfiguration", TO_CHARGER),
    ("ClearCache", TO_CHARGER),
    ("ClearChargingProfile", TO_CHARGER),
    ("DataTransfer", EITHER),
    ("DiagnosticsStatusNotification", TO_CSMS),
    ("FirmwareStatusNotification", TO_CSMS),
    ("GetCompositeSchedule", TO_CHARGER),
    ("GetConfiguration", TO_CHARGER),
    ("GetDiagnostics", TO_CHARGER),
    ("GetLocalListVersion", TO_CHARGER),
    ("Heartbeat", TO_CSMS),
    ("MeterValues", TO_CSMS),
    ("RemoteStartTransaction", TO_CHARGER),
    ("RemoteStopTransaction", TO_CHARGER),
    ("ReserveNow", TO_CHARGER),
    ("Reset", TO_CHARGER),
    ("SendLocalList", TO_CHARGER),
    ("SetChargingProfile", TO_CHARGER),
    ("StartTransaction", TO_CSMS),
    ("StatusNotification", TO_CSMS),
    ("StopTransaction", TO_CSMS),
    ("TriggerMessage", TO_CHARGER),
    ("UnlockConnector", TO_CHARGER),
    ("UpdateFirmware", TO_CHARGER),
    # Security extension: 11.
    ("CertificateSigned", TO_CHARGER),
    ("DeleteCertificate", TO_CHARGER),
    ("ExtendedTriggerMessage", TO_CHARGER),
    ("GetInstalledCertificateIds", TO_CHARGER),
    ("GetLog", TO_CHARGER),
    ("InstallCertificate", TO_CHARGER),
    ("LogStatusNotification", TO_CSMS),
    ("SecurityEventNotification", TO_CSMS),
    ("SignCertificate", TO_CSMS),
    ("SignedFirmwareStatusNotification", TO_CSMS),
    ("SignedUpdateFirmware", TO_CHARGER),
]

# Examples per action and kind: 78 x 100 = 7,800 a run by default.
EXAMPLES = int(os.environ.get("EVGATE_CONFORMANCE_EXAMPLES", "100"))

# The OCPP-J code evgate must give for a payload the oracle finds one error in.
ORACLE_CODES = {
    "type": ErrorCode.type_constraint_violation,
    "enum": ErrorCode.property_constraint_violation,
    "maxLength": ErrorCode.property_constraint_violation,
    "format": ErrorCode.property_constraint_violation,
    "multipleOf": ErrorCode.property_constraint_violation,
    "required": ErrorCode.occurence_constraint_violation,
    "minItems": ErrorCode.occurence_constraint_violation,
    "additionalProperties": ErrorCode.formation_violation,
}


def test_the_table_lists_every_action_once_with_its_direction() -> None:
    """The literal table, the schema files and evgate's ACTIONS name the same 39 actions."""
    names = [name for name, _ in ALL_ACTIONS]
    assert len(names) == len(set(names)) == 39
    assert sorted(names) == schema_actions()
    assert {name: spec.direction for name, spec in ACTIONS.items()} == dict(ALL_ACTIONS)


def test_the_oracle_really_checks_date_time() -> None:
    """jsonschema skips formats silently when their library is missing; this one is on."""
    assert FORMAT_CHECKER.conforms("2024-05-01T12:00:00Z", "date-time")
    assert not FORMAT_CHECKER.conforms("2024-05-01T12:00:00", "date-time")
    assert not FORMAT_CHECKER.conforms("2024-02-30T12:00:00Z", "date-time")
    assert not FORMAT_CHECKER.conforms("2024-05-01T12:00:00Z\n", "date-time")
    heartbeat = validator("Heartbeat", "response")
    assert not heartbeat.is_valid({"currentTime": "2024-05-01 12:00:00Z"})
    assert heartbeat.is_valid({"currentTime": "2024-05-01t12:00:00.5+02:00"})


def _evgate_decode(action: str, kind: str, payload_text: str) -> Any:
    """Frame the payload as a CALL or CALLRESULT, and decode it as evgate does."""
    if kind == "request":
        frame = frames.decode(f'[2,"u-1",{json.dumps(action)},{payload_text}]'.encode())
        assert isinstance(frame, frames.Call)
        return frames.decode_request(frame, accept_direction=Direction.both)
    frame = frames.decode(f'[3,"u-1",{payload_text}]'.encode())
    assert isinstance(frame, frames.CallResult)
    return frames.decode_response(action, frame.payload, unique_id=frame.unique_id)


def assert_agrees(action: str, kind: str, payload: Any, ascii_only: bool = True) -> bool:
    """Assert evgate and the oracle agree on ``payload``; return the oracle's verdict."""
    text = json.dumps(payload, ensure_ascii=ascii_only, separators=(",", ":"))
    verdict = judge(action, kind, text)
    try:
        message, violations = _evgate_decode(action, kind, text)
    except OcppError as exc:
        assert not verdict.accepted, f"evgate refused a valid payload: {exc!r}\n{text}"
        assert exc.unique_id == "u-1"
        if len(verdict.errors) == 1:
            error = verdict.errors[0]
            expected = ORACLE_CODES[error.validator]
            where = path_text(error.absolute_path)
            if error.validator == "type" and not where:
                expected = ErrorCode.formation_violation  # the payload is not an object
            assert exc.code is expected, f"{exc!r} for {error.message}\n{text}"
            assert exc.path is not None and exc.path.startswith(where), (exc.path, where)
        return verdict.accepted
    assert verdict.accepted, f"evgate accepted: {[e.message for e in verdict.errors]}\n{text}"
    assert violations == ()
    encoded = json.loads(frames.encode_result("u-1", message))[2]
    assert judge(action, kind, json.dumps(encoded)).accepted, encoded
    return verdict.accepted


CASES = [(name, kind) for name, _ in ALL_ACTIONS for kind in ("request", "response")]
IDS = [f"{action}.{kind}" for action, kind in CASES]


@pytest.mark.parametrize(("action", "kind"), CASES, ids=IDS)
def test_evgate_agrees_with_the_official_schema(action: str, kind: str) -> None:
    """Accept/reject agree with the oracle; single errors get the same code and path."""
    schema = load_schema(action, kind)
    seen: Counter[bool] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(payload=payloads(schema), ascii_only=st.booleans())
    def agree(payload: Any, ascii_only: bool) -> None:
        seen[assert_agrees(action, kind, payload, ascii_only)] += 1

    agree()
    # Both sides were exercised (tiny schemas may exhaust their distinct examples early).
    assert seen[True] and seen[False], seen


@pytest.mark.parametrize(("action", "kind"), CASES, ids=IDS)
def test_every_single_mistake_is_judged_as_the_schema_does(action: str, kind: str) -> None:
    """Exhaustive: every place in a full payload, with every mistake it admits, one at a time."""
    schema = load_schema(action, kind)
    full = example(schema, schema)
    assert assert_agrees(action, kind, full), "the full example must be valid"
    refused = 0
    for _, what, path, node in sites(full, schema, schema, ()):
        wrong = [v for group in mistakes(node) for v in group] if what == "value" and path else [1]
        for value in wrong:
            payload = copy.deepcopy(full)
            parent = payload
            for part in path if what == "extra" else path[:-1]:
                parent = parent[part]
            if what == "extra":
                parent["unexpected"] = value
            elif what == "missing":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            # A "mistake" can be valid ("Hertz" is a unit in MeterValues): the verdict is the
            # oracle's, and evgate must agree either way.
            refused += not assert_agrees(action, kind, payload)
    assert refused
