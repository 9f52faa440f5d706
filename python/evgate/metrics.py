"""Process metrics (shared by every room): counters and gauges with labels, Prometheus text.

Dependency-free and cheap on the hot path: a labelled increment is one dict update keyed by the
tuple of label values. Each :class:`Registry` is owned by one evgate process (``app.py`` makes
it and hands it to the rooms), so two in-process instances in a test never mix their figures.
``Registry.exposition()`` renders the Prometheus text format 0.0.4 served on ``GET /metrics``.

Usage::

    frames_in = registry.counter("evgate_frames_received_total", "Frames from chargers",
                                 ("action",))
    frames_in.inc("Heartbeat")
    connected = registry.gauge("evgate_chargers_connected", "Chargers connected now")
    connected.set_function(lambda: len(connections))   # read at scrape time
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable

from evgate.tasks import OwnedTask

__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "LoopLagMonitor", "Registry"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class _Metric:
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"bad metric name {name!r}")
        for label in labelnames:
            if not _LABEL.match(label):
                raise ValueError(f"bad label name {label!r}")
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        # label values → value; the unlabelled metric uses the empty tuple.
        self._values: dict[tuple[str, ...], float] = {}
        if not labelnames:
            self._values[()] = 0

    def value(self, *labels: str) -> float:
        """The current value for these label values (0 when never touched)."""
        return self._values.get(labels, 0)

    def _samples(self) -> list[tuple[tuple[str, ...], float]]:
        return sorted(self._values.items())

    def render(self) -> str:
        lines = [
            f"# HELP {self.name} {_escape(self.documentation)}",
            f"# TYPE {self.name} {self.kind}",
        ]
        for labels, value in self._samples():
            if labels:
                pairs = ",".join(
                    f'{n}="{_escape(v)}"' for n, v in zip(self.labelnames, labels, strict=True)
                )
                lines.append(f"{self.name}{{{pairs}}} {_number(value)}")
            else:
                lines.append(f"{self.name} {_number(value)}")
        return "\n".join(lines) + "\n"


class Counter(_Metric):
    """A value that only goes up. ``inc(*label_values)``; the label count is the caller's
    contract (not checked per call, to keep the hot path a dict update)."""

    kind = "counter"

    def inc(self, *labels: str, amount: float = 1) -> None:
        values = self._values
        values[labels] = values.get(labels, 0) + amount


class Gauge(_Metric):
    """A value that goes up and down, or is read from a function at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._function: Callable[[], float] | None = None

    def set(self, value: float, *labels: str) -> None:
        self._values[labels] = value

    def inc(self, *labels: str, amount: float = 1) -> None:
        values = self._values
        values[labels] = values.get(labels, 0) + amount

    def dec(self, *labels: str, amount: float = 1) -> None:
        self.inc(*labels, amount=-amount)

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the (unlabelled) value from ``function`` at each scrape."""
        self._function = function

    def value(self, *labels: str) -> float:
        if self._function is not None and not labels:
            return self._function()
        return super().value(*labels)

    def _samples(self) -> list[tuple[tuple[str, ...], float]]:
        if self._function is not None:
            return [((), self._function())]
        return super()._samples()


class Registry:
    """The metrics of one process. Names are unique; asking again for a name returns the
    metric already registered (so a room can be built twice in one process, as tests do)."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _get(
        self, cls: type[_Metric], name: str, documentation: str, labelnames: tuple[str, ...]
    ) -> _Metric:
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = cls(name, documentation, labelnames)
        elif type(metric) is not cls or metric.labelnames != labelnames:
            raise ValueError(f"metric {name!r} exists with another type or labels")
        return metric

    def counter(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> Counter:
        metric = self._get(Counter, name, documentation, labelnames)
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> Gauge:
        metric = self._get(Gauge, name, documentation, labelnames)
        assert isinstance(metric, Gauge)
        return metric

    def exposition(self) -> str:
        """All metrics in the Prometheus text format, in name order."""
        return "".join(self._metrics[name].render() for name in sorted(self._metrics))


class LoopLagMonitor:
    """Measures how late the event loop wakes a sleeper: the time a charger's frame waits
    before evgate looks at it. Owned by ``app.py``: ``start()`` after the loop runs,
    ``await stop()`` on shutdown.

    The gauge ``evgate_event_loop_lag_seconds`` holds the latest measure and
    ``evgate_event_loop_lag_max_seconds`` the largest since start.
    """

    def __init__(self, registry: Registry, interval: float = 0.5) -> None:
        self.interval = interval
        self.lag = registry.gauge(
            "evgate_event_loop_lag_seconds", "How late the event loop woke a timer, last sample"
        )
        self.lag_max = registry.gauge(
            "evgate_event_loop_lag_max_seconds", "The largest event loop lag since start"
        )
        self._task = OwnedTask(self._run, "loop-lag")

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - started - self.interval)
            self.lag.set(lag)
            if lag > self.lag_max.value():
                self.lag_max.set(lag)
