"""Settings from the environment and TOML; a bad value names the setting and stops start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evgate.config import ConfigError, load_settings


def test_defaults() -> None:
    """Without settings: embedded database in ./var, chargers on 9000, API on loopback 8080,
    notifications from a delivery process whose metrics are on 8081."""
    s = load_settings(environ={})
    assert (s.data_dir, s.database_url, s.ws_port, s.api_host, s.api_port) == (
        "./var",
        None,
        9000,
        "127.0.0.1",
        8080,
    )
    assert (s.notification_delivery, s.notification_delivery_metrics_port) == ("process", 8081)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        (
            {"EVGATE_API_PORT": "9000"},
            r"EVGATE_API_PORT \(api_port, 127.0.0.1:9000\) and"
            r" EVGATE_WS_PORT \(ws_port, 0.0.0.0:9000\): one port",
        ),
        (
            {"EVGATE_API_PORT": "8081"},
            r"EVGATE_NOTIFICATION_DELIVERY_METRICS_PORT"
            r" \(notification_delivery_metrics_port, 127.0.0.1:8081\) and EVGATE_API_PORT",
        ),
    ],
)
def test_two_ports_of_the_same_number_are_refused(environ: dict[str, str], named: str) -> None:
    """Two of the ports evgate listens on with one number where one address covers the
    other: the later binder would fail for ever, so the settings are refused; the metrics
    port counts only when a delivery process uses it; port 0 (any free port) and one number
    on two specific addresses are no clash."""
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=environ)
    inline = load_settings(
        environ={**environ, "EVGATE_NOTIFICATION_DELIVERY": "inline", "EVGATE_WS_PORT": "9001"}
    )
    assert inline.api_port == int(environ["EVGATE_API_PORT"])
    assert load_settings(environ={"EVGATE_API_PORT": "0", "EVGATE_WS_PORT": "0"}).api_port == 0
    apart = {"EVGATE_WS_HOST": "10.0.0.5", "EVGATE_API_PORT": "9000"}
    assert load_settings(environ=apart).api_port == 9000


def test_environment_wins_over_file(tmp_path: Path) -> None:
    """EVGATE_* variables override the TOML file, which overrides the defaults."""
    f = tmp_path / "evgate.toml"
    f.write_text('ws_port = 9100\napi_port = 8100\nlog_level = "DEBUG"\n')
    s = load_settings(f, environ={"EVGATE_WS_PORT": "9200"})
    assert (s.ws_port, s.api_port, s.log_level) == (9200, 8100, "DEBUG")


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"EVGATE_WS_PORT": "nine"}, "EVGATE_WS_PORT"),
        ({"EVGATE_API_PORT": "70000"}, "EVGATE_API_PORT"),
        ({"EVGATE_LOG_LEVEL": "LOUD"}, "EVGATE_LOG_LEVEL"),
        ({"EVGATE_HEARTBEAT_INTERVAL": "0"}, "EVGATE_HEARTBEAT_INTERVAL"),
        ({"EVGATE_BOOTSTRAP_TOKEN": "short"}, "EVGATE_BOOTSTRAP_TOKEN"),
        ({"EVGATE_PING_INTERVAL": "10", "EVGATE_PING_TIMEOUT": "20"}, "EVGATE_PING_TIMEOUT"),
        ({"EVGATE_PROXY_PROTOCOL_TRUSTED": "10.0.0.1, lb.example"}, "EVGATE_PROXY_PROTOCOL_"),
        ({"EVGATE_PROXY_PROTOCOL_TRUSTED": "10.0.0.0/33"}, "EVGATE_PROXY_PROTOCOL_TRUSTED"),
        ({"EVGATE_MAX_CHARGER_CONNECTIONS": "0"}, "EVGATE_MAX_CHARGER_CONNECTIONS"),
        ({"EVGATE_TENANT_PRIVATE_TARGETS": "maybe"}, "EVGATE_TENANT_PRIVATE_TARGETS"),
    ],
)
def test_bad_value_names_the_setting(environ: dict[str, str], named: str) -> None:
    """Each bad value raises ConfigError whose message names the variable."""
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=environ)


def test_tenants_private_targets_are_refused_unless_allowed() -> None:
    """EVGATE_TENANT_PRIVATE_TARGETS: false unless set (api/targets.py refuses them)."""
    assert load_settings(environ={}).tenant_private_targets is False
    environ = {"EVGATE_TENANT_PRIVATE_TARGETS": "true"}
    assert load_settings(environ=environ).tenant_private_targets is True


def test_trusted_proxies_are_addresses_and_networks() -> None:
    """EVGATE_PROXY_PROTOCOL_TRUSTED: addresses or networks, by spaces or commas."""
    from evgate.config import parse_networks

    s = load_settings(environ={"EVGATE_PROXY_PROTOCOL_TRUSTED": "10.0.0.5, 10.1.0.0/16 ::1"})
    assert [str(n) for n in parse_networks(s.proxy_protocol_trusted)] == [
        "10.0.0.5/32",
        "10.1.0.0/16",
        "::1/128",
    ]
    assert parse_networks(load_settings(environ={}).proxy_protocol_trusted) == ()


def test_unknown_key_in_file(tmp_path: Path) -> None:
    """A misspelt key in the TOML file is an error, not silently ignored."""
    f = tmp_path / "evgate.toml"
    f.write_text("ws_prot = 1\n")
    with pytest.raises(ConfigError, match="ws_prot"):
        load_settings(f, environ={})


def test_a_renamed_setting_names_its_new_name(tmp_path: Path) -> None:
    """EVGATE_WRITER_LANES (now EVGATE_WRITER_CONNECTIONS) is refused with the new name, from
    the environment and from the file alike, instead of being silently ignored."""
    with pytest.raises(ConfigError, match="EVGATE_WRITER_CONNECTIONS"):
        load_settings(environ={"EVGATE_WRITER_LANES": "2"})
    f = tmp_path / "evgate.toml"
    f.write_text("writer_lanes = 2\n")
    with pytest.raises(ConfigError, match="writer_connections"):
        load_settings(f, environ={})
    assert load_settings(environ={"EVGATE_WRITER_CONNECTIONS": "2"}).writer_connections == 2


def test_cli_refuses_to_start_with_bad_setting() -> None:
    """`evgate serve` with a bad value exits 2 and says which setting."""
    proc = subprocess.run(
        [sys.executable, "-m", "evgate.cli", "serve"],
        env={"EVGATE_WS_PORT": "-1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "EVGATE_WS_PORT" in proc.stderr


def test_ping_timeout_is_at_most_the_interval() -> None:
    """picows cannot wait for a pong longer than the silence before the ping: the default
    timeout follows a shorter interval, and a longer timeout set on purpose is refused."""
    assert load_settings(environ={"EVGATE_PING_INTERVAL": "10"}).ping_timeout == 10
    s = load_settings(environ={"EVGATE_PING_INTERVAL": "10", "EVGATE_PING_TIMEOUT": "4"})
    assert (s.ping_interval, s.ping_timeout) == (10, 4)
    with pytest.raises(ConfigError, match="EVGATE_PING_TIMEOUT"):
        load_settings(environ={"EVGATE_PING_INTERVAL": "10", "EVGATE_PING_TIMEOUT": "20"})
