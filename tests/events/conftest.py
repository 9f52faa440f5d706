"""Fixtures for the notification tests: the test's database, the notification stores, a real
webhook receiver on loopback, dispatchers with a fast retry schedule, and the real Kafka broker
(tests/harness)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from evgate.events.dispatcher import Dispatcher, DispatcherConfig
from evgate.storage.db import Database
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.subscriptions import SubscriptionStore

from .events_helpers import FAST


@pytest.fixture
def subscriptions(db: Database) -> SubscriptionStore:
    return SubscriptionStore(db)


@pytest.fixture
def deliveries(db: Database) -> DeliveryStore:
    return DeliveryStore(db)


@pytest.fixture
async def dispatchers(
    subscriptions: SubscriptionStore, deliveries: DeliveryStore
) -> AsyncIterator[Callable[..., Dispatcher]]:
    """Start dispatchers (``factory(config=FAST, on=database)``; by default on the test's),
    stopped after the test."""
    started: list[Dispatcher] = []

    def factory(config: DispatcherConfig = FAST, on: Database | None = None) -> Dispatcher:
        if on is None:
            d = Dispatcher(subscriptions, deliveries, config)
        else:
            d = Dispatcher(SubscriptionStore(on), DeliveryStore(on), config)
        d.start()
        started.append(d)
        return d

    try:
        yield factory
    finally:
        for d in started:
            await d.stop()
