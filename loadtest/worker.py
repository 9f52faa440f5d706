"""loadtest: one simulator process, driven by ``loadtest.driver`` over stdin and stdout.

The first line on stdin is the job, JSON: ``{"scenario": {...}, "credentials": [[id, secret],
...], "first_index": n}``. The secrets come this way, never on a command line, where any user
of the machine could read them in the process list. Then each line is a command, answered by
one JSON line on stdout:

* ``status``: the gauges (connected, booted, connects, failures, boots since the last storm);
* ``mark``: start a new measurement window;
* ``window``: the window so far (its seconds, this process's CPU seconds, CALLs answered
  per action, CALLERRORs, timeouts, the latency histogram);
* ``storm``: drop every connection now; answers the monotonic instant of the drop;
* ``stop``: close every connection, answer the last window and status, and exit.

Run by the driver as ``python -m loadtest.worker``; not meant for people.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import sys
from typing import Any

import msgspec
import uvloop

from loadtest.charger import Fleet, Scenario


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=256 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    job = json.loads(await reader.readline())
    scenario = msgspec.convert(job["scenario"], Scenario)
    credentials = [(cid, secret) for cid, secret in job["credentials"]]
    fleet = Fleet(scenario, credentials, first_index=job["first_index"])
    # The chargers live as long as the process: keep the collector from scanning them over
    # and over, which would show up as latency spikes that are ours, not the server's.
    # (evgate.heap's larger young generation was measured here and not adopted: the
    # simulator's CPU per CALL and a 20,000-charger storm were worse with it, bench/README.)
    gc.collect()
    gc.freeze()
    running = asyncio.create_task(fleet.run())
    try:
        while line := await reader.readline():
            command = line.decode().strip()
            if command == "status":
                _reply(fleet.stats.status())
            elif command == "mark":
                fleet.stats.mark()
                _reply({})
            elif command == "window":
                _reply(fleet.stats.window())
            elif command == "storm":
                _reply({"storm_at": fleet.storm()})
            elif command == "stop":
                fleet.stop()
                await running
                _reply({**fleet.stats.window(), "status": fleet.stats.status()})
                return
            else:
                _reply({"error": f"unknown command {command!r}"})
    finally:
        if not running.done():
            fleet.stop()
            await running


def main() -> None:
    raise_fd_limit()
    uvloop.run(_serve())


if __name__ == "__main__":
    main()
