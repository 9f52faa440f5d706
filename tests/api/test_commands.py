"""Commands to chargers over HTTP: every outcome of POST /api/v1/chargers/{id}/commands/{Action}
has its status, and GET /api/v1/chargers/{id} shows the live connection; /metrics is open."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec

from evgate.api.commands import COMMANDS
from evgate.app import Evgate
from evgate.gateway.connection import MAX_QUEUED_CALLS
from support import ocpp_charger, register_charger, until


@contextlib.asynccontextmanager
async def _charger(
    evgate: Evgate, api: httpx.AsyncClient, answer: Callable[[list], Any] | None
) -> AsyncIterator[Any]:
    """Register CP-1, connect it, and answer each CALL with ``answer(frame)`` (None: silence)."""
    secret = await register_charger(evgate, api, "CP-1")
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-1?auth={secret}"
    async with ocpp_charger(url, "CP-1", script=answer or (lambda _: None)) as charger:
        gateway = evgate.gateway
        assert gateway is not None
        await until(lambda: gateway.connection("CP-1") is not None)
        yield charger.ws


def _accept(frame: list) -> list:
    return [3, frame[1], {"status": "Accepted"}]


async def test_command_returns_the_chargers_answer(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """200 with the charger's response payload; the charger received the validated request."""
    seen: list[list] = []

    def answer(frame: list) -> list:
        seen.append(frame)
        return _accept(frame)

    async with _charger(evgate, api, answer):
        r = await api.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Soft"})
        assert r.status_code == 200 and r.json() == {"status": "Accepted"}
        r = await api.post("/api/v1/chargers/CP-1/commands/ClearCache")  # empty body: {}
        assert r.status_code == 200
    assert [f[2:] for f in seen] == [["Reset", {"type": "Soft"}], ["ClearCache", {}]]


