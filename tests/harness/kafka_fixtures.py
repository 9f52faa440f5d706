"""pytest fixtures for the real Kafka broker (see kafka.py).

Import them into a conftest.py: ``from harness.kafka_fixtures import kafka_broker`` (or
``from tests.harness.kafka_fixtures import ...`` if ``tests`` is a package). Nothing here skips:
without Java or the fetched jars the fixture fails, naming the fetch command, so CI cannot pass by
not running the Kafka tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .kafka import KafkaBroker, KafkaHarnessError


def _started(broker: KafkaBroker) -> KafkaBroker:
    try:
        broker.start()
    except KafkaHarnessError as exc:
        error = str(exc)
    else:
        return broker
    broker.close()
    pytest.fail(error, pytrace=False)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """The session's Kafka broker, started once and stopped at the end of the session.

    A test that stops, kills or pauses it must bring it back (``start()`` / ``resume()``) before
    it returns, in a ``finally``; tests that want a broker of their own use
    ``kafka_broker_factory``.
    """
    broker = _started(KafkaBroker())
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def kafka_broker_factory() -> Iterator[Callable[..., KafkaBroker]]:
    """Start extra, private brokers (``factory(**KafkaBroker kwargs)``); closed after the test."""
    brokers: list[KafkaBroker] = []

    def factory(**kwargs: Any) -> KafkaBroker:
        broker = KafkaBroker(**kwargs)
        brokers.append(broker)
        return _started(broker)

    try:
        yield factory
    finally:
        for broker in brokers:
            broker.close()
