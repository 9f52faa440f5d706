"""Helpers shared by tests in several folders (import as ``from support import ...``; the
``conftest`` module name is taken by each folder's own conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import websockets
from ocpp.v16 import ChargePoint

from evgate.app import Evgate
from evgate.config import Settings, load_settings

__all__ = [
    "BOOTSTRAP_TOKEN",
    "asyncpg_copy_waiter_unretrieved",
    "make_settings",
    "ocpp_charger",
    "running_evgate",
]

C = TypeVar("C", bound=ChargePoint)

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


@contextlib.asynccontextmanager
async def ocpp_charger(
    url: str,
    charger_id: str,
    cls: type[C] = ChargePoint,  # type: ignore[assignment]
    response_timeout: float | None = None,
    **connect: Any,
) -> AsyncIterator[C]:
    """The ``ocpp`` library's ChargePoint (or ``cls``, a subclass with handlers), connected to
    ``url`` offering ocpp1.6 and reading, for the block's duration; ``connect`` goes to
    ``websockets.connect``."""
    connect.setdefault("subprotocols", ["ocpp1.6"])
    connect.setdefault("open_timeout", 5)
    async with websockets.connect(url, proxy=None, compression=None, **connect) as ws:
        timeout = {} if response_timeout is None else {"response_timeout": response_timeout}
        charger = cls(charger_id, ws, **timeout)
        reader = asyncio.create_task(charger.start())
        try:
            yield charger
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader


@contextlib.contextmanager
def asyncpg_copy_waiter_unretrieved() -> Iterator[None]:
    """Let pass the loop error asyncpg 0.32 leaves when the server goes away around a COPY:
    "Future exception was never retrieved" (ConnectionDoesNotExistError) for the COPY's
    result future, which asyncpg never awaits when the COPY cannot start ("cannot switch to
    state 21") or its CopyFail meets a closed transport. Any other loop error goes on to the
    test's handler."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        unretrieved = context.get("message") == "Future exception was never retrieved"
        if not (
            unretrieved
            and isinstance(context.get("exception"), asyncpg.ConnectionDoesNotExistError)
        ):
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    try:
        yield
    finally:
        gc.collect()
        loop.set_exception_handler(previous)
