"""The dispatcher's own bookkeeping (fan-out, claims, outcomes) commits without waiting for its
WAL flush, so that it adds no fsync to the group-commit writer's queue (issue 17), and the
setting never reaches anyone else's transaction on the shared pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from evgate.events.dispatcher import Dispatcher
from evgate.storage.db import Database, Pool
from evgate.storage.deliveries import (
    ClaimedLane,
    DeliveryStore,
    LaneOutcome,
    LaneWant,
)
from evgate.storage.subscriptions import SubscriptionStore
from support import Received, Receiver, Reply, quiet_for

from .events_helpers import emit, every_event, make_tenants, webhook_subscription

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
    dispatchers: Callable[..., Dispatcher],
) -> None:
    await db.execute(_PROBE)
    # Each event's first attempt fails: the operator's stream puts it in its charger's lane
    # (INSERT), which is claimed (UPDATE) and released once delivered (DELETE).
    tried: set[str] = set()

    def reply(r: Received) -> Reply:
        first = r.headers["webhook-id"] not in tried
        tried.add(r.headers["webhook-id"])
        return Reply(500 if first else 204, body=b"")

    receiver = Receiver(reply)
    await receiver.start()
    try:
        sub = await webhook_subscription(subscriptions, receiver.url)
        events = every_event()
        await emit(db, events)
        dispatcher = dispatchers()
        await receiver.wait_for(len(events))
    finally:
        await receiver.stop()
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


_SHOW = "SHOW synchronous_commit"


class _OneConnection(Database):
    """The test's database through a pool of one connection, which records the statements
    sent on it and, when it is given back, its ``synchronous_commit`` before the pool's reset
    (whose RESET ALL would hide a setting left on the session)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, pool_size=1)
        self.sent: list[str] = []
        self.at_release: list[str] = []
        self.raw: asyncpg.Pool | None = None
        self.releases: set[str] = {_SHOW}  # the statements of a release

    async def start(self) -> None:
        async def reset(conn: asyncpg.Connection) -> None:
            self.at_release.append(await conn.fetchval(_SHOW))
            await conn.reset()

        self.raw = await asyncpg.create_pool(self.dsn, min_size=1, max_size=1, reset=reset)
        async with self.raw.acquire() as conn:
            conn.add_query_logger(lambda q: self.sent.append(q.query))
            self.releases.add(conn.get_reset_query())
        await asyncio.sleep(0)  # the logger's own records (the reset) arrive
        self.sent.clear()
        self.at_release.clear()

    @property
    def pool(self) -> Pool:
        assert self.raw is not None
        return Pool(self.raw)

    async def taken(self) -> tuple[list[str], list[str]]:
        """The statements sent and the settings seen at release since the last call, the
        pool's reset left out."""
        await asyncio.sleep(0)  # the query logger's records (call_soon) arrive
        sent = [q for q in self.sent if q not in self.releases]
        taken = (sent, self.at_release[:])
        self.sent.clear()
        self.at_release.clear()
        return taken


async def _deliver(store: DeliveryStore, sub_id: int, lane: ClaimedLane | None = None) -> None:
    """Record the outcome of the lane (claimed now if not given): all its deliveries sent."""
    if lane is None:
        [lane] = await store.claim([LaneWant(sub_id, 10)], 10, 30.0)
    delivered = [d.outbox_id for d in lane.deliveries]
    await store.finish([LaneOutcome(sub_id, lane.charger_id, lane.version, delivered, [])], 30.0)


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[_OneConnection]:
    db = _OneConnection(database_url)
    await db.start()
    yield db
    assert db.raw is not None
    await db.raw.close()


async def test_a_claim_is_one_statement_and_no_unit_sends_a_setting_of_its_own(
    db: Database,
    one_connection: _OneConnection,
    subscriptions: SubscriptionStore,
    receiver: Receiver,
) -> None:
    """Issue 17/23 (CPU per CALL): the claim, the dispatcher's most frequent statement, is one
    round trip (its own implicit transaction), not BEGIN, SET LOCAL, the claim and COMMIT; the
    fan-out and the outcome sets carry the setting in their first statement. The setting
    ends with each transaction: the connection is given back with ``synchronous_commit`` on."""
    await db.execute(_PROBE)
    sub = await webhook_subscription(subscriptions, receiver.url)
    await make_tenants(db, sub, ["CP-1"])  # a tenant's: the fan-out gives it deliveries
    store = DeliveryStore(one_connection)
    # A first round: asyncpg prepares each statement (and looks its array types up) once per
    # connection; what is counted is every later one.
    first, second = every_event()[:2]
    await emit(db, [first])
    await store.fan_out(100)
    await _deliver(store, sub.id)
    await one_connection.taken()
    await db.execute("TRUNCATE commit_probe")
    await emit(db, [second])

    assert await store.fan_out(100) == 1
    sent, at_release = await one_connection.taken()
    assert [q.split()[0] for q in sent] == [
        "BEGIN;",
        "SELECT",
        "SELECT",
        "WITH",
        "UPDATE",
        "COMMIT;",
    ]
    assert at_release == ["on"]

    [lane] = await store.claim([LaneWant(sub.id, 10)], 10, 30.0)
    sent, at_release = await one_connection.taken()
    assert len(sent) == 1 and sent[0].startswith("WITH want AS")
    assert at_release == ["on"]

    await _deliver(store, sub.id, lane)
    sent, at_release = await one_connection.taken()
    assert [q.split()[0] for q in sent] == ["BEGIN;", "SELECT", "DELETE", "WITH", "COMMIT;"]
    assert at_release == ["on"]

    # Each of them committed with the setting: the fan-out added the lane (INSERT ... ON
    # CONFLICT: both triggers), the claim leased it (UPDATE), the outcome set removed it.
    seen = await db.fetch("SELECT op, sync FROM commit_probe")
    assert {r["op"] for r in seen} == {"INSERT", "UPDATE", "DELETE"}
    assert {r["sync"] for r in seen} == {"off"}
