"""Meter rows per second into PostgreSQL through evgate's group-commit writer, against
``executemany`` of the same rows in the same run; and the native per-minute rollup against its
pure-Python twin.

What is measured:

* writer: ``--chargers`` concurrent submitters (as many chargers' MeterValues handlers), each
  submitting messages of ``--values`` sampled values (one row each), keyed by its charger id as
  the handlers do, to one ``Writer`` (four committers, evgate's default) with the ``MeterValueRows``
  op: in-batch dedupe, COPY into the partitioned ``meter_values``, and the native rollups
  COPYed into ``meter_rollup_1m`` as partial rows, committed in batches. Rows per second from
  the first submission to the last acknowledgement.
* fold: then the maintenance task's fold of those partials into one row per series and
  minute (``fold_rollups`` over the whole run), timed; ``writer_with_fold_rows_per_s``
  charges it to the writer, as if it ran after the writer and before the clock stopped (in
  evgate it runs once a minute, beside the writer).
* executemany: the same rows, inserted with asyncpg's ``executemany`` of one INSERT into
  ``meter_values`` (a prepared statement, pipelined), in transactions of the writer's batch
  size, with no rollups — less work than the writer does, in the peer's favour.
* rollup: ``_native.rollup_1m`` against ``native.pure_rollup_1m`` on the same flat buffers
  (``--rollup-rows`` rows over 500 series and 10 minutes), best of 5.

Each contender gets a fresh database from the migrations, after a CHECKPOINT. The PostgreSQL
is ``EVGATE_DATABASE_URL`` if set, else an embedded one in a temporary folder, warmed up first
by one unmeasured writer run (a new server creates its WAL files as it first fills them; one
in service recycles them).

Everything runs on uvloop, the event loop ``evgate serve`` runs on.

Run from the project venv: ``python bench/storage.py`` (table) or ``--json`` (one object:
``writer_rows_per_s``, ``fold_s``, ``writer_with_fold_rows_per_s``, ``executemany_rows_per_s``,
``writer_ratio``, ``native_rollup_s``, ``pure_rollup_s``, ``rollup_ratio``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    import evgate  # noqa: F401
except ImportError:  # a plain checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

import asyncpg
import uvloop

from evgate import _native, native
from evgate.storage.db import apply_migrations
from evgate.storage.embedded import EmbeddedPostgres
from evgate.storage.meter_values import fold_rollups
from evgate.storage.ops.meter_values import METER_COLUMNS, MeterValueRows
from evgate.storage.writer import Writer

MEASURANDS = ["Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Voltage"]


def messages(chargers: int, per_charger: int, values: int) -> list[list[list[tuple[Any, ...]]]]:
    """Per charger, its messages; each message a list of meter rows."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    out = []
    for c in range(chargers):
        charger_msgs = []
        for m in range(per_charger):
            ts = start + timedelta(seconds=m)
            charger_msgs.append(
                [
                    (
                        f"CP-{c}",
                        1,
                        1000 + c,
                        ts,
                        MEASURANDS[v % 4],
                        None if v < 4 else f"L{v % 3 + 1}",
                        "Outlet",
                        "Sample.Periodic",
                        "Raw",
                        "W",
                        1000.0 + m + v,
                        None,
                    )
                    for v in range(values)
                ]
            )
        out.append(charger_msgs)
    return out


