"""bench: the highest CALL rate one server process sustains, evgate against the reference.

The fleet of ``bench/fleet.py`` (same scenario, same mix of CALLs: boot, status, heartbeats,
Authorize, Start/StopTransaction, MeterValues), with its clock run faster step by step: at
step factor ``k`` every interval of the scenario (MeterValues, heartbeat, idle and session
lengths) is divided by ``k``, so the same chargers offer ``k`` times the CALLs of the first
step, in the same proportions. Each step is a fresh fleet (boot, warm-up, a window of
``--window`` seconds) against the same server process; the factor grows by ``--growth``
until the round trip p99 passes ``--p99-ms`` (50 ms) or any CALL of the window fails (a
CALLERROR, a timeout, a connection lost), in the step and in its ``--repeats`` repeat (a p99
spike may be another process's doing on a shared machine). The highest CALLs per second
answered in a passing window is the server's capacity. Both servers are run in turn, the
same way, in one run, on one embedded PostgreSQL (fleet.py's ``Bench``: a fresh database
each, the same chargers).

Placement: the server's processes are pinned to one core (``os.sched_setaffinity``), and
PostgreSQL and the load generator (this process and its simulator processes) to the other,
so the server has a core of its own to saturate. For each step the table gives the
generator's own CPU use over the window (its share of one core): a generator near 1.0 is
the limit, not the server. ``--processes 2`` runs the fleet from two simulator processes;
if that raises neither figure, the generator was not the limit.

Run: ``python bench/capacity.py [--chargers 500] [--window 15] [--json]``. ``--json`` prints
``evgate_max_calls_per_s``, ``reference_max_calls_per_s``, ``ratio`` (evgate ÷ reference),
and every step of each server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "python"):  # a plain checkout: loadtest/ and python/evgate
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import msgspec  # noqa: E402
import psutil  # noqa: E402
import uvloop  # noqa: E402
from bench import fleet, reference_server  # noqa: E402
from loadtest.cli import scenario_from  # noqa: E402
from loadtest.driver import simulate  # noqa: E402

SERVER_CORE = 0
OTHER_CORE = 1


class Step(msgspec.Struct, kw_only=True):
    """One step of one server: the factor, what was answered, and who used the CPU."""

    factor: float
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    failures: int
    server_cpu: float  # share of one core over the window
    generator_cpu: float  # the same, for the simulator processes
    database_cpu: float
    passed: bool


class Capacity(msgspec.Struct, kw_only=True):
    server: str
    max_calls_per_s: float
    steps: list[Step]
    error: str | None = None
    # Every step up to --max-factor passed: max_calls_per_s is a lower bound, not a limit.
    capped: bool = False


def _pin(pids: list[int], core: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess, OSError):
            os.sched_setaffinity(pid, {core})


def _generators() -> list[psutil.Process]:
    """This process's simulator processes (``loadtest.worker``)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "loadtest.worker" in " ".join(child.cmdline()):
                found.append(child)
    return found


class _StepProbe:
    """CPU of the server, the generator and PostgreSQL over a step's window."""

    def __init__(self, server_pid: int, postgres_pid: int) -> None:
        self.server_pid = server_pid
        self.postgres_pid = postgres_pid
        self.cpu: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        generator = 0.0
        for proc in _generators():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                generator += t.user + t.system
        return {
            "server": fleet._cpu_seconds(self.server_pid),
            "database": fleet._cpu_seconds(self.postgres_pid, reaped=True),
            "generator": generator,
            "at": time.monotonic(),
        }

    def begin(self) -> None:
        # The simulator processes of this step exist by now (they booted the fleet): the
        # generator's core is the other one, whatever it inherited.
        _pin([p.pid for p in _generators()], OTHER_CORE)
        self._start = self._read()

    def end(self) -> None:
        end = self._read()
        seconds = max(end["at"] - self._start["at"], 1e-9)
        self.cpu = {
            k: (end[k] - self._start[k]) / seconds for k in ("server", "database", "generator")
        }


