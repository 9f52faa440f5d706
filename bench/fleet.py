"""bench: one fleet of simulated chargers against evgate and against a reference server.

The same scenario (``loadtest``: boot, status on every connector, heartbeats, sessions with
Authorize, StartTransaction, MeterValues and StopTransaction, then a reconnect storm of the
whole fleet) runs against each server in turn, in one run, on one embedded PostgreSQL:

* evgate: ``python -m evgate.cli serve`` (``EVGATE_WORKERS`` from ``--evgate-workers``);
* reference: ``bench/reference_server.py``, the ``ocpp`` library's ChargePoint on a
  ``websockets`` server with plain asyncpg INSERTs (see its docstring).

Each gets its own fresh database in that PostgreSQL, the same chargers (ids, and secrets from
the CSPRNG whose SHA-256 digests are inserted in bulk; the secrets exist only in this process
and reach the simulator processes over a pipe) and the same accepted id tags. Measured per
server, over the same window of ``--duration`` seconds after every charger has booted:

* chargers connected, CALLs answered per second, round-trip p50 / p99 / p99.9 of every CALL
  (CALL handed to the socket → CALLRESULT read, in the simulator);
* server CPU seconds per 1,000 CALLs (the server's process tree, psutil) and, because evgate
  moves work into PostgreSQL (COPY, group commit) and the reference does the opposite,
  the database's CPU per 1,000 CALLs too; and the simulator's own (its processes' CPU over
  the window), which shares the machine's cores with both;
* server resident memory per charger: (RSS with the fleet connected - RSS before) / chargers;
* meter value rows stored at the end (the ``meter_values`` table of each);
* reconnect storm: every connection reset at once; seconds until all have booted again.

``--statements`` loads ``pg_stat_statements`` into the PostgreSQL and prints, per server, what
its database did in the window per 1,000 CALLs: transactions committed, WAL bytes, and each
statement's calls and execution time (the top ones by time), to see where the database's CPU
goes.

``--subscribe webhook,kafka`` gives evgate one webhook subscription (``--subscriptions N``: N
of them; delivered by evgate's delivery process, its default, or with ``--evgate-delivery
inline`` by the workers) (nginx answering 204 on loopback, ``bench/nginx_receiver.py``) and
one Kafka subscription (the test broker, tests/harness, the topic stamping each record with
the broker's append time) to every event, and runs it a second time without them
(``evgate-nosub``, beside the same receivers, idle) unless ``--servers`` says otherwise.
*Delivery lag* is, per event created in the measured window, the time the receiver got it
(nginx's log; the broker's append time) less the outbox row's ``created_at`` (its transaction's
start, a few ms before its commit: the lag is overstated by that much); its p99 per sink is in
``--json`` under ``evgate`` as ``delivery_lag_p99_s``, and the round-trip p99 with / without
subscriptions as ``subscription_p99_ratio``.

``--rounds N`` runs the servers N times, alternated (A B, B A, A B, ...: with an even N a
machine that drifts during the run weighs on both alike), each on a fresh database, and
reports each round and the *median* of the rounds' ratios (``ratios`` and
``subscription_p99_ratio`` in ``--json``, the rounds' own in ``ratios_by_round`` /
``subscription_p99_ratios``, and their runs, instead of at the top level, in ``by_round``): on
a shared 2-core machine evgate's p99 in one window moves by up to a third between runs of the
same code, so a goal like "moves by < 10 %" is read from several alternated rounds, not one.

The table's last column says how many times better evgate did (higher throughput; lower
latency, CPU, memory, storm time). ``--json`` prints the same as one object. The defaults
(2,000 chargers, 60 s windows) finish in about three minutes on a 2-core machine; the time
scale is compressed (MeterValues every 10 s, heartbeat every 30 s, short sessions) so that a
small fleet sends a fleet's worth of traffic. Run: ``python bench/fleet.py [--chargers N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "python"):  # a plain checkout: loadtest/ and python/evgate
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import asyncpg  # noqa: E402
import msgspec  # noqa: E402
import psutil  # noqa: E402
import uvloop  # noqa: E402
from bench import reference_server  # noqa: E402
from loadtest.cli import add_arguments, scenario_from  # noqa: E402
from loadtest.driver import SimulationResult, simulate  # noqa: E402

from evgate.credentials import digest, new_charger_secret  # noqa: E402
from evgate.storage.db import apply_migrations  # noqa: E402
from evgate.storage.embedded import EmbeddedPostgres  # noqa: E402

SERVERS = ("evgate", "evgate-nosub", "reference")
SINKS = ("webhook", "kafka")
ID_TAGS = tuple(f"SIM-TAG-{i:04d}" for i in range(1, 101))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def _cpu_seconds(pid: int, reaped: bool = False) -> float:
    """CPU (user + system) of a process tree; with ``reaped``, also of children that exited
    (PostgreSQL backends come and go under the postmaster)."""
    total = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system
            if reaped and proc.pid == pid:
                total += t.children_user + t.children_system
    return total


def _rss(pid: int) -> int:
    total = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


class Statement(msgspec.Struct, kw_only=True):
    """One statement's share of the window (``--statements``), per 1,000 CALLs."""

    query: str
    calls_per_1k_calls: float
    exec_ms_per_1k_calls: float


