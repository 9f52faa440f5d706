"""A webhook receiver that is not the bottleneck, for the benchmarks: Debian's nginx
(``make nginx`` installs nginx-light) answering 204 to everything on a free loopback port, run
from a generated configuration in a temporary folder (as the benchmarks start their own Kafka
broker). Its access log records, per request, the time it was answered and its ``webhook-id``:
the benchmark counts deliveries and measures their lag from it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["NginxReceiver"]

_CONFIG = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format delivery '$msec $http_webhook_id';
    access_log {dir}/access.log delivery buffer=32k flush=20ms;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 204; }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NginxReceiver:
    """``start()``; ``url``; ``count()`` requests answered so far; ``arrivals()`` (time,
    webhook-id) of each; ``stop()``. Use as a context manager."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="evgate-nginx-"))
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self._dir / "access.log"
        self._offset = 0
        self._count = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> NginxReceiver:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise SystemExit("nginx is missing: `make nginx` installs Debian's nginx-light")
        self.port = _free_port()
        config = self._dir / "nginx.conf"
        config.write_text(_CONFIG.format(dir=self._dir, port=self.port))
        self._log.touch()
        self._proc = subprocess.Popen(
            [nginx, "-p", str(self._dir), "-c", str(config), "-e", str(self._dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    error = (self._dir / "error.log").read_text(errors="replace")
                    raise RuntimeError(f"nginx did not start: {error[-2000:]}") from None
                time.sleep(0.02)

    def count(self) -> int:
        """Requests answered so far (as logged: up to 20 ms late)."""
        with self._log.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        self._count += chunk.count(b"\n", 0, end)
        return self._count

    def arrivals(self) -> list[tuple[float, str]]:
        """(Unix time answered, webhook-id) of every request so far."""
        out = []
        for line in self._log.read_text().splitlines():
            when, _, msg_id = line.partition(" ")
            out.append((float(when), msg_id))
        return out

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NginxReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
