"""The dashboard's API: the fleet's counts and filters, the live stream of changes, a charger's
in-memory message log, its boot info, and the token in use."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from ocpp.v16 import call

from evgate.gateway.connection import MESSAGE_LOG_BYTES
from support import ocpp_charger, running_handle, until


async def _read_events(response: httpx.Response, into: list[dict]) -> None:
    event = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event is not None:
            into.append(json.loads(line.removeprefix("data: ")))


async def test_stream_carries_status_and_connection_changes(
    database_url: str, tmp_path: Path
) -> None:
    """A charger's connect, a committed StatusNotification and its disconnect reach an open
    stream as events, in order; the message log holds the frames both ways."""
    async with running_handle(database_url, tmp_path) as run:
        secret = await run.charger("CP-1")
        events: list[dict] = []
        async with run.api.stream("GET", "/api/v1/events/stream", timeout=None) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = asyncio.create_task(_read_events(response, events))
            await until(lambda: run.app.live.open_streams == 1)
            async with ocpp_charger(run.url("CP-1", secret), "CP-1") as charger:
                await charger.boot()
                await charger.call(
                    call.StatusNotification(connector_id=1, error_code="NoError", status="Faulted")
                )
                await until(lambda: any(e["type"] == "status" for e in events))
            await until(lambda: len([e for e in events if e["type"] == "network"]) == 2)
            reader.cancel()
        kinds = [(e["type"], e.get("networkStatus") or e.get("status")) for e in events]
        assert kinds == [
            ("network", "available"),
            ("status", "Faulted"),
            ("network", "temporarily unavailable"),
        ]
        r = await run.api.get("/api/v1/chargers/CP-1/messages")
        frames = r.json()["messages"]
        assert [f["direction"] for f in frames] == ["in", "out", "in", "out"]
        assert '"StatusNotification"' in frames[2]["text"]
        r = await run.api.get("/api/v1/chargers/CP-1")
        assert r.json()["boot"]["vendor"] == "evgate-tests"


async def test_fleet_counts_and_filters(database_url: str, tmp_path: Path) -> None:
    """Counts by network and connector status; the list's search and status filters."""
    async with running_handle(database_url, tmp_path) as run:
        secret = await run.charger("CP-A1")
        await run.charger("CP-B2")
        r = await run.api.patch("/api/v1/chargers/CP-B2", json={"description": "Garage Nord"})
        async with ocpp_charger(run.url("CP-A1", secret), "CP-A1") as charger:
            await charger.call(
                call.StatusNotification(connector_id=1, error_code="NoError", status="Faulted")
            )
            r = await run.api.get("/api/v1/fleet")
            assert r.json()["counts"] == {
                "chargers": 2,
                "network": {"available": 1, "never connected": 1},
                "connectors": {"Faulted": 1},
            }
            assert r.json()["connectedHere"] == 1
            ids = lambda r: [c["id"] for c in r.json()["data"]]  # noqa: E731
            assert ids(await run.api.get("/api/v1/chargers?q=nord")) == ["CP-B2"]
            assert ids(await run.api.get("/api/v1/chargers?q=%25")) == []
            faulted = await run.api.get("/api/v1/chargers?connectorStatus=Faulted")
            assert ids(faulted) == ["CP-A1"]
            assert faulted.json()["data"][0]["connectors"] == [
                {"connectorId": 1, "status": "Faulted", "errorCode": "NoError"}
            ]
            r = await run.api.get("/api/v1/chargers?networkStatus=never%20connected")
            assert ids(r) == ["CP-B2"]
            assert ids(await run.api.get("/api/v1/chargers?limit=1&after=CP-A1")) == ["CP-B2"]


async def test_token_in_use_says_its_scope(database_url: str, tmp_path: Path) -> None:
    async with running_handle(database_url, tmp_path) as run:
        r = await run.api.get("/api/v1/token")
        assert r.json() == {"tokenId": None, "scope": "admin", "subOperatorId": None}
        r = await run.api.post("/api/v1/tokens", json={"name": "viewer", "scope": "read"})
        token = r.json()["token"]
        r = await run.api.get("/api/v1/token", headers={"Authorization": f"Bearer {token}"})
        assert r.json()["scope"] == "read"
        anonymous = await run.api.get("/api/v1/token", headers={"Authorization": ""})
        assert anonymous.status_code == 401