class StatementFigures(msgspec.Struct, kw_only=True):
    """What the server's database did in the window (``--statements``), per 1,000 CALLs."""

    transactions_per_1k_calls: float
    wal_kib_per_1k_calls: float
    wal_full_pages_per_1k_calls: float
    #: WAL bytes per 1,000 CALLs by the relation a record touches first (its first block
    #: reference; "-" for records without one: commits), the largest first (pg_walinspect).
    wal_kib_by_relation: dict[str, float]
    #: CPU s per 1,000 CALLs of each kind of PostgreSQL process (its title: the server's
    #: connections are "backend", the rest walwriter, checkpointer, autovacuum, ...).
    cpu_by_process: dict[str, float]
    statements_per_1k_calls: float
    top: list[Statement]


_SNAPSHOT_STATEMENTS = """
SELECT queryid, min(query), sum(calls)::float8, sum(total_exec_time)
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)
GROUP BY queryid
"""


# WAL since $1 by the relation each record's first block names (its relfilenode, found in
# this database's pg_class; another database's or none: "-").
_WAL_BY_RELATION = """
SELECT coalesce(c.relname, '-'), sum(w.record_length)
FROM pg_get_wal_records_info($1::text::pg_lsn, pg_current_wal_lsn()) w
LEFT JOIN pg_class c
       ON c.relfilenode = substring(w.block_ref from 'rel \\d+/\\d+/(\\d+)')::oid
GROUP BY 1
"""


class StatementProbe:
    """pg_stat_statements, pg_stat_database and pg_stat_wal read at the window's ends.

    The driver calls the probe synchronously from its loop: the reads run on a thread with
    a loop of their own (a few ms, the same for both servers).
    """

    def __init__(self, dsn: str, postgres_pid: int | None = None) -> None:
        self.dsn = dsn
        self.postgres_pid = postgres_pid
        self.database = dsn.rsplit("/", 1)[1].split("?")[0]
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}

    async def _snapshot(self) -> dict[str, Any]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(_SNAPSHOT_STATEMENTS, self.database)
            xacts = await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", self.database
            )
            wal, fpi = await conn.fetchrow("SELECT wal_bytes, wal_fpi FROM pg_stat_wal")
            lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
            by_relation: dict[str, int] = {}
            if self.before:
                by_relation = {
                    r[0]: int(r[1]) for r in await conn.fetch(_WAL_BY_RELATION, self.before["lsn"])
                }
        finally:
            await conn.close()
        return {
            "statements": {r[0]: (r[1], r[2], r[3]) for r in rows},
            "xacts": int(xacts),
            "wal": int(wal),
            "fpi": int(fpi),
            "lsn": lsn,
            "wal_by_relation": by_relation,
            "cpu": self._cpu_by_process(),
        }

    def _cpu_by_process(self) -> dict[str, float]:
        cpu: dict[str, float] = collections.defaultdict(float)
        if self.postgres_pid is None:
            return cpu
        for proc in _tree(self.postgres_pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                if proc.pid == self.postgres_pid:
                    kind = "postmaster"
                    cpu["exited"] += t.children_user + t.children_system
                else:
                    title = " ".join(proc.cmdline()).removeprefix("postgres: ").split()
                    # A connection's title: user, database, host, what it does.
                    if len(title) > 2 and "(" in title[2]:
                        kind = "backend"
                    else:  # a process ending as it is read has no command line left
                        kind = title[0] if title else "exited"
                cpu[kind] += t.user + t.system
        return cpu

    def _read(self) -> dict[str, Any]:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._snapshot()).result()

    def begin(self) -> None:
        self.before = self._read()

    def end(self) -> None:
        self.after = self._read()

    def figures(self, calls: int, top: int = 25) -> StatementFigures:
        per_1k = 1000 / calls if calls else float("nan")
        before = self.before["statements"]
        rows = []
        for qid, (query, n, ms) in self.after["statements"].items():
            n0, ms0 = before.get(qid, (query, 0.0, 0.0))[1:]
            if n > n0:
                rows.append((query, n - n0, ms - ms0))
        # The figures' own reads (this probe's snapshot) are not the server's.
        rows = [r for r in rows if "pg_stat_" not in r[0]]
        rows.sort(key=lambda r: r[2], reverse=True)
        return StatementFigures(
            transactions_per_1k_calls=round(
                (self.after["xacts"] - self.before["xacts"]) * per_1k, 1
            ),
            wal_kib_per_1k_calls=round((self.after["wal"] - self.before["wal"]) / 1024 * per_1k),
            wal_full_pages_per_1k_calls=round((self.after["fpi"] - self.before["fpi"]) * per_1k, 1),
            wal_kib_by_relation={
                k: round(v / 1024 * per_1k, 1)
                for k, v in sorted(
                    self.after["wal_by_relation"].items(), key=lambda kv: kv[1], reverse=True
                )[:12]
            },
            cpu_by_process={
                k: round((v - self.before["cpu"].get(k, 0.0)) * per_1k, 3)
                for k, v in sorted(self.after["cpu"].items())
            },
            statements_per_1k_calls=round(sum(r[1] for r in rows) * per_1k, 1),
            top=[
                Statement(
                    query=" ".join(q.split())[:160],
                    calls_per_1k_calls=round(n * per_1k, 1),
                    exec_ms_per_1k_calls=round(ms * per_1k, 1),
                )
                for q, n, ms in rows[:top]
            ],
        )


