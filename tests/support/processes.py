"""Helpers for tests that run evgate (or its PostgreSQL) as a separate process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psutil

from .waiting import until_sync

__all__ = [
    "ProcessOutput",
    "ended",
    "free_port",
    "postmaster_pid",
    "serve_env",
    "serving",
    "start_serve",
]


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
        proc.stdout.close()  # all read: closed here, not left to the garbage collector

    def wait_closed(self, within: float = 30) -> None:
        """Wait until the process closed its output (all of it is in ``lines``)."""
        self._thread.join(within)
        assert not self._thread.is_alive(), "".join(self.lines[-30:])

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def wait_count(self, text: str, count: int, within: float = 60) -> None:
        """Wait until ``count`` lines hold ``text``; fail (showing the last lines) after
        ``within`` seconds."""
        until_sync(
            lambda: self.count(text) >= count, within, message=lambda: "".join(self.lines[-30:])
        )


def serve_env(data_dir: Path, api_port: int, ws_port: int, **settings: object) -> dict[str, str]:
    """The environment of an ``evgate serve`` on loopback with this data folder and ports, and
    ``settings`` (``bootstrap_token=...`` is ``EVGATE_BOOTSTRAP_TOKEN``).

    Inline delivery unless ``settings`` say otherwise: ``serve`` is then the one process that
    a test kills as a crash would (the default, a delivery process, makes it a supervisor,
    whose children the kernel stops with SIGTERM when it dies).
    """
    env = {
        **os.environ,
        "EVGATE_DATA_DIR": str(data_dir),
        "EVGATE_API_PORT": str(api_port),
        "EVGATE_WS_PORT": str(ws_port),
        "EVGATE_WS_HOST": "127.0.0.1",
        "EVGATE_NOTIFICATION_DELIVERY": "inline",
    }
    env.update({f"EVGATE_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def start_serve(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], ProcessOutput]:
    """``evgate serve *args`` as a child process (a raw Popen: tests kill it as a crash
    would), and its output, read on a thread. The caller waits for "ready" and ends it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "evgate.cli", "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, ProcessOutput(proc)


@asynccontextmanager
async def serving(
    database_url: str, folder: Path, **settings: object
) -> AsyncIterator[subprocess.Popen[str]]:
    """``evgate serve`` on ``database_url`` with ``settings``, as a process of its own, once
    ready (kill it as a crash would; killed at the end if it is still running)."""
    env = serve_env(folder, free_port(), free_port(), database_url=database_url, **settings)
    proc, out = start_serve(env)
    try:
        await asyncio.to_thread(out.wait_count, "ready", 1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        await asyncio.to_thread(proc.wait, 10)
        out.wait_closed()


def postmaster_pid(data_dir: Path) -> int:
    """The pid of the embedded PostgreSQL of an evgate data folder, from its postmaster.pid."""
    return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])


def _ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def ended(pid: int, within: float = 0) -> bool:
    """Whether process ``pid`` has ended (or is a zombie), waiting up to ``within`` seconds:
    a stopped PostgreSQL removes its postmaster.pid a moment before its process exits."""
    try:
        return bool(until_sync(lambda: _ended(pid), within))
    except AssertionError:
        return False