async def test_message_log_is_bounded_kept_after_a_disconnect_and_dropped_with_the_charger(
    database_url: str, tmp_path: Path
) -> None:
    async with running_handle(database_url, tmp_path, message_log_size=4) as run:
        secret = await run.charger("CP-1")
        async with ocpp_charger(run.url("CP-1", secret), "CP-1") as charger:
            await charger.boot()
            for _ in range(3):
                await charger.call(call.Heartbeat())
        await until(lambda: run.gateway.connection("CP-1") is None)
        r = await run.api.get("/api/v1/chargers/CP-1/messages")
        frames = r.json()["messages"]
        assert [f["direction"] for f in frames] == ["in", "out", "in", "out"]
        assert all('"Heartbeat"' in f["text"] for f in frames if f["direction"] == "in")
        async with ocpp_charger(run.url("CP-1", secret), "CP-1") as charger:
            await charger.call(call.Heartbeat())
            r = await run.api.get("/api/v1/chargers/CP-1/messages")
            assert len(r.json()["messages"]) == 4  # the same log, continued
            # A big message is kept as its first 2 KiB, with its size.
            await charger.call(call.DataTransfer(vendor_id="acme", data="x" * 30_000))
            r = await run.api.get("/api/v1/chargers/CP-1/messages")
            big = r.json()["messages"][-2]
            assert big["direction"] == "in" and big["text"].startswith("[2,")
            assert len(big["text"]) == MESSAGE_LOG_BYTES
            assert 30_000 < big["size"] < 30_200
        assert (await run.api.delete("/api/v1/chargers/CP-1")).status_code == 204
        await until(lambda: run.gateway.recent_messages("CP-1") is None)
        assert (await run.api.get("/api/v1/chargers/CP-1/messages")).status_code == 404


async def test_a_charger_deleted_while_connected_leaves_no_log_for_its_id(
    database_url: str, tmp_path: Path
) -> None:
    """Deleted while connected: its connection closes and its messages go with it, so a new
    charger given the same id starts with an empty log."""
    async with running_handle(database_url, tmp_path, message_log_size=4) as run:
        secret = await run.charger("CP-1")
        async with ocpp_charger(run.url("CP-1", secret), "CP-1") as charger:
            await charger.call(call.Heartbeat())
            assert (await run.api.delete("/api/v1/chargers/CP-1")).status_code == 204
            await until(lambda: run.gateway.connection("CP-1") is None)
        assert run.gateway.recent_messages("CP-1") is None
        secret = await run.charger("CP-1")
        async with ocpp_charger(run.url("CP-1", secret), "CP-1"):
            await until(lambda: run.gateway.connection("CP-1") is not None)
            assert run.gateway.recent_messages("CP-1") == []


async def test_a_log_of_size_zero_keeps_nothing(database_url: str, tmp_path: Path) -> None:
    async with running_handle(database_url, tmp_path, message_log_size=0) as run:
        secret = await run.charger("CP-1")
        async with ocpp_charger(run.url("CP-1", secret), "CP-1") as charger:
            await charger.call(call.Heartbeat())
            assert run.gateway.recent_messages("CP-1") == []


async def test_evgate_stops_while_a_stream_is_open(database_url: str, tmp_path: Path) -> None:
    """The API server waits for its responses: the open streams end when evgate stops."""
    async with running_handle(database_url, tmp_path) as run:
        request = run.api.build_request("GET", "/api/v1/events/stream", timeout=None)
        response = await run.api.send(request, stream=True)
        try:
            await until(lambda: run.app.live.open_streams == 1)
            await asyncio.wait_for(run.app.stop(), 20)
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
            assert body.startswith(b": live")
        finally:
            await response.aclose()


async def test_one_stream_too_many_is_answered_503(database_url: str, tmp_path: Path) -> None:
    async with running_handle(database_url, tmp_path) as run:
        run.app.live.max_streams = 1
        async with run.api.stream("GET", "/api/v1/events/stream", timeout=None) as first:
            assert first.status_code == 200
            await until(lambda: run.app.live.open_streams == 1)
            second = await run.api.get("/api/v1/events/stream")
            assert second.status_code == 503
            assert second.headers["content-type"] == "application/problem+json"
        await until(lambda: run.app.live.open_streams == 0)
        async with run.api.stream("GET", "/api/v1/events/stream", timeout=None) as again:
            assert again.status_code == 200
