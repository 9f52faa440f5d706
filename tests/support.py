"""Helpers shared by tests in several folders (import as ``from support import ...``; the
``conftest`` module name is taken by each folder's own conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import psutil
import websockets
from ocpp.v16 import ChargePoint

from evgate.app import Evgate
from evgate.config import Settings, load_settings

__all__ = [
    "BOOTSTRAP_TOKEN",
    "LogLines",
    "ProcessOutput",
    "asyncpg_copy_waiter_unretrieved",
    "ended",
    "free_port",
    "make_settings",
    "ocpp_charger",
    "postmaster_pid",
    "running_evgate",
]

C = TypeVar("C", bound=ChargePoint)


class LogLines(logging.Handler):
    """Every record logged (INFO and above) while it is attached to the root logger (``with
    LogLines() as lines:``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> LogLines:
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.INFO)
        root.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)

    def saying(self, text: str) -> list[logging.LogRecord]:
        return [r for r in self.records if text in r.getMessage()]


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


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for evgate run as a subprocess)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessOutput:
    """A subprocess's output (stdout with stderr merged), read on a thread so that a test can
    wait for lines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    def wait_closed(self, within: float = 30) -> None:
        """Wait until the process closed its output (all of it is in ``lines``)."""
        self._thread.join(within)
        assert not self._thread.is_alive(), "".join(self.lines[-30:])

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def wait_count(self, text: str, count: int, within: float = 60) -> None:
        """Wait until ``count`` lines hold ``text``; fail (showing the last lines) after
        ``within`` seconds."""
        deadline = time.monotonic() + within
        while self.count(text) < count:
            assert time.monotonic() < deadline, "".join(self.lines[-30:])
            time.sleep(0.05)


def postmaster_pid(data_dir: Path) -> int:
    """The pid of the embedded PostgreSQL of an evgate data folder, from its postmaster.pid."""
    return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])


def ended(pid: int, within: float = 0) -> bool:
    """Whether process ``pid`` has ended (or is a zombie), waiting up to ``within`` seconds:
    a stopped PostgreSQL removes its postmaster.pid a moment before its process exits."""
    deadline = time.monotonic() + within
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


async def terminate_query(db: Any, marker: str, within: float = 30.0) -> None:
    """``pg_terminate_backend`` the session running a query that holds ``marker`` (a comment
    in it), once it runs: a connection killed mid-query, as a server-side fault would."""
    async with asyncio.timeout(within):
        while not await db.pool.fetchval(  # noqa: ASYNC110 - a database value
            "SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity"
            " WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
            marker,
        ):
            await asyncio.sleep(0.02)
