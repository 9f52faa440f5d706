"""A real Apache Kafka broker for the test suite.

The broker is the Maven Central artifact pinned in ``tests/harness/kafka/pom.xml`` (jars fetched
by ``bash tests/harness/kafka/fetch.sh`` into ``$EVGATE_KAFKA_CACHE/kafka-libs``, default
``<project root>/.cache/kafka/kafka-libs``), run with the machine's JDK as one KRaft node (broker
and controller in one process) on loopback ports only, with two client listeners:

* PLAINTEXT (``bootstrap_plain``), no authentication;
* SASL_PLAINTEXT (``bootstrap_sasl``) taking SASL/PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, all for
  the one user ``sasl_username`` / ``sasl_password`` (the PLAIN user lives in the listener's JAAS
  config, the SCRAM credentials are written into the metadata log when the storage is formatted).

``KafkaBroker`` owns a work directory (config, data, logs). ``stop()`` / ``kill()`` followed by
``start()`` restart the same broker on the same data and the same ports, for fault tests. Nothing
here installs anything: when Java or the jars are missing, ``start()`` raises
``KafkaHarnessError`` saying how to fetch them.

Standard library only, except ``create_topic`` and ``configure_topic`` (aiokafka's admin client,
imported lazily).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HARNESS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = HARNESS_DIR.parent.parent
POM = HARNESS_DIR / "kafka" / "pom.xml"
FETCH_COMMAND = "bash tests/harness/kafka/fetch.sh"

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_MECHANISMS = ("PLAIN", *SCRAM_MECHANISMS)

# Broker settings for one small, quick node. The listeners, log.dirs and SASL settings are added
# per broker; ``KafkaBroker(extra_config=...)`` overrides any of these.
BASE_CONFIG: dict[str, str] = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": (
        "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    ),
    "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
    # One replica of everything, and internal topics with one partition (the default 50
    # __consumer_offsets partitions make the first consumer group slow to come up).
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    # After a SIGKILL the controller keeps the dead broker's registration until its session
    # times out (default 9 s), and the restarted broker cannot register before that.
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    # Small footprint: two cores shared with PostgreSQL and the tests themselves.
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": str(4 * 1024 * 1024),
    "log.segment.bytes": str(1024 * 1024),
    "log.index.size.max.bytes": str(1024 * 1024),
    "auto.create.topics.enable": "true",
}

DEFAULT_HEAP = "384m"
JVM_OPTIONS = (
    "-Xms64m",
    "-XX:+UseSerialGC",
    # C1 only: a test broker moves little data, and C2 compiles cost CPU at start-up.
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
)


class KafkaHarnessError(RuntimeError):
    """The test broker could not be set up, started or stopped."""


# --- installation -----------------------------------------------------------------------------


def cache_dir() -> Path:
    env = os.environ.get("EVGATE_KAFKA_CACHE")
    return Path(env).resolve() if env else PROJECT_ROOT / ".cache" / "kafka"


def libs_dir() -> Path:
    return cache_dir() / "kafka-libs"


def pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def find_java() -> str:
    """The ``java`` to run: ``$EVGATE_JAVA``, else ``$JAVA_HOME/bin/java``, else the PATH's."""
    if explicit := os.environ.get("EVGATE_JAVA"):
        if not os.access(explicit, os.X_OK):
            raise KafkaHarnessError(f"$EVGATE_JAVA={explicit} is not an executable.")
        return explicit
    candidates = []
    if java_home := os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(java_home) / "bin" / "java"))
    candidates.append(shutil.which("java"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise KafkaHarnessError(
        "No Java runtime found for the test Kafka broker (looked at $EVGATE_JAVA, "
        "$JAVA_HOME/bin/java and the PATH); install a JDK 17 or newer."
    )


def check_libs() -> Path:
    """The fetched jar folder, checked against the pom; raises with the fetch command if stale."""
    libs = libs_dir()
    stamp = libs / ".stamp"
    hint = f"Run `{FETCH_COMMAND}` (part of `make test`) to fetch the Kafka broker jars."
    if not stamp.is_file():
        raise KafkaHarnessError(f"The Kafka broker jars are not in {libs}. {hint}")
    if stamp.read_text().strip() != pom_digest():
        raise KafkaHarnessError(
            f"The Kafka broker jars in {libs} were fetched for another version of {POM}. {hint}"
        )
    return libs


def _storage_tool_class(libs: Path) -> str:
    """Kafka 3.x and 4.x ship the format tool in the core jar; later versions may move it."""
    for jar in sorted(libs.glob("kafka_2.13-*.jar")):
        with zipfile.ZipFile(jar) as zf:
            if "kafka/tools/StorageTool.class" in zf.namelist():
                return "kafka.tools.StorageTool"
    return "org.apache.kafka.tools.StorageTool"


# --- ports and the readiness probe ------------------------------------------------------------


def free_loopback_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on 127.0.0.1 (held together so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _request(api_key: int, api_version: int, correlation_id: int, body: bytes = b"") -> bytes:
    client_id = b"evgate-harness"
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def _roundtrip(port: int, request: bytes, timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        return _recv_exact(sock, size)


def probe_metadata(port: int, timeout: float = 1.0) -> list[tuple[int, str, int]]:
    """Send a Metadata (v4) request for no topics; return the brokers listed: (id, host, port)."""
    correlation_id = secrets.randbelow(2**31)
    # Body: topics = empty array, allow_auto_topic_creation = false.
    body = struct.pack(">ib", 0, 0)
    resp = _roundtrip(port, _request(3, 4, correlation_id, body), timeout)
    got_id, _throttle, n_brokers = struct.unpack_from(">iii", resp, 0)
    if got_id != correlation_id:
        raise ConnectionError("metadata response for another request")
    off, brokers = 12, []
    for _ in range(n_brokers):
        node_id, host_len = struct.unpack_from(">ih", resp, off)
        off += 6
        host = resp[off : off + host_len].decode()
        off += host_len
        (bport, rack_len) = struct.unpack_from(">ih", resp, off)
        off += 6 + max(rack_len, 0)
        brokers.append((node_id, host, bport))
    return brokers


def probe_api_versions(port: int, timeout: float = 1.0) -> None:
    """Send ApiVersions (v0), which a SASL listener answers before authentication."""
    correlation_id = secrets.randbelow(2**31)
    resp = _roundtrip(port, _request(18, 0, correlation_id), timeout)
    got_id, error_code = struct.unpack_from(">ih", resp, 0)
    if got_id != correlation_id or error_code != 0:
        raise ConnectionError(f"ApiVersions failed (error code {error_code})")


_ERROR_LINE = re.compile(r"Exception|Error|ERROR|FATAL")


def _summarize_log(path: Path, lines: int) -> str:
    """The first few error lines of a log (they scroll out of a tail), then its last lines."""
    try:
        all_lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} does not exist)"
    tail = all_lines[-lines:]
    head = all_lines[: len(all_lines) - len(tail)]
    errors = [line for line in head if _ERROR_LINE.search(line) and not line[:1].isspace()][:5]
    if not errors:
        return "\n".join(tail)
    return "\n".join([*errors, "...", *tail])


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: SIGKILL the broker if the thread that started it (the test process) goes away."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


# --- the broker -------------------------------------------------------------------------------


class KafkaBroker:
    """One KRaft Kafka node on loopback, with a PLAINTEXT and a SASL_PLAINTEXT listener.

    ``start()`` formats the storage on first use and waits until the broker answers a metadata
    request; ``stop()`` shuts it down cleanly (SIGTERM), ``kill()`` SIGKILLs it; ``start()`` again
    brings the same broker back (same data, same ports). ``close()`` stops it and removes the work
    directory. The ``*_async`` variants do the waiting without blocking the event loop, so a test
    can restart the broker while its clients keep running.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        sasl_username: str = "evgate",
        sasl_password: str | None = None,
        heap: str = DEFAULT_HEAP,
        startup_timeout: float = 60.0,
        extra_config: Mapping[str, str] | None = None,
        cluster_id: str | None = None,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(
            tempfile.mkdtemp(prefix="evgate-kafka-") if workdir is None else workdir
        ).resolve()
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "server.properties"
        self.log_path = self.workdir / "broker.log"
        self.sasl_username = sasl_username
        self.sasl_password = sasl_password or secrets.token_urlsafe(16)
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.extra_config = dict(extra_config or {})
        self.cluster_id = (
            cluster_id or base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        )
        self.plain_port = 0
        self.sasl_port = 0
        self.controller_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._formatted = False
        self._java: str | None = None
        self._libs: Path | None = None

    # Connection details ---------------------------------------------------------------------

    @property
    def bootstrap_plain(self) -> str:
        return f"127.0.0.1:{self.plain_port}"

    @property
    def bootstrap_sasl(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    # The same user and password work for PLAIN and both SCRAM mechanisms.
    @property
    def scram_username(self) -> str:
        return self.sasl_username

    @property
    def scram_password(self) -> str:
        return self.sasl_password

    scram_mechanisms = SCRAM_MECHANISMS

    def client_config(self, sasl_mechanism: str | None = None) -> dict[str, Any]:
        """Keyword arguments for an aiokafka client: PLAINTEXT, or SASL with that mechanism."""
        if sasl_mechanism is None:
            return {"bootstrap_servers": self.bootstrap_plain}
        if sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"{sasl_mechanism!r} is not one of {SASL_MECHANISMS}")
        return {
            "bootstrap_servers": self.bootstrap_sasl,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
        }

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The broker log's last lines, after its first error lines (for failure messages)."""
        return _summarize_log(self.log_path, lines)

    # Set-up ---------------------------------------------------------------------------------

    def _config(self) -> dict[str, str]:
        jaas_plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{self.sasl_username}="{self.sasl_password}";'
        )
        jaas_scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        config = dict(BASE_CONFIG)
        config.update(
            {
                "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
                "listeners": (
                    f"PLAINTEXT://127.0.0.1:{self.plain_port},"
                    f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}"
                ),
                "advertised.listeners": (
                    f"PLAINTEXT://127.0.0.1:{self.plain_port},"
                    f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
                ),
                "log.dirs": str(self.data_dir),
                "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas_plain,
            }
        )
        for mechanism in SCRAM_MECHANISMS:
            config[f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"] = (
                jaas_scram
            )
        config.update(self.extra_config)
        return config

    def _write_config(self) -> None:
        lines = [f"{key}={value}" for key, value in self._config().items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _prepare(self, fresh_ports: bool) -> None:
        """Check Java and the jars; on first use (or ``fresh_ports``) pick ports and format."""
        if self._java is None:
            self._java = find_java()
        if self._libs is None:
            self._libs = check_libs()
        if self._formatted and not fresh_ports:
            return
        self.plain_port, self.sasl_port, self.controller_port = free_loopback_ports(3)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        cmd = [
            self._java,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            f"{self._libs}/*",
            _storage_tool_class(self._libs),
            "format",
            # One argument: a base64 id may start with "-", which would read as an option.
            f"--cluster-id={self.cluster_id}",
            "--config",
            str(self.config_path),
        ]
        for mechanism in SCRAM_MECHANISMS:
            cmd += [
                "--add-scram",
                f"{mechanism}=[name={self.sasl_username},password={self.sasl_password}]",
            ]
        format_log = self.workdir / "format.log"
        with format_log.open("wb") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
        if rc != 0:
            tail = _summarize_log(format_log, 30)
            raise KafkaHarnessError(f"Formatting the Kafka storage failed (exit {rc}):\n{tail}")
        self._formatted = True

    def _spawn(self) -> None:
        assert self._java is not None and self._libs is not None
        cmd = [
            self._java,
            f"-Xmx{self.heap}",
            *JVM_OPTIONS,
            "-cp",
            f"{self._libs}/*",
            "kafka.Kafka",
            str(self.config_path),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n===== evgate harness: starting {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self._paused = False

    def _poll_ready(self) -> bool:
        """One readiness check; raises if the broker process has died."""
        assert self._proc is not None
        rc = self._proc.poll()
        if rc is not None:
            raise _BrokerExited(rc)
        try:
            brokers = probe_metadata(self.plain_port)
            probe_api_versions(self.sasl_port)
        except (OSError, struct.error):
            return False
        return any(port == self.plain_port for _, _, port in brokers)

    def _exited_error(self, rc: int) -> KafkaHarnessError:
        self._proc = None
        return KafkaHarnessError(
            f"The Kafka broker exited with code {rc} while starting. "
            f"Log {self.log_path}:\n{self.log_tail()}"
        )

    def _timeout_error(self) -> KafkaHarnessError:
        self._terminate(kill=True, timeout=10)
        return KafkaHarnessError(
            f"The Kafka broker did not answer a metadata request on {self.bootstrap_plain} "
            f"within {self.startup_timeout:.0f} s. Log {self.log_path}:\n{self.log_tail()}"
        )

    def _bind_failed(self) -> bool:
        return bool(re.search(r"BindException|Address already in use", self.log_tail(200)))

    # Start ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or restart) the broker and wait until it answers a metadata request.

        Start it from a thread that lives as long as the broker should (the test's main or
        event-loop thread, not a worker thread): on Linux the broker is SIGKILLed when the thread
        that started it ends, so a test run that dies leaves no JVM behind.
        """
        if self.is_running:
            return
        first_boot = not self._formatted
        for attempt in range(3):
            # A port picked free can be taken before the broker binds it: on a first start,
            # pick new ports and try again.
            self._prepare(fresh_ports=first_boot and attempt > 0)
            self._spawn()
            deadline = time.monotonic() + self.startup_timeout
            try:
                while not self._poll_ready():
                    if time.monotonic() > deadline:
                        raise self._timeout_error()
                    time.sleep(0.1)
                return
            except _BrokerExited as exc:
                if first_boot and attempt < 2 and self._bind_failed():
                    self._proc = None
                    continue
                raise self._exited_error(exc.rc) from None
        raise AssertionError("unreachable")

    async def start_async(self) -> None:
        """``start()`` without blocking the event loop (for restarts in the middle of a test)."""
        if self.is_running:
            return
        first_boot = not self._formatted
        for attempt in range(3):
            await asyncio.to_thread(self._prepare, first_boot and attempt > 0)
            # Spawned from this (the event loop's) thread: see _die_with_parent.
            self._spawn()
            deadline = time.monotonic() + self.startup_timeout
            try:
                while not await asyncio.to_thread(self._poll_ready):
                    if time.monotonic() > deadline:
                        raise self._timeout_error()
                    await asyncio.sleep(0.1)
                return
            except _BrokerExited as exc:
                if first_boot and attempt < 2 and self._bind_failed():
                    self._proc = None
                    continue
                raise self._exited_error(exc.rc) from None
        raise AssertionError("unreachable")

    # Stop -----------------------------------------------------------------------------------

    def _terminate(self, *, kill: bool, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused and not kill:
                proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        self._paused = False

    def stop(self, grace: float = 30.0) -> None:
        """Clean shutdown (SIGTERM; SIGKILL after ``grace`` s). Data and ports are kept."""
        self._terminate(kill=False, timeout=grace)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would. ``start()`` brings it back on the same data."""
        self._terminate(kill=True, timeout=10)

    async def stop_async(self, grace: float = 30.0) -> None:
        await asyncio.to_thread(self._terminate, kill=False, timeout=grace)

    async def kill_async(self) -> None:
        await asyncio.to_thread(self._terminate, kill=True, timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets open but answers nothing (a hung broker)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        if self._proc is not None and self._paused:
            self._proc.send_signal(signal.SIGCONT)
            self._paused = False

    def close(self) -> None:
        """Stop the broker and delete its work directory (if this object created it)."""
        self.stop()
        if self._own_workdir and not os.environ.get("EVGATE_KAFKA_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Topics ---------------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        config: Mapping[str, str] | None = None,
        exist_ok: bool = False,
        within: float = 30.0,
    ) -> None:
        """Create a topic (aiokafka admin client) and wait until every partition has a leader."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_plain)
        await admin.start()
        try:
            resp = await admin.create_topics(
                [NewTopic(name, partitions, 1, topic_configs=dict(config or {}))],
                timeout_ms=int(within * 1000),
            )
            for entry in resp.topic_errors:
                code = entry[1]
                if code == 0 or (code == _TOPIC_ALREADY_EXISTS and exist_ok):
                    continue
                message = entry[2] if len(entry) > 2 else ""
                raise KafkaHarnessError(f"create topic {entry[0]!r}: error {code} {message}")
            deadline = time.monotonic() + within
            while True:
                (topic,) = await admin.describe_topics([name])
                parts = topic["partitions"]
                if (
                    topic["error_code"] == 0
                    and len(parts) == partitions
                    and all(p["error_code"] == 0 and p["leader"] >= 0 for p in parts)
                ):
                    return
                if time.monotonic() > deadline:
                    raise KafkaHarnessError(f"topic {name!r} has no leaders after {within} s")
                await asyncio.sleep(0.05)
        finally:
            await admin.close()

    async def configure_topic(self, name: str, config: Mapping[str, str]) -> None:
        """Replace a topic's configuration (aiokafka admin client's AlterConfigs: the keys
        not given go back to the broker's defaults)."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_plain)
        await admin.start()
        try:
            (resp,) = await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, dict(config))]
            )
            for entry in resp.resources:
                if entry[0] != 0:
                    error = f"error {entry[0]} {entry[1]}"
                    raise KafkaHarnessError(f"configure topic {name!r}: {error}")
        finally:
            await admin.close()


_TOPIC_ALREADY_EXISTS = 36


class _BrokerExited(Exception):
    def __init__(self, rc: int) -> None:
        super().__init__(rc)
        self.rc = rc
