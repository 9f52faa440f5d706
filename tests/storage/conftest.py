"""Storage test fixtures: the test's database opened as evgate opens it, and a running writer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from evgate.storage.writer import Writer


@pytest.fixture
async def writer(database_url: str) -> AsyncIterator[Writer]:
    """A started writer with a short flush interval and small retry delays."""
    w = Writer(database_url, flush_interval=0.002, retry_max_delay=0.2, stop_timeout=5)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()
