"""Worker processes on one machine: the supervisor behind ``evgate serve`` (``--workers N``,
or the delivery process of the default ``notification_delivery = "process"``).

One process holds one event loop and one core, and (here) at most ~20,000 chargers by its fd
limit, so evgate scales by processes. The supervisor starts the embedded PostgreSQL once (when
no database is configured), applies the migrations once, then runs N ``evgate serve`` workers
that share the charger and API ports with SO_REUSEPORT (the kernel spreads connections), and
with ``notification_delivery = "process"`` (the default) one more, ``evgate deliver``, that
delivers the notifications of the node on a loop of its own (the workers then deliver none).
A process that dies is restarted with backoff; SIGTERM or SIGINT stops every one (a worker
closes its chargers with 1001) and then the PostgreSQL.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import signal
import socket
import sys
import time

from evgate.config import Settings, listening
from evgate.storage.db import Database
from evgate.storage.embedded import EmbeddedPostgres
from evgate.tasks import wait_event

__all__ = ["supervise", "taken_port"]

log = logging.getLogger("evgate.workers")

_STOP_GRACE = 30.0  # seconds a worker has to close its chargers before it is killed
_BACKOFF_MAX = 30.0
_HEALTHY_AFTER = 60.0  # a worker that lived this long resets its restart backoff


_PR_SET_PDEATHSIG = 1


def _die_with_supervisor() -> None:
    """In the worker, before exec: the kernel sends it SIGTERM when the supervisor dies.

    Without this, workers of a supervisor killed with SIGKILL would keep serving the shared
    ports next to the workers of the supervisor started after it.
    """
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Worker:
    def __init__(self, index: int, command: str = "serve") -> None:
        self.index = index
        # "serve": chargers and the API; "deliver": the notification delivery process.
        self.command = command
        self.name = f"worker {index}" if command == "serve" else "the delivery process"
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.backoff = 1.0
        self.restarts = 0


def taken_port(settings: Settings) -> str | None:
    """Which of the ports ``evgate serve``'s processes will listen on another program holds,
    said for a log line; None when all are free.

    Checked before anything starts (``cli``): under the supervisor a worker that cannot bind
    would be restarted for ever with no port open; alone, it would fail after the database
    and the migrations. The probe does not set SO_REUSEPORT, so a port another evgate's
    workers share counts as taken (with ``reuse_port`` set, the caller shares it on purpose
    and does not ask).
    """
    for where in listening(settings):
        if not where.port:
            continue
        family = socket.AF_INET6 if ":" in where.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # Not refused for a port whose earlier listener left connections in TIME_WAIT.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((where.host, where.port))
            except OSError as exc:
                hint = "; is another evgate running?" if exc.errno == errno.EADDRINUSE else ""
                return f"{where.describe()}: {exc.strerror or exc}{hint}"
    return None


async def supervise(settings: Settings, config_file: str | None = None) -> int:
    """Run ``settings.workers`` worker processes until SIGINT/SIGTERM; returns the exit status."""
    embedded: EmbeddedPostgres | None = None
    dsn = settings.database_url
    if dsn is None:
        # The supervisor owns it (workers only get its DSN): adopted after a crash, started
        # again if it dies, stopped after the workers.
        embedded = EmbeddedPostgres(settings.data_dir)
        dsn = await embedded.open()
    try:
        # Migrate once here; workers would only queue on the migrations lock.
        db = Database(dsn, pool_size=2)
        await db.open(migrate=True)
        await db.close()
        return await _run_workers(settings, dsn, config_file, embedded)
    finally:
        if embedded is not None:
            await embedded.close()


async def _run_workers(
    settings: Settings, dsn: str, config_file: str | None, embedded: EmbeddedPostgres | None
) -> int:
    node_id = settings.node_id or socket.gethostname().split(".")[0]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    workers = [_Worker(i) for i in range(settings.workers)]
    base_env = {
        **{k: v for k, v in os.environ.items() if k != "EVGATE_WORKER_INDEX"},
        "EVGATE_DATABASE_URL": dsn,
        "EVGATE_WORKERS": "1",
        "EVGATE_REUSE_PORT": "1",
        "EVGATE_NODE_ID": node_id,
    }
    if settings.notification_delivery == "process":
        # One process delivers for the node; the workers' loops keep to chargers and the API.
        workers.append(_Worker(len(workers), "deliver"))
        base_env["EVGATE_NOTIFICATION_DELIVERY"] = "off"
    config_args = ["--config", config_file] if config_file else []

    async def spawn(worker: _Worker) -> None:
        env = dict(base_env)
        if worker.command == "serve":  # an instance of the cluster (the delivery process: none)
            env["EVGATE_WORKER_INDEX"] = str(worker.index)
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "evgate.cli",
            *config_args,
            worker.command,
            env=env,
            preexec_fn=_die_with_supervisor,
        )
        worker.started_at = time.monotonic()

    for worker in workers:
        await spawn(worker)
    where = (
        f"embedded PostgreSQL on 127.0.0.1:{embedded.port}" if embedded else "EVGATE_DATABASE_URL"
    )
    log.info(
        "evgate supervisor: %d worker(s)%s on node %s (chargers port %d, API port %d, database %s)",
        settings.workers,
        " and the delivery process" if settings.notification_delivery == "process" else "",
        node_id,
        settings.ws_port,
        settings.api_port,
        where,
    )

    async def watch(worker: _Worker) -> None:
        while not stopping.is_set():
            assert worker.process is not None
            exited = asyncio.ensure_future(worker.process.wait())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if stopping.is_set():
                exited.cancel()
                return
            lived = time.monotonic() - worker.started_at
            if lived > _HEALTHY_AFTER:
                worker.backoff = 1.0
            log.warning(
                "%s (pid %d) exited with %s after %.0f s; restarting in %.0f s",
                worker.name,
                worker.process.pid,
                worker.process.returncode,
                lived,
                worker.backoff,
            )
            if await wait_event(stopping, worker.backoff):
                return
            worker.backoff = min(worker.backoff * 2, _BACKOFF_MAX)
            worker.restarts += 1
            await spawn(worker)

    async with asyncio.TaskGroup() as group:
        for worker in workers:
            group.create_task(watch(worker))
    log.info("stopping %d process(es)", len(workers))
    await asyncio.gather(*(_stop(w) for w in workers))
    return 0


async def _stop(worker: _Worker) -> None:
    process = worker.process
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(_STOP_GRACE):  # not wait_for: see tasks.wait_event
            await process.wait()
    except TimeoutError:
        log.warning("%s did not stop in %.0f s; killing it", worker.name, _STOP_GRACE)
        process.kill()
        await process.wait()
