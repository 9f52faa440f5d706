"""loadtest: the fleet simulator's command line (``evgate simulate`` and ``python -m loadtest``).

Runs N simulated chargers against a central system and prints what it measured: chargers
booted, CALLs answered per second, round-trip latency percentiles, errors and timeouts, and
optionally the time a reconnect storm of the whole fleet takes to boot again.

Credentials: ``--credentials FILE`` gives one charger per line, ``id,secret`` (or ``id
secret``); its secrets go to the simulator processes over a pipe, never on a command line.
Without it, chargers are ``{prefix}{n:06d}`` with no secret (for a server that does not ask).

Connections come from 127.0.0.1 .. 127.0.0.N (``--source-addresses N``, default 4), so a
server on this machine can take more of them than one address's ports allow; for a server
elsewhere pass ``--source-addresses 0`` and the kernel picks the address.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

import msgspec

from loadtest.charger import Scenario
from loadtest.driver import SimulationResult, simulate

__all__ = ["add_arguments", "format_result", "main", "read_credentials", "run", "scenario_from"]


def read_credentials(path: Path) -> list[tuple[str, str | None]]:
    """Read ``id,secret`` or ``id secret`` lines (a line with only an id has no secret)."""
    credentials: list[tuple[str, str | None]] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        credentials.append((parts[0], parts[1] if len(parts) > 1 else None))
    return credentials


def source_addresses(count: int) -> tuple[str, ...]:
    """``count`` loopback addresses, 127.0.0.1 upwards."""
    return tuple(str(ipaddress.IPv4Address("127.0.0.1") + i) for i in range(count))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The scenario's options, shared by ``evgate simulate`` and ``bench/fleet.py``."""
    d = Scenario()
    g = parser.add_argument_group("scenario")
    g.add_argument("--connectors", type=int, default=d.connectors, help="per charger")
    g.add_argument(
        "--heartbeat-interval",
        type=float,
        help="force this interval (default: the one BootNotification.conf gives)",
    )
    g.add_argument("--meter-interval", type=float, default=d.meter_interval, help="seconds")
    g.add_argument(
        "--aligned",
        action="store_true",
        help="send MeterValues at clock-aligned instants (the whole fleet in one burst)",
    )
    g.add_argument("--sampled-values", type=int, default=d.sampled_values, help="per MeterValues")
    g.add_argument("--idle-mean", type=float, default=d.idle_mean, help="mean seconds idle")
    g.add_argument("--session-mean", type=float, default=d.session_mean, help="mean session s")
    g.add_argument(
        "--id-tag", action="append", dest="id_tags", help="id tags to charge with (repeatable)"
    )
    g.add_argument("--call-timeout", type=float, default=d.call_timeout)
    g.add_argument("--ramp-rate", type=float, default=d.ramp_rate, help="connections per second")
    g.add_argument("--processes", type=int, help="simulator processes (default: 1 per 10,000)")
    g.add_argument(
        "--source-addresses",
        type=int,
        default=4,
        help="spread connections over 127.0.0.1 .. 127.0.0.N (0: let the kernel choose)",
    )
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    g.add_argument("--warmup", type=float, default=5.0, help="seconds after the last boot")
    g.add_argument(
        "--boot-timeout", type=float, default=600.0, help="seconds allowed for all to boot"
    )
    g.add_argument(
        "--storm", action="store_true", help="then drop every connection at once and time it"
    )


def scenario_from(args: argparse.Namespace, url: str) -> Scenario:
    """The Scenario that parsed options describe."""
    return Scenario(
        url=url,
        connectors=args.connectors,
        heartbeat_interval=args.heartbeat_interval,
        meter_interval=args.meter_interval,
        aligned_meter_values=args.aligned,
        sampled_values=args.sampled_values,
        idle_mean=args.idle_mean,
        session_mean=args.session_mean,
        id_tags=tuple(args.id_tags or Scenario().id_tags),
        call_timeout=args.call_timeout,
        ramp_rate=args.ramp_rate,
        source_addresses=source_addresses(args.source_addresses),
        seed=args.seed,
    )


def format_result(r: SimulationResult) -> str:
    """A human-readable summary of one run."""
    lines = [
        f"chargers          {r.booted}/{r.chargers} booted ({r.processes} process(es)), "
        f"ramp {r.ramp_seconds} s",
        f"CALLs answered    {r.calls} in {r.window_seconds} s = {r.calls_per_second}/s",
        f"round trip (ms)   p50 {r.p50_ms}  p99 {r.p99_ms}  p99.9 {r.p999_ms}  max {r.max_ms}",
        "by action         " + ", ".join(f"{k} {v}" for k, v in r.calls_by_action.items()),
        f"CALLERRORs        {r.call_errors or 0}; timeouts {r.timeouts}; "
        f"authorization refused {r.auth_rejected}",
        f"connections       {r.connect_failures} failed, {r.disconnects} lost",
    ]
    if r.storm_booted is not None:
        lines.append(
            f"reconnect storm   {r.storm_booted} booted again in {r.storm_seconds} s"
            f" ({r.storm_retries} retries, longest backoff {r.storm_backoff_max_s} s)"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evgate simulate",
        description="Simulate a fleet of OCPP 1.6J chargers against a central system.",
    )
    parser.add_argument(
        "--url",
        default="ws://127.0.0.1:9000/cp/{id}?auth={secret}",
        help="charger URL template with {id} and {secret} (default: %(default)s)",
    )
    parser.add_argument("--chargers", type=int, help="how many (default: all in --credentials)")
    parser.add_argument("--credentials", type=Path, help="file of 'id,secret' lines")
    parser.add_argument("--prefix", default="SIM-", help="charger ids without --credentials")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_arguments(parser)
    return parser


async def run(argv: list[str]) -> int:
    """Parse ``argv``, run the fleet, print the result; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.credentials is not None:
        credentials = read_credentials(args.credentials)
        if args.chargers is not None:
            credentials = credentials[: args.chargers]
    else:
        count = args.chargers or 10
        credentials = [(f"{args.prefix}{i:06d}", None) for i in range(count)]
    if not credentials:
        print("simulate: no chargers", file=sys.stderr)
        return 2
    progress = (lambda _: None) if args.json else (lambda line: print(line, file=sys.stderr))
    try:
        result = await simulate(
            scenario_from(args, args.url),
            credentials,
            processes=args.processes,
            duration=args.duration,
            warmup=args.warmup,
            storm=args.storm,
            boot_timeout=args.boot_timeout,
            progress=progress,
        )
    except TimeoutError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        print(format_result(result))
    return 0 if result.booted == result.chargers else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m loadtest``: run on uvloop."""
    import uvloop

    return uvloop.run(run(sys.argv[1:] if argv is None else argv))
