"""The API port's limits (issue 15): idle sockets cannot take the chargers' file descriptors.
A cap on open connections (the excess answered 503 and closed, one log line per episode, a
metric), a request read timeout (uvicorn's h11 has none) and the keep-alive timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import httpx
import pytest
import websockets
from ocpp.v16 import call

from evgate.app import Evgate
from support import BOOTSTRAP_TOKEN, ocpp_charger, running_evgate, until

CAP = 50
IDLE = 200


def _metric(app: Evgate, name: str) -> float:
    return app.metrics._metrics[name].value()


async def _add_charger(app: Evgate, charger_id: str) -> str:
    """Add a charger through the API and wait until the gateway knows it; its secret."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.api_port}",
        headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"},
    ) as api:
        created = await api.post("/api/v1/chargers", json={"id": charger_id})
    secret: str = created.json()["secret"]
    assert app.gateway is not None
    gateway = app.gateway
    await until(lambda: gateway.credentials_of(charger_id) is not None, within=20)
    return secret


async def _first_bytes(reader: asyncio.StreamReader, wait: float) -> bytes:
    """What the server sent before closing (b"" on a plain close); b"?" if it sent nothing and
    kept the connection open for ``wait`` seconds."""
    try:
        return await asyncio.wait_for(reader.read(4096), wait)
    except TimeoutError:
        return b"?"
    except ConnectionResetError:
        return b""


