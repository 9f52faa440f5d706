"""Handler test fixtures: the real writer, stores and native authorizer on the test's database,
handlers called directly with a ChargerContext (no socket), and the routing table."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from evgate.auth.native import NativeAuthorizer
from evgate.auth.registry import ChargerRegistry
from evgate.handlers.routes import build_routes
from evgate.handlers.services import HandlerServices
from evgate.storage.chargers import ChargerStore
from evgate.storage.db import Database
from evgate.storage.id_tags import IdTagStore
from evgate.storage.transactions import TransactionStore
from evgate.storage.writer import Writer
from support import want_events

from .handler_bench import Bench


@pytest.fixture
async def make_bench(database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Build a :class:`Bench` with given HandlerServices options (one per test)."""
    db = Database(database_url, pool_size=4)
    await db.open(migrate=False)
    # Every event subscribed to, so that the tests see each one the handlers emit (the
    # writer keeps only wanted events; no dispatcher runs here).
    await want_events(db)
    writer = Writer(database_url, flush_interval=0.002, retry_max_delay=0.2, stop_timeout=5)
    await writer.start()
    chargers = ChargerStore(db)
    await ChargerRegistry(chargers).create("CP-1")
    id_tags = IdTagStore(db)
    native = NativeAuthorizer(id_tags)
    await native.load()

    def make(**options: Any) -> Bench:
        services = HandlerServices(
            writer=writer,
            transactions=TransactionStore(db),
            authorizer_for=lambda _charger_id: native,
            **options,
        )
        return Bench(db, writer, services, build_routes(services), id_tags, native, chargers)

    try:
        yield make
    finally:
        await writer.stop()
        await db.close()


@pytest.fixture
def bench(make_bench: Callable[..., Bench]) -> Bench:
    """A :class:`Bench` with default options."""
    return make_bench()
