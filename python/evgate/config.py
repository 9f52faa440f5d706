"""Settings: read once at start from an optional TOML file and ``EVGATE_*`` variables.

Every setting is a field of :class:`Settings`. Its environment variable is ``EVGATE_`` plus the
field name in upper case, and its TOML key is the field name; the environment wins over the file.
A bad value stops start-up with a :class:`ConfigError` that names the setting, so an operator
never runs with a value evgate silently reinterpreted.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "ConfigError",
    "Listening",
    "Settings",
    "listening",
    "load_settings",
    "parse_durations",
    "parse_networks",
]

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


# One duration with a unit, then more separated by spaces or commas: "5s 30s 2m 1h 1d".
_DURATION = r"\d+(?:\.\d+)?[smhd]"
_DURATIONS = rf"^\s*{_DURATION}(?:[\s,]+{_DURATION})*\s*$"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_durations(text: str) -> tuple[float, ...]:
    """Seconds of each duration in ``text`` ("5s 30s 2m 1h 1d"), as the retry schedule
    setting is written (its pattern is checked when the settings load)."""
    return tuple(float(d[:-1]) * _UNITS[d[-1]] for d in re.findall(_DURATION, text))


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The addresses and networks of ``text`` ("10.0.0.5, 10.1.0.0/16 2001:db8::/32"), as
    the trusted-proxy setting is written.

    Raises:
        ValueError: an item that is neither an IP address nor a network.
    """
    return tuple(
        ipaddress.ip_network(item, strict=False) for item in re.split(r"[\s,]+", text) if item
    )


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """evgate's settings. Defaults suit `make serve` on a developer's machine."""

    # Where the embedded PostgreSQL and other local state live.
    data_dir: str = "./var"
    # An external PostgreSQL; when set, no embedded one is started.
    database_url: str | None = None
    database_pool_size: Annotated[int, msgspec.Meta(ge=2, le=200)] = 10

    # Chargers connect here (all interfaces: chargers are remote).
    ws_host: str = "0.0.0.0"
    ws_port: Port = 9000
    # The operator API stays on loopback unless the operator opens it on purpose.
    api_host: str = "127.0.0.1"
    api_port: Port = 8080
    # The API port's share of the process's file descriptors (the chargers need the rest):
    # open connections beyond api_max_connections are answered 503 and closed at once.
    # Default: 5 % of the file-descriptor limit less 256, 8 to 1000 (987 of 20,000; see
    # evgate/limits.py). A request must arrive whole within api_read_timeout seconds (from the
    # connection, or from its first byte); an idle keep-alive connection is closed after
    # api_keepalive_timeout.
    api_max_connections: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    api_read_timeout: Seconds = 10.0
    api_keepalive_timeout: Annotated[int, msgspec.Meta(ge=1, le=600)] = 5

    # An admin API token that exists while this is set (automation, first use).
    bootstrap_token: Annotated[str, msgspec.Meta(min_length=16, max_length=256)] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # OCPP behaviour.
    heartbeat_interval: Positive = 60
    # Whether an id-tag may have several open transactions; when false, Authorize and
    # StartTransaction answer ConcurrentTx for an id-tag that has one.
    allow_concurrent_tx: bool = True
    # SignCertificate: the CA that signs chargers' CSRs (PEM files); without both, Rejected.
    ca_cert: str | None = None
    ca_key: str | None = None
    certificate_validity_days: Positive = 365

    # Days a partner invite stays pending before it expires (issue 20).
    partner_invite_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 7

    # Meter values: days kept (whole daily partitions are dropped after; 0 keeps them
    # forever), and daily partitions made this many days ahead.
    meter_retention_days: Annotated[int, msgspec.Meta(ge=0)] = 90
    meter_partitions_ahead: Annotated[int, msgspec.Meta(ge=1, le=60)] = 3
    # How often the partial per-minute rollups of the minutes just ended are folded into one
    # row per series and minute (reads combine partials meanwhile: this bounds size, not
    # correctness). At most 15 minutes: a fold looks back an hour at most.
    meter_rollup_fold_interval: Annotated[float, msgspec.Meta(gt=0, le=900)] = 60.0
    # Group-commit writer: a batch commits at this many rows or this many seconds after its
    # first write; past writer_queue_rows waiting rows, chargers' messages wait (back-pressure).
    # writer_connections batches (each on its own connection) may be in flight at once: more than
    # the cores, so that PostgreSQL works on some while Python prepares others.
    writer_connections: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4
    writer_batch_rows: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 5000
    writer_flush_interval: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.005
    writer_queue_rows: Annotated[int, msgspec.Meta(ge=1000)] = 100_000

    # Gateway: TLS (security profiles 2 and 3), limits and liveness.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    max_message_size: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    ping_interval: Seconds = 60.0
    # At most ping_interval (the default follows a shorter interval; a longer value is refused).
    ping_timeout: Seconds = 30.0
    call_timeout: Seconds = 30.0
    # Load management (issue 18): how often each circuit with a transaction reports its
    # consumption (CircuitConsumptionNotification); how long SuspendedEV must hold before a
    # transaction's share goes to others; the least raise worth a new charging profile (A).
    circuit_consumption_interval: Seconds = 60.0
    load_idle_after: Seconds = 30.0
    load_hysteresis: Annotated[float, msgspec.Meta(ge=0.1, le=100)] = 1.0
    # Messages a charger may send per second (sustained) and in a burst: beyond, a charger
    # that waits for each answer is paced; a CALL sent before the previous answer is refused.
    message_rate: Annotated[float, msgspec.Meta(gt=0)] = 20.0
    message_burst: Positive = 200
    # The last OCPP messages (both ways) kept in memory per charger for the dashboard (never
    # stored); 0 keeps none. Kept after a disconnect for the last 1024 chargers that left.
    message_log_size: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 16
    # Failed upgrades allowed per source address per minute before it is answered 429.
    failed_upgrades_per_minute: Positive = 30
    # Charger write buffer high-water mark (bytes) before the gateway pauses the charger's reads.
    write_buffer_limit: Positive = 256 * 1024
    # Load balancers in TCP mode that send a PROXY protocol header (v1 or v2; HAProxy's
    # send-proxy-v2): addresses or networks, separated by spaces or commas. Connections from
    # them must start with one, and the address it names is the charger's (the failed-upgrade
    # limit, logs, the API); connections from anywhere else are read as they come.
    proxy_protocol_trusted: str = ""
    # TCP connections the charger port holds at once, handshakes included; more are closed at
    # once (logged, counted). Default: the file-descriptor limit less 256 (for the database,
    # webhook and Kafka connections, the logs) and less the API port's cap (18,757 of 20,000).
    max_charger_connections: Positive | None = None

    # External authorization: session ends for installations' providers are retried after
    # session_end_retry_base seconds, doubling up to session_end_retry_max; the outbox is
    # looked at every session_end_poll_interval seconds at least (NOTIFY wakes it sooner).
    session_end_retry_base: Seconds = 2.0
    session_end_retry_max: Seconds = 900.0
    session_end_poll_interval: Seconds = 5.0
    # Whether a sub-operator's token may point subscriptions (callbackUrl, Kafka brokers) and
    # installations' webhooks at loopback, private, link-local or reserved IP addresses or
    # localhost (false: 422; the operator's own tokens always may). See api/targets.py.
    tenant_private_targets: bool = False

    # Notifications (events/): retry delays after each failed delivery attempt, as durations
    # with a unit (s, m, h, d) separated by spaces or commas; after the last the delivery is
    # marked failed (listed by the API, resendable). Each delay gets +-20% jitter.
    notification_retry_schedule: Annotated[str, msgspec.Meta(pattern=_DURATIONS)] = (
        "5s 30s 2m 10m 30m 1h 3h 6h 12h 1d"
    )
    # One attempt's limit (connect + answer) for a webhook, and a Kafka send's (its producer's
    # start and every acknowledgement of the window or lane's batch).
    notification_delivery_timeout: Seconds = 10.0
    # Outbox rows fanned out per query, lanes (chargers) delivered at once per subscription,
    # and events a lane loads at a time: what bounds the dispatcher's memory.
    notification_fan_out_batch: Positive = 5000
    notification_lanes_per_subscription: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16
    notification_lane_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    # How often the dispatcher looks for new events when nothing wakes it.
    notification_poll_interval: Seconds = 0.05
    # Where notifications are delivered from: "process", from one more process that
    # `evgate serve` starts beside its workers (even one) and that does nothing else, so that
    # delivery never shares the chargers' loop (issue 17, bench/README.md); "inline", on each
    # serving process's own event loop (with one worker, one process in all and no supervisor;
    # an app run in-process, not by `evgate serve`, delivers only so); "off", from no process
    # here (another node, or that process, delivers).
    notification_delivery: Literal["inline", "process", "off"] = "process"
    # The delivery process's niceness (0-19): delivery may wait a few hundred ms where a
    # charger's reply may not, so on a busy machine the scheduler serves the chargers first
    # (bench/README.md, issue 17: nice 10 kept the chargers' p99 within 1.2x with two
    # subscriptions). 0: the workers' priority.
    notification_delivery_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10
    # Where that process serves its own GET /metrics (the dispatcher's counters and backlog),
    # on api_host: it has no API port, and a worker's /metrics holds none of them.
    notification_delivery_metrics_port: Port = 8081
    # Delivered events are deleted from the outbox after this many seconds (failed ones stay
    # until resent and delivered, or their subscription is deleted).
    outbox_retention: Seconds = 7 * 86400.0

    # Scale-out: worker processes share the ports with SO_REUSEPORT (set by the supervisor, or
    # by an operator running several `evgate serve` by hand on one machine).
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    reuse_port: bool = False
    # This node's name in charger ownership (default: the host name); the supervisor numbers
    # its workers with worker_index.
    node_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._\-]{1,64}$")] | None = None
    worker_index: Annotated[int, msgspec.Meta(ge=0, le=63)] | None = None
    # Seconds a process that died without a goodbye keeps its chargers' ownership (commands
    # for them answer 504 meanwhile, then 409).
    ownership_lease: Annotated[float, msgspec.Meta(ge=1, le=600)] = 15.0


