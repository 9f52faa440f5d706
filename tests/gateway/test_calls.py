"""Commands to chargers: gateway.call correlation, one outstanding CALL, typed failures, and
the AuthorizationKey rule."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from evgate.credentials import digest
from evgate.gateway.connection import MAX_QUEUED_CALLS
from evgate.gateway.interface import (
    CallRejected,
    CallTimeout,
    ChargerBusy,
    ChargerDisconnected,
    ChargerNotConnected,
    InvalidCommand,
    InvalidResponse,
)
from evgate.handlers.commands import CommandEffects
from evgate.protocol.v16 import (
    ChangeConfigurationRequest,
    GetConfigurationRequest,
    HeartbeatRequest,
    ResetRequest,
    ResetStatus,
    ResetType,
)
from evgate.storage.embedded import EmbeddedPostgres
from gateway.helpers import StartGateway, connect
from support import Running, TestCharger, running_handle, until


async def _answer_next(ws: Any, answer: Any) -> list:
    """Read the next CALL and answer it with ``answer(call)`` (a frame or None for silence)."""
    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
    reply = answer(frame)
    if reply is not None:
        await ws.send(json.dumps(reply))
    return frame


async def test_call_returns_the_validated_response(start_gateway: StartGateway) -> None:
    """Reset to the ocpp library's charger comes back as a typed ResetResponse."""
    async with start_gateway() as g, connect(g.url()) as ws:
        charger = TestCharger("CP-1", ws)
        reader = asyncio.create_task(charger.start())
        try:
            await until(lambda: g.gateway.connection("CP-1") is not None)
            response = await g.gateway.call("CP-1", ResetRequest(type=ResetType.soft))
            assert response.status == ResetStatus.accepted
        finally:
            reader.cancel()


async def test_one_outstanding_call_later_calls_queue(start_gateway: StartGateway) -> None:
    """A second call is sent only after the first is answered; unique ids differ."""
    async with start_gateway() as g, connect(g.url()) as ws:
        await until(lambda: g.gateway.connection("CP-1") is not None)
        first = asyncio.create_task(g.gateway.call("CP-1", ResetRequest(type=ResetType.hard)))
        second = asyncio.create_task(g.gateway.call("CP-1", ResetRequest(type=ResetType.soft)))
        frame1 = json.loads(await ws.recv())
        with pytest.raises(TimeoutError):  # nothing else arrives while the first is open
            await asyncio.wait_for(ws.recv(), 0.2)
        await ws.send(json.dumps([3, frame1[1], {"status": "Accepted"}]))
        frame2 = await _answer_next(ws, lambda f: [3, f[1], {"status": "Rejected"}])
        assert frame1[3] == {"type": "Hard"} and frame2[3] == {"type": "Soft"}
        assert frame1[1] != frame2[1]
        assert (await first).status == ResetStatus.accepted
        assert (await second).status == ResetStatus.rejected


async def test_callerror_raises_call_rejected(start_gateway: StartGateway) -> None:
    """A CALLERROR answer raises CallRejected with the charger's code, description, details."""
    async with start_gateway() as g, connect(g.url()) as ws:
        await until(lambda: g.gateway.connection("CP-1") is not None)
        pending = asyncio.create_task(g.gateway.call("CP-1", ResetRequest(type=ResetType.hard)))
        await _answer_next(ws, lambda f: [4, f[1], "NotSupported", "no reset here", {"x": 1}])
        with pytest.raises(CallRejected) as rejected:
            await pending
        assert (rejected.value.code, rejected.value.description) == (
            "NotSupported",
            "no reset here",
        )
        assert rejected.value.details == {"x": 1}


async def test_invalid_response_raises(start_gateway: StartGateway) -> None:
    """A CALLRESULT that breaks the response schema raises InvalidResponse with its code."""
    async with start_gateway() as g, connect(g.url()) as ws:
        await until(lambda: g.gateway.connection("CP-1") is not None)
        pending = asyncio.create_task(g.gateway.call("CP-1", ResetRequest(type=ResetType.hard)))
        await _answer_next(ws, lambda f: [3, f[1], {"status": "Maybe"}])
        with pytest.raises(InvalidResponse) as invalid:
            await pending
        assert invalid.value.error.code == "PropertyConstraintViolation"


