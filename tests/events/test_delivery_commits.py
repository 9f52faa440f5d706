"""The dispatcher's own bookkeeping (fan-out, claims, outcomes) commits without waiting for its
WAL flush, so that it adds no fsync to the group-commit writer's queue (issue 17), and the
setting never reaches anyone else's transaction on the shared pool."""

from __future__ import annotations

from collections.abc import Callable

from evgate.events.dispatcher import Dispatcher
from evgate.storage.db import Database
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.subscriptions import SubscriptionStore
from support import Receiver, quiet_for

from .events_helpers import emit, every_event, webhook_subscription

# A statement trigger on the dispatcher's lanes writes down, for every statement that
# touches them (the fan-out adds lanes, a claim leases them, an outcome releases them), the
# synchronous_commit of the transaction it ran in.
_PROBE = """
CREATE TABLE commit_probe (op text NOT NULL, sync text NOT NULL);
CREATE FUNCTION commit_probe() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO commit_probe VALUES (TG_OP, current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
CREATE TRIGGER commit_probe AFTER INSERT OR UPDATE OR DELETE ON delivery_lanes
    FOR EACH STATEMENT EXECUTE FUNCTION commit_probe();
"""


async def test_bookkeeping_commits_without_a_wal_flush_and_the_pool_stays_durable(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    await db.execute(_PROBE)
    sub = await webhook_subscription(subscriptions, receiver.url)
    events = every_event()
    await emit(db, events)
    dispatcher = dispatchers()
    await receiver.wait_for(len(events))
    await quiet_for(0.3)  # the last outcome written
    assert await deliveries.backlog() == 0
    seen = await db.fetch("SELECT op, sync FROM commit_probe")
    assert {r["op"] for r in seen} >= {"INSERT", "UPDATE", "DELETE"}
    assert {r["sync"] for r in seen} == {"off"}
    # SET LOCAL: a resend (an API request's change, acknowledged to the operator) and every
    # other user of the pool's connections commit durably.
    await dispatcher.stop()
    await db.execute("TRUNCATE commit_probe")
    await db.execute(
        "INSERT INTO deliveries (subscription_id, outbox_id, charger_id, event, state)"
        " SELECT $1, id, charger_id, event, 'failed' FROM outbox LIMIT 1",
        sub.id,
    )
    assert await deliveries.resend(sub.id, None, None, None) == 1
    assert {r["sync"] for r in await db.fetch("SELECT sync FROM commit_probe")} == {"on"}
    held = [await db.pool.acquire() for _ in range(db.pool_size)]  # every one of the pool's
    try:
        for conn in held:
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        for conn in held:
            await db.pool.release(conn)
