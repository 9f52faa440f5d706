"""Commands in the background (issue 21.5): ``Prefer: respond-async`` on the command API is 202
with the command's id and Location; ``GET /api/v1/commands/{id}`` shows pending, completed
with the charger's answer, or failed with a problem; subscribers get ``command.completed``;
bulk commands reach many chargers (a list, or an installation's) with bounded concurrency; the
records are in PostgreSQL (another process, or the next one, answers). Real OCPP clients (the
``ocpp`` library's ChargePoint, tests/support's TestCharger), a real webhook receiver."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from evgate.api.async_commands import AsyncCommands
from evgate.app import Evgate
from evgate.protocol.v16 import ResetRequest, ResetType
from evgate.storage.commands import KEPT_FOR, CommandStore, NewCommand
from evgate.storage.maintenance import Maintenance
from support import (
    Receiver,
    Running,
    TestCharger,
    ocpp_charger,
    quiet_for,
    register_charger,
    running_handle,
    until,
)

ASYNC = {"Prefer": "respond-async"}


@contextlib.asynccontextmanager
async def _silent(
    evgate: Evgate, charger_id: str, secret: str, seen: list[list[Any]]
) -> AsyncIterator[TestCharger]:
    """``charger_id`` connected, keeping every frame it gets in ``seen`` and answering none."""
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{charger_id}?auth={secret}"
    async with ocpp_charger(url, charger_id, script=seen.append) as charger:
        gateway = evgate.gateway
        assert gateway is not None
        await until(lambda: gateway.connection(charger_id) is not None)
        yield charger


async def _status(api: httpx.AsyncClient, location: str, status: str) -> dict[str, Any]:
    """Wait until the command at ``location`` has ``status``; its body."""

    async def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(location)).json()
        return body if body["status"] == status else None

    found: dict[str, Any] = await until(reached)
    return found


async def test_respond_async_is_202_then_the_chargers_answer(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """202 at once (the charger has not answered yet) with the id, Location and
    Preference-Applied; GET shows pending, then completed with the charger's payload."""
    secret = await register_charger(evgate, api, "CP-1")
    seen: list[list[Any]] = []
    async with _silent(evgate, "CP-1", secret, seen) as charger:
        r = await api.post(
            "/api/v1/chargers/CP-1/commands/Reset",
            json={"type": "Soft"},
            headers={"Prefer": "return=minimal, respond-async; wait=0"},
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert r.headers["location"] == f"/api/v1/commands/{body['id']}"
        assert r.headers["preference-applied"] == "respond-async"
        assert body["status"] == "pending" and body["chargerId"] == "CP-1"
        assert body["action"] == "Reset" and body["request"] == {"type": "Soft"}
        await until(lambda: bool(seen))
        pending = (await api.get(r.headers["location"])).json()
        assert pending["status"] == "pending" and pending["response"] is None
        await charger.ws.send(json.dumps([3, seen[0][1], {"status": "Accepted"}]))
        done = await _status(api, r.headers["location"], "completed")
    assert done["response"] == {"status": "Accepted"} and done["problem"] is None
    assert done["completedAt"] >= done["createdAt"]
    assert [f[2:] for f in seen] == [["Reset", {"type": "Soft"}]]


async def test_failures_are_problems_and_reach_subscribers(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """A charger not connected: failed charger-offline (a 202 still: the request was valid).
    A CALLERROR: failed callerror with the charger's code. Both, and a success, are
    command.completed events (evgate's own) to a webhook subscriber."""
    receiver = Receiver()
    await receiver.start()
    try:
        r = await api.post(
            "/public-api/notifications/v2.0",
            json={
                "via": "webhook",
                "webhook": {"callbackUrl": receiver.url},
                "notifications": ["command.completed"],
            },
        )
        assert r.status_code == 201, r.text
        secret = await register_charger(evgate, api, "CP-1")
        r = await api.post(
            "/api/v1/chargers/CP-1/commands/Reset", json={"type": "Soft"}, headers=ASYNC
        )
        assert r.status_code == 202, r.text
        offline = await _status(api, r.headers["location"], "failed")
        assert offline["problem"]["type"] == "charger-offline"
        assert offline["problem"]["status"] == 409

        url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-1?auth={secret}"
        script = lambda f: [4, f[1], "NotSupported", "no", {"why": 1}]  # noqa: E731
        async with ocpp_charger(url, "CP-1", script=script):
            await until(lambda: evgate.gateway.connection("CP-1") is not None)  # type: ignore[union-attr]
            r = await api.post("/api/v1/chargers/CP-1/commands/ClearCache", json={}, headers=ASYNC)
            rejected = await _status(api, r.headers["location"], "failed")
        assert rejected["problem"] == {
            "type": "callerror",
            "status": 502,
            "detail": "the charger answered with a CALLERROR: NotSupported",
            "errorCode": "NotSupported",
            "errorDescription": "no",
            "errorDetails": {"why": 1},
        }
        events = [json.loads(e.body) for e in await receiver.wait_for(2)]
    finally:
        await receiver.stop()
    by_id = {e["commandId"]: e for e in events}
    assert by_id[offline["id"]]["status"] == "failed"
    assert by_id[offline["id"]]["problem"]["type"] == "charger-offline"
    assert by_id[rejected["id"]]["notification"] == "command.completed"
    assert by_id[rejected["id"]]["networkId"] == "CP-1"
    assert by_id[rejected["id"]]["action"] == "ClearCache"
    assert by_id[rejected["id"]]["problem"]["errorCode"] == "NotSupported"


async def test_the_synchronous_form_is_unchanged(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """Without Prefer (or with another preference) the answer is the charger's, 200, and no
    command is recorded."""
    secret = await register_charger(evgate, api, "CP-1")
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-1?auth={secret}"
    async with ocpp_charger(url, "CP-1"):
        await until(lambda: evgate.gateway.connection("CP-1") is not None)  # type: ignore[union-attr]
        r = await api.post(
            "/api/v1/chargers/CP-1/commands/Reset",
            json={"type": "Soft"},
            headers={"Prefer": "return=minimal"},
        )
    assert r.status_code == 200 and r.json() == {"status": "Accepted"}
    assert "preference-applied" not in r.headers
    assert evgate.db is not None
    assert await evgate.db.fetchval("SELECT count(*) FROM commands") == 0


async def test_bulk_commands_to_a_list_and_to_an_installation(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """One ChangeConfiguration to a list of chargers (one not connected), then to every
    charger of an installation: 202 with one command per charger; GET gives each outcome."""
    secrets = {c: await register_charger(evgate, api, c) for c in ("CP-1", "CP-2", "CP-3")}
    body = {"key": "HeartbeatInterval", "value": "120"}
    async with contextlib.AsyncExitStack() as stack:
        chargers = {}
        for charger_id in ("CP-1", "CP-2"):
            url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{charger_id}?auth={secrets[charger_id]}"
            chargers[charger_id] = await stack.enter_async_context(ocpp_charger(url, charger_id))
        gateway = evgate.gateway
        assert gateway is not None
        await until(lambda: all(gateway.connection(c) for c in chargers))
        r = await api.post(
            "/api/v1/bulk-commands",
            json={
                "action": "ChangeConfiguration",
                "chargerIds": ["CP-1", "CP-2", "CP-3", "CP-1"],
                "request": body,
            },
        )
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert r.headers["location"] == f"/api/v1/bulk-commands/{accepted['id']}"
        assert [c["chargerId"] for c in accepted["commands"]] == ["CP-1", "CP-2", "CP-3"]

        async def settled() -> dict[str, Any] | None:
            view: dict[str, Any] = (await api.get(r.headers["location"])).json()
            return None if view["pending"] else view

        view = await until(settled)
        assert (view["completed"], view["failed"]) == (2, 1)
        outcome = {c["chargerId"]: c for c in view["commands"]}
        assert outcome["CP-1"]["response"] == {"status": "Accepted"}
        assert outcome["CP-3"]["problem"]["type"] == "charger-offline"
        one = (await api.get(f"/api/v1/commands/{outcome['CP-2']['id']}")).json()
        assert one["bulkCommandId"] == accepted["id"] and one["status"] == "completed"
        assert all(c.configuration == {"HeartbeatInterval": "120"} for c in chargers.values())

        r = await api.post("/api/v1/installations", json={"name": "depot"})
        installation = r.json()["id"]
        for charger_id in ("CP-1", "CP-2"):
            r = await api.patch(
                f"/api/v1/chargers/{charger_id}", json={"installationId": installation}
            )
            assert r.status_code == 200, r.text
        body = {"key": "MeterValueSampleInterval", "value": "30"}
        r = await api.post(
            "/api/v1/bulk-commands",
            json={"action": "ChangeConfiguration", "installationId": installation, "request": body},
        )
        assert r.status_code == 202, r.text
        assert [c["chargerId"] for c in r.json()["commands"]] == ["CP-1", "CP-2"]
        view = await until(settled)
        assert (view["completed"], view["failed"]) == (2, 0)
        assert all(c.configuration["MeterValueSampleInterval"] == "30" for c in chargers.values())


async def test_bulk_concurrency_is_bounded(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """With two slots, four silent chargers: two CALLs go out; each answer lets one more go."""
    assert evgate.commands is not None and evgate.db is not None and evgate.cluster is not None
    runner = AsyncCommands(
        evgate.commands, CommandStore(evgate.db), evgate.cluster.instance, concurrency=2
    )
    ids = [f"CP-{n}" for n in range(1, 5)]
    seen: dict[str, list[list[Any]]] = {c: [] for c in ids}
    try:
        async with contextlib.AsyncExitStack() as stack:
            chargers = {}
            for charger_id in ids:
                secret = await register_charger(evgate, api, charger_id)
                chargers[charger_id] = await stack.enter_async_context(
                    _silent(evgate, charger_id, secret, seen[charger_id])
                )
            reset = ResetRequest(type=ResetType.soft)
            await runner.submit(ids, "Reset", reset)
            called = lambda: [c for c in ids if seen[c]]  # noqa: E731
            await until(lambda: len(called()) == 2)
            await quiet_for(1)
            assert len(called()) == 2
            first = called()[0]
            await chargers[first].ws.send(
                json.dumps([3, seen[first][0][1], {"status": "Accepted"}])
            )
            await until(lambda: len(called()) == 3)
            await quiet_for(0.5)
            assert len(called()) == 3
    finally:
        await runner.close()


async def test_records_outlive_the_process_and_an_interrupted_command_fails(
    database_url: str, tmp_path: Path
) -> None:
    """A command completed before a restart is answered by the next process; one pending when
    its process stopped reads failed, interrupted."""
    async with running_handle(database_url, tmp_path) as run:
        secret = await run.charger("CP-1")
        seen: list[list[Any]] = []
        async with _silent(run.app, "CP-1", secret, seen) as charger:
            r = await run.api.post(
                "/api/v1/chargers/CP-1/commands/Reset", json={"type": "Hard"}, headers=ASYNC
            )
            done = r.headers["location"]
            await until(lambda: bool(seen))
            await charger.ws.send(json.dumps([3, seen[0][1], {"status": "Rejected"}]))
            await _status(run.api, done, "completed")
            r = await run.api.post(
                "/api/v1/chargers/CP-1/commands/Reset", json={"type": "Soft"}, headers=ASYNC
            )
            cut = r.headers["location"]
            await until(lambda: len(seen) == 2)
            await _stopped(run)
    async with running_handle(database_url, tmp_path) as run:
        again = (await run.api.get(done)).json()
        assert again["status"] == "completed" and again["response"] == {"status": "Rejected"}
        interrupted = (await run.api.get(cut)).json()
        assert interrupted["status"] == "failed"
        assert interrupted["problem"]["type"] == "interrupted"


async def _stopped(run: Running) -> None:
    """Stop the process's background commands as its shutdown does."""
    assert run.app.async_commands is not None
    await run.app.async_commands.close()


async def test_bad_input_is_a_problem(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """Each bad request is a 4xx problem+json, and nothing is recorded."""
    await api.post("/api/v1/chargers", json={"id": "CP-1"})
    cases: list[tuple[str, str, Any, dict[str, str], int]] = [
        ("post", "/api/v1/chargers/NOPE/commands/Reset", {"type": "Soft"}, ASYNC, 404),
        ("post", "/api/v1/chargers/CP-1/commands/Reset", {"type": "Sideways"}, ASYNC, 422),
        ("post", "/api/v1/chargers/CP-1/commands/Heartbeat", {}, ASYNC, 404),
        (
            "post",
            "/api/v1/chargers/CP-1/commands/ChangeConfiguration",
            {"key": "AuthorizationKey", "value": "short"},
            ASYNC,
            422,
        ),
        (
            "post",
            "/api/v1/bulk-commands",
            {
                "action": "ChangeConfiguration",
                "chargerIds": ["CP-1"],
                "request": {"key": "AuthorizationKey", "value": "short"},
            },
            {},
            422,
        ),
        ("get", "/api/v1/commands/5f0c6b8e-0000-4000-8000-000000000000", None, {}, 404),
        ("get", "/api/v1/commands/not-a-uuid", None, {}, 404),
        ("get", "/api/v1/bulk-commands/5f0c6b8e-0000-4000-8000-000000000000", None, {}, 404),
        (
            "post",
            "/api/v1/bulk-commands",
            {"action": "Frobnicate", "chargerIds": ["CP-1"]},
            {},
            422,
        ),
        ("post", "/api/v1/bulk-commands", {"action": "Heartbeat", "chargerIds": ["CP-1"]}, {}, 422),
        ("post", "/api/v1/bulk-commands", {"chargerIds": ["CP-1"]}, {}, 422),
        ("post", "/api/v1/bulk-commands", {"action": "Reset", "chargerIds": ["CP-1"]}, {}, 422),
        ("post", "/api/v1/bulk-commands", {"action": "ClearCache"}, {}, 422),
        ("post", "/api/v1/bulk-commands", {"action": "ClearCache", "chargerIds": []}, {}, 422),
        (
            "post",
            "/api/v1/bulk-commands",
            {"action": "ClearCache", "chargerIds": ["NOPE"]},
            {},
            422,
        ),
        (
            "post",
            "/api/v1/bulk-commands",
            {"action": "ClearCache", "chargerIds": ["a\u0000"]},
            {},
            422,
        ),
        ("post", "/api/v1/bulk-commands", {"action": "ClearCache", "installationId": 999}, {}, 422),
        (  # more chargers than one bulk command reaches (MAX_BULK)
            "post",
            "/api/v1/bulk-commands",
            {"action": "ClearCache", "chargerIds": [f"CP-{i}" for i in range(5001)]},
            {},
            422,
        ),
        (
            "post",
            "/api/v1/bulk-commands",
            {"action": "ClearCache", "chargerIds": ["CP-1"], "installationId": 1},
            {},
            422,
        ),
        (
            "post",
            "/api/v1/bulk-commands",
            {"action": "ClearCache", "chargerIds": ["CP-1"], "x": 1},
            {},
            422,
        ),
    ]
    for method, path, body, headers, status in cases:
        r = await api.request(method, path, json=body, headers=headers)
        assert r.status_code == status, (path, body, r.text)
        assert r.headers["content-type"] == "application/problem+json", path
    r = await api.post(
        "/api/v1/bulk-commands",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    r = await api.post("/api/v1/installations", json={"name": "empty"})
    empty = {"action": "ClearCache", "installationId": r.json()["id"]}
    r = await api.post("/api/v1/bulk-commands", json=empty)
    assert r.status_code == 422 and "no chargers" in r.json()["detail"]
    assert evgate.db is not None
    assert await evgate.db.fetchval("SELECT count(*) FROM commands") == 0


async def test_the_openapi_document_shows_the_new_calls(api: httpx.AsyncClient) -> None:
    """The asynchronous form, the command status, the bulk commands and a charger's
    certificates are documented."""
    document = (await api.get("/api/openapi.json")).json()
    paths = document["paths"]
    send = paths["/api/v1/chargers/{charger_id}/commands/{action}"]["post"]
    assert "202" in send["responses"]
    assert any(p["name"] == "Prefer" and p["in"] == "header" for p in send["parameters"])
    assert "get" in paths["/api/v1/commands/{command_id}"]
    assert "post" in paths["/api/v1/bulk-commands"]
    assert "get" in paths["/api/v1/bulk-commands/{bulk_id}"]
    assert "get" in paths["/api/v1/chargers/{charger_id}/certificates"]


async def test_records_are_pruned_after_24_hours(evgate: Evgate) -> None:
    """The maintenance run deletes command records (and bulk commands) past their expiry, and
    keeps newer ones."""
    assert evgate.db is not None and evgate.cluster is not None
    store = CommandStore(evgate.db)
    now = datetime.now(UTC)
    old, new, bulk = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for command_id, bulk_id, created in [
        (old, bulk, now - KEPT_FOR - timedelta(minutes=1)),
        (new, None, now - KEPT_FOR + timedelta(minutes=5)),
    ]:
        command = NewCommand(
            id=command_id, charger_id="CP-1", action="ClearCache", request=b"{}", bulk_id=bulk_id
        )
        await store.create([command], evgate.cluster.instance, created)
    await Maintenance(evgate.db).run_once()
    rows = await evgate.db.fetch("SELECT id FROM commands")
    assert [r["id"] for r in rows] == [new]
    assert await evgate.db.fetchval("SELECT count(*) FROM bulk_commands") == 0
