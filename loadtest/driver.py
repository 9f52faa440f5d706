"""loadtest: a fleet spread over several simulator processes, and what it measured.

:func:`simulate` runs one scenario: it starts the worker processes (``loadtest.worker``),
each with its share of the chargers and of the ramp rate, waits until every charger has
booted, lets the fleet settle, measures a window of ``duration`` seconds (CALLs answered,
round-trip latency percentiles over every CALL of every process, errors), optionally drops
every connection at once and times the fleet's return, and stops. A ``Probe`` is called
around the window, so a benchmark can read the server's CPU and memory over the same span.

Latency histograms are merged bucket by bucket across processes, so the percentiles are the
fleet's, not an average of each process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from loadtest.charger import Scenario
from loadtest.histogram import LatencyHistogram

__all__ = ["FleetDriver", "Probe", "SimulationResult", "Window", "simulate"]

ROOT = Path(__file__).resolve().parent.parent
# Connections per simulator process: under the 20,000 fd limit, with room for the rest.
MAX_PER_PROCESS = 15_000


class Window(msgspec.Struct, kw_only=True):
    """What the whole fleet did over one measurement window."""

    seconds: float
    # CPU the simulator processes spent over the window, together.
    cpu_seconds: float
    calls: dict[str, int]
    call_errors: dict[str, int]
    timeouts: int
    auth_rejected: int
    server_calls: int
    latency: LatencyHistogram

    @property
    def answered(self) -> int:
        return sum(self.calls.values()) + sum(self.call_errors.values())

    @classmethod
    def merge(cls, parts: Sequence[dict[str, Any]]) -> Window:
        calls: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        latency = LatencyHistogram()
        for part in parts:
            calls.update(part["calls"])
            errors.update(part["call_errors"])
            latency.merge(LatencyHistogram.from_wire(part["latency"]))
        return cls(
            seconds=max((p["seconds"] for p in parts), default=0.0),
            cpu_seconds=sum(p["cpu_seconds"] for p in parts),
            calls=dict(sorted(calls.items())),
            call_errors=dict(sorted(errors.items())),
            timeouts=sum(p["timeouts"] for p in parts),
            auth_rejected=sum(p["auth_rejected"] for p in parts),
            server_calls=sum(p["server_calls"] for p in parts),
            latency=latency,
        )


class SimulationResult(msgspec.Struct, kw_only=True):
    """One run's figures; latencies in milliseconds, times in seconds."""

    chargers: int
    processes: int
    connected: int
    booted: int
    ramp_seconds: float
    window_seconds: float
    calls: int
    calls_per_second: float
    calls_by_action: dict[str, int]
    call_errors: dict[str, int]
    timeouts: int
    auth_rejected: int
    connect_failures: int
    disconnects: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    # The simulator's own CPU (every process) per 1,000 CALLs of the window: a load generator
    # near a core per process, or near the server's share of the cores, limits the figures.
    simulator_cpu_per_1k_calls: float
    storm_seconds: float | None = None
    storm_booted: int | None = None
    # Backoffs waited since the storm (a reconnect that failed, a connection that ended), and
    # the longest: a storm time near it is the simulator's backoff.
    storm_retries: int | None = None
    storm_backoff_max_s: float | None = None


class Probe(Protocol):
    """Reads the server under test around the measurement window."""

    def begin(self) -> None: ...

    def end(self) -> None: ...


class _Worker:
    """One ``loadtest.worker`` process and its command pipe (one command at a time)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def request(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            code = await self.proc.wait()
            raise RuntimeError(f"simulator process exited ({code}) on {command!r}; see stderr")
        reply: dict[str, Any] = json.loads(line)
        return reply


class FleetDriver:
    """The simulator processes of one run. ``start``, then the steps, then ``stop``."""

    def __init__(
        self,
        scenario: Scenario,
        credentials: Sequence[tuple[str, str | None]],
        processes: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.credentials = list(credentials)
        wanted = processes or max(1, math.ceil(len(self.credentials) / 10_000))
        self.processes = max(wanted, math.ceil(len(self.credentials) / MAX_PER_PROCESS))
        self._workers: list[_Worker] = []

    async def start(self) -> None:
        """Start the processes; their chargers begin to connect at once, at the ramp rate."""
        env = dict(os.environ)
        # The workers import loadtest (this checkout) and evgate (installed, or python/).
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), str(ROOT / "python"), *filter(None, [env.get("PYTHONPATH")])]
        )
        n = self.processes
        share = msgspec.structs.replace(self.scenario, ramp_rate=self.scenario.ramp_rate / n)
        size = math.ceil(len(self.credentials) / n)
        for i in range(n):
            part = self.credentials[i * size : (i + 1) * size]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "loadtest.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                limit=64 * 1024 * 1024,
            )
            self._workers.append(_Worker(proc))
            assert proc.stdin is not None
            job = {
                "scenario": msgspec.to_builtins(share),
                "credentials": part,
                "first_index": i * size,
            }
            proc.stdin.write(json.dumps(job).encode() + b"\n")
            await proc.stdin.drain()

    async def _all(self, command: str) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.request(command) for w in self._workers)))

    async def status(self) -> dict[str, float]:
        """The fleet's gauges (see :func:`_merged`)."""
        return _merged(await self._all("status"))

    async def wait_booted(self, limit: float, progress: Callable[[str], None]) -> float:
        """Wait until every charger has booted; returns the seconds it took."""
        began = time.monotonic()
        n = len(self.credentials)
        last_report = began
        while True:
            status = await self.status()
            if status["booted"] >= n:
                return time.monotonic() - began
            now = time.monotonic()
            if now - began > limit:
                raise TimeoutError(
                    f"{int(status['booted'])} of {n} chargers booted after {limit:.0f} s "
                    f"({int(status['connect_failures'])} connection failures)"
                )
            if now - last_report >= 5:
                progress(f"  {int(status['booted'])}/{n} chargers booted")
                last_report = now
            await asyncio.sleep(0.2)

    async def mark(self) -> None:
        await self._all("mark")

    async def window(self) -> Window:
        return Window.merge(await self._all("window"))

    async def storm(self, limit: float) -> tuple[float | None, int]:
        """Drop every connection at once; returns the seconds until all had booted again
        (None if not within ``limit`` seconds) and how many had."""
        n = len(self.credentials)
        began = min(p["storm_at"] for p in await self._all("storm"))
        while True:
            await asyncio.sleep(0.1)
            status = await self.status()
            if status["booted_since_storm"] >= n:
                return status["last_boot_at"] - began, n
            if time.monotonic() - began > limit:
                return None, int(status["booted_since_storm"])

    async def stop(self) -> dict[str, float]:
        """Stop every process; returns the final gauges (failures, disconnects)."""
        parts: list[dict[str, Any]] = []
        for worker in self._workers:
            # A process that does not answer within a minute (its core saturated by thousands
            # of connections closing) is killed below, its gauges left out of the totals: the
            # run's figures, measured before, are kept (a TimeoutError here lost a whole
            # 100,000-charger run's).
            with contextlib.suppress(RuntimeError, ConnectionError, TimeoutError):
                parts.append(await asyncio.wait_for(worker.request("stop"), 60))
        for worker in self._workers:
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
            await worker.proc.wait()
        self._workers = []
        return _merged([p["status"] for p in parts]) if parts else {}


