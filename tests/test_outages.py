"""Outages cost two log lines (issue 14, item 6): one WARNING when a dependency goes away, one
INFO when it returns, no traceback per retry, counts in metrics (evgate/outages.py); and a
whole evgate process through a PostgreSQL outage."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ocpp.v16 import call

from evgate.auth.registry import ChargerRegistry
from evgate.metrics import Registry
from evgate.outages import Dependency, RepeatFilter, quiet_repeats
from evgate.storage.chargers import ChargerStore
from evgate.storage.db import Database
from evgate.storage.embedded import EmbeddedPostgres
from support import LogLines, ocpp_charger, quiet_for, running_evgate, until


def test_an_outage_is_one_warning_and_one_info_and_counted() -> None:
    """However many loops fail how often, the outage is one WARNING and its end one INFO; a
    failure that is not an outage (a bug) keeps its traceback; the backoff doubles to its
    bound and starts over after a success."""
    registry = Registry()
    dep = Dependency("PostgreSQL", lambda exc: isinstance(exc, OSError))
    dep.export(registry)
    a = dep.retry("loop a", logging.getLogger("test.a"), first=1.0, most=4.0)
    b = dep.retry("loop b", logging.getLogger("test.b"))
    with LogLines() as lines:
        delays = [a.failed(ConnectionRefusedError("refused")) for _ in range(5)]
        for _ in range(20):
            b.failed(OSError("gone"))
        assert dep.available is False
        assert registry.gauge("evgate_dependency_up", "", ("name",)).value("PostgreSQL") == 0
        a.ok()
        b.ok()
        restarted = a.failed(ValueError("a bug"))
    for delay, base in zip(delays, [1, 2, 4, 4, 4], strict=True):
        assert base * 0.8 <= delay <= base * 1.2  # doubling, bounded, with jitter
    warnings = [r for r in lines.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "PostgreSQL unavailable" in warnings[0].getMessage()
    assert "ConnectionRefusedError: refused" in warnings[0].getMessage()
    assert len(lines.saying("PostgreSQL available again")) == 1
    bug = [r for r in lines.records if r.levelno == logging.ERROR]
    assert len(bug) == 1 and bug[0].exc_info and bug[0].name == "test.a"
    assert [r for r in lines.records if r.exc_info] == bug
    text = registry.exposition()
    assert 'evgate_dependency_up{name="PostgreSQL"} 1' in text
    assert 'evgate_dependency_outages_total{name="PostgreSQL"} 1' in text
    assert 'evgate_dependency_failures_total{name="PostgreSQL"} 25' in text
    assert 0.8 <= restarted <= 1.2  # the backoff started over after the success


def test_a_partial_outage_is_one_warning_and_one_info() -> None:
    """PostgreSQL refusing new connections while open ones still commit: the writer succeeds
    between the listener's failed reconnects. The outage ends when the listener succeeds too
    (one WARNING, one INFO), not at each of the writer's successes; a component that failed
    and never runs again (a one-off task) does not keep it open past a quiet period."""
    dep = Dependency("PostgreSQL", lambda exc: isinstance(exc, OSError), quiet=0.3)
    refused = OSError("too many connections")
    with LogLines() as lines:
        for _ in range(5):
            dep.failed(refused, "the listener")
            assert dep.ok("the writer") is False
            dep.failed(refused, "the writer")
            assert dep.ok("the writer") is False  # the listener still fails
        assert dep.ok("the listener") is True
        # A second episode: a one-off task failed, then only other components succeed.
        dep.failed(refused, "delivery lane 1/CP-1")
        assert dep.ok("the writer") is False
        time.sleep(0.4)
        assert dep.ok("the writer") is True
        # A check of the whole dependency (the Kafka sink's probe) ends it at once.
        dep.failed(refused, "delivery lane 1/CP-1")
        assert dep.ok("the probe", whole=True) is True
    said = [(r.levelno, r.getMessage()) for r in lines.records]
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO] * 3, said
    assert "seen by the listener" in said[0][1]
    assert "available again" in said[1][1] and "available again" in said[3][1]
    assert dep.outages == 3


def test_a_repeated_library_line_passes_once_a_minute() -> None:
    """A library logging the same line thousands of times (aiokafka during a broker outage)
    gets it through once per interval, and the next one says how many were held back."""
    lib = logging.getLogger("test_lib.client")
    quiet_repeats("test_lib", RepeatFilter(interval=0.5))
    with LogLines() as lines:
        for _ in range(1000):
            lib.error("Unable connect to node with id %s", 1)
        lib.error("another line")
        time.sleep(0.6)  # the behaviour under test: the repeat interval (0.5 s) runs out
        lib.error("Unable connect to node with id %s", 1)
    said = [r.getMessage() for r in lines.records]
    assert said == [
        "Unable connect to node with id 1",
        "another line",
        "Unable connect to node with id 1 [999 more like it in the last 1 s]",
    ]


async def _register(database_url: str, charger_id: str) -> str:
    db = Database(database_url, pool_size=2)
    await db.open(migrate=False)
    try:
        return (await ChargerRegistry(ChargerStore(db)).create(charger_id))[1]
    finally:
        await db.close()


def _meter_value(i: int) -> call.MeterValues:
    at = datetime(2025, 1, 1, 0, 0, i, tzinfo=UTC).isoformat()
    return call.MeterValues(
        connector_id=1,
        meter_value=[{"timestamp": at, "sampledValue": [{"value": str(i), "unit": "Wh"}]}],
    )


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_database_outage_logs_two_lines(
    private_pg: tuple[EmbeddedPostgres, str], tmp_path: Path, mode: str
) -> None:
    """PostgreSQL stopped for 10 s under a running evgate (dispatcher, session-end sender,
    maintenance, cluster lease, listeners, and a charger's MeterValues waiting in the writer):
    the log holds one WARNING that PostgreSQL is unavailable and one INFO that it is back, no
    traceback and no line per retry; the outage is counted in /metrics."""
    pg, database_url = private_pg
    secret = await _register(database_url, "CP-1")
    async with running_evgate(database_url, tmp_path) as app:
        url = f"ws://127.0.0.1:{app.ws_port}/cp/CP-1?auth={secret}"
        async with ocpp_charger(url, "CP-1", response_timeout=90) as cp:
            await cp.call(_meter_value(0))
            with LogLines() as lines:
                await asyncio.to_thread(pg.stop, mode)
                waiting = asyncio.ensure_future(cp.call(_meter_value(1)))
                await quiet_for(10)  # a 10 s outage: the charger's CALL waits, unanswered
                assert not waiting.done()
                await asyncio.to_thread(pg.restart_same_port)
                await asyncio.wait_for(waiting, 60)
                # Every loop has been back at work for a while: the lease renewal, the
                # maintenance and the listeners' reconnects run on their own clocks.
                await until(lambda: lines.saying("PostgreSQL available again"))
                await asyncio.sleep(5)  # the behaviour under test: time for those clocks
            metrics = app.metrics.exposition()
    evgate_lines = [r for r in lines.records if r.name.startswith("evgate")]
    loud = [f"{r.name}: {r.getMessage()}" for r in evgate_lines if r.levelno >= logging.WARNING]
    tracebacks = [
        f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}" for r in lines.records if r.exc_info
    ]
    assert tracebacks == []
    assert len(lines.saying("PostgreSQL unavailable")) == 1, loud
    assert len(lines.saying("PostgreSQL available again")) == 1
    assert len(loud) <= 3, loud
    assert 'evgate_dependency_outages_total{name="PostgreSQL"} 1' in metrics
    assert 'evgate_dependency_up{name="PostgreSQL"} 1' in metrics
