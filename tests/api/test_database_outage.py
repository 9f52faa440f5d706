"""A database outage answers 503 problem+json with Retry-After on every API route (a read, a
command to a charger, a write, the token check itself), never 500; 200 again once it is back."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import httpx
import pytest

from evgate.auth.registry import create_token
from evgate.storage.embedded import EmbeddedPostgres
from evgate.storage.tokens import TokenStore
from support import BOOTSTRAP_TOKEN, running_evgate, until


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.request.method, r.request.url.path, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) > 0
    body = r.json()
    assert body["status"] == 503 and "database" in body["detail"]


async def test_database_down_is_503_then_200_when_it_is_back(
    private_pg: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    pg, dsn = private_pg
    async with running_evgate(dsn, tmp_path) as app:
        assert app.db is not None
        reader = await create_token(TokenStore(app.db), "viewer", "read")
        async with (
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{app.api_port}",
                headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"},
                timeout=30,
            ) as api,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{app.api_port}",
                headers={"Authorization": f"Bearer {reader}"},
                timeout=30,
            ) as read_api,
        ):
            assert (await api.post("/api/v1/chargers", json={"id": "CP-1"})).status_code == 201
            await asyncio.to_thread(pg.kill)
            _assert_unavailable(await api.get("/api/v1/chargers/CP-1"))
            _assert_unavailable(await api.get("/api/v1/chargers"))
            _assert_unavailable(
                await api.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Soft"})
            )
            _assert_unavailable(await api.post("/api/v1/chargers", json={"id": "CP-2"}))
            _assert_unavailable(await read_api.get("/api/v1/chargers"))  # the token lookup

            await asyncio.to_thread(pg.restart_same_port)

            async def answered() -> httpx.Response | None:
                r = await api.get("/api/v1/chargers/CP-1")
                return None if r.status_code == 503 else r

            # The pool's connections come back on first use.
            r = await until(answered, within=20, interval=0.05)
            assert r.status_code == 200, r.text
            assert (await read_api.get("/api/v1/chargers/CP-1")).status_code == 200
            r = await api.post("/api/v1/chargers/CP-1/commands/Reset", json={"type": "Soft"})
            assert r.status_code == 409, r.text  # known, not connected anywhere


def _postgresql_up(metrics: str) -> bool:
    """Whether /metrics says PostgreSQL is up (``evgate_dependency_up``)."""
    return 'evgate_dependency_up{name="PostgreSQL"} 1' in metrics


async def _listing_whose_backend_gets(
    api: httpx.AsyncClient, database_url: str, signal: str
) -> httpx.Response:
    """``GET /api/v1/locations`` held by a lock while its backend is sent ``signal``
    (``pg_terminate_backend``: its connection goes; ``pg_cancel_backend``: only its query)
    by a blocker, while PostgreSQL serves everyone else: the response."""
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE locations IN ACCESS EXCLUSIVE MODE")
            listing = asyncio.ensure_future(api.get("/api/v1/locations"))
            # The request's backend, waiting for the lock (whatever it shows as its query:
            # a statement being prepared is not reported there).
            waiting = await until(
                lambda: blocker.fetchval(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                )
            )
            await blocker.execute(f"SELECT {signal}($1)", waiting)
            return await listing
    finally:
        await blocker.close()


async def test_a_request_that_finds_the_database_away_tells_the_process(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only an API request meets the outage (its connection ended by the server while it
    waits, every other loop of the process unaffected): the 503 is counted on the process's
    view of PostgreSQL, as the writer's and the loops' outages are, so /metrics says it is
    down and the log says so once; once the loops that use it succeed again it is up."""
    caplog.set_level(logging.INFO, logger="evgate")
    async with (
        running_evgate(database_url, tmp_path, ownership_lease=3) as app,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.api_port}",
            headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"},
            timeout=30,
        ) as api,
    ):
        assert _postgresql_up((await api.get("/metrics")).text)
        _assert_unavailable(
            await _listing_whose_backend_gets(api, database_url, "pg_terminate_backend")
        )
        metrics = (await api.get("/metrics")).text
        assert not _postgresql_up(metrics), metrics
        assert 'evgate_dependency_outages_total{name="PostgreSQL"} 1' in metrics

        # Back: the lease renewals and the other loops succeed (the API reports no success
        # of its own; the outage ends once nothing failed for a while).
        async def up() -> bool:
            return _postgresql_up((await api.get("/metrics")).text)

        await until(up, within=60, interval=0.2)
    said = [r.getMessage() for r in caplog.records if r.name == "evgate.outages"]
    assert len(said) == 2, said
    assert said[0].startswith("PostgreSQL unavailable") and "seen by the API" in said[0]
    assert said[1].startswith("PostgreSQL available again")


async def test_a_cancelled_api_query_does_not_mark_the_database_down(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An API request whose query is cancelled (a DBA's pg_cancel_backend; statement_timeout
    is the same SQLSTATE 57014) while PostgreSQL serves everyone else: the database did not go
    away, so /metrics keeps it up and the log says nothing of an outage."""
    caplog.set_level(logging.INFO, logger="evgate")
    async with (
        running_evgate(database_url, tmp_path) as app,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.api_port}",
            headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"},
            timeout=30,
        ) as api,
    ):
        assert _postgresql_up((await api.get("/metrics")).text)
        r = await _listing_whose_backend_gets(api, database_url, "pg_cancel_backend")
        assert r.status_code == 503, r.text  # as before this change: "retry later"
        metrics = (await api.get("/metrics")).text
        said = [r.getMessage() for r in caplog.records if r.name == "evgate.outages"]
        assert _postgresql_up(metrics) and not said, (said, metrics)
