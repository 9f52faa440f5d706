"""Gateway test fixtures: an in-process evgate with chosen gateway settings, a standalone
gateway with in-memory credentials, a picows client, and a session PKI."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from picows import WSTransport, ws_connect

from evgate.app import bind_socket
from evgate.config import load_settings
from evgate.credentials import digest
from evgate.gateway.basic_routes import basic_routes
from evgate.gateway.server import Gateway
from evgate.handlers import Routes
from evgate.metrics import Registry
from evgate.storage.chargers import ChargerCredentials
from evgate.storage.db import Database
from evgate.storage.writer import is_outage
from gateway.helpers import (
    SECRET,
    TOKEN,
    PicowsClient,
    Pki,
    RecordingListener,
    Standalone,
    StartEvgate,
    StartGateway,
    make_pki,
)
from support import Running, running_handle


@pytest.fixture
def start_evgate(database_url: str, tmp_path: Path) -> StartEvgate:
    """``async with start_evgate(**settings) as running:`` an evgate with those settings."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Running]:
        async with running_handle(
            database_url, tmp_path, **{"bootstrap_token": TOKEN, **overrides}
        ) as r:
            yield r

    return start


@pytest.fixture
async def running(start_evgate: StartEvgate) -> AsyncIterator[Running]:
    """An evgate with default gateway settings."""
    async with start_evgate() as r:
        yield r


@pytest.fixture
async def picows_client() -> AsyncIterator[PicowsClient]:
    """``await picows_client(url, **ws_connect_kw)``: a picows client, disconnected at the end."""
    opened: list[WSTransport] = []

    async def open_client(url: str, **kw: Any) -> tuple[WSTransport, RecordingListener]:
        headers = kw.pop("extra_headers", [("Sec-WebSocket-Protocol", "ocpp1.6")])
        transport, listener = await ws_connect(RecordingListener, url, extra_headers=headers, **kw)
        opened.append(transport)
        assert isinstance(listener, RecordingListener)
        return transport, listener

    yield open_client
    for transport in opened:
        transport.disconnect()
        await transport.wait_disconnected()


# Certificates for the TLS tests, made once per session.


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Test certificates (see ``make_pki``), made once per session."""
    return make_pki(tmp_path_factory.mktemp("pki"))


# A gateway without a database: credentials from a dict, for the tests of framing and calls.


@pytest.fixture
def start_gateway() -> StartGateway:
    """``async with start_gateway(routes=..., **settings) as g:`` a gateway that knows CP-1
    and CP-2 (secret ``SECRET``), answering with ``routes`` (default: basic_routes); with a
    ``database=``, its outages (``is_outage``) leave a CALL unanswered, reported to its health."""

    @contextlib.asynccontextmanager
    async def start(
        routes: Routes | None = None,
        database: Database | None = None,
        store_key: Callable[[str, bytes], Awaitable[None]] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Standalone]:
        chargers = {
            cid: ChargerCredentials(cid, digest(SECRET), 1, False) for cid in ("CP-1", "CP-2")
        }

        async def load(charger_id: str | None) -> list[ChargerCredentials]:
            if charger_id is None:
                return list(chargers.values())
            return [chargers[charger_id]] if charger_id in chargers else []

        settings = load_settings(environ={}, ws_host="127.0.0.1", ws_port=0, **overrides)
        metrics = Registry()
        gateway = Gateway(
            settings,
            basic_routes() if routes is None else routes,
            load,
            metrics=metrics,
            # With a database, its outages leave CALLs unanswered, as in evgate.
            unavailable=None if database is None else is_outage,
            health=None if database is None else database.health,
            store_key=store_key,
        )
        await gateway.start(bind_socket("127.0.0.1", 0))
        try:
            yield Standalone(gateway, chargers, metrics)
        finally:
            await gateway.stop(grace=2)

    return start