@dataclass
class ServerProbe:
    """Reads a server's process tree and the PostgreSQL around the measurement window."""

    server_pid: int
    postgres_pid: int
    rss_before: int
    statements: StatementProbe | None = None
    marks: dict[str, float] = field(default_factory=dict)

    def begin(self) -> None:
        if self.statements is not None:
            self.statements.begin()
        self.marks["t0"] = time.time()
        self.marks["cpu0"] = _cpu_seconds(self.server_pid)
        self.marks["db0"] = _cpu_seconds(self.postgres_pid, reaped=True)

    def end(self) -> None:
        self.marks["cpu"] = _cpu_seconds(self.server_pid) - self.marks["cpu0"]
        if self.statements is not None:
            self.statements.end()
        self.marks["db"] = _cpu_seconds(self.postgres_pid, reaped=True) - self.marks["db0"]
        self.marks["rss"] = _rss(self.server_pid)
        self.marks["t1"] = time.time()


class ServerRun(msgspec.Struct, kw_only=True):
    """One server's figures in the table (None where it failed)."""

    server: str
    error: str | None = None
    fleet: SimulationResult | None = None
    server_cpu_per_1k_calls: float | None = None
    database_cpu_per_1k_calls: float | None = None
    rss_before_mib: float | None = None
    rss_per_charger_kib: float | None = None
    meter_value_rows: int | None = None
    # With --subscribe: per sink, p99 of event created → receiver got it (s), over the events
    # created in the window, and how many of those never arrived.
    delivery_lag_p99_s: dict[str, float | None] | None = None
    undelivered: dict[str, int] | None = None
    statements: StatementFigures | None = None