@pytest.mark.parametrize(
    "reply",
    [
        b'[3,"%s",{"status":"Accep\xc3ted"}]',  # not UTF-8 in the payload
        b'[4,"%s","GenericError","\xff",{}]',  # not UTF-8 in the envelope
        b'[4,"%s","GenericError","",' + b'{"a":[' * 20 + b"]}" * 20 + b"]",  # 41 deep
    ],
    ids=["payload-not-utf8", "envelope-not-utf8", "deep-details"],
)
async def test_unreadable_reply_fails_the_command_at_once(
    start_gateway: StartGateway, reply: bytes
) -> None:
    """A reply that cannot be read but names the pending CALL raises InvalidResponse
    (FormationViolation) at once, not CallTimeout; the connection stays up (issue 15)."""
    async with start_gateway(call_timeout=30) as g, connect(g.url()) as ws:
        await until(lambda: g.gateway.connection("CP-1") is not None)
        pending = asyncio.create_task(g.gateway.call("CP-1", ResetRequest(type=ResetType.hard)))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(reply.replace(b"%s", frame[1].encode()), text=True)
        with pytest.raises(InvalidResponse) as invalid:
            await asyncio.wait_for(pending, 5)
        assert invalid.value.error.code == "FormationViolation"
        await ws.send(json.dumps([2, "hb", "Heartbeat", {}]))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))[:2] == [3, "hb"]


async def test_unreadable_reply_over_the_rate_still_fails_the_command(
    start_gateway: StartGateway,
) -> None:
    """An unreadable reply naming the pending CALL fails it at once even when the charger's
    message bucket is empty: the rate limit spares evgate the work of answering junk, not the
    command its wait (review finding 10)."""
    async with (
        start_gateway(call_timeout=30, message_rate=0.01, message_burst=1) as g,
        connect(g.url()) as ws,
    ):
        await ws.send(json.dumps([2, "hb", "Heartbeat", {}]))  # takes the only token
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))[:2] == [3, "hb"]
        pending = asyncio.create_task(g.gateway.call("CP-1", ResetRequest(type=ResetType.hard)))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(b'[4,"%s","GenericError","\xff",{}]' % frame[1].encode(), text=True)
        with pytest.raises(InvalidResponse) as invalid:
            await asyncio.wait_for(pending, 5)
        assert invalid.value.error.code == "FormationViolation"
        refused = g.metrics.counter("evgate_messages_refused_total", "", ("reason",))
        assert refused.value("rate") == 1  # the reply was over the rate, and so not logged


async def test_timeout_and_a_late_answer(start_gateway: StartGateway) -> None:
    """No answer within call_timeout raises CallTimeout; the late answer is ignored and the
    next call works."""
    async with start_gateway(call_timeout=0.2) as g, connect(g.url()) as ws:
        await until(lambda: g.gateway.connection("CP-1") is not None)
        pending = asyncio.create_task(g.gateway.call("CP-1", ResetRequest(type=ResetType.hard)))
        late = await _answer_next(ws, lambda f: None)
        with pytest.raises(CallTimeout):
            await pending
        await ws.send(json.dumps([3, late[1], {"status": "Accepted"}]))
        pending = asyncio.create_task(g.gateway.call("CP-1", ResetRequest(type=ResetType.soft)))
        await _answer_next(ws, lambda f: [3, f[1], {"status": "Accepted"}])
        assert (await pending).status == ResetStatus.accepted


async def test_disconnect_fails_the_pending_and_queued_calls(start_gateway: StartGateway) -> None:
    """When the charger goes away, the outstanding call raises ChargerDisconnected and the
    queued ones too; afterwards the charger is not connected."""
    async with start_gateway() as g:
        async with connect(g.url()) as ws:
            await until(lambda: g.gateway.connection("CP-1") is not None)
            calls = [
                asyncio.create_task(g.gateway.call("CP-1", ResetRequest(type=ResetType.hard)))
                for _ in range(3)
            ]
            await ws.recv()
        for pending in calls:
            with pytest.raises(ChargerDisconnected):
                await pending
        await until(lambda: g.gateway.connection("CP-1") is None)
        with pytest.raises(ChargerNotConnected):
            await g.gateway.call("CP-1", ResetRequest(type=ResetType.hard))


async def test_too_many_queued_calls_raise_busy(start_gateway: StartGateway) -> None:
    """Beyond MAX_QUEUED_CALLS waiting commands, call raises ChargerBusy at once."""
    async with start_gateway(call_timeout=1) as g, connect(g.url()):
        await until(lambda: g.gateway.connection("CP-1") is not None)
        waiting = [
            asyncio.create_task(g.gateway.call("CP-1", GetConfigurationRequest()))
            for _ in range(MAX_QUEUED_CALLS)
        ]
        await asyncio.sleep(0)  # one loop turn: the calls start and queue
        with pytest.raises(ChargerBusy):
            await g.gateway.call("CP-1", GetConfigurationRequest())
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)


