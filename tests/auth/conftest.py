"""External-authorization fixtures: a real provider on loopback, and evgate instances (with
quick retries) that a test can stop and start again on the same database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support import running_handle

from .auth_helpers import Provider, Site, StartSite, serve_provider


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    """A running provider (token, start and end endpoints) on 127.0.0.1."""
    p = Provider()
    server = await serve_provider(p)
    try:
        yield p
    finally:
        await server.stop()


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
        async with running_handle(database_url, tmp_path, **{**FAST, **overrides}) as r:
            yield Site(r.app, r.api, r.scheme)

    return start


@pytest.fixture
async def site(start_site: StartSite) -> AsyncIterator[Site]:
    async with start_site() as s:
        yield s
