"""The outbox, the dispatcher and the webhook sink against a real HTTP receiver on loopback
and the test's real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from evgate.events import dispatcher as dispatcher_module
from evgate.events.builders import ChargerRef, OutboxEntry, network_status
from evgate.events.catalog import EMITTED
from evgate.events.dispatcher import Dispatcher
from evgate.storage.db import Database
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.stream_cursors import Laned, Position
from evgate.storage.subscriptions import SubscriptionStore
from support import Received, Receiver, Reply, quiet_for, until

from .events_helpers import (
    FAST,
    TOKEN,
    at,
    emit,
    every_event,
    verify_standard_webhook,
    verify_x_signature,
    webhook_subscription,
)


def _numbered(charger: str, n: int) -> list[OutboxEntry]:
    """n events of one charger whose payloads carry their sequence number (as timestamp)."""
    ref = ChargerRef(charger, 1)
    return [network_status(ref, i % 2 == 0, at(i)) for i in range(n)]


def _sequence(received: list[Received]) -> dict[str, list[str]]:
    by_charger: dict[str, list[str]] = defaultdict(list)
    for r in received:
        body = msgspec.json.decode(r.body)
        by_charger[body["networkId"]].append(body["timestamp"])
    return by_charger


async def test_every_event_type_arrives_signed(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """Every emitted event arrives once, byte for byte, with a valid Standard Webhooks
    signature, an X-Signature keyed with the creating token, and X-Timestamp."""
    sub = await webhook_subscription(subscriptions, receiver.url)
    entries = every_event()
    await emit(db, entries)
    dispatchers()
    got = await receiver.wait_for(len(entries))
    await quiet_for(0.2)  # no duplicate
    assert len(receiver.received) == len(entries)
    assert {msgspec.json.decode(r.body)["notification"] for r in got} == EMITTED
    # One lane per charger ('' for idTag.changed): each in emission order.
    for charger in ("CP-1", ""):
        sent = [e.payload for e in entries if e.charger_id == charger]
        assert [r.body for r in got if r.body in sent] == sent
    for r in got:
        assert verify_standard_webhook(sub.webhook_secret, r.headers, r.body)
        assert verify_x_signature(TOKEN, r.headers, r.body)
        assert r.headers["x-timestamp"].endswith("Z")
        assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 60
        assert r.headers["content-type"] == "application/json"
    assert len({r.headers["webhook-id"] for r in got}) == len(entries)

    async def no_backlog() -> bool:
        return await deliveries.backlog() == 0

    await until(no_backlog)  # once the cursor row is saved: within about a second


async def test_only_subscribed_events_are_delivered(
    db: Database,
    subscriptions: SubscriptionStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    await webhook_subscription(subscriptions, receiver.url, ["cdr.received"])
    await emit(db, every_event())
    dispatchers()
    got = await receiver.wait_for(1)
    await quiet_for(0.3)  # no duplicate
    assert [msgspec.json.decode(r.body)["notification"] for r in got] == ["cdr.received"]


async def test_a_receiver_down_for_a_while_gets_everything_in_order(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """Connections refused, then the receiver comes back: every event of every charger
    arrives, in order per charger, after retries recorded in the attempt history."""
    receiver = Receiver()
    await receiver.start()
    await receiver.stop()  # the port is known, nothing listens
    sub = await webhook_subscription(subscriptions, receiver.url)
    for i in range(5):
        await emit(db, _numbered(f"CP-{i}", 20))
    dispatchers()

    async def failed_attempts() -> bool:
        query = "SELECT count(*) FROM delivery_attempts WHERE NOT ok AND subscription_id = $1"
        return await db.fetchval(query, sub.id) >= 5

    await until(failed_attempts)
    await receiver.start()
    try:
        got = await receiver.wait_for(100)
        await quiet_for(0.3)  # no duplicate
    finally:
        await receiver.stop()
    assert len(got) == 100
    for charger, stamps in _sequence(got).items():
        assert stamps == sorted(stamps) and len(stamps) == 20, charger
    assert await deliveries.backlog() == 0


async def test_two_dispatchers_deliver_each_event_once_and_in_order(
    db: Database,
    database_url: str,
    subscriptions: SubscriptionStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """Two processes' dispatchers on one database: no event twice, none lost, per-charger
    order kept (lanes are claimed with SKIP LOCKED)."""
    await webhook_subscription(subscriptions, receiver.url)
    other_db = Database(database_url, pool_size=5)
    await other_db.open(migrate=False)
    try:
        dispatchers()
        dispatchers(on=other_db)
        for _ in range(4):
            for i in range(6):
                await emit(db, _numbered(f"CP-{i}", 10))
        got = await receiver.wait_for(240)
        await quiet_for(0.5)  # no duplicate
    finally:
        await other_db.close()
    assert len(receiver.received) == 240
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 240
    for stamps in _sequence(got).values():
        # Each charger's 4 rounds of 10: every round in order, rounds one after the other.
        assert stamps == sorted(stamps[:10]) * 4


async def test_a_stalled_receiver_does_not_delay_another_subscription(
    db: Database,
    subscriptions: SubscriptionStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """A receiver that never answers holds only its own subscription's lanes."""
    stalled = Receiver(lambda _: Reply(delay=30))
    await stalled.start()
    try:
        await webhook_subscription(subscriptions, stalled.url)
        await webhook_subscription(subscriptions, receiver.url)
        dispatchers()
        started = time.monotonic()
        for i in range(20):
            await emit(db, _numbered(f"CP-{i}", 3))
        await receiver.wait_for(60, within=10)
        assert time.monotonic() - started < 5
        assert stalled.requests  # it was tried, and timed out meanwhile
    finally:
        await stalled.stop()


