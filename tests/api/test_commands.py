"""Commands to chargers over HTTP: every outcome of POST /api/v1/chargers/{id}/commands/{Action}
has its status, and GET /api/v1/chargers/{id} shows the live connection; /metrics is open."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import websockets

from evgate.app import Evgate


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - polling an arbitrary condition
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _charger(
    evgate: Evgate, api: httpx.AsyncClient, answer: Callable[[list], Any] | None
) -> AsyncIterator[Any]:
    """Register CP-1, connect it, and answer each CALL with ``answer(frame)`` (None: silence)."""
    secret = (await api.post("/api/v1/chargers", json={"id": "CP-1"})).json()["secret"]
    assert evgate.gateway is not None
    gateway = evgate.gateway
    await _until(lambda: gateway.credentials_of("CP-1") is not None)
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-1?auth={secret}"
    async with websockets.connect(url, subprotocols=["ocpp1.6"], proxy=None) as ws:  # type: ignore[list-item]

        async def respond() -> None:
            async for message in ws:
                reply = answer(json.loads(message)) if answer else None
                if reply is not None:
                    await ws.send(json.dumps(reply))

        responder = asyncio.create_task(respond())
        await _until(lambda: gateway.connection("CP-1") is not None)
        try:
            yield ws
        finally:
            responder.cancel()
            with contextlib.suppress(BaseException):
                await responder


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
    await _until(lambda: evgate.gateway.connection("CP-1") is None)  # type: ignore[union-attr]
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