class ConfigError(Exception):
    """A setting has a value evgate cannot use. The message names the setting."""


_FIELDS: tuple[str, ...] = Settings.__struct_fields__
_PATH = re.compile(r"at `\$\.(\w+)`")


# Settings that were renamed: an old name is an error that names the new one, not a value
# silently ignored (the environment has no list of unknown names to check against).
_RENAMED = {"writer_lanes": "writer_connections"}


def _env_name(field: str) -> str:
    return "EVGATE_" + field.upper()


class Listening(msgspec.Struct, frozen=True):
    """A port evgate's processes listen on: the setting that names it, and where."""

    setting: str  # the port's setting (ws_port, ...)
    host: str
    port: int  # 0: any free port

    def describe(self) -> str:
        return f"{_env_name(self.setting)} ({self.setting}, {self.host}:{self.port})"


_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def listening(settings: Settings) -> list[Listening]:
    """The ports the processes of ``evgate serve`` listen on with these settings."""
    ports = [
        Listening("ws_port", settings.ws_host, settings.ws_port),
        Listening("api_port", settings.api_host, settings.api_port),
    ]
    if settings.notification_delivery == "process":
        ports.append(
            Listening(
                "notification_delivery_metrics_port",
                settings.api_host,
                settings.notification_delivery_metrics_port,
            )
        )
    return ports


