"""The one place where evgate's rooms are wired together on one event loop.

:class:`Evgate` owns, in start order: the database (embedded or external), the API server and
the charger gateway. ``start`` brings them up, ``stop`` takes them down in reverse order.
Tests run it in-process; ``evgate serve`` runs it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

import evgate
from evgate.api.app import create_api
from evgate.api.context import ApiContext
from evgate.auth.credentials import digest
from evgate.auth.registry import ChargerRegistry
from evgate.config import Settings
from evgate.storage.chargers import ChargerStore
from evgate.storage.db import Database
from evgate.storage.embedded import EmbeddedPostgres
from evgate.storage.tokens import TokenStore

__all__ = ["Evgate", "bind_socket", "serve"]

log = logging.getLogger("evgate")


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket (IPv4 or IPv6 by the host's form), optionally SO_REUSEPORT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class _ApiServer(uvicorn.Server):
    """uvicorn on our loop and our socket; evgate, not uvicorn, handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Evgate:
    """One evgate process: database, API and gateway on the running event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedPostgres | None = None
        self.db: Database | None = None
        self._api_server: _ApiServer | None = None
        self._api_task: asyncio.Task[None] | None = None
        self.api_port: int | None = None

    async def start(self) -> None:
        """Bring every part up; on failure, take down what had started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        dsn = s.database_url
        if dsn is None:
            self.embedded = EmbeddedPostgres(s.data_dir)
            dsn = await asyncio.to_thread(self.embedded.start)
        self.db = Database(dsn, s.database_pool_size)
        await self.db.open(migrate=True)

        chargers = ChargerStore(self.db)
        tokens = TokenStore(self.db)
        if s.bootstrap_token:
            await tokens.create("bootstrap", "admin", digest(s.bootstrap_token))

        ctx = ApiContext(chargers=chargers, registry=ChargerRegistry(chargers), tokens=tokens)
        api = create_api(ctx)
        api_sock = bind_socket(s.api_host, s.api_port)
        self.api_port = api_sock.getsockname()[1]
        config = uvicorn.Config(api, lifespan="off", log_level="warning", access_log=False)
        self._api_server = _ApiServer(config)
        self._api_task = asyncio.create_task(self._api_server.serve(sockets=[api_sock]))
        while not self._api_server.started:
            if self._api_task.done():
                self._api_task.result()  # raises what stopped it
            await asyncio.sleep(0.01)

        where = (
            f"embedded PostgreSQL in {self.embedded.pgdata} on 127.0.0.1:{self.embedded.port}"
            if self.embedded
            else "PostgreSQL at EVGATE_DATABASE_URL"
        )
        log.info(
            "evgate %s ready: chargers ws://%s:%d/cp/{chargePointId}?auth={secret}; "
            "API http://%s:%d/api/v1 (docs http://%s:%d/api/docs); database: %s",
            evgate.__version__,
            s.ws_host,
            s.ws_port,
            s.api_host,
            self.api_port,
            s.api_host,
            self.api_port,
            where,
        )

    async def stop(self) -> None:
        """Take everything down in reverse order. Safe to call more than once."""
        if self._api_server is not None and self._api_task is not None:
            self._api_server.should_exit = True
            with contextlib.suppress(Exception):
                await self._api_task
            self._api_server = self._api_task = None
        if self.db is not None:
            await self.db.close()
            self.db = None
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
            self.embedded = None


async def serve(settings: Settings) -> None:
    """Run evgate until SIGINT or SIGTERM, then shut down cleanly."""
    app = Evgate(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await app.start()
    try:
        await stopping.wait()
        log.info("shutting down")
    finally:
        await app.stop()