class Subscribers:
    """The receivers of ``--subscribe``: nginx for webhooks, the test broker for Kafka;
    subscriptions to every event in evgate's database, and the lag of what they got."""

    def __init__(self, sinks: list[str], webhooks: int = 1) -> None:
        self.sinks = sinks
        # Webhook subscriptions (all to the one nginx): each event arrives this many times.
        self.webhooks = webhooks
        self.nginx: Any = None
        self.broker: Any = None
        self.topic = f"fleet-{os.getpid()}"

    async def start(self) -> None:
        sys.path.insert(0, str(ROOT / "bench"))
        sys.path.insert(0, str(ROOT / "tests"))
        if "webhook" in self.sinks:
            from nginx_receiver import NginxReceiver

            self.nginx = NginxReceiver().start()
        if "kafka" in self.sinks:
            from harness.kafka import KafkaBroker

            self.broker = KafkaBroker()
            self.broker.start()  # from the loop's thread: the broker lives as long as it
            await self.broker.create_topic(
                self.topic, partitions=4, config={"message.timestamp.type": "LogAppendTime"}
            )

    async def subscribe(self, dsn: str) -> None:
        from evgate.events.catalog import CATALOG
        from evgate.events.signing import hmac_state, new_webhook_secret
        from evgate.storage.db import Database
        from evgate.storage.kafka_settings import KafkaSettings
        from evgate.storage.subscriptions import SubscriptionStore

        db = Database(dsn, pool_size=2)
        await db.open(migrate=False)
        try:
            store = SubscriptionStore(db)
            common: dict[str, Any] = {
                "notifications": list(CATALOG),
                "webhook_secret": new_webhook_secret(),
                "token_hmac_state": hmac_state(b"evg_fleet-bench"),
                "created_by": None,
                "kafka_password": None,
            }
            for _ in range(self.webhooks if self.nginx is not None else 0):
                await store.create_subscription(
                    via="webhook", callback_url=self.nginx.url, kafka=None, **common
                )
            if self.broker is not None:
                kafka = KafkaSettings(
                    topic=self.topic, brokers=[self.broker.bootstrap_plain],
                    compression_codec="gzip", security_protocol="PLAINTEXT",
                )  # fmt: skip
                await store.create_subscription(
                    via="kafka", callback_url=None, kafka=kafka, **common
                )
        finally:
            await db.close()

    @staticmethod
    async def drain(dsn: str, within: float = 120.0) -> None:
        """Wait (evgate still running) until no delivery is pending."""
        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                if not await conn.fetchval("SELECT count(*) FROM deliveries"):
                    return
                await asyncio.sleep(0.5)
        finally:
            await conn.close()

    async def _kafka_arrivals(self, expected: int) -> dict[str, float]:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            self.topic, bootstrap_servers=self.broker.bootstrap_plain,
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        got: dict[str, float] = {}
        try:
            quiet = time.monotonic() + 10
            while len(got) < expected and time.monotonic() < quiet:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    quiet = time.monotonic() + 10
                    for r in records:
                        event_id = dict(r.headers)["event-id"].decode()
                        got.setdefault(event_id, r.timestamp / 1000)
        finally:
            await consumer.stop()
        return got

    async def lag(
        self, dsn: str, t0: float, t1: float
    ) -> tuple[dict[str, float | None], dict[str, int]]:
        """p99 delivery lag per sink over the events created in [t0, t1), and how many of
        them did not arrive."""
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT id, extract(epoch FROM created_at)::float8 AS at FROM outbox"
                " WHERE created_at >= to_timestamp($1) AND created_at < to_timestamp($2)",
                t0,
                t1,
            )
            total = await conn.fetchval("SELECT count(*) FROM outbox")
        finally:
            await conn.close()
        created = {f"evt_{r['id']}": r["at"] for r in rows}
        arrivals: dict[str, dict[str, float]] = {}
        if self.nginx is not None:
            # With several webhook subscriptions, an event has arrived once every one got it.
            copies: dict[str, list[float]] = {}
            for when, event_id in self.nginx.arrivals():
                copies.setdefault(event_id, []).append(when)
            arrivals["webhook"] = {
                e: max(whens) for e, whens in copies.items() if len(whens) >= self.webhooks
            }
        if self.broker is not None:
            arrivals["kafka"] = await self._kafka_arrivals(total)
        p99: dict[str, float | None] = {}
        missing: dict[str, int] = {}
        for sink, got in arrivals.items():
            lags = sorted(got[e] - at for e, at in created.items() if e in got)
            missing[sink] = len(created) - len(lags)
            p99[sink] = round(lags[int(len(lags) * 0.99) - 1], 3) if len(lags) >= 100 else None
        return p99, missing

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        if self.broker is not None:
            self.broker.close()


