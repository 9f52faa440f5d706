"""A running evgate for a test: in-process, on free loopback ports, on the test's database;
with an admin API client and the charger registry at hand."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from evgate.app import Evgate
from evgate.auth.registry import ChargerRegistry
from evgate.config import Settings, load_settings
from evgate.gateway.server import Gateway
from evgate.storage.chargers import ChargerStore

from .waiting import until

__all__ = [
    "BOOTSTRAP_TOKEN",
    "Running",
    "gateway_knows",
    "make_settings",
    "register_charger",
    "running_evgate",
    "running_handle",
]

BOOTSTRAP_TOKEN = "test-bootstrap-token-" + secrets.token_hex(8)


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    """Settings for an in-process evgate on free loopback ports."""
    base: dict[str, object] = {
        "database_url": database_url,
        "data_dir": str(tmp_path),
        "ws_host": "127.0.0.1",
        "ws_port": 0,
        "api_port": 0,
        "bootstrap_token": BOOTSTRAP_TOKEN,
        # The one process delivers: "process" is a process `evgate serve` starts beside it.
        "notification_delivery": "inline",
    }
    base.update(overrides)
    return load_settings(environ={}, **base)


@contextlib.asynccontextmanager
async def running_evgate(
    database_url: str, tmp_path: Path, **overrides: object
) -> AsyncIterator[Evgate]:
    """An in-process evgate (see :func:`make_settings`), started and, at the end, stopped."""
    app = Evgate(make_settings(database_url, tmp_path, **overrides))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def _gateway(app: Evgate) -> Gateway:
    assert app.gateway is not None
    return app.gateway


async def gateway_knows(app: Evgate, charger_id: str) -> None:
    """Wait until the gateway's credential index has ``charger_id`` (its NOTIFY arrived)."""
    gateway = _gateway(app)
    await until(lambda: gateway.credentials_of(charger_id) is not None)


async def register_charger(app: Evgate, api: httpx.AsyncClient, charger_id: str) -> str:
    """Register a charger through the API and wait until the gateway knows it; its secret."""
    r = await api.post("/api/v1/chargers", json={"id": charger_id})
    assert r.status_code == 201, r.text
    await gateway_knows(app, charger_id)
    return str(r.json()["secret"])


@dataclass
class Running:
    """A running evgate and what a test needs to reach it: its URLs, an admin API client, the
    charger registry."""

    app: Evgate
    api: httpx.AsyncClient
    scheme: str = "ws"

    @property
    def gateway(self) -> Gateway:
        return _gateway(self.app)

    @property
    def registry(self) -> ChargerRegistry:
        assert self.app.db is not None
        return ChargerRegistry(ChargerStore(self.app.db))

    def url(self, charger_id: str, secret: str | None = None, path: str = "cp") -> str:
        url = f"{self.scheme}://127.0.0.1:{self.app.ws_port}/{path}/{charger_id}"
        return url if secret is None else f"{url}?auth={secret}"

    async def add(self, charger_id: str = "CP-1", security_profile: int = 1, **kw: Any) -> str:
        """Register a charger and wait until the gateway's index has it; returns its secret."""
        _, secret = await self.registry.create(charger_id, security_profile=security_profile, **kw)
        await gateway_knows(self.app, charger_id)
        return secret

    async def charger(self, charger_id: str) -> str:
        """Register a charger through the API and wait until the gateway knows it; its
        secret."""
        return await register_charger(self.app, self.api, charger_id)


@contextlib.asynccontextmanager
async def running_handle(
    database_url: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Running]:
    """:func:`running_evgate` as a :class:`Running` (``wss`` when given ``tls_cert``), its API
    client holding the bootstrap (admin) token."""
    async with running_evgate(database_url, tmp_path, **overrides) as app:
        token = overrides.get("bootstrap_token", BOOTSTRAP_TOKEN)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.api_port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ) as api:
            yield Running(app, api, "wss" if overrides.get("tls_cert") else "ws")