async def test_idle_sockets_fill_only_the_api_share_and_a_charger_still_connects(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """200 idle sockets against a cap of 50: 50 are held, 150 answered 503 and closed, one
    warning and the refusals counted; a charger connects and boots meanwhile; when the idle
    sockets go, one line says so and the API answers again."""
    async with running_evgate(
        database_url, tmp_path, api_max_connections=CAP, api_read_timeout=120
    ) as app:
        base = f"http://127.0.0.1:{app.api_port}"
        auth = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
        secret = await _add_charger(app, "CP-1")

        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        caplog.set_level(logging.INFO, logger="evgate.api.server")
        try:
            for _ in range(IDLE):
                idle.append(await asyncio.open_connection("127.0.0.1", app.api_port))
            await until(
                lambda: _metric(app, "evgate_api_connections_refused_total") >= IDLE - CAP,
                within=20,
            )
            assert _metric(app, "evgate_api_connections") == CAP
            answers = await asyncio.gather(*(_first_bytes(r, 2) for r, _ in idle))
            held = [a for a in answers if a == b"?"]
            refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
            # A refused client that had not read its 503 before the close may see a reset.
            assert len(held) == CAP and len(refused) + answers.count(b"") == IDLE - CAP
            assert refused and b"application/problem+json" in refused[0]

            url = f"ws://127.0.0.1:{app.ws_port}/cp/CP-1?auth={secret}"
            async with ocpp_charger(url, "CP-1") as charger:
                answer = await charger.call(call.BootNotification("Model", "Vendor"))
                assert answer.status == "Accepted"

            # An API client is refused too while the idle sockets hold the cap.
            async with httpx.AsyncClient(base_url=base, headers=auth) as api:
                assert (await api.get("/api/v1/chargers")).status_code == 503
        finally:
            for _, writer in idle:
                writer.close()
        await until(lambda: _metric(app, "evgate_api_connections") == 0, within=20)
        lines = [r for r in caplog.records if r.name == "evgate.api.server"]
        assert [r.levelno for r in lines] == [logging.WARNING, logging.INFO]
        assert "cap" in lines[0].getMessage() and "were refused" in lines[1].getMessage()
        async with httpx.AsyncClient(base_url=base, headers=auth) as api:
            assert (await api.get("/api/v1/chargers")).status_code == 200


async def test_a_request_that_does_not_arrive_in_time_is_closed(
    database_url: str, tmp_path: Path
) -> None:
    """A socket that sends nothing, and one that sends a header byte every 0.2 s (slowloris),
    are closed once api_read_timeout has passed; a request sent in time is answered."""
    async with running_evgate(database_url, tmp_path, api_read_timeout=1.0) as app:
        silent = await asyncio.open_connection("127.0.0.1", app.api_port)
        slow = await asyncio.open_connection("127.0.0.1", app.api_port)

        async def trickle() -> None:
            slow[1].write(b"GET /api/v1/chargers HTTP/1.1\r\nHost: x\r\n")
            for _ in range(300):  # 60 s of headers if nobody stops it
                slow[1].write(b"X")
                await slow[1].drain()
                await asyncio.sleep(0.2)  # pacing: a slow client's headers

        sender = asyncio.create_task(trickle())
        try:
            assert await _first_bytes(silent[0], 20) == b""
            assert await _first_bytes(slow[0], 20) == b""
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            silent[1].close()
            slow[1].close()
        assert _metric(app, "evgate_api_read_timeouts_total") == 2

        # In time: answered (401, no token), and the connection is then kept alive.
        reader, writer = await asyncio.open_connection("127.0.0.1", app.api_port)
        writer.write(b"GET /api/v1/chargers HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _first_bytes(reader, 20)).startswith(b"HTTP/1.1 401")
        writer.close()


async def test_an_idle_keep_alive_connection_is_kept_until_the_keep_alive_timeout(
    database_url: str, tmp_path: Path
) -> None:
    """After an answer, the read timeout does not run (the client owes no request yet): the
    connection stays open past it, and api_keepalive_timeout then closes it."""
    async with running_evgate(
        database_url, tmp_path, api_keepalive_timeout=6, api_read_timeout=1.0
    ) as app:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.api_port)
        writer.write(b"GET /api/v1/chargers HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        assert await _first_bytes(reader, 2.5) == b"?"  # still open after the read timeout
        assert await _first_bytes(reader, 20) == b""  # closed by the keep-alive timeout
        writer.close()
        assert _metric(app, "evgate_api_read_timeouts_total") == 0


async def test_requests_left_behind_by_their_clients_are_bounded_too(
    database_url: str, tmp_path: Path
) -> None:
    """A command whose client hung up keeps waiting for a silent charger; with as many requests
    in flight as the cap (1 here), the next is answered 503 (a problem document) until it ends."""
    async with running_evgate(
        database_url, tmp_path, api_max_connections=1, call_timeout=4.0
    ) as app:
        base = f"http://127.0.0.1:{app.api_port}"
        auth = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
        secret = await _add_charger(app, "CP-1")
        assert app.gateway is not None
        gateway = app.gateway
        url = f"ws://127.0.0.1:{app.ws_port}/cp/CP-1?auth={secret}"
        async with websockets.connect(url, subprotocols=["ocpp1.6"], proxy=None):  # type: ignore[list-item]
            await until(lambda: gateway.connection("CP-1") is not None, within=20)
            _, writer = await asyncio.open_connection("127.0.0.1", app.api_port)
            writer.write(
                b"POST /api/v1/chargers/CP-1/commands/ClearCache HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {BOOTSTRAP_TOKEN}\r\n".encode()
                + b"Content-Length: 2\r\n\r\n{}"
            )
            await writer.drain()
            await until(lambda: _metric(app, "evgate_api_requests_in_flight") == 1, within=20)
            writer.close()  # the client leaves; its command waits for the charger
            await until(lambda: _metric(app, "evgate_api_connections") == 0, within=20)
            async with httpx.AsyncClient(base_url=base, headers=auth) as api:
                r = await api.get("/api/v1/chargers")
                assert r.status_code == 503, r.text
                assert r.headers["content-type"] == "application/problem+json"
                # Once the command times out (the charger never answers), the API answers.
                await until(lambda: _metric(app, "evgate_api_requests_in_flight") == 0, within=20)
                assert (await api.get("/api/v1/chargers")).status_code == 200
