"""Settings: read once at start from an optional TOML file and ``EVGATE_*`` variables.

Every setting is a field of :class:`Settings`. Its environment variable is ``EVGATE_`` plus the
field name in upper case, and its TOML key is the field name; the environment wins over the file.
A bad value stops start-up with a :class:`ConfigError` that names the setting, so an operator
never runs with a value evgate silently reinterpreted.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

__all__ = ["ConfigError", "Settings", "load_settings"]

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


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

    # An admin API token that exists while this is set (automation, first use).
    bootstrap_token: Annotated[str, msgspec.Meta(min_length=16, max_length=256)] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # OCPP behaviour.
    heartbeat_interval: Positive = 60

    # Gateway: TLS (security profiles 2 and 3), limits and liveness.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    max_message_size: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    ping_interval: Seconds = 60.0
    ping_timeout: Seconds = 30.0
    call_timeout: Seconds = 30.0
    # Messages a charger may send per second (sustained) and in a burst, before CALLERRORs.
    message_rate: Annotated[float, msgspec.Meta(gt=0)] = 20.0
    message_burst: Positive = 200
    # Failed upgrades allowed per source address per minute before it is answered 429.
    failed_upgrades_per_minute: Positive = 30
    # Charger write buffer high-water mark (bytes) before the gateway pauses the charger's reads.
    write_buffer_limit: Positive = 256 * 1024

    # Scale-out.
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    node_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._\-]{1,64}$")] | None = None


class ConfigError(Exception):
    """A setting has a value evgate cannot use. The message names the setting."""


_FIELDS: tuple[str, ...] = Settings.__struct_fields__
_PATH = re.compile(r"at `\$\.(\w+)`")


def _env_name(field: str) -> str:
    return "EVGATE_" + field.upper()


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
        unknown = sorted(set(raw) - set(_FIELDS))
        if unknown:
            raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}")
    for field in _FIELDS:
        value = env.get(_env_name(field))
        if value is not None and value != "":
            raw[field] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _PATH.search(message)
        if match:
            field = match.group(1)
            raise ConfigError(f"{_env_name(field)} ({field}): {message}") from None
        raise ConfigError(message) from None
