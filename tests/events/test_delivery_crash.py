"""A real ``evgate serve`` killed (SIGKILL) while its dispatcher has webhook events in flight
(the operator's subscription: a stream from its cursor), then started again on the same
database: every event arrives at least once, in order per charger, and nothing arrives that
was not in the outbox."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import msgspec

from evgate.events.builders import ChargerRef, OutboxEntry, network_status
from evgate.storage.db import Database
from evgate.storage.subscriptions import SubscriptionStore
from support import Received, Receiver, Reply, serving, until

from .events_helpers import at, emit, webhook_subscription

CHARGERS = 12
PER_CHARGER = 40
TOTAL = CHARGERS * PER_CHARGER


def _evgate(database_url: str, folder: Path) -> AbstractAsyncContextManager[subprocess.Popen[str]]:
    """``evgate serve`` on the test's database, as a process of its own (killed as a crash
    would be, or at the end); small lane batches, so that a batch is cut short by the kill."""
    return serving(
        database_url, folder, notification_lane_batch=5, notification_delivery_timeout=60,
        notification_retry_schedule="1s 1s 1s", notification_poll_interval=0.02,
    )  # fmt: skip


def _events() -> list[OutboxEntry]:
    """PER_CHARGER events of each charger, interleaved; each payload's timestamp numbers it."""
    refs = [ChargerRef(f"CP-{c}", c + 1) for c in range(CHARGERS)]
    return [
        network_status(refs[c], i % 2 == 0, at(i))
        for i in range(PER_CHARGER)
        for c in range(CHARGERS)
    ]


def _in_order_per_charger(requests: Sequence[Received]) -> None:
    by_charger: dict[str, list[str]] = defaultdict(list)
    for r in requests:
        body = msgspec.json.decode(r.body)
        by_charger[body["networkId"]].append(body["timestamp"])
    for charger, stamps in by_charger.items():
        assert stamps == sorted(stamps), f"{charger} out of order: {stamps}"


async def test_evgate_killed_mid_batch_delivers_every_event_in_order_after_restart(
    db: Database, database_url: str, subscriptions: SubscriptionStore, tmp_path: Path
) -> None:
    stalled = False
    receiver = Receiver(lambda _: Reply(204, delay=3600 if stalled else 0.0, body=b""))
    await receiver.start()
    try:
        await webhook_subscription(subscriptions, receiver.url)
        await emit(db, _events())
        outbox = {r["id"]: r["payload"] for r in await db.fetch("SELECT id, payload FROM outbox")}
        assert len(outbox) == TOTAL
        async with _evgate(database_url, tmp_path / "first") as first:
            await receiver.wait_for(TOTAL // 3, within=60)
            # From now on the receiver takes the requests and does not answer: every lane in
            # flight holds a batch partly delivered, its outcome not yet written.
            stalled = True
            await until(lambda: len(receiver.requests) > len(receiver.received), within=30)
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 10)
        before = list(receiver.requests)
        # The operator's webhook subscription is streamed: the dead process still holds its
        # cursor's lease, and the cursor has not passed the window it was sending.
        held = await db.fetchrow(
            "SELECT leased_until > now() AS leased, after_id < (SELECT max(id) FROM outbox)"
            " AS behind FROM stream_cursors"
        )
        assert held is not None and held["leased"] and held["behind"], held
        # What the lease's expiry does after a minute or two: the stream is free again.
        await db.execute("UPDATE stream_cursors SET leased_until = now() - interval '1 s'")
        stalled = False
        async with _evgate(database_url, tmp_path / "second"):

            async def all_delivered() -> bool:
                return await db.fetchval("SELECT count(*) FROM deliveries") == 0 and {
                    r.headers["webhook-id"] for r in receiver.received
                } >= {f"evt_{i}" for i in outbox}

            await until(all_delivered, within=120)
        after = receiver.requests[len(before) :]
    finally:
        await receiver.stop()
    # None invented: every request carries an outbox event, byte for byte, under its id.
    for r in receiver.requests:
        assert r.body == outbox[int(r.headers["webhook-id"].removeprefix("evt_"))]
    # In order per charger from each process (the second one resends from the first event
    # whose delivery was not recorded: at least once, never backwards within a process).
    _in_order_per_charger(before)
    _in_order_per_charger(after)
    assert after, "the restarted evgate delivered nothing"
