"""A sub-operator's webhook connects to no private address, whatever its name resolves to
(issue 20): the API refuses literal private hosts (tests/api/test_tenant_targets.py); a name
is only known to be private once resolved, just before the dispatcher connects. Here the name
is ``localhost`` with a real receiver behind it, on the loopback address it resolves to (the
subscription is made in the store, past the API's check, as a name resolving there would be).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from evgate.events.builders import circuit_changed
from evgate.events.dispatcher import Dispatcher
from evgate.storage.db import Database, acting_for
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.outbox import About, insert_outbox
from evgate.storage.subscriptions import SubscriptionStore
from support import Receiver, until

from .events_helpers import AT, FAST, webhook_subscription


async def _tenants_delivery(db: Database, subscriptions: SubscriptionStore, url: str) -> int:
    """A sub-operator, its subscription to ``url`` and one event of its; the subscription."""
    sub_operator = await db.fetchval("INSERT INTO sub_operators (name) VALUES ('A') RETURNING id")
    with acting_for(sub_operator):
        row = await webhook_subscription(subscriptions, url, ["circuit.changed"])
    assert row.sub_operator_id == sub_operator
    async with db.pool.acquire() as conn, conn.transaction():
        await insert_outbox(
            conn, [circuit_changed(99, "updated", AT)], About("sub_operators", sub_operator)
        )
    return row.id


@pytest.mark.parametrize("allowed", [False, True])
async def test_a_tenants_webhook_reaches_no_private_address_unless_allowed(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    dispatchers: Callable[..., Dispatcher],
    receiver: Receiver,
    allowed: bool,
) -> None:
    url = receiver.url.replace("127.0.0.1", "localhost")
    subscription = await _tenants_delivery(db, subscriptions, url)
    dispatchers(dataclasses.replace(FAST, tenant_private_targets=allowed))
    if allowed:
        assert len(await receiver.wait_for(1)) == 1
        return

    async def failed() -> bool:
        return bool(await deliveries.failed_deliveries(subscription))

    await until(failed)
    (delivery,) = await deliveries.failed_deliveries(subscription)
    assert delivery.last_error is not None
    assert "refused: a loopback, private" in delivery.last_error, delivery
    assert receiver.requests == []  # no connection reached it


async def test_the_operators_webhook_reaches_a_private_address(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    receiver: Receiver,
) -> None:
    await webhook_subscription(
        subscriptions,
        receiver.url.replace("127.0.0.1", "localhost"),
        ["circuit.changed"],
    )
    async with db.pool.acquire() as conn, conn.transaction():
        await insert_outbox(conn, [circuit_changed(99, "updated", AT)])
    dispatchers()
    assert len(await receiver.wait_for(1)) == 1