# Gauges of the whole fleet that are the latest or the longest of its processes', not a sum.
_HIGHEST = ("last_boot_at", "storm_backoff_max")


def _merged(parts: list[dict[str, Any]]) -> dict[str, float]:
    """The fleet's gauges from its processes': summed, but for the ones in ``_HIGHEST``."""
    return {k: (max if k in _HIGHEST else sum)(p[k] for p in parts) for k in parts[0]}


def _quiet(_: str) -> None:
    pass


async def simulate(
    scenario: Scenario,
    credentials: Sequence[tuple[str, str | None]],
    *,
    processes: int | None = None,
    duration: float = 60.0,
    warmup: float = 5.0,
    storm: bool = False,
    boot_timeout: float = 600.0,
    probe: Probe | None = None,
    progress: Callable[[str], None] = _quiet,
) -> SimulationResult:
    """Run ``scenario`` with one charger per credential and return what was measured.

    Args:
        scenario: what the chargers do.
        credentials: (charger id, secret or None), one per charger.
        processes: simulator processes (default: one per 10,000 chargers).
        duration: seconds of the measurement window.
        warmup: seconds between the last boot and the window.
        storm: after the window, drop every connection at once and time the return.
        boot_timeout: seconds allowed for the whole fleet to boot (and to return after a storm).
        probe: called just before and just after the window.
        progress: receives a line of progress now and then.

    Raises:
        TimeoutError: the fleet did not boot within ``boot_timeout``.
    """
    driver = FleetDriver(scenario, credentials, processes)
    n = len(driver.credentials)
    progress(f"starting {n} chargers in {driver.processes} process(es)")
    await driver.start()
    try:
        ramp = await driver.wait_booted(boot_timeout, progress)
        progress(f"all {n} chargers booted in {ramp:.1f} s; warming up {warmup:.0f} s")
        await asyncio.sleep(warmup)
        await driver.mark()
        if probe is not None:
            probe.begin()
        await asyncio.sleep(duration)
        window = await driver.window()
        if probe is not None:
            probe.end()
        gauges = await driver.status()
        storm_seconds: float | None = None
        storm_booted: int | None = None
        storm_gauges: dict[str, float] = {}
        if storm:
            progress(f"reconnect storm: dropping all {n} connections")
            storm_seconds, storm_booted = await driver.storm(boot_timeout)
            storm_gauges = await driver.status()
            progress(
                f"  {storm_booted} chargers booted again in {storm_seconds} s"
                f" ({int(storm_gauges['storm_retries'])} retries, longest backoff"
                f" {storm_gauges['storm_backoff_max']:.2f} s)"
            )
    finally:
        final = await driver.stop()
    calls = sum(window.calls.values())
    lat = window.latency
    return SimulationResult(
        chargers=n,
        processes=driver.processes,
        connected=int(gauges["connected"]),
        booted=int(gauges["booted"]),
        ramp_seconds=round(ramp, 2),
        window_seconds=round(window.seconds, 2),
        calls=calls,
        calls_per_second=round(calls / window.seconds, 1) if window.seconds else 0.0,
        calls_by_action=window.calls,
        call_errors=window.call_errors,
        timeouts=window.timeouts,
        auth_rejected=window.auth_rejected,
        connect_failures=int(final.get("connect_failures", gauges["connect_failures"])),
        disconnects=int(gauges["disconnects"]),
        p50_ms=round(lat.percentile(50), 3),
        p99_ms=round(lat.percentile(99), 3),
        p999_ms=round(lat.percentile(99.9), 3),
        max_ms=round(lat.percentile(100), 3),
        simulator_cpu_per_1k_calls=round(window.cpu_seconds * 1000 / calls, 4) if calls else 0.0,
        storm_seconds=None if storm_seconds is None else round(storm_seconds, 2),
        storm_booted=storm_booted,
        storm_retries=int(storm_gauges["storm_retries"]) if storm_gauges else None,
        storm_backoff_max_s=round(storm_gauges["storm_backoff_max"], 2) if storm_gauges else None,
    )
