"""Fixtures for the notification tests: the test's database, the notification store, a real
webhook receiver on loopback, dispatchers with a fast retry schedule, and the real Kafka broker
(tests/harness)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from evgate.events.dispatcher import Dispatcher, DispatcherConfig
from evgate.storage.db import Database
from evgate.storage.events import NotificationStore
from support import Receiver

from .events_helpers import FAST


@pytest.fixture
def store(db: Database) -> NotificationStore:
    return NotificationStore(db)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def dispatchers(store: NotificationStore) -> AsyncIterator[Callable[..., Dispatcher]]:
    """Start dispatchers (``factory(config=FAST, store=store)``), stopped after the test."""
    started: list[Dispatcher] = []

    def factory(config: DispatcherConfig = FAST, on: NotificationStore | None = None) -> Dispatcher:
        d = Dispatcher(on or store, config)
        d.start()
        started.append(d)
        return d

    try:
        yield factory
    finally:
        for d in started:
            await d.stop()