class Bench:
    """The PostgreSQL, the credentials and the runs of one benchmark."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.pg = EmbeddedPostgres(workdir)
        self.dsn = ""
        # Secrets from the CSPRNG, as `evgate chargers add` makes them; only digests are stored.
        self.credentials: list[tuple[str, str | None]] = [
            (f"CP-{i:06d}", new_charger_secret()) for i in range(args.chargers)
        ]
        self.digests = [(cid, digest(secret or "")) for cid, secret in self.credentials]

    def say(self, line: str) -> None:
        if not self.args.json or self.args.verbose:
            print(line, file=sys.stderr, flush=True)

    async def _database(self, name: str) -> str:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name}")
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        dsn = self.dsn.rsplit("/", 1)[0] + "/" + name
        if self.args.statements:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            finally:
                await conn.close()
        return dsn

    async def _register_evgate(self, dsn: str) -> None:
        # SQL rather than 20,000 API calls: migrate, then COPY the chargers and the id tags
        # before evgate starts, so it loads them all at start as it would after a restart.
        conn = await asyncpg.connect(dsn)
        try:
            await apply_migrations(conn)
            await conn.copy_records_to_table(
                "chargers", records=self.digests, columns=["id", "secret_digest"]
            )
            await conn.copy_records_to_table(
                "id_tags", records=[(t,) for t in ID_TAGS], columns=["id_tag"]
            )
        finally:
            await conn.close()

    async def _start(self, server: str, dsn: str, port: int) -> asyncio.subprocess.Process:
        log = (self.workdir / f"{server}.log").open("wb")
        if server.startswith("evgate"):
            env = {
                **os.environ,
                "EVGATE_DATABASE_URL": dsn,
                "EVGATE_DATA_DIR": str(self.workdir / "evgate"),
                "EVGATE_WS_HOST": "127.0.0.1",
                "EVGATE_WS_PORT": str(port),
                "EVGATE_API_PORT": str(_free_port()),
                "EVGATE_HEARTBEAT_INTERVAL": str(self.args.server_heartbeat),
                "EVGATE_WORKERS": str(self.args.evgate_workers),
                "EVGATE_LOG_LEVEL": "WARNING",
                "EVGATE_NOTIFICATION_DELIVERY": self.args.evgate_delivery,
                # Not the default 8081: a port nothing else on the machine may hold.
                "EVGATE_NOTIFICATION_DELIVERY_METRICS_PORT": str(_free_port()),
            }
            cmd = [sys.executable, "-m", "evgate.cli", "serve"]
        else:
            env = dict(os.environ)
            cmd = [
                sys.executable,
                str(ROOT / "bench" / "reference_server.py"),
                "--dsn",
                dsn,
                "--port",
                str(port),
                "--heartbeat-interval",
                str(self.args.server_heartbeat),
            ]
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                break
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            writer.close()
            # Workers bind the shared port one after another: give the last ones time.
            await asyncio.sleep(
                1.0 + (self.args.evgate_workers if server.startswith("evgate") else 0)
            )
            return proc
        await self._stop(proc)
        tail = (self.workdir / f"{server}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{server} did not listen on port {port}:\n{tail}")

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()

    def _postgres_pid(self) -> int:
        return int((self.pg.pgdata / "postmaster.pid").read_text().split()[0])

    async def run_server(self, server: str) -> ServerRun:
        args = self.args
        dsn = await self._database(f"bench_{server.replace('-', '_')}")
        # evgate-nosub runs beside the same receivers (idle): the comparison is of evgate's
        # own cost, not of a Kafka broker's JVM sharing the cores.
        subscribers = (
            Subscribers(args.subscribe, args.subscriptions)
            if server.startswith("evgate") and args.subscribe
            else None
        )
        if server.startswith("evgate"):
            await self._register_evgate(dsn)
        else:
            await reference_server.register(dsn, self.digests, list(ID_TAGS))
        port = _free_port()
        self.say(f"{server}: starting on 127.0.0.1:{port}")
        if subscribers is not None:
            await subscribers.start()
            if server == "evgate":
                await subscribers.subscribe(dsn)
        try:
            return await self._measure(server, dsn, port, subscribers)
        finally:
            if subscribers is not None:
                subscribers.stop()

    async def _measure(
        self, server: str, dsn: str, port: int, subscribers: Subscribers | None
    ) -> ServerRun:
        args = self.args
        proc = await self._start(server, dsn, port)
        try:
            probe = ServerProbe(
                proc.pid,
                self._postgres_pid(),
                _rss(proc.pid),
                StatementProbe(dsn, self._postgres_pid()) if args.statements else None,
            )
            scenario = scenario_from(args, f"ws://127.0.0.1:{port}/cp/{{id}}?auth={{secret}}")
            scenario = msgspec.structs.replace(scenario, id_tags=ID_TAGS)
            result = await simulate(
                scenario,
                self.credentials,
                processes=args.processes,
                duration=args.duration,
                warmup=args.warmup,
                storm=not args.no_storm,
                boot_timeout=args.boot_timeout,
                probe=probe,
                progress=lambda line: self.say(f"{server}: {line}"),
            )
            if subscribers is not None and server == "evgate":
                self.say(f"{server}: waiting for the deliveries to drain")
                await subscribers.drain(dsn)
        finally:
            await self._stop(proc)
        lag: dict[str, float | None] | None = None
        missing: dict[str, int] | None = None
        if subscribers is not None and server == "evgate":
            lag, missing = await subscribers.lag(dsn, probe.marks["t0"], probe.marks["t1"])
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM meter_values")
        finally:
            await conn.close()
        per_1k = 1000 / result.calls if result.calls else float("nan")
        return ServerRun(
            server=server,
            fleet=result,
            server_cpu_per_1k_calls=round(probe.marks["cpu"] * per_1k, 4),
            database_cpu_per_1k_calls=round(probe.marks["db"] * per_1k, 4),
            rss_before_mib=round(probe.rss_before / 2**20, 1),
            rss_per_charger_kib=round(
                (probe.marks["rss"] - probe.rss_before) / 1024 / max(result.connected, 1), 2
            ),
            meter_value_rows=int(rows),
            delivery_lag_p99_s=lag,
            undelivered=missing,
            statements=(
                probe.statements.figures(result.calls) if probe.statements is not None else None
            ),
        )

    async def run(self) -> list[list[ServerRun]]:
        """Every round's runs (``--rounds``), the servers' order reversed every other round."""
        self.dsn = await asyncio.to_thread(self.pg.start)
        if self.args.statements:
            # A library loaded at the server's start: restart it with pg_stat_statements.
            await asyncio.to_thread(self.pg.stop)
            with (self.pg.pgdata / "postgresql.conf").open("a") as conf:
                conf.write(
                    "shared_preload_libraries = 'pg_stat_statements'\n"
                    "pg_stat_statements.track = 'all'\n"
                )
            self.dsn = await asyncio.to_thread(self.pg.start)
        rounds: list[list[ServerRun]] = []
        try:
            for number in range(self.args.rounds):
                if self.args.rounds > 1:
                    self.say(f"round {number + 1} of {self.args.rounds}")
                order = self.args.servers if number % 2 == 0 else self.args.servers[::-1]
                runs: list[ServerRun] = []
                for server in order:
                    try:
                        runs.append(await self.run_server(server))
                    except (RuntimeError, TimeoutError, OSError, asyncpg.PostgresError) as exc:
                        self.say(f"{server}: FAILED: {exc}")
                        runs.append(ServerRun(server=server, error=str(exc)))
                rounds.append(sorted(runs, key=lambda r: self.args.servers.index(r.server)))
        finally:
            await asyncio.to_thread(self.pg.stop)
        return rounds


# (label, how to read it from a ServerRun, True if higher is better)
ROWS: list[tuple[str, str, bool]] = [
    ("chargers connected", "fleet.connected", True),
    ("CALLs per second sustained", "fleet.calls_per_second", True),
    ("round trip p50 (ms)", "fleet.p50_ms", False),
    ("round trip p99 (ms)", "fleet.p99_ms", False),
    ("round trip p99.9 (ms)", "fleet.p999_ms", False),
    ("server CPU s per 1,000 CALLs", "server_cpu_per_1k_calls", False),
    ("database CPU s per 1,000 CALLs", "database_cpu_per_1k_calls", False),
    ("simulator CPU s per 1,000 CALLs", "fleet.simulator_cpu_per_1k_calls", False),
    ("server RSS per charger (KiB)", "rss_per_charger_kib", False),
    ("meter value rows stored", "meter_value_rows", True),
    ("reconnect storm, all booted (s)", "fleet.storm_seconds", False),
    # The simulator's part of the storm: reconnects that had to wait a backoff.
    ("storm: reconnects retried", "fleet.storm_retries", False),
    ("storm: longest backoff waited (s)", "fleet.storm_backoff_max_s", False),
    ("CALLERRORs + timeouts in window", "failures", False),
]


# Rows that are no server's figure to compare: the failures (0 for both, or a result to read),
# and the simulator's own CPU (the load generator's, the same program against both).
_NOT_COMPARED = {"failures", "fleet.simulator_cpu_per_1k_calls"}


def _value(run: ServerRun, path: str) -> float | None:
    if run.fleet is None:
        return None
    if path == "failures":
        return sum(run.fleet.call_errors.values()) + run.fleet.timeouts
    obj: Any = run
    for part in path.split("."):
        obj = getattr(obj, part)
    return None if obj is None else float(obj)


def ratios(evgate: ServerRun, reference: ServerRun) -> dict[str, float | None]:
    """How many times better evgate did on each row (None where either is missing or 0)."""
    out: dict[str, float | None] = {}
    for label, path, higher_better in ROWS:
        if path in _NOT_COMPARED:
            continue
        e, r = _value(evgate, path), _value(reference, path)
        if e is None or r is None or e == 0 or r == 0:
            out[label] = None
        else:
            out[label] = round(e / r if higher_better else r / e, 2)
    return out


def subscription_p99_ratio(subscribed: ServerRun, bare: ServerRun) -> float | None:
    """Round-trip p99 with subscriptions ÷ without (1.0: they cost the chargers nothing)."""
    a, b = _value(subscribed, "fleet.p99_ms"), _value(bare, "fleet.p99_ms")
    return round(a / b, 3) if a and b else None


def median_of(values: list[float | None]) -> float | None:
    """The median of the values there are (a failed round has none), or None."""
    there = [v for v in values if v is not None]
    return round(statistics.median(there), 3) if there else None


def median_ratios(by_round: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Each label's median over the rounds (none: no label)."""
    labels = by_round[0] if by_round else {}
    return {label: median_of([r.get(label) for r in by_round]) for label in labels}


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == int(v) and abs(v) >= 100:
        return f"{int(v):,}"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def table(runs: list[ServerRun], args: argparse.Namespace, info: dict[str, Any]) -> str:
    by = {r.server: r for r in runs}
    names = [r.server for r in runs]
    both = "evgate" in by and "reference" in by
    header = ["", *names] + (["evgate x"] if both else [])
    body = []
    ratio = ratios(by["evgate"], by["reference"]) if both else {}
    for label, path, _ in ROWS:
        row = [label, *(_fmt(_value(by[n], path)) for n in names)]
        if both:
            x = ratio.get(label)
            row.append("" if path in _NOT_COMPARED else ("-" if x is None else f"{x:g}x"))
        body.append(row)
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    lines = [
        f"fleet: {args.chargers} chargers, {args.duration:g} s window, MeterValues every "
        f"{args.meter_interval:g} s ({args.sampled_values} sampled values), heartbeat "
        f"{args.server_heartbeat} s, evgate workers {args.evgate_workers}",
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Python {info['python']}, {info['date']}",
        "",
    ]
    for i, row in enumerate([header, *body]):
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in runs:
        if r.error:
            lines.append(f"{r.server} failed: {r.error.splitlines()[0]}")
        if r.statements is not None:
            f = r.statements
            lines.append(
                f"{r.server}: per 1,000 CALLs {f.transactions_per_1k_calls:g} transactions,"
                f" {f.statements_per_1k_calls:g} statements, {f.wal_kib_per_1k_calls:g} KiB WAL"
                f" ({f.wal_full_pages_per_1k_calls:g} full pages; KiB by relation:"
                f" {', '.join(f'{k} {v:g}' for k, v in f.wal_kib_by_relation.items())});"
                " database CPU s by process:"
                f" {', '.join(f'{k} {v:g}' for k, v in f.cpu_by_process.items())};"
                " top statements (calls, exec ms):"
            )
            lines.extend(
                f"  {s.calls_per_1k_calls:8g} {s.exec_ms_per_1k_calls:8g}  {s.query}" for s in f.top
            )
        if r.delivery_lag_p99_s:
            lags = ", ".join(f"{k} {_fmt(v)} s" for k, v in r.delivery_lag_p99_s.items())
            lines.append(f"{r.server}: delivery lag p99 {lags} (undelivered: {r.undelivered})")
    if "evgate" in by and "evgate-nosub" in by:
        x = subscription_p99_ratio(by["evgate"], by["evgate-nosub"])
        lines.append(f"round trip p99 with / without subscriptions: {_fmt(x)}")
    if both:
        lines.append("evgate x: how many times better evgate did (higher, or lower, as fits)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=2000)
    parser.add_argument(
        "--servers",
        default=None,
        help="comma-separated subset of evgate, evgate-nosub (evgate without the --subscribe"
        " subscriptions), reference; default: evgate,reference (and evgate-nosub with"
        " --subscribe)",
    )
    parser.add_argument(
        "--subscribe",
        default="",
        help="comma-separated sinks (webhook,kafka) subscribed to every event of evgate",
    )
    parser.add_argument("--evgate-workers", type=int, default=1, help="EVGATE_WORKERS")
    parser.add_argument(
        "--subscriptions",
        type=int,
        default=1,
        help="with --subscribe webhook: this many webhook subscriptions to every event (all to"
        " the one nginx); the webhook lag is then until every one got the event",
    )
    parser.add_argument(
        "--evgate-delivery",
        choices=("inline", "process"),
        default="process",
        help="EVGATE_NOTIFICATION_DELIVERY of evgate (process, its default: one delivery"
        " process beside the workers, in the server's process tree; inline: on the workers'"
        " loops)",
    )
    parser.add_argument(
        "--server-heartbeat", type=int, default=30, help="interval the servers give chargers"
    )
    parser.add_argument("--no-storm", action="store_true", help="skip the reconnect storm")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the servers this many times, alternated, and report the median ratios",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr with --json")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, data)")
    parser.add_argument(
        "--statements",
        action="store_true",
        help="load pg_stat_statements and print what each server's database did per CALL",
    )
    add_arguments(parser)
    # A compressed day: a 2,000-charger fleet then sends what ~25,000 real chargers send.
    parser.set_defaults(meter_interval=10.0, idle_mean=60.0, session_mean=300.0)
    return parser


