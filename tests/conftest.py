"""Test harness: a real embedded PostgreSQL per session, a fresh database per test, evgate run
in-process on uvloop, and a check that no test leaves a loop error, a running task, a pending
timer or an unclosed resource behind."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from evgate.app import Evgate
from evgate.storage.db import Database, apply_migrations
from evgate.storage.embedded import EmbeddedPostgres
from harness.kafka_fixtures import kafka_broker, kafka_broker_factory  # noqa: F401
from support import (
    BOOTSTRAP_TOKEN,
    Receiver,
    TrackingLoop,
    create_database,
    drop_database,
    running_evgate,
)

_TEMPLATE = "evgate_template"
_counter = itertools.count()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Every async test runs on uvloop, as evgate does in production (with its timers tracked
    for the leak guard)."""
    return {"uvloop": TrackingLoop}


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """The session's PostgreSQL server (the same binaries `evgate serve` embeds)."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def pg_template(pg: EmbeddedPostgres) -> str:
    """A migrated template database that each test's database is copied from."""
    conn = await asyncpg.connect(await create_database(pg.dsn, _TEMPLATE))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return _TEMPLATE


@pytest.fixture
async def database_url(pg: EmbeddedPostgres, pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, dropped after it: kept, the suite's databases
    (11 MB each) filled a CI disk."""
    name = f"t{os.getpid()}_{next(_counter)}"
    yield await create_database(pg.dsn, name, pg_template)
    await drop_database(pg.dsn, name)


@pytest.fixture
async def private_pg(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    """A migrated PostgreSQL server of the test's own, and its DSN: for fault tests that kill
    or stop the server (the session's server is shared by every other test)."""
    server = EmbeddedPostgres(tmp_path / "private-pg")
    dsn = await asyncio.to_thread(server.start)
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    try:
        yield server, dsn
    finally:
        await asyncio.to_thread(server.stop, "immediate")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The test's (migrated) database, opened as evgate opens it."""
    database = Database(database_url, pool_size=10)
    await database.open(migrate=False)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def evgate(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Evgate]:
    """A running evgate on the test's database, with the settings of the test's (or its
    module's) ``evgate_settings`` marker."""
    marker = request.node.get_closest_marker("evgate_settings")
    overrides = marker.kwargs if marker is not None else {}
    async with running_evgate(database_url, tmp_path, **overrides) as app:
        yield app


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on loopback (records what reaches it)."""
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def api(evgate: Evgate) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for evgate's API, with the bootstrap (admin) token."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{evgate.api_port}",
        headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"},
        timeout=10,
    ) as client:
        yield client


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "leaves_timer(callback, reason): the leak guard lets pass pending timers whose callback"
        " is named ``callback`` (a known evgate defect the reason names, not the test's)",
    )
    config.addinivalue_line(
        "markers",
        "evgate_settings(**settings): the ``evgate`` fixture runs with these settings",
    )


@pytest.fixture(autouse=True)
async def _no_loop_errors_or_leaks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a test that leaves an unhandled loop error, a task still running, a timer still
    pending (a ``call_later`` nobody cancelled) or an unclosed resource, as uvloop's test base
    does. The loop lives for the session: what session fixtures run (their tasks, the timers
    those schedule, the timers already pending when the test began) is not the test's."""
    known = {m.args[0] for m in request.node.iter_markers("leaves_timer")}
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    before = set(asyncio.all_tasks())
    timers_before: dict[int, asyncio.TimerHandle] = {}
    if isinstance(loop, TrackingLoop):
        timers_before = {id(h): h for h in loop.pending_timers(ignore=lambda _: False)}
    yield
    this = asyncio.current_task()
    leaked: set[asyncio.Task[object]] = set()
    timers: list[asyncio.TimerHandle] = []
    for _ in range(50):  # tasks being cancelled need a few loop turns to finish
        leaked = {t for t in asyncio.all_tasks() - before if not t.done()}
        leaked.discard(this)  # type: ignore[arg-type]
        if isinstance(loop, TrackingLoop):
            timers = [
                h
                for h in loop.pending_timers(ignore=lambda task: task in before or task is this)
                if timers_before.get(id(h)) is not h
                and not any(f" {name}" in repr(h) for name in known)  # uvloop: repr only
            ]
        if not leaked and not timers:
            break
        await asyncio.sleep(0.02)
    # Unclosed sockets, transports and files warn when collected: collect now, so that the
    # ResourceWarning (an error, see filterwarnings in pyproject.toml) names this test.
    gc.collect()
    loop.set_exception_handler(previous)
    assert not errors, f"unhandled errors on the event loop: {errors}"
    assert not leaked, f"tasks left running: {leaked}"
    assert not timers, f"timers left pending: {timers}"