async def test_410_disables_the_subscription_and_a_put_then_resend_recovers(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """410: disabled, pending deliveries failed (listed); re-enabled and resent, they arrive."""
    gone = True
    receiver = Receiver(lambda _: Reply(status=410 if gone else 204))
    await receiver.start()
    try:
        sub = await webhook_subscription(subscriptions, receiver.url)
        await emit(db, _numbered("CP-1", 5))
        dispatchers()

        async def disabled() -> Any:
            row = await subscriptions.get_subscription(sub.id)
            return None if row.enabled else row

        row = await until(disabled)
        assert not row.enabled and "410" in (row.disabled_reason or "")
        failed = await deliveries.failed_deliveries(sub.id)
        assert len(failed) == 5 and all(f.state == "failed" for f in failed)
        gone = False
        await subscriptions.replace_subscription(
            sub.id, via="webhook", notifications=sub.notifications, callback_url=receiver.url,
            kafka=None, kafka_password=None, keep_password=True,
        )  # fmt: skip
        assert await deliveries.resend(sub.id, None, None, None) == 5
        got = await receiver.wait_for(5)
        assert sorted(msgspec.json.decode(r.body)["timestamp"] for r in got) == [
            msgspec.json.decode(r.body)["timestamp"] for r in got
        ]
    finally:
        await receiver.stop()


async def test_429_retry_after_is_respected(
    db: Database, subscriptions: SubscriptionStore, dispatchers: Callable[..., Dispatcher]
) -> None:
    """A 429 with Retry-After: 2 delays the next attempt by at least that (the schedule's
    own first delay is 0.2 s)."""
    answers = iter([Reply(429, {"retry-after": "2"})])
    receiver = Receiver(lambda _: next(answers, Reply(200)))
    await receiver.start()
    try:
        await webhook_subscription(subscriptions, receiver.url)
        await emit(db, _numbered("CP-1", 1))
        dispatchers()
        await receiver.wait_for(1)
    finally:
        await receiver.stop()
    first, second = receiver.requests[0].at, receiver.requests[1].at
    assert second - first >= 1.9
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]


