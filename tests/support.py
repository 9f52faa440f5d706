"""Helpers shared by tests in several folders (import as ``from support import ...``; the
``conftest`` module name is taken by each folder's own conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import websockets
from ocpp.v16 import ChargePoint

from evgate.app import Evgate
from evgate.config import Settings, load_settings

__all__ = ["BOOTSTRAP_TOKEN", "make_settings", "ocpp_charger", "running_evgate"]

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
