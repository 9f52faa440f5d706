"""Helpers of the external-authorization tests: a real authorization provider on loopback
(an OAuth-style token endpoint, a session-start and a session-end endpoint) and a running
evgate to ask."""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from evgate.auth.authorizer import AuthorizationQuestion, Authorizer, Decision
from support import Received, Receiver, Reply, Running, TestCharger, ocpp_charger

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

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def revoke(self) -> None:
        """Every token issued so far stops working (as a provider's key rotation would)."""
        self._tokens.clear()

    # -- what the server answers ---------------------------------------------------------------

    def _authorized(self, headers: dict[str, str]) -> bool:
        header = headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme == "Bearer":
            expires = self._tokens.get(value)
            return expires is not None and time.monotonic() < expires
        if scheme == "Basic":
            return base64.b64decode(value).decode() == f"{USERNAME}:{PASSWORD}"
        return False

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, float]:
        """The answer to one request, and the seconds to wait before sending it."""
        status, answer = self._answer(path, headers, body)
        return status, answer, self.delay if path == "/start" and status == 200 else 0.0

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
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
            self._tokens[token] = time.monotonic() + (lifetime or 1e9)
            answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
            if lifetime is not None:
                answer["expires_in"] = lifetime
            return 200, json.dumps(answer).encode()
        if not self._authorized(headers):
            return 401, b'{"error": "unauthorized"}'
        if path == "/start":
            return self.start_answer(json.loads(body))
        if path == "/end":
            status = self.end_statuses.pop(0) if self.end_statuses else 200
            return status, b"{}"
        return 404, b"{}"


async def serve_provider(provider: Provider) -> Receiver:
    """Serve ``provider`` on a free loopback port (set on it), on the tests' one fake HTTP
    server; ``await stop()`` the receiver returned to take it down."""

    def reply(got: Received) -> Reply:
        status, body, delay = provider.handle(got.path, got.headers, got.body)
        return Reply(status, {"content-type": "application/json"}, delay, body)

    receiver = Receiver(reply)
    await receiver.start()
    provider.port = receiver.port
    return receiver


class Site(Running):
    """A running evgate (with its admin API client), and the authorization questions a test
    asks it."""

    async def installation(self, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "site")
        r = await self.api.post("/api/v1/installations", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def charger(self, charger_id: str, installation_id: int | None = None) -> str:
        """Register a charger (in the installation, if given); returns its secret."""
        secret = await super().charger(charger_id)
        if installation_id is not None:
            await self.join(charger_id, installation_id)
        return secret

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
        question = AuthorizationQuestion(charger_id=charger_id, id_tag=id_tag, **kw)
        return await self.authorizer(charger_id).authorize(question)

    def ws_url(self, charger_id: str, secret: str) -> str:
        return self.url(charger_id, secret)


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


# The authorization tests' charger is the tests' one charger (it keeps the configuration it is
# sent; ``answers`` sets its ChangeConfiguration status per key).
Charger = TestCharger


def connected(url: str, charger_id: str) -> AbstractAsyncContextManager[TestCharger]:
    """The charger connected to ``url`` and reading, for the block's duration."""
    return ocpp_charger(url, charger_id)