async def test_charger_get_shows_the_connection(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """GET shows connectedAt, remoteAddress and securityProfile while connected, null after."""
    async with _charger(evgate, api, None):
        body = (await api.get("/api/v1/chargers/CP-1")).json()
        connection = body["connection"]
        assert connection["remoteAddress"].startswith("127.0.0.1:")
        assert connection["securityProfile"] == 1 and connection["connectedAt"]
    assert evgate.gateway is not None
    await until(lambda: evgate.gateway.connection("CP-1") is None)  # type: ignore[union-attr]
    assert (await api.get("/api/v1/chargers/CP-1")).json()["connection"] is None


async def test_unknown_charger_404_and_disconnected_409(api: httpx.AsyncClient) -> None:
    """404 for a charger that does not exist; 409 for one that exists but is not connected."""
    r = await api.post("/api/v1/chargers/NOPE/commands/Reset", json={"type": "Soft"})
    assert r.status_code == 404
    await api.post("/api/v1/chargers", json={"id": "CP-2"})
    r = await api.post("/api/v1/chargers/CP-2/commands/Reset", json={"type": "Soft"})
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"


async def test_unknown_or_wrong_direction_action_is_404(api: httpx.AsyncClient) -> None:
    """An action that is not OCPP, or one chargers send (not receive): 404, saying which."""
    for action, detail in [("Frobnicate", "unknown command"), ("Heartbeat", "sent by chargers")]:
        r = await api.post(f"/api/v1/chargers/CP-1/commands/{action}", json={})
        assert r.status_code == 404 and detail in r.json()["detail"]


async def test_invalid_payload(api: httpx.AsyncClient) -> None:
    """Not JSON: 400. Invalid for the action: 422 naming the OCPP violation. Checked before
    the charger is looked up, so nothing is ever sent."""
    cases = [
        (b"{not json", 400, None),
        (b'{"type": "Sideways"}', 422, "PropertyConstraintViolation"),
        (b"{}", 422, "OccurenceConstraintViolation"),
        (b'{"type": "Soft", "extra": 1}', 422, "FormationViolation"),
        (b"[]", 422, "FormationViolation"),
    ]
    for body, status, code in cases:
        r = await api.post(
            "/api/v1/chargers/CP-1/commands/Reset",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == status, body
        if code:
            assert r.json()["errorCode"] == code


async def test_callerror_is_502_with_the_code(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """A CALLERROR from the charger: 502 with errorCode, errorDescription and errorDetails."""
    async with _charger(evgate, api, lambda f: [4, f[1], "NotSupported", "nope", {"a": 1}]):
        r = await api.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Hard"})
    assert r.status_code == 502
    body = r.json()
    assert (body["errorCode"], body["errorDescription"], body["errorDetails"]) == (
        "NotSupported",
        "nope",
        {"a": 1},
    )


async def test_an_answer_holding_nul_is_502(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """A CALLRESULT with U+0000 in a text (valid by the schema; no PostgreSQL text or jsonb
    holds it): 502 PropertyConstraintViolation naming the field, at once, not a timeout. A
    command holding one: 422."""
    answer = [3, "", {"status": "Accepted", "data": "a\x00b"}]
    async with _charger(evgate, api, lambda f: [3, f[1], answer[2]]):
        r = await api.post("/api/v1/chargers/CP-1/commands/DataTransfer", json={"vendorId": "v"})
    assert r.status_code == 502, r.text
    assert r.json()["errorCode"] == "PropertyConstraintViolation"
    assert "data" in r.json()["detail"]
    # Nor is one sent: refused before the charger is looked up, local or routed alike.
    r = await api.post(
        "/api/v1/chargers/CP-1/commands/DataTransfer",
        content=b'{"vendorId": "v\\u0000"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["errorCode"] == "PropertyConstraintViolation"


async def test_schema_breaking_answer_is_502(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """A CALLRESULT that breaks the response schema: 502 naming the violation."""
    async with _charger(evgate, api, lambda f: [3, f[1], {"status": "Perhaps"}]):
        r = await api.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Hard"})
    assert r.status_code == 502 and r.json()["errorCode"] == "PropertyConstraintViolation"


async def test_no_answer_is_504(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """No answer within call_timeout: 504."""
    assert evgate.gateway is not None
    evgate.gateway.settings = msgspec.structs.replace(evgate.settings, call_timeout=0.2)
    async with _charger(evgate, api, None):
        r = await api.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Hard"})
    assert r.status_code == 504


async def test_weak_authorization_key_is_422(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """ChangeConfiguration of AuthorizationKey shorter than 16 characters: 422, not sent."""
    async with _charger(evgate, api, _accept):
        r = await api.post(
            "/api/v1/chargers/CP-1/commands/ChangeConfiguration",
            json={"key": "AuthorizationKey", "value": "short"},
        )
    assert r.status_code == 422


async def test_metrics_are_open_and_count_frames(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """/metrics needs no token and shows connected chargers, frames by action and loop lag."""
    async with _charger(evgate, api, _accept):
        await api.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Soft"})
        async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
            r = await anonymous.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "evgate_chargers_connected 1" in text
    assert 'evgate_frames_sent_total{action="Reset"} 1' in text
    assert 'evgate_frames_received_total{action="Reset"} 1' in text
    assert "evgate_event_loop_lag_seconds" in text


# Every CSMS -> charger action of OCPP 1.6J (issue 4's list and the security extension's), with
# a valid request and a valid answer: each must be accepted by the API, reach the charger as
# sent, and come back as the charger answered.
_CORE = [
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "Reset",
    "UnlockConnector",
    "ChangeAvailability",
    "ChangeConfiguration",
    "GetConfiguration",
    "ClearCache",
    "TriggerMessage",
    "DataTransfer",
    "GetDiagnostics",
    "UpdateFirmware",
    "ReserveNow",
    "CancelReservation",
    "SendLocalList",
    "GetLocalListVersion",
    "SetChargingProfile",
    "ClearChargingProfile",
    "GetCompositeSchedule",
]
_SECURITY = [
    "CertificateSigned",
    "DeleteCertificate",
    "ExtendedTriggerMessage",
    "GetInstalledCertificateIds",
    "GetLog",
    "InstallCertificate",
    "SignedUpdateFirmware",
]
_ACCEPTED = {"status": "Accepted"}
_LATER = "2030-01-01T00:00:00Z"
_EVERY_COMMAND: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "RemoteStartTransaction": ({"idTag": "TAG-1", "connectorId": 1}, _ACCEPTED),
    "RemoteStopTransaction": ({"transactionId": 7}, _ACCEPTED),
    "Reset": ({"type": "Soft"}, _ACCEPTED),
    "UnlockConnector": ({"connectorId": 1}, {"status": "Unlocked"}),
    "ChangeAvailability": ({"connectorId": 1, "type": "Inoperative"}, {"status": "Scheduled"}),
    "ChangeConfiguration": ({"key": "HeartbeatInterval", "value": "120"}, _ACCEPTED),
    "GetConfiguration": (
        {"key": ["HeartbeatInterval"]},
        {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "120"}]},
    ),
    "ClearCache": ({}, _ACCEPTED),
    "TriggerMessage": ({"requestedMessage": "StatusNotification", "connectorId": 1}, _ACCEPTED),
    "DataTransfer": ({"vendorId": "com.example", "messageId": "m", "data": "d"}, _ACCEPTED),
    "GetDiagnostics": ({"location": "ftp://diag.example/"}, {"fileName": "diag.zip"}),
    "UpdateFirmware": ({"location": "https://fw.example/fw.bin", "retrieveDate": _LATER}, {}),
    "ReserveNow": (
        {"connectorId": 1, "expiryDate": _LATER, "idTag": "TAG-1", "reservationId": 42},
        _ACCEPTED,
    ),
    "CancelReservation": ({"reservationId": 42}, _ACCEPTED),
    "SendLocalList": (
        {"listVersion": 3, "updateType": "Full", "localAuthorizationList": [{"idTag": "TAG-1"}]},
        _ACCEPTED,
    ),
    "GetLocalListVersion": ({}, {"listVersion": 3}),
    "SetChargingProfile": (
        {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {
                    "chargingRateUnit": "W",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}],
                },
            },
        },
        _ACCEPTED,
    ),
    "ClearChargingProfile": ({"id": 1}, _ACCEPTED),
    "GetCompositeSchedule": ({"connectorId": 1, "duration": 3600}, {"status": "Rejected"}),
    "CertificateSigned": ({"certificateChain": "-----BEGIN CERTIFICATE-----"}, _ACCEPTED),
    "DeleteCertificate": (
        {
            "certificateHashData": {
                "hashAlgorithm": "SHA256",
                "issuerNameHash": "aa",
                "issuerKeyHash": "bb",
                "serialNumber": "01",
            }
        },
        _ACCEPTED,
    ),
    "ExtendedTriggerMessage": ({"requestedMessage": "Heartbeat"}, _ACCEPTED),
    "GetInstalledCertificateIds": (
        {"certificateType": "CentralSystemRootCertificate"},
        {"status": "NotFound"},
    ),
    "GetLog": (
        {"logType": "SecurityLog", "requestId": 5, "log": {"remoteLocation": "ftp://logs/"}},
        {"status": "Accepted", "filename": "security.log"},
    ),
    "InstallCertificate": (
        {"certificateType": "ManufacturerRootCertificate", "certificate": "-----BEGIN"},
        _ACCEPTED,
    ),
    "SignedUpdateFirmware": (
        {
            "requestId": 9,
            "firmware": {
                "location": "https://fw.example/fw.bin",
                "retrieveDateTime": _LATER,
                "signingCertificate": "-----BEGIN",
                "signature": "c2lnbmF0dXJl",
            },
        },
        {"status": "Accepted"},
    ),
}


def test_the_command_table_is_every_csms_to_charger_action() -> None:
    """The API's commands are exactly OCPP 1.6J's CSMS->charger actions with the security
    extension's, and the table below tests each of them."""
    assert sorted(COMMANDS) == sorted(_CORE + _SECURITY) == sorted(_EVERY_COMMAND)


async def test_every_command_is_sent_and_answered(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """Each CSMS->charger action: POST .../commands/{Action} with a valid payload is 200 with
    the charger's answer, and the charger received exactly that action and payload."""
    seen: list[list] = []

    def answer(frame: list) -> list:
        seen.append(frame)
        return [3, frame[1], _EVERY_COMMAND[frame[2]][1]]

    async with _charger(evgate, api, answer):
        for action, (request, response) in _EVERY_COMMAND.items():
            r = await api.post(f"/api/v1/chargers/CP-1/commands/{action}", json=request)
            assert r.status_code == 200, (action, r.text)
            assert r.json() == response, action
            assert seen[-1][2:] == [action, request], action
    assert len(seen) == len(_EVERY_COMMAND)


async def test_too_many_waiting_commands_is_503(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """A charger that answers nothing: commands beyond the ones allowed to wait are 503."""
    async with _charger(evgate, api, None):
        posts = [
            api.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Soft"})
            for _ in range(MAX_QUEUED_CALLS + 3)
        ]
        tasks = [asyncio.create_task(p) for p in posts]
        statuses: list[int] = []
        for task in asyncio.as_completed(tasks):
            r = await task
            statuses.append(r.status_code)
            if len(statuses) == 3:
                break
        assert statuses == [503, 503, 503]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_charger_gone_before_answering_is_502(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """The charger closes its connection instead of answering: 502, saying it went away."""
    closing: list[Any] = []

    async with _charger(evgate, api, lambda frame: closing.append(frame)) as ws:
        command = asyncio.create_task(
            api.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Hard"})
        )
        await until(lambda: bool(closing))
        await ws.close()
        r = await command
    assert r.status_code == 502, r.text
    assert "disconnected" in r.json()["detail"]


async def test_commands_reach_the_charger_in_the_schemas_member_order(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """Whatever the order of the API body, the charger receives each object's members in the
    order of the official schema's properties, nested objects too (issue 21.4)."""
    seen: list[list] = []

    def answer(frame: list) -> list:
        seen.append(frame)
        return _accept(frame)

    local_list = {
        "listVersion": 3,
        "updateType": "Full",
        "localAuthorizationList": [
            {"idTagInfo": {"status": "Accepted", "expiryDate": _LATER}, "idTag": "TAG-1"}
        ],
    }
    profile = msgspec.json.decode(msgspec.json.encode(_EVERY_COMMAND["SetChargingProfile"][0]))
    profile["csChargingProfiles"]["validTo"] = _LATER
    profile["csChargingProfiles"]["chargingSchedule"]["duration"] = 3600
    async with _charger(evgate, api, answer):
        for action, body in [("SendLocalList", local_list), ("SetChargingProfile", profile)]:
            r = await api.post(f"/api/v1/chargers/CP-1/commands/{action}", json=body)
            assert r.status_code == 200, r.text
    sent_list, sent_profile = seen[0][3], seen[1][3]
    assert list(sent_list) == ["listVersion", "localAuthorizationList", "updateType"]
    assert list(sent_list["localAuthorizationList"][0]) == ["idTag", "idTagInfo"]
    assert list(sent_list["localAuthorizationList"][0]["idTagInfo"]) == ["expiryDate", "status"]
    sent = sent_profile["csChargingProfiles"]
    assert list(sent) == [
        "chargingProfileId",
        "stackLevel",
        "chargingProfilePurpose",
        "chargingProfileKind",
        "validTo",
        "chargingSchedule",
    ]
    assert list(sent["chargingSchedule"]) == [
        "duration",
        "chargingRateUnit",
        "chargingSchedulePeriod",
    ]