async def test_redirects_are_not_followed_and_retries_end_in_failed(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """A 3xx is a failed attempt (the Location gets nothing); after the schedule's last retry
    the delivery is 'failed' with the receiver's answer as its error, and the lane goes on."""
    redirector = Receiver(lambda _: Reply(307, {"location": receiver.url}))
    await redirector.start()
    try:
        sub = await webhook_subscription(subscriptions, redirector.url)
        await emit(db, _numbered("CP-1", 2))
        dispatchers()

        async def both_failed() -> Any:
            failed = await deliveries.failed_deliveries(sub.id)
            return failed if len(failed) == 2 else None

        failed = await until(both_failed, within=15)
    finally:
        await redirector.stop()
    assert len(failed) == 2 and not receiver.requests
    assert all("307" in (f.last_error or "") and f.attempts == len(FAST.retry_schedule) + 1
               for f in failed)  # fmt: skip


async def test_a_rolled_back_event_is_never_delivered_and_a_late_commit_is_not_skipped(
    db: Database,
    subscriptions: SubscriptionStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """The outbox is transactional: an event whose transaction rolls back does not exist; an
    event whose transaction began first but commits after later ones is not jumped over —
    the later ones wait for it (no event is read while an older transaction is open)."""
    await webhook_subscription(subscriptions, receiver.url)
    dispatchers()
    late = await db.pool.acquire()
    try:
        late_tx = late.transaction()
        await late_tx.start()
        await late.execute(
            "INSERT INTO outbox (event, charger_id, payload) VALUES ($1, $2, $3)",
            *_numbered("CP-LATE", 1)[0],
        )
        async with db.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await conn.execute(
                "INSERT INTO outbox (event, charger_id, payload) VALUES ($1, $2, $3)",
                *_numbered("CP-GONE", 1)[0],
            )
            await tx.rollback()
        await emit(db, _numbered("CP-EARLY", 3))
        await quiet_for(0.5)  # nothing is sent while an earlier outbox row is uncommitted
        assert not receiver.requests
        await late_tx.commit()
    finally:
        await db.pool.release(late)
    got = await receiver.wait_for(4)
    await quiet_for(0.3)  # no duplicate
    chargers = [msgspec.json.decode(r.body)["networkId"] for r in got]
    assert sorted(chargers) == ["CP-EARLY"] * 3 + ["CP-LATE"]


async def test_delivered_events_are_pruned_after_the_retention(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """Delivered events older than the retention go; failed ones stay (they can be resent)."""
    sub = await webhook_subscription(subscriptions, receiver.url)
    await emit(db, _numbered("CP-1", 3))
    dispatchers()
    await receiver.wait_for(3)
    await until(lambda: _all_recorded(db))  # a delivered row is deleted after the 2xx
    await db.execute("UPDATE deliveries SET state = 'failed'")  # none: all were delivered
    await emit(db, _numbered("CP-2", 1))
    await receiver.wait_for(4)
    await until(lambda: _all_recorded(db))
    last = await db.fetchval("SELECT max(id) FROM outbox")
    await until(lambda: _passed(db, last))  # the prune keeps what the cursor row has not passed
    await db.execute(
        "INSERT INTO deliveries (subscription_id, outbox_id, charger_id, event, state)"
        " SELECT $1, id, charger_id, event, 'failed' FROM outbox WHERE charger_id = 'CP-2'",
        sub.id,
    )
    await db.execute("UPDATE outbox SET created_at = now() - interval '2 days'")
    assert await deliveries.prune(86400) == 3
    assert await db.fetchval("SELECT count(*) FROM outbox") == 1


async def _all_recorded(db: Database) -> bool:
    """Whether every delivery is done with (a delivered one's row is deleted)."""
    return await db.fetchval("SELECT count(*) FROM deliveries") == 0


async def test_without_subscriptions_a_stream_of_events_is_polled_at_the_idle_pace(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    dispatchers: Callable[..., Dispatcher],
    receiver: Receiver,
) -> None:
    """With no subscription, events written all the time go to no one: the dispatcher fans
    them out at its idle pace, not every poll interval; a subscription made meanwhile gets
    the events written after it."""
    polls = 0
    fan_out = deliveries.fan_out

    async def counted(limit: int) -> int | None:
        nonlocal polls
        polls += 1
        return await fan_out(limit)

    deliveries.fan_out = counted  # type: ignore[method-assign]
    dispatcher = dispatchers(dataclasses.replace(FAST, poll_interval=0.02, idle_poll_interval=1.0))
    loop = asyncio.get_running_loop()
    began = loop.time()
    while loop.time() - began < 3.0:
        await emit(db, [network_status(ChargerRef("CP-1", 1), True, at(0))])
        await asyncio.sleep(0.02)
    # The idle pace: waits doubling from 0.02 s up to 1 s, about ten polls in 3 s; the busy
    # pace would be one every 0.02 s.
    assert polls < 30, polls
    await webhook_subscription(subscriptions, receiver.url)
    dispatcher.wake()
    await emit(db, [network_status(ChargerRef("CP-2", 2), True, at(1))])
    await until(lambda: any(b'"CP-2"' in r.body for r in receiver.received))


# The operator's webhook subscription is streamed from a cursor (issue 17): no deliveries row
# per event while its receiver takes them; an event not delivered goes to its charger's lane.


async def _count_delivery_rows(db: Database) -> None:
    """Record every ``deliveries`` row ever inserted (a trigger: a row inserted and deleted
    by the lane path in between two looks would otherwise not be seen)."""
    await db.execute(
        "CREATE TABLE inserted_deliveries (subscription_id bigint, outbox_id bigint,"
        " charger_id text);"
        "CREATE FUNCTION record_delivery() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " INSERT INTO inserted_deliveries VALUES (NEW.subscription_id, NEW.outbox_id,"
        " NEW.charger_id); RETURN NEW; END $$;"
        "CREATE TRIGGER recorded AFTER INSERT ON deliveries FOR EACH ROW"
        " EXECUTE FUNCTION record_delivery()"
    )


async def _inserted(db: Database) -> list[tuple[int, str]]:
    rows = await db.fetch("SELECT outbox_id, charger_id FROM inserted_deliveries ORDER BY 1")
    return [(r["outbox_id"], r["charger_id"]) for r in rows]


async def test_a_healthy_receiver_gets_every_event_in_order_without_a_delivery_row(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """The operator's webhook subscription costs PostgreSQL no row per event: its stream
    sends each charger's events in order, several chargers at once, and moves its cursor past
    them; no deliveries row is ever written, and its counts say nothing is waiting."""
    await _count_delivery_rows(db)
    sub = await webhook_subscription(subscriptions, receiver.url)
    dispatchers(dataclasses.replace(FAST, kafka_batch=30))  # several windows
    for i in range(6):
        await emit(db, _numbered(f"CP-{i}", 20))
    got = await receiver.wait_for(120)
    await quiet_for(0.3)  # no duplicate
    assert len(receiver.received) == 120
    assert len({r.headers["webhook-id"] for r in got}) == 120
    for charger, stamps in _sequence(got).items():
        assert stamps == sorted(stamps) and len(stamps) == 20, charger
    assert await _inserted(db) == []
    assert not await db.fetchval("SELECT count(*) FROM delivery_attempts")
    last = await db.fetchval("SELECT max(id) FROM outbox")
    await until(lambda: _passed(db, last))
    counts = await deliveries.counts(sub.id)
    assert (counts.waiting, counts.failed) == (0, 0)


async def test_several_webhook_streams_of_a_process_share_each_read_of_the_outbox(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """Five operator webhook subscriptions streamed by one process: each receiver gets every
    event, each charger's in order, and the outbox's rows are read once per window for the
    five streams (issue 17), not once per stream; while nothing is new, the streams' polls
    cost a read per poll interval between them, not one each."""
    receivers = [Receiver() for _ in range(5)]
    reads = {"all": 0, "rows": 0}
    fetch = db.fetch

    async def counted(sql: str, *args: Any) -> Any:
        rows = await fetch(sql, *args)
        if "o.xid < h.horizon" in sql:  # a stream's read of outbox rows
            reads["all"] += 1
            reads["rows"] += bool(rows)
        return rows

    db.fetch = counted  # type: ignore[method-assign]
    try:
        for r in receivers:
            await r.start()
            await webhook_subscription(subscriptions, r.url)
        await emit(db, [e for i in range(6) for e in _numbered(f"CP-{i}", 25)])
        dispatchers(
            dataclasses.replace(FAST, kafka_batch=30, poll_interval=0.05, idle_poll_interval=0.05)
        )
        for r in receivers:
            got = await r.wait_for(150)
            for charger, stamps in _sequence(got).items():
                assert stamps == sorted(stamps) and len(stamps) == 25, charger
        # Five windows of 30 rows (and a read of the rest of one, as windows fall), and on a
        # loaded machine a few of a stream's own (one that fell behind the range, or ran ahead
        # and restarted it): not 25, one per stream per window.
        assert reads["rows"] <= 12, reads
        reads["all"] = 0
        await asyncio.sleep(1.0)
    finally:
        for r in receivers:
            await r.stop()
    # Nothing new: at most one read per poll interval (20 in a second), not one per stream's
    # poll (100).
    assert reads["all"] <= 30, reads
    assert all(len(r.received) == 150 for r in receivers)  # no duplicate


async def _passed(db: Database, outbox_id: int) -> bool:
    return bool(await db.fetchval("SELECT after_id >= $1 FROM stream_cursors", outbox_id))


async def test_a_failed_event_goes_to_its_lane_with_its_chargers_later_events(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """CP-1's third event is answered 503 with Retry-After: 2. It goes to CP-1's lane with
    that attempt (status, error, next attempt no sooner than the Retry-After), in the
    statement that moves the cursor past the window; CP-1's later events (of that window and
    those written while the lane waits) go behind it; the lane delivers them all in order once
    the receiver takes them. CP-2's events flow on meanwhile, with no delivery row."""
    refused: list[str] = []

    def reply(r: Received) -> Reply:
        body = msgspec.json.decode(r.body)
        if (
            body["networkId"] == "CP-1"
            and body["timestamp"] == at(2).isoformat().replace("+00:00", "Z")
            and not refused
        ):
            refused.append(r.headers["webhook-id"])
            return Reply(503, {"retry-after": "2"}, body=b"busy")
        return Reply(204, body=b"")

    receiver = Receiver(reply)
    await receiver.start()
    try:
        await _count_delivery_rows(db)
        sub = await webhook_subscription(subscriptions, receiver.url)
        dispatchers()
        await emit(db, _numbered("CP-1", 5) + _numbered("CP-2", 5))
        await until(lambda: bool(refused))
        failed_id = int(refused[0].removeprefix("evt_"))
        # While CP-1's lane waits out the Retry-After, more events of both chargers.
        await emit(db, [network_status(ChargerRef(c, 1), True, at(10)) for c in ("CP-1", "CP-2")])
        got = await receiver.wait_for(12, within=30)
        await quiet_for(0.3)  # no duplicate
    finally:
        await receiver.stop()
    assert len(receiver.received) == 12
    sequence = _sequence(got)
    assert sequence["CP-1"] == sorted(sequence["CP-1"]) and len(sequence["CP-1"]) == 6
    assert sequence["CP-2"] == sorted(sequence["CP-2"]) and len(sequence["CP-2"]) == 6
    # The failed event and every later one of CP-1 went through the lane; CP-2 never did.
    cp1 = [r["id"] for r in await db.fetch("SELECT id FROM outbox WHERE charger_id = 'CP-1'")]
    laned = await _inserted(db)
    assert laned == [(i, "CP-1") for i in sorted(cp1) if i >= failed_id]
    attempts = await db.fetch(
        "SELECT attempt, ok, status_code, error FROM delivery_attempts"
        " WHERE subscription_id = $1 AND outbox_id = $2 ORDER BY attempt",
        sub.id,
        failed_id,
    )
    assert [(a["attempt"], a["ok"], a["status_code"]) for a in attempts] == [
        (1, False, 503),
        (2, True, 204),
    ]
    assert "busy" in attempts[0]["error"]
    first, second = (
        next(r.at for r in receiver.requests if r.headers["webhook-id"] == refused[0]),
        [r.at for r in receiver.requests if r.headers["webhook-id"] == refused[0]][1],
    )
    assert second - first >= 1.9  # the receiver's Retry-After, honoured
    assert await db.fetchval("SELECT count(*) FROM deliveries") == 0
    counts = await deliveries.counts(sub.id)
    assert (counts.waiting, counts.failed) == (0, 0)


async def test_a_dispatcher_stopped_mid_window_is_followed_by_one_that_resends_from_the_cursor(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """A dispatcher stopped while its stream's window is half delivered gives the stream back
    with the cursor before the window: the next one sends it again from there (at least once,
    the same ``webhook-id``), skipping nothing, each charger in order."""
    slow = True
    receiver = Receiver(lambda _: Reply(204, delay=0.2 if slow else 0.0, body=b""))
    await receiver.start()
    try:
        await webhook_subscription(subscriptions, receiver.url)
        await emit(db, _numbered("CP-1", 20) + _numbered("CP-2", 20))
        first = dispatchers()
        await receiver.wait_for(6, within=30)
        await first.stop()
        before = len(receiver.requests)
        assert await db.fetchval("SELECT after_id FROM stream_cursors") == 0  # not passed
        slow = False
        dispatchers()
        ids = {f"evt_{r['id']}" for r in await db.fetch("SELECT id FROM outbox")}
        await until(lambda: {r.headers["webhook-id"] for r in receiver.received} >= ids)
        await until(lambda: _passed(db, 40))
        after = receiver.requests[before:]
    finally:
        await receiver.stop()
    outbox = {
        f"evt_{r['id']}": r["payload"] for r in await db.fetch("SELECT id, payload FROM outbox")
    }
    for r in receiver.requests:  # none invented, each under its own id
        assert r.body == outbox[r.headers["webhook-id"]]
    assert len(after) == 40  # the whole window again, from the cursor
    for charger, stamps in _sequence(after).items():
        assert stamps == sorted(stamps) and len(stamps) == 20, charger


def _count_saves(dispatcher: Dispatcher) -> list[int]:
    """The outbox ids its streams save their cursors at (``StreamCursorStore.advance``), as
    they are saved; call before its streams start."""
    saves: list[int] = []
    advance = dispatcher.cursors.advance

    async def counted(
        subscription_id: int, holder: str, to: Position, laned: list[Laned], seconds: float
    ) -> bool:
        saves.append(to.id)
        return await advance(subscription_id, holder, to, laned, seconds)

    dispatcher.cursors.advance = counted  # type: ignore[method-assign]
    return saves


async def test_a_streams_rounds_without_lanes_save_its_cursor_about_once_a_second(
    db: Database,
    subscriptions: SubscriptionStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """Issue 17: a stream's rounds that make no lane move its position in memory and save it
    in the cursor row about once a second, not once a round (an UPDATE committed per stream
    per round). 60 events, each in a round of its own: a few saves, not 60; every event
    arrives once, in order; gone quiet, the row has the last one within about a second."""
    await webhook_subscription(subscriptions, receiver.url)
    # A 30 s lease, renewed every 7.5 s: the saves are the bound's.
    dispatcher = dispatchers(dataclasses.replace(FAST, delivery_timeout=10.0))
    saves = _count_saves(dispatcher)
    entries = _numbered("CP-1", 60)
    began = time.monotonic()
    for i, entry in enumerate(entries):
        await emit(db, [entry])
        dispatcher.wake()
        await receiver.wait_for(i + 1)
    elapsed, rounds_saved = time.monotonic() - began, len(saves)
    last = await db.fetchval("SELECT max(id) FROM outbox")
    await until(lambda: _passed(db, last), within=3 * dispatcher_module._SAVE_WITHIN)
    await quiet_for(0.3)  # no duplicate
    assert rounds_saved <= 2 + elapsed / dispatcher_module._SAVE_WITHIN, (saves, elapsed)
    assert rounds_saved < len(entries) / 4, (saves, elapsed)
    assert saves == sorted(saves)
    assert len(receiver.received) == len(entries)
    stamps = _sequence(receiver.received)["CP-1"]
    assert stamps == sorted(stamps) and len(stamps) == len(entries)


async def test_a_stopped_stream_saves_its_position_and_the_next_process_sends_nothing_again(
    db: Database,
    subscriptions: SubscriptionStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream stopped with a position it has not saved (its rounds made no lane, within
    the bound) saves it before giving its lease back: the cursor row is at the last event
    delivered, and the next dispatcher sends only the events after it."""
    monkeypatch.setattr(dispatcher_module, "_SAVE_WITHIN", 3600.0)  # no save by the bound
    config = dataclasses.replace(FAST, delivery_timeout=3600.0)  # nor by the lease's renewal
    sub = await webhook_subscription(subscriptions, receiver.url)
    first = dispatchers(config)
    await emit(db, _numbered("CP-1", 10))
    await receiver.wait_for(10)
    last = await db.fetchval("SELECT max(id) FROM outbox")
    stream, _ = first._streams[sub.id]
    await until(lambda: stream.position is not None and stream.position.id == last)
    assert await db.fetchval("SELECT after_id FROM stream_cursors") == 0  # not saved yet
    await first.stop()
    assert await db.fetchval("SELECT after_id FROM stream_cursors") == last
    dispatchers(config)
    await emit(db, [network_status(ChargerRef("CP-1", 1), True, at(10))])
    await receiver.wait_for(11)
    await quiet_for(0.3)  # no duplicate
    ids = [f"evt_{r['id']}" for r in await db.fetch("SELECT id FROM outbox ORDER BY xid, id")]
    assert [r.headers["webhook-id"] for r in receiver.received] == ids


async def test_the_leases_renewal_saves_the_position_rather_than_read_the_older_one_back(
    db: Database,
    subscriptions: SubscriptionStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream holding a position it has not saved renews its lease (every quarter of it at
    the latest, skipped saves or not) by saving that position: the lease does not run out,
    and the cursor row's older position is not read back (its events were sent again)."""
    monkeypatch.setattr(dispatcher_module, "_SAVE_WITHIN", 3600.0)  # no save by the bound
    sub = await webhook_subscription(subscriptions, receiver.url)
    dispatchers()  # a webhook stream's lease: 3 s (FAST), renewed after 0.75 s
    await emit(db, _numbered("CP-1", 10))
    await receiver.wait_for(10)
    last = await db.fetchval("SELECT max(id) FROM outbox")

    async def renewed() -> bool:
        return bool(
            await db.fetchval(
                "SELECT after_id = $2 AND leased_until > now() + interval '2 s'"
                " FROM stream_cursors WHERE subscription_id = $1",
                sub.id,
                last,
            )
        )

    await until(renewed, within=5)
    await quiet_for(0.3)  # no duplicate
    assert len(receiver.received) == 10


async def test_a_round_that_makes_a_lane_moves_the_cursor_with_it_at_once(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the bound, a round that puts an event in its charger's lane (CP-2's, answered
    503) saves at once, in one statement: the lane and the cursor row past the window appear
    together, and the row never passes an event that is neither delivered nor in a lane."""
    monkeypatch.setattr(dispatcher_module, "_SAVE_WITHIN", 3600.0)
    receiver = Receiver(lambda r: Reply(503 if b"CP-2" in r.body else 204, body=b""))
    await receiver.start()
    try:
        await webhook_subscription(subscriptions, receiver.url)
        dispatchers(dataclasses.replace(FAST, delivery_timeout=3600.0))
        cp1, cp2 = ChargerRef("CP-1", 1), ChargerRef("CP-2", 1)
        await emit(
            db,
            [network_status(cp1, i % 2 == 0, at(i)) for i in range(3)]
            + [network_status(cp2, True, at(3))]
            + [network_status(cp1, i % 2 == 0, at(i)) for i in range(4, 6)],
        )
        last = await db.fetchval("SELECT max(id) FROM outbox")

        async def laned() -> Any:
            # One statement, one snapshot: what it sees of the lane and of the cursor.
            row = await db.fetchrow(
                "SELECT (SELECT after_id FROM stream_cursors) AS after_id,"
                " (SELECT array_agg(charger_id) FROM deliveries) AS laned"
            )
            return row if row is not None and row["laned"] else None

        row = await until(laned, within=10)
    finally:
        await receiver.stop()
    assert (row["after_id"], row["laned"]) == (last, ["CP-2"])


def _short_rounds(subscriptions: SubscriptionStore, deliveries: DeliveryStore) -> Dispatcher:
    """A dispatcher whose streams' rounds last 0.6 s (half a 1.2 s lease), two connections a
    subscription."""
    dispatcher = Dispatcher(
        subscriptions, deliveries, dataclasses.replace(FAST, lanes_per_subscription=2)
    )
    dispatcher._lease = lambda: 1.2  # type: ignore[method-assign]
    return dispatcher


async def test_a_receiver_slower_than_a_round_still_gets_every_event_from_the_first(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
) -> None:
    """A round sends until half its lease is spent; the cursor stops before the first event
    not sent. Ten chargers, one event each, a receiver taking 0.3 s an event, two
    connections, a 0.6 s round: each round sends about four. The window's first chargers go
    first (they went last, and a round out of time never passed the first event: the same
    events were sent again and again), every event arrives with the cursor past them, and a
    round out of time halves the next window."""
    receiver = Receiver(lambda _: Reply(204, delay=0.3, body=b""))
    await receiver.start()
    dispatcher = _short_rounds(subscriptions, deliveries)
    try:
        await webhook_subscription(subscriptions, receiver.url)
        dispatcher.start()
        await emit(db, [network_status(ChargerRef(f"CP-{i}", 1), True, at(i)) for i in range(10)])

        windows: set[int] = set()  # the stream's window sizes seen

        def chargers() -> set[str]:
            windows.update(stream.batch for stream, _ in dispatcher._streams.values())
            return {msgspec.json.decode(r.body)["networkId"] for r in receiver.received}

        await until(lambda: len(chargers()) == 10, within=30, message=chargers)
        # A round out of time halves the window (the receiver takes less within a round).
        assert min(windows) < FAST.kafka_batch, windows
        last = await db.fetchval("SELECT max(id) FROM outbox")
        await until(
            lambda: db.fetchval("SELECT after_id >= $1 FROM stream_cursors", last), within=30
        )
    finally:
        await dispatcher.stop()
        await receiver.stop()
    assert await db.fetchval("SELECT count(*) FROM deliveries") == 0


async def test_a_retry_after_is_kept_when_the_round_ran_out_of_time_before_it(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
) -> None:
    """CP-0's five slow events come first in the window; CP-1's one event after them is
    answered 503 with Retry-After: 5 at once. The round runs out of time in CP-0's chain, so
    the cursor stops before CP-1's event: its failed attempt still goes to CP-1's lane (it
    was dropped, and the event was sent again at once), and it is not tried again before
    the receiver's 5 s."""
    tried: list[float] = []

    def reply(r: Received) -> Reply:
        if msgspec.json.decode(r.body)["networkId"] == "CP-1":
            tried.append(r.at)
            if len(tried) == 1:
                return Reply(503, {"retry-after": "5"}, body=b"busy")
            return Reply(204, body=b"")
        return Reply(204, delay=0.3, body=b"")

    receiver = Receiver(reply)
    await receiver.start()
    dispatcher = _short_rounds(subscriptions, deliveries)
    try:
        await webhook_subscription(subscriptions, receiver.url)
        dispatcher.start()
        entries = [network_status(ChargerRef("CP-0", 1), i % 2 == 0, at(i)) for i in range(5)]
        await emit(db, [*entries, network_status(ChargerRef("CP-1", 1), True, at(9))])
        await until(lambda: len(tried) >= 2, within=30)
    finally:
        await dispatcher.stop()
        await receiver.stop()
    assert tried[1] - tried[0] >= 4.5, tried


async def test_after_a_410_a_streams_round_posts_nothing_more_to_that_receiver(
    db: Database,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
) -> None:
    """A receiver that answered 410 Gone gets no more POSTs of the round's other chargers
    (they went on to the end of the window before): the subscription is disabled and every
    event of the window is listed failed, none of them sent."""
    receiver = Receiver(lambda _: Reply(410, body=b""))
    await receiver.start()
    dispatcher = Dispatcher(
        subscriptions, deliveries, dataclasses.replace(FAST, lanes_per_subscription=1)
    )
    try:
        sub = await webhook_subscription(subscriptions, receiver.url)
        await emit(db, [network_status(ChargerRef(f"CP-{i}", 1), True, at(i)) for i in range(10)])
        dispatcher.start()

        async def all_failed() -> bool:
            return len(await deliveries.failed_deliveries(sub.id)) == 10

        await until(all_failed, within=30)
        await quiet_for(0.3)
    finally:
        await dispatcher.stop()
        await receiver.stop()
    assert len(receiver.requests) == 1
    row = await subscriptions.get_subscription(sub.id)
    assert not row.enabled and "410" in (row.disabled_reason or "")


async def test_a_stream_taken_over_keeps_the_chargers_lane_made_by_the_process_before(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """Another process streamed S: CP-1's first event failed and went to CP-1's lane, its
    cursor moved past CP-2's first, then it died. This process, whose shared read already
    holds the rows after that cursor (read for its own stream of O, before the lane was
    made), takes S over: CP-1's next event goes to CP-1's lane behind the failed one, never
    to the receiver ahead of it; CP-2's is delivered."""
    ours, theirs = Receiver(), Receiver()
    await ours.start()
    await theirs.start()
    try:
        o = await webhook_subscription(subscriptions, ours.url)
        s = await webhook_subscription(subscriptions, theirs.url)
        # Both cursors from the start; S's leased by the other process.
        await db.execute(
            "INSERT INTO stream_cursors (subscription_id, after_xid, after_id, holder,"
            " leased_until) VALUES ($1, '0', 0, NULL, NULL),"
            " ($2, '0', 0, 'the-other-process', now() + interval '1 hour')",
            o.id,
            s.id,
        )
        cp1, cp2 = ChargerRef("CP-1", 1), ChargerRef("CP-2", 1)
        await emit(
            db,
            [
                network_status(cp1, True, at(0)),
                network_status(cp2, True, at(1)),
                network_status(cp1, False, at(2)),
                network_status(cp2, False, at(3)),
            ],
        )
        rows = await db.fetch("SELECT xid, id, event FROM outbox ORDER BY xid, id")
        assert len(rows) == 4
        dispatchers()
        await ours.wait_for(4)  # this process's shared read holds the four rows
        # The other process: CP-1's first event in its lane (due in an hour), the cursor past
        # CP-2's first; then it died (its lease ran out).
        async with db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO deliveries (subscription_id, outbox_id, charger_id, event,"
                " attempts, next_attempt_at, last_error)"
                " VALUES ($1, $2, 'CP-1', $3, 1, now() + interval '1 hour', 'HTTP 503')",
                s.id,
                rows[0]["id"],
                rows[0]["event"],
            )
            await conn.execute(
                "INSERT INTO delivery_lanes (subscription_id, charger_id, next_attempt_at)"
                " VALUES ($1, 'CP-1', now() + interval '1 hour')",
                s.id,
            )
            await conn.execute(
                "UPDATE stream_cursors SET after_xid = $2, after_id = $3,"
                " leased_until = now() - interval '1 second' WHERE subscription_id = $1",
                s.id,
                int(rows[1]["xid"]),
                rows[1]["id"],
            )
        got = await theirs.wait_for(1)

        async def passed() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT after_id >= $2 FROM stream_cursors WHERE subscription_id = $1",
                    s.id,
                    rows[3]["id"],
                )
            )

        await until(passed)
        await quiet_for(0.3)
    finally:
        await ours.stop()
        await theirs.stop()
    # CP-2's second event only: CP-1's waits in its lane behind the failed one.
    assert [msgspec.json.decode(r.body)["networkId"] for r in got] == ["CP-2"]
    laned = await db.fetch(
        "SELECT outbox_id FROM deliveries WHERE subscription_id = $1 AND state = 'pending'"
        " ORDER BY outbox_id",
        s.id,
    )
    assert [r["outbox_id"] for r in laned] == [rows[0]["id"], rows[2]["id"]]