def _clash(a: Listening, b: Listening) -> bool:
    """Whether the two cannot both be bound (on Linux a wildcard address covers every other)."""
    return (
        bool(a.port)
        and a.port == b.port
        and (a.host == b.host or a.host in _WILDCARDS or b.host in _WILDCARDS)
    )


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings from a TOML file, the environment and explicit overrides.

    Args:
        config_file: an optional TOML file whose keys are the field names.
        environ: the environment to read ``EVGATE_*`` from (default ``os.environ``).
        **overrides: values that win over both (the CLI's flags, tests).

    Returns:
        The validated settings.

    Raises:
        ConfigError: a value is missing its type or range, or a key is unknown.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            raw.update(tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        unknown = sorted(set(raw) - set(_FIELDS) - set(_RENAMED))
        if unknown:
            raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}")
    for old, new in _RENAMED.items():
        if old in raw or env.get(_env_name(old)):
            raise ConfigError(
                f"{_env_name(old)} ({old}) is now {_env_name(new)} ({new}): rename it"
            )
    for field in _FIELDS:
        value = env.get(_env_name(field))
        if value is not None and value != "":
            raw[field] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _PATH.search(message)
        if match:
            field = match.group(1)
            raise ConfigError(f"{_env_name(field)} ({field}): {message}") from None
        raise ConfigError(message) from None
    try:
        parse_networks(settings.proxy_protocol_trusted)
    except ValueError as exc:
        raise ConfigError(
            f"EVGATE_PROXY_PROTOCOL_TRUSTED (proxy_protocol_trusted): {exc}"
        ) from None
    ports = listening(settings)
    for i, later in enumerate(ports):
        for earlier in ports[:i]:
            if _clash(earlier, later):  # the later binder would fail
                raise ConfigError(
                    f"{later.describe()} and {earlier.describe()}: one port, each needs its own"
                )
    if settings.ping_timeout > settings.ping_interval:
        # picows waits for a pong at most as long as the silence before the ping: the default
        # timeout follows a shorter interval; a timeout set on purpose is not cut short.
        if "ping_timeout" not in raw:
            return msgspec.structs.replace(settings, ping_timeout=settings.ping_interval)
        raise ConfigError(
            f"EVGATE_PING_TIMEOUT (ping_timeout): {settings.ping_timeout:g} s is longer than"
            f" EVGATE_PING_INTERVAL ({settings.ping_interval:g} s); it can be at most that"
        )
    return settings
