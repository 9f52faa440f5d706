"""`evgate serve --workers N`: one embedded PostgreSQL, N workers sharing both ports, a dead
worker restarted, and SIGTERM stopping every worker and then the PostgreSQL."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
import websockets.sync.client

from evgate.config import load_settings
from evgate.workers import taken_port
from support import ended, free_port, postmaster_pid, serve_env, start_serve, until_sync

pytestmark = pytest.mark.timeout(180)


def test_workers_share_ports_restart_and_stop(tmp_path: Path) -> None:
    """Two workers answer on one API port and one charger port; a killed worker comes back;
    SIGTERM ends the workers and the embedded PostgreSQL, exit status 0."""
    api_port, ws_port = free_port(), free_port()
    token = "workers-test-token-0123456789"
    env = serve_env(tmp_path / "var", api_port, ws_port, bootstrap_token=token)
    proc, out = start_serve(env, "--workers", "2")
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

        # The embedded PostgreSQL dies: the supervisor, its owner, starts it again (one
        # WARNING, one INFO); the workers answer 503 meanwhile (never 500), then 200 again.
        os.kill(postmaster_pid(tmp_path / "var"), signal.SIGKILL)
        out.wait_count("running again", 1)
        assert out.count("stopped unexpectedly") == 1
        answers: list[int] = []

        def five_answered() -> bool:
            r = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/chargers/CP-1", headers=headers)
            answers.append(r.status_code)
            return answers[-5:] == [200] * 5

        until_sync(five_answered, within=60, message=lambda: answers)
        assert set(answers) <= {200, 503}, answers

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not (tmp_path / "var" / "postgres" / "postmaster.pid").exists()
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_killed_supervisor_takes_its_workers_and_the_next_one_owns_its_postgres(
    tmp_path: Path,
) -> None:
    """A supervisor killed with SIGKILL takes its workers with it (they get SIGTERM), so no
    orphan keeps serving the shared ports; its embedded PostgreSQL keeps running, and the next
    supervisor adopts it and, on SIGTERM, stops it (issue 14 item 5)."""
    data_dir = tmp_path / "var"
    env = serve_env(data_dir, free_port(), free_port())
    proc, out = start_serve(env, "--workers", "2")
    again: subprocess.Popen[str] | None = None
    try:
        out.wait_count("ready: chargers", 2)
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        postmaster = postmaster_pid(data_dir)
        proc.kill()
        proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers outlived their supervisor: {alive}"
        assert not ended(postmaster)

        again, out = start_serve(env, "--workers", "2")
        out.wait_count("ready: chargers", 2)
        assert out.count("adopting the embedded PostgreSQL") == 1
        assert postmaster_pid(data_dir) == postmaster
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=60) == 0
        assert ended(postmaster, within=10), "the adopted PostgreSQL was left running"
    finally:
        for p in (proc, again):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        # A supervisor that could not stop its embedded PostgreSQL: stop it here.
        if (data_dir / "postgres" / "postmaster.pid").exists():
            from evgate.storage.embedded import EmbeddedPostgres

            EmbeddedPostgres(data_dir).kill()


class _Hooks(http.server.BaseHTTPRequestHandler):
    """A webhook receiver on loopback (a real HTTP server, on a thread: this test is sync)."""

    got: list[dict[str, object]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_notification_delivery_in_a_process_of_its_own(tmp_path: Path) -> None:
    """EVGATE_NOTIFICATION_DELIVERY=process: ``serve`` (one worker) starts ``deliver`` beside
    it (niced by EVGATE_NOTIFICATION_DELIVERY_NICE), which delivers the events (the worker's
    loop runs no dispatcher) and serves the dispatcher's metrics on a port of its own; a
    killed delivery process is restarted and delivers what came meanwhile; SIGTERM stops
    both, status 0."""
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    api_port, ws_port, metrics_port = free_port(), free_port(), free_port()
    token = "delivery-test-token-0123456789"
    env = serve_env(
        tmp_path / "var",
        api_port,
        ws_port,
        bootstrap_token=token,
        notification_delivery="process",
        notification_delivery_nice=7,
        notification_delivery_metrics_port=metrics_port,
        worker_index=5,
    )
    proc, out = start_serve(env)
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        out.wait_count("ready: chargers", 1)
        out.wait_count("delivering notifications", 1)
        children = psutil.Process(proc.pid).children()
        # Each by its role, the delivery process at the lower scheduling priority.
        assert sorted((c.cmdline()[-1], c.nice()) for c in children) == [
            ("deliver", 7),
            ("serve", psutil.Process().nice()),
        ]
        # A worker is an instance of the cluster, numbered; the delivery process is none (an
        # index the operator's environment had is not passed on).
        assert {c.cmdline()[-1]: c.environ().get("EVGATE_WORKER_INDEX") for c in children} == {
            "deliver": None,
            "serve": "0",
        }
        assert "evgate_notification_lanes_active" not in api.get("/metrics").text
        r = api.post(
            "/public-api/notifications/v2.0",
            json={"via": "webhook", "notifications": ["chargePoint.changed"],
                  "webhook": {"callbackUrl": f"http://127.0.0.1:{receiver.server_port}/"}},
        )  # fmt: skip
        assert r.status_code == 201, r.text

        def created(n: int) -> Callable[[], bool]:
            return lambda: sum(e["action"] == "created" for e in _Hooks.got) >= n

        assert api.post("/api/v1/chargers", json={"id": "CP-1"}).status_code == 201
        until_sync(created(1), within=60, message=lambda: _Hooks.got)
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        delivered = re.search(
            r'^evgate_notifications_delivered_total\{via="webhook"\} (\d+)', scraped.text, re.M
        )
        assert delivered is not None and int(delivered[1]) >= 1, scraped.text
        assert "evgate_notification_backlog" in scraped.text
        # Nothing else is served there: the API's answers to a wrong path or method.
        for method, path, status in (("GET", "/api/v1/chargers", 404), ("POST", "/metrics", 405)):
            r = httpx.request(method, f"http://127.0.0.1:{metrics_port}{path}")
            assert r.status_code == status, r.text
            assert r.headers["content-type"] == "application/problem+json"
        [deliverer] = [c for c in children if c.cmdline()[-1] == "deliver"]
        deliverer.kill()
        assert api.post("/api/v1/chargers", json={"id": "CP-2"}).status_code == 201
        out.wait_count("restarting", 1)
        # CP-1's event may come again (the killed process saved its stream's cursor about once
        # a second: at least once); CP-2's must come.
        until_sync(
            lambda: len({e["chargePointId"] for e in _Hooks.got if e["action"] == "created"}) == 2,
            within=60,
            message=lambda: _Hooks.got,
        )
        # The restarted process serves its metrics on the same port again.
        assert (
            "evgate_notification_backlog"
            in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        api.close()
        receiver.shutdown()
        receiver.server_close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("delivery", "taken"),
    [("process", "api_port"), ("process", "notification_delivery_metrics_port"),
     ("process", "ws_port"), ("inline", "api_port")],
)  # fmt: skip
def test_serve_exits_when_a_port_it_listens_on_is_taken(
    tmp_path: Path, delivery: str, taken: str
) -> None:
    """A port its processes would listen on held by another program (the charger port on
    every address, held here on loopback only; the API's; the delivery process's metrics
    port): ``serve`` exits 1 at once naming it, before the database starts, whether it would
    be a supervisor (whose worker would fail to bind and be restarted for ever) or the one
    process (which would fail after the database and the migrations)."""
    ports = {
        "api_port": free_port(),
        "ws_port": free_port(),
        "notification_delivery_metrics_port": free_port(),
    }
    env = serve_env(
        tmp_path / "var",
        ports["api_port"],
        ports["ws_port"],
        notification_delivery=delivery,
        notification_delivery_metrics_port=ports["notification_delivery_metrics_port"],
    )
    env.pop("EVGATE_WS_HOST")  # the default, every address
    with socket.create_server(("127.0.0.1", ports[taken])):
        proc, out = start_serve(env)
        try:
            assert proc.wait(timeout=60) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out.wait_closed()
    host = "0.0.0.0" if taken == "ws_port" else "127.0.0.1"
    said = f"cannot listen on EVGATE_{taken.upper()} ({taken}, {host}:{ports[taken]})"
    assert out.count(said) == 1, out.lines
    assert out.count("is another evgate running?") == 1
    assert not (tmp_path / "var" / "postgres").exists()  # stopped before anything started


def test_a_port_not_bindable_for_another_reason_is_named_without_the_hint() -> None:
    """An address not on this machine (EADDRNOTAVAIL) is said as the system says it, with no
    "another evgate" hint, which is for a port in use; all ports free: nothing to say."""
    ports = {"EVGATE_WS_PORT": str(free_port()), "EVGATE_NOTIFICATION_DELIVERY": "inline"}
    assert taken_port(load_settings(environ={**ports, "EVGATE_API_PORT": str(free_port())})) is None
    said = taken_port(load_settings(environ={**ports, "EVGATE_API_HOST": "192.0.2.1"}))
    assert said is not None and said.startswith("EVGATE_API_PORT (api_port, 192.0.2.1:8080): ")
    assert "another evgate" not in said
