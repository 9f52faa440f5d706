"""The metrics module: counters and gauges with labels, Prometheus text, loop lag."""

from __future__ import annotations

import asyncio
import time

import pytest

from evgate.metrics import LoopLagMonitor, Registry
from support import until


def test_counter_with_labels_renders_prometheus_text() -> None:
    """HELP, TYPE and one sample per label set, label values escaped, sorted."""
    registry = Registry()
    frames = registry.counter("evgate_test_total", "Frames", ("action",))
    frames.inc("Heartbeat")
    frames.inc("Heartbeat")
    frames.inc('a"b\\c\nd', amount=3)
    assert frames.value("Heartbeat") == 2 and frames.value("never") == 0
    assert registry.exposition() == (
        "# HELP evgate_test_total Frames\n"
        "# TYPE evgate_test_total counter\n"
        'evgate_test_total{action="Heartbeat"} 2\n'
        'evgate_test_total{action="a\\"b\\\\c\\nd"} 3\n'
    )


def test_gauge_set_inc_dec_and_function() -> None:
    """A gauge moves both ways; a function gauge is read at scrape time."""
    registry = Registry()
    gauge = registry.gauge("evgate_level", "Level")
    gauge.inc(amount=5)
    gauge.dec()
    assert gauge.value() == 4
    gauge.set(0.25)
    assert "evgate_level 0.25\n" in registry.exposition()
    items = [1, 2]
    live = registry.gauge("evgate_live", "Live")
    live.set_function(lambda: len(items))
    items.append(3)
    assert "evgate_live 3\n" in registry.exposition()


def test_registry_returns_the_same_metric_and_refuses_a_clash() -> None:
    """Asking twice gives the same metric; another type or label set under a name is an
    error, as is a malformed name."""
    registry = Registry()
    assert registry.counter("evgate_x_total", "X") is registry.counter("evgate_x_total", "X")
    with pytest.raises(ValueError):
        registry.gauge("evgate_x_total", "X")
    with pytest.raises(ValueError):
        registry.counter("evgate_x_total", "X", ("code",))
    with pytest.raises(ValueError):
        registry.counter("bad name", "X")


async def test_loop_lag_monitor_measures_a_blocked_loop() -> None:
    """Blocking the loop shows up as lag; stop() ends the monitor's task."""
    registry = Registry()
    monitor = LoopLagMonitor(registry, interval=0.02)
    monitor.start()
    await asyncio.sleep(0.03)  # pacing: the monitor is between two ticks
    time.sleep(0.1)  # noqa: ASYNC251 - blocking the loop on purpose: the monitor wakes late
    await until(lambda: monitor.lag_max.value() >= 0.05)
    await monitor.stop()
