"""A database outage answers 503 problem+json with Retry-After on every API route (a read, a
command to a charger, a write, the token check itself), never 500; 200 again once it is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

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