async def test_charger_to_csms_request_is_not_a_command(start_gateway: StartGateway) -> None:
    """call() refuses a request that travels charger→CSMS (Heartbeat) before sending."""
    async with start_gateway() as g:
        with pytest.raises(InvalidCommand):
            await g.gateway.call("CP-1", HeartbeatRequest())


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("short", True),
        ("x" * 41, True),
        ("sixteen-chars-ok\n", True),  # a control character (credentials.key_problem)
        ("NewKey-0123456789abcdef", False),
    ],
)
async def test_weak_or_unstorable_authorization_key_is_refused(
    start_gateway: StartGateway, value: str, stored: bool
) -> None:
    """An AuthorizationKey outside 16-40 characters, or one the command link cannot store
    (a gateway with no ``store_key``), is refused before it is sent, by the command link
    (handlers/commands.py) and by the gateway that holds the charger."""
    saved: list[tuple[str, bytes]] = []

    async def save(charger_id: str, new_digest: bytes) -> None:
        saved.append((charger_id, new_digest))

    store = {"store_key": save} if stored else {}
    async with start_gateway(**store) as g, connect(g.url()) as ws:
        await until(lambda: g.gateway.connection("CP-1") is not None)
        commands = CommandEffects(g.gateway, None, None, lambda _: None)  # type: ignore[arg-type]
        request = ChangeConfigurationRequest(key="AuthorizationKey", value=value)
        for link in (commands, g.gateway):
            with pytest.raises(InvalidCommand):
                await link.call("CP-1", request)
        with pytest.raises(TimeoutError):  # nothing was sent
            await asyncio.wait_for(ws.recv(), 0.2)
    assert saved == []


async def test_accepted_authorization_key_becomes_the_secret(running: Running) -> None:
    """An accepted ChangeConfiguration(AuthorizationKey) stores the new key's digest: the
    connection that changed it stays up, the new key connects, the old one is refused."""
    old = await running.add("CP-1")
    new_key = "NewKey-0123456789abcdef"
    async with connect(running.url("CP-1", old)) as ws:
        charger = TestCharger("CP-1", ws)
        reader = asyncio.create_task(charger.start())
        try:
            await until(lambda: running.gateway.connection("CP-1") is not None)
            response = await running.app.commands.call(
                "CP-1", ChangeConfigurationRequest(key="AuthorizationKey", value=new_key)
            )
            assert response.status == "Accepted"
            row = await running.app.db.fetchrow(
                "SELECT secret_digest FROM chargers WHERE id='CP-1'"
            )
            assert bytes(row["secret_digest"]) == digest(new_key)
            # The NOTIFY round trip (the index has the new key) must not close this connection.
            credentials = running.gateway.credentials_of
            await until(lambda: credentials("CP-1").secret_digest == digest(new_key))
            assert running.gateway.connection("CP-1") is not None
        finally:
            reader.cancel()
    async with connect(running.url("CP-1", new_key)) as ws:
        assert ws.subprotocol == "ocpp1.6"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(running.url("CP-1", old)):
            pass
    assert refused.value.response.status_code == 401


async def test_authorization_key_accepted_while_database_is_down_is_stored_later(
    private_pg: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    """The charger switched keys, so its new key must not be lost: with PostgreSQL down the
    command still answers, and the digest is stored once PostgreSQL is back."""
    pg, dsn = private_pg
    async with running_handle(dsn, tmp_path, call_timeout=1.0) as running:
        app = running.app
        assert app.db is not None and app.gateway is not None
        old = await running.add("CP-1")
        new_key = "NewKey-0123456789abcdef"
        async with connect(running.url("CP-1", old)) as ws:
            charger = TestCharger("CP-1", ws)
            reader = asyncio.create_task(charger.start())
            try:
                await until(lambda: running.gateway.connection("CP-1") is not None)
                await asyncio.to_thread(pg.kill)
                assert app.commands is not None
                response = await app.commands.call(
                    "CP-1", ChangeConfigurationRequest(key="AuthorizationKey", value=new_key)
                )
                assert response.status == "Accepted"
                await asyncio.to_thread(pg.restart_same_port)

                async def stored() -> bool:
                    with contextlib.suppress(Exception):  # PostgreSQL is coming back
                        query = "SELECT secret_digest FROM chargers WHERE id = 'CP-1'"
                        return bytes(await app.db.fetchval(query)) == digest(new_key)
                    return False

                await until(stored, within=20)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