async def fresh_database(admin_dsn: str, name: str) -> str:
    """A new database, migrated, after a CHECKPOINT (so that the run before it leaves no
    dirty pages to write during this one, and its WAL files are recycled, not created)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        await conn.execute(f"CREATE DATABASE {name}")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return dsn


async def bench_writer(
    dsn: str, data: list[list[list[tuple[Any, ...]]]], batch: int
) -> tuple[float, float]:
    """Rows per second through the writer, and the seconds the fold of its rollups took."""
    writer = Writer(dsn, batch_rows=batch, flush_interval=0.005, queue_rows=10 * batch)
    await writer.start()
    op = MeterValueRows()

    async def charger(msgs: list[list[tuple[Any, ...]]]) -> None:
        key = msgs[0][0][0]  # the charger's id, as the handlers key their submissions
        for rows in msgs:  # one CALL at a time, as the gateway runs them
            await writer.submit([op(rows)], key=key)

    started = time.perf_counter()
    await asyncio.gather(*(charger(m) for m in data))
    elapsed = time.perf_counter() - started
    await writer.stop()
    conn = await asyncpg.connect(dsn)
    try:
        minutes = await conn.fetchrow("SELECT min(minute), max(minute) FROM meter_rollup_1m")
        started = time.perf_counter()
        await fold_rollups(conn, minutes[0], minutes[1] + timedelta(minutes=1))
        fold_s = time.perf_counter() - started
    finally:
        await conn.close()
    return sum(len(r) for m in data for r in m) / elapsed, fold_s


async def bench_executemany(dsn: str, data: list[list[list[tuple[Any, ...]]]], batch: int) -> float:
    rows = [row for msgs in data for rs in msgs for row in rs]
    sql = (
        f"INSERT INTO meter_values ({', '.join(METER_COLUMNS)}) VALUES"
        f" ({', '.join(f'${i}' for i in range(1, len(METER_COLUMNS) + 1))})"
    )
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            async with conn.transaction():
                await conn.executemany(sql, rows[i : i + batch])
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return len(rows) / elapsed


def bench_rollup(n: int) -> tuple[float, float]:
    rng = random.Random(5)
    base = 1_700_000_000_000_000
    args = (
        array("I", (rng.randrange(500) for _ in range(n))).tobytes(),
        array("q", (base + rng.randrange(600_000_000) for _ in range(n))).tobytes(),
        array("d", (rng.random() * 1000 for _ in range(n))).tobytes(),
    )
    assert _native.rollup_1m(*args) == native.pure_rollup_1m(*args)

    def best(fn: Any) -> float:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t)
        return min(times)

    return best(_native.rollup_1m), best(native.pure_rollup_1m)


async def run(args: argparse.Namespace) -> dict[str, float]:
    admin = os.environ.get("EVGATE_DATABASE_URL")
    server = None
    tmp = None
    if admin is None:
        tmp = tempfile.TemporaryDirectory(prefix="evgate-bench-")
        server = EmbeddedPostgres(tmp.name)
        admin = await asyncio.to_thread(server.start)
    try:
        data = messages(args.chargers, args.messages, args.values)
        # A new PostgreSQL creates (and zero-fills) each 16 MB WAL file the first time it
        # needs one; a server that has run a while recycles them. Warm it up first, so the
        # contenders are measured as on a server in service.
        await bench_writer(await fresh_database(admin, "bench_warmup"), data, args.batch)
        writer_rate, fold_s = await bench_writer(
            await fresh_database(admin, "bench_writer"), data, args.batch
        )
        many_rate = await bench_executemany(
            await fresh_database(admin, "bench_executemany"), data, args.batch
        )
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        if tmp is not None:
            tmp.cleanup()
    native_s, pure_s = bench_rollup(args.rollup_rows)
    rows = args.chargers * args.messages * args.values
    return {
        "rows": rows,
        "writer_rows_per_s": round(writer_rate),
        "fold_s": round(fold_s, 3),
        "writer_with_fold_rows_per_s": round(rows / (rows / writer_rate + fold_s)),
        "executemany_rows_per_s": round(many_rate),
        "writer_ratio": round(writer_rate / many_rate, 2),
        "rollup_rows": args.rollup_rows,
        "native_rollup_s": round(native_s, 5),
        "pure_rollup_s": round(pure_s, 5),
        "rollup_ratio": round(pure_s / native_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=100, help="per charger")
    parser.add_argument("--values", type=int, default=10, help="sampled values per message")
    parser.add_argument("--batch", type=int, default=5000, help="rows per batch / transaction")
    parser.add_argument("--rollup-rows", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = uvloop.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    print(f"meter rows ({result['rows']:,}) per second into PostgreSQL")
    print(f"  writer (COPY + rollups) {result['writer_rows_per_s']:>12,}")
    print(f"    then folding rollups  {result['fold_s'] * 1000:>10.0f} ms")
    print(f"    writer with the fold  {result['writer_with_fold_rows_per_s']:>12,}")
    print(f"  executemany             {result['executemany_rows_per_s']:>12,}")
    print(f"  ratio                   {result['writer_ratio']:>12}x")
    print(f"per-minute rollup of {result['rollup_rows']:,} rows")
    print(f"  native (Rust)           {result['native_rollup_s'] * 1000:>10.2f} ms")
    print(f"  pure Python             {result['pure_rollup_s'] * 1000:>10.2f} ms")
    print(f"  ratio                   {result['rollup_ratio']:>12}x")


if __name__ == "__main__":
    main()