async def _capacity(bench: fleet.Bench, server: str, args: argparse.Namespace) -> Capacity:
    dsn = await bench._database(f"capacity_{server}")
    if server == "evgate":
        await bench._register_evgate(dsn)
    else:
        await reference_server.register(dsn, bench.digests, list(fleet.ID_TAGS))
    port = fleet._free_port()
    proc = await bench._start(server, dsn, port)
    steps: list[Step] = []
    best = 0.0
    try:
        _pin([p.pid for p in fleet._tree(proc.pid)], SERVER_CORE)
        factor = args.start_factor
        repeats = 0
        while factor <= args.max_factor:
            base = scenario_from(args, f"ws://127.0.0.1:{port}/cp/{{id}}?auth={{secret}}")
            scenario = msgspec.structs.replace(
                base,
                id_tags=fleet.ID_TAGS,
                meter_interval=args.meter_interval / factor,
                idle_mean=args.idle_mean / factor,
                session_mean=args.session_mean / factor,
                heartbeat_interval=args.server_heartbeat / factor,
            )
            probe = _StepProbe(proc.pid, bench._postgres_pid())
            result = await simulate(
                scenario,
                bench.credentials,
                processes=args.processes,
                duration=args.window,
                # Long enough for sessions to have started: the mix of a running fleet,
                # not of one that just booted.
                warmup=max(args.warmup, min(20.0, args.idle_mean / factor)),
                boot_timeout=args.boot_timeout,
                probe=probe,
            )
            failures = (
                sum(result.call_errors.values())
                + result.timeouts
                + (result.chargers - result.connected)
            )
            passed = failures == 0 and result.p99_ms <= args.p99_ms
            step = Step(
                factor=round(factor, 3),
                calls_per_s=result.calls_per_second,
                p50_ms=result.p50_ms,
                p99_ms=result.p99_ms,
                failures=failures,
                server_cpu=round(probe.cpu["server"], 3),
                generator_cpu=round(probe.cpu["generator"], 3),
                database_cpu=round(probe.cpu["database"], 3),
                passed=passed,
            )
            steps.append(step)
            bench.say(f"{server}: {msgspec.json.encode(step).decode()}")
            if not passed:
                # A p99 past the limit may be the machine's doing (another process on the
                # server's core): a step fails only when its repeat fails too.
                repeats += 1
                if repeats > args.repeats:
                    break
                continue
            repeats = 0
            best = max(best, result.calls_per_second)
            factor *= args.growth
    except (RuntimeError, TimeoutError, OSError) as exc:
        return Capacity(server=server, max_calls_per_s=best, steps=steps, error=str(exc))
    finally:
        await bench._stop(proc)
    capped = bool(steps) and steps[-1].passed
    if capped:
        bench.say(f"{server}: every step up to --max-factor {args.max_factor:g} passed")
    return Capacity(server=server, max_calls_per_s=best, steps=steps, capped=capped)


async def run(args: argparse.Namespace, workdir: Path) -> list[Capacity]:
    # PostgreSQL and the simulator processes are started from here: they inherit this core.
    os.sched_setaffinity(0, {OTHER_CORE})
    bench = fleet.Bench(args, workdir)
    bench.dsn = await asyncio.to_thread(bench.pg.start)
    _pin([p.pid for p in fleet._tree(bench._postgres_pid())], OTHER_CORE)
    try:
        return [await _capacity(bench, server, args) for server in args.servers]
    finally:
        await asyncio.to_thread(bench.pg.stop)


def _table(results: list[Capacity]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r.server}: highest sustained {r.max_calls_per_s:,.0f} CALLs/s")
        lines.append("  factor  CALLs/s   p50 ms   p99 ms  failures  server  generator  database")
        for s in r.steps:
            lines.append(
                f"  {s.factor:6.2f}  {s.calls_per_s:7.0f}  {s.p50_ms:7.1f}  {s.p99_ms:7.1f}"
                f"  {s.failures:8d}  {s.server_cpu:6.2f}  {s.generator_cpu:9.2f}"
                f"  {s.database_cpu:8.2f}{'' if s.passed else '  <- limit'}"
            )
        if r.error:
            lines.append(f"  failed: {r.error.splitlines()[0]}")
        if r.capped:
            lines.append("  no limit found: every step passed (raise --max-factor)")
    by = {r.server: r for r in results}
    if "evgate" in by and "reference" in by and by["reference"].max_calls_per_s:
        ratio = by["evgate"].max_calls_per_s / by["reference"].max_calls_per_s
        lines.append(f"evgate ÷ reference: {ratio:.2f}x")
    lines.append("CPU columns: share of one core over the window (server pinned alone)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = fleet._parser()
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--window", type=float, default=15.0, help="seconds measured per step")
    parser.add_argument("--start-factor", type=float, default=1.0)
    parser.add_argument("--growth", type=float, default=1.5, help="factor between steps")
    parser.add_argument("--max-factor", type=float, default=2000.0)
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument(
        "--repeats", type=int, default=1, help="times a failing step is run again before it counts"
    )
    # --processes: the simulator processes (the load generator), one by default. evgate
    # delivers inline: the capacity is one server process's (no events are subscribed to).
    parser.set_defaults(
        chargers=500, warmup=2.0, no_storm=True, processes=1, evgate_delivery="inline"
    )
    return parser


async def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.rounds != 1:  # fleet.py's option, which this bench's steps do not repeat
        print("capacity.py: --rounds is fleet.py's; use --repeats", file=sys.stderr)
        return 2
    args.servers = [s.strip() for s in (args.servers or "evgate,reference").split(",") if s.strip()]
    if len(os.sched_getaffinity(0)) < 2:
        print("capacity.py needs two cores (one for the server)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="evgate-capacity-"))
    try:
        results = await run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    by = {r.server: r for r in results}
    if args.json:
        out: dict[str, Any] = {
            "machine": fleet.machine(),
            "chargers": args.chargers,
            "generators": args.processes,
            **{f"{r.server}_max_calls_per_s": r.max_calls_per_s for r in results},
            **{f"{r.server}_capped": r.capped for r in results},
        }
        if "evgate" in by and "reference" in by:
            ref = by["reference"].max_calls_per_s
            out["ratio"] = round(by["evgate"].max_calls_per_s / ref, 2) if ref else None
        out["steps"] = {r.server: msgspec.to_builtins(r) for r in results}
        print(json.dumps(out, indent=2))
    else:
        print(_table(results))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main(sys.argv[1:])))
