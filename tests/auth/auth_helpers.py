"""Helpers of the external-authorization tests: a real authorization provider on loopback
(an OAuth-style token endpoint, a session-start and a session-end endpoint), and waiting."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from evgate.app import Evgate
from evgate.auth.authorizer import Authorizer, Decision, SessionStart
from support import ocpp_charger

USERNAME = "evgate"
PASSWORD = "s3cret-pa55"
TOKEN_PAYLOAD = f"grant_type=password&username={USERNAME}&password={PASSWORD}"


@dataclass
class Seen:
    """One request the provider received."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


# What the start or end endpoint answers: (status, body bytes), optionally after a delay.
Answer = tuple[int, bytes]


@dataclass
class Provider:
    """An authorization provider on 127.0.0.1, served from its own thread.

    Tests change its behaviour through the attributes: ``start_answer`` (a function of the
    start request's JSON), ``end_statuses`` (statuses the end endpoint answers in turn, then
    200), ``delay`` (seconds before answering the start endpoint), ``token_lifetime``
    (``expires_in``; None leaves it out) and ``revoke()``.
    """

    port: int = 0
    start_answer: Callable[[dict[str, Any]], Answer] = field(
        default=lambda body: (200, b'{"authorized": true, "sessionId": "S-1"}')
    )
    end_statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    token_lifetime: float | None = 3600.0
    token_status: int = 200
    seen: list[Seen] = field(default_factory=list)
    _tokens: dict[str, float] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path]

    def revoke(self) -> None:
        """Every token issued so far stops working (as a provider's key rotation would)."""
        with self._lock:
            self._tokens.clear()

    # -- served from the server's threads ----------------------------------------------------

    def _authorized(self, headers: dict[str, str]) -> bool:
        header = headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme == "Bearer":
            with self._lock:
                expires = self._tokens.get(value)
            return expires is not None and time.monotonic() < expires
        if scheme == "Basic":
            return base64.b64decode(value).decode() == f"{USERNAME}:{PASSWORD}"
        return False

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self._lock:
            self.seen.append(Seen(path, headers, body))
        if path == "/token":
            form = dict(parse_qsl(body.decode()))
            if headers.get("content-type") != "application/x-www-form-urlencoded":
                return 415, b"{}"
            if form.get("username") != USERNAME or form.get("password") != PASSWORD:
                return 400, b'{"error": "invalid_grant"}'
            if self.token_status != 200:
                return self.token_status, b"{}"
            token = f"tok-{next(self._numbers)}"
            lifetime = self.token_lifetime
            with self._lock:
                self._tokens[token] = time.monotonic() + (lifetime or 1e9)
            answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
            if lifetime is not None:
                answer["expires_in"] = lifetime
            return 200, json.dumps(answer).encode()
        if not self._authorized(headers):
            return 401, b'{"error": "unauthorized"}'
        if path == "/start":
            if self.delay:
                self.release.wait(self.delay)
            return self.start_answer(json.loads(body))
        if path == "/end":
            with self._lock:
                status = self.end_statuses.pop(0) if self.end_statuses else 200
            return status, b"{}"
        return 404, b"{}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, answer = self.server.provider.handle(self.path, headers, body)
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # evgate gave up waiting (a timeout test): nobody reads the answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    provider: Provider


def serve_provider(provider: Provider) -> Callable[[], None]:
    """Serve ``provider`` on a free loopback port (set on it); returns the stop function."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.provider = provider
    provider.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="provider", daemon=True)
    thread.start()

    def stop() -> None:
        provider.release.set()  # lets delayed answers finish
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


async def until(condition: Callable[[], Any], within: float = 10.0) -> None:
    """Wait until ``condition()`` is true (NOTIFY round trips, deliveries, pushes)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - any condition, not one event
            await asyncio.sleep(0.02)


@dataclass
class Site:
    """A running evgate and an admin API client for it."""

    app: Evgate
    api: httpx.AsyncClient

    async def installation(self, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "site")
        r = await self.api.post("/api/v1/installations", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def charger(self, charger_id: str, installation_id: int | None = None) -> str:
        """Register a charger (in the installation, if given); returns its secret."""
        r = await self.api.post("/api/v1/chargers", json={"id": charger_id})
        assert r.status_code == 201, r.text
        gateway = self.app.gateway
        assert gateway is not None
        await until(lambda: gateway.credentials_of(charger_id) is not None)  # its NOTIFY
        if installation_id is not None:
            await self.join(charger_id, installation_id)
        return str(r.json()["secret"])

    async def join(self, charger_id: str, installation_id: int | None) -> None:
        r = await self.api.patch(
            f"/api/v1/chargers/{charger_id}", json={"installationId": installation_id}
        )
        assert r.status_code == 200, r.text

    def authorizer(self, charger_id: str) -> Authorizer:
        assert self.app.auth is not None
        return self.app.auth.directory.authorizer_for(charger_id)

    async def authorize(self, charger_id: str, id_tag: str, **kw: Any) -> Decision:
        """What evgate answers for ``id_tag`` at ``charger_id`` (as the Authorize handler
        asks it)."""
        question = SessionStart(charger_id=charger_id, id_tag=id_tag, **kw)
        return await self.authorizer(charger_id).authorize(question)

    def ws_url(self, charger_id: str, secret: str) -> str:
        return f"ws://127.0.0.1:{self.app.ws_port}/cp/{charger_id}?auth={secret}"


StartSite = Callable[..., AbstractAsyncContextManager[Site]]


def webhook(provider: Provider, **settings: Any) -> dict[str, Any]:
    """Webhook settings for ``provider`` with OAuth (override any member; None drops it)."""
    base: dict[str, Any] = {
        "authenticationUrl": provider.url("/token"),
        "authenticationPayload": TOKEN_PAYLOAD,
        "sessionStartUrl": provider.url("/start"),
        "sessionEndUrl": provider.url("/end"),
        "timeoutMs": 1000,
    }
    base.update(settings)
    return {k: v for k, v in base.items() if v is not None}


class Charger(ChargePoint):  # type: ignore[misc]
    """A real OCPP 1.6 charger (the ``ocpp`` library's) that keeps the configuration it is
    sent; ``answers`` sets its ChangeConfiguration status per key (default Accepted)."""

    def __init__(self, charger_id: str, ws: Any) -> None:
        super().__init__(charger_id, ws)
        self.configuration: dict[str, str] = {}
        self.answers: dict[str, str] = {}

    @on(Action.change_configuration)
    def change_configuration(self, key: str, value: str) -> Any:
        status = self.answers.get(key, "Accepted")
        if status in ("Accepted", "RebootRequired"):
            self.configuration[key] = value
        return call_result.ChangeConfiguration(status=status)

    async def boot(self) -> str:
        response = await self.call(
            call.BootNotification(charge_point_vendor="evgate-tests", charge_point_model="T1")
        )
        return str(response.status)


@contextlib.asynccontextmanager
async def connected(url: str, charger_id: str) -> AsyncIterator[Charger]:
    """The charger connected to ``url`` and reading, for the block's duration."""
    async with ocpp_charger(url, charger_id, Charger) as charger:
        yield charger