async def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    args.subscribe = [s.strip() for s in args.subscribe.split(",") if s.strip()]
    if args.rounds < 1:
        print("--rounds: at least 1", file=sys.stderr)
        return 2
    if set(args.subscribe) - set(SINKS):
        print(f"unknown sink(s) in --subscribe; choose from {SINKS}", file=sys.stderr)
        return 2
    default = SERVERS if args.subscribe else ("evgate", "reference")
    args.servers = [s.strip() for s in (args.servers or ",".join(default)).split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        print(f"unknown server(s): {sorted(unknown)}; choose from {SERVERS}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="evgate-fleet-"))
    try:
        bench = Bench(args, workdir)
        rounds = await bench.run()
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    info = machine()
    runs = [r for one in rounds for r in one]
    by_round = [{r.server: r for r in one} for one in rounds]
    compared = "evgate" in args.servers and "reference" in args.servers
    subscribed = "evgate" in args.servers and "evgate-nosub" in args.servers
    ratios_by_round = [ratios(b["evgate"], b["reference"]) for b in by_round] if compared else []
    p99s = (
        [subscription_p99_ratio(b["evgate"], b["evgate-nosub"]) for b in by_round]
        if subscribed
        else []
    )
    if args.json:
        out: dict[str, Any] = {
            "machine": info,
            "settings": {
                k: getattr(args, k)
                for k in (
                    "chargers",
                    "duration",
                    "meter_interval",
                    "sampled_values",
                    "server_heartbeat",
                    "idle_mean",
                    "session_mean",
                    "evgate_workers",
                    "connectors",
                    "subscribe",
                    "subscriptions",
                    "evgate_delivery",
                    "rounds",
                )
            },
        }
        if args.rounds == 1:
            out.update({r.server: msgspec.to_builtins(r) for r in rounds[0]})
        else:
            out["by_round"] = [{r.server: msgspec.to_builtins(r) for r in one} for one in rounds]
        if compared:
            out["ratios"] = median_ratios(ratios_by_round)
            if args.rounds > 1:
                out["ratios_by_round"] = ratios_by_round
        if subscribed:
            out["subscription_p99_ratio"] = median_of(p99s)
            if args.rounds > 1:
                out["subscription_p99_ratios"] = p99s
        print(json.dumps(out, indent=2))
    else:
        for number, one in enumerate(rounds, start=1):
            if args.rounds > 1:
                print(f"\nround {number} of {args.rounds}")
            print(table(one, args, info))
        if args.rounds > 1:
            print(f"\nmedians of {args.rounds} rounds:")
            if compared:
                for label, x in median_ratios(ratios_by_round).items():
                    print(f"  evgate x, {label}: {_fmt(x)}")
            if subscribed:
                each = ", ".join(_fmt(v) for v in p99s)
                print(
                    "  round trip p99 with / without subscriptions:"
                    f" {_fmt(median_of(p99s))} (rounds: {each})"
                )
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main(sys.argv[1:])))
