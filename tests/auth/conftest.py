"""External-authorization fixtures: a real provider on loopback, and evgate instances (with
quick retries) that a test can stop and start again on the same database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_helpers import Provider, Site, StartSite, serve_provider

from evgate.auth.registry import create_token
from evgate.storage.tokens import TokenStore
from support import running_evgate


@pytest.fixture
def provider() -> Iterator[Provider]:
    """A running provider (token, start and end endpoints) on 127.0.0.1."""
    p = Provider()
    stop = serve_provider(p)
    try:
        yield p
    finally:
        stop()


# Quick retries and polls, so that retry and restart tests take a fraction of a second.
FAST = {
    "session_end_retry_base": 0.05,
    "session_end_retry_max": 0.2,
    "session_end_poll_interval": 0.1,
}


@pytest.fixture
def start_site(database_url: str, tmp_path: Path) -> StartSite:
    """``async with start_site(**settings) as site:`` an evgate on the test's database; may
    be entered again (after the first ends) to restart evgate on the same database."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Site]:
        async with running_evgate(database_url, tmp_path, **{**FAST, **overrides}) as app:
            assert app.db is not None
            token = await create_token(TokenStore(app.db), "auth-tests", "admin")
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{app.api_port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ) as api:
                yield Site(app, api)

    return start


@pytest.fixture
async def site(start_site: StartSite) -> AsyncIterator[Site]:
    async with start_site() as s:
        yield s
