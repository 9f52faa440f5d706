"""`evgate serve --workers N`: one embedded PostgreSQL, N workers sharing both ports, a dead
worker restarted, and SIGTERM stopping every worker and then the PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import websockets.sync.client

pytestmark = pytest.mark.timeout(180)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Lines:
    """The supervisor's output, read on a thread so the test can wait for lines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    def wait_count(self, text: str, count: int, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while sum(text in line for line in self.lines) < count:
            assert time.monotonic() < deadline, "".join(self.lines[-30:])
            time.sleep(0.05)


def test_workers_share_ports_restart_and_stop(tmp_path: Path) -> None:
    """Two workers answer on one API port and one charger port; a killed worker comes back;
    SIGTERM ends the workers and the embedded PostgreSQL, exit status 0."""
    api_port, ws_port = _free_port(), _free_port()
    token = "workers-test-token-0123456789"
    env = {
        **os.environ,
        "EVGATE_DATA_DIR": str(tmp_path / "var"),
        "EVGATE_API_PORT": str(api_port),
        "EVGATE_WS_PORT": str(ws_port),
        "EVGATE_WS_HOST": "127.0.0.1",
        "EVGATE_BOOTSTRAP_TOKEN": token,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "evgate.cli", "serve", "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _Lines(proc)
    try:
        out.wait_count("ready", 2)
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        headers = {"Authorization": f"Bearer {token}"}
        r = httpx.post(
            f"http://127.0.0.1:{api_port}/api/v1/chargers", json={"id": "CP-1"}, headers=headers
        )
        secret = r.json()["secret"]
        for _ in range(10):  # whichever worker the kernel picks answers the same
            r = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/chargers/CP-1", headers=headers)
            assert r.status_code == 200
        url = f"ws://127.0.0.1:{ws_port}/cp/CP-1?auth={secret}"
        with websockets.sync.client.connect(url, subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            ws.send('[2,"1","Heartbeat",{}]')
            assert ws.recv(timeout=10).startswith('[3,"1",{"currentTime"')

        workers[0].kill()
        out.wait_count("restarting", 1)
        out.wait_count("ready", 3)
        assert len(psutil.Process(proc.pid).children()) == 2

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not (tmp_path / "var" / "postgres" / "postmaster.pid").exists()
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_workers_end_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """A supervisor killed with SIGKILL takes its workers with it (they get SIGTERM), so no
    orphan keeps serving the shared ports."""
    env = {
        **os.environ,
        "EVGATE_DATA_DIR": str(tmp_path / "var"),
        "EVGATE_API_PORT": str(_free_port()),
        "EVGATE_WS_PORT": str(_free_port()),
        "EVGATE_WS_HOST": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "evgate.cli", "serve", "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _Lines(proc)
    try:
        out.wait_count("ready", 2)
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        proc.kill()
        proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers outlived their supervisor: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # The killed supervisor could not stop its embedded PostgreSQL: stop it here.
        pgdata = tmp_path / "var" / "postgres"
        if (pgdata / "postmaster.pid").exists():
            from evgate.storage.embedded import EmbeddedPostgres

            EmbeddedPostgres(tmp_path / "var").kill()
