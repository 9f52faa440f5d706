"""When a stream saves its cursor row (``events/dispatcher.py``, ``_SAVE_WITHIN``): a round that
stops short at its first event saves what earlier rounds moved in memory before its pause, a
producer that keeps failing is retried at the probe's pace, and a stream restarted in the same
process keeps the lease its predecessor's give-back could have released. The Kafka producer is
a stand-in here (what it answers is the point); the brokers' own tests are in
``test_kafka_cursor.py`` and ``test_kafka_outage.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import KafkaError

from evgate.events import dispatcher as dispatcher_module
from evgate.events.builders import ChargerRef, network_status
from evgate.events.dispatcher import Dispatcher
from evgate.events.sinks import Produced
from evgate.storage.db import Database
from evgate.storage.subscriptions import SubscriptionStore
from support import Receiver, until

from .events_helpers import FAST, at, emit, kafka_settings, kafka_subscription
from .test_webhook_delivery import _numbered, webhook_subscription

Produce = Callable[[list[Any]], Awaitable[Produced]]


async def kafka_stream_that_fails_after_one_window(
    db: Database,
    subscriptions: SubscriptionStore,
    dispatchers: Callable[..., Dispatcher],
    failure: Exception,
    brokers_available: bool,
) -> tuple[Dispatcher, dict[str, int]]:
    """A Kafka stream whose producer acknowledges the first window (events 1-4, a round that
    makes no lane: its position is only in memory) and then answers ``failure`` for every
    record of the next one (events 5-8), after that round started; returns the dispatcher and
    the count of produce calls."""
    await kafka_subscription(subscriptions, kafka_settings("127.0.0.1:1", "t"))
    calls = {"produce": 0}

    async def produce(row: Any, send: list[Any], keys: Any, name: str) -> Produced:
        await asyncio.sleep(0.001)
        calls["produce"] += 1
        if calls["produce"] > 1:
            return Produced([failure] * len(send), 1.0)
        return Produced([None] * len(send), 1.0)

    charger = ChargerRef("CP-1", 1)
    await emit(db, [network_status(charger, i % 2 == 0, at(i)) for i in range(4)])
    dispatcher = dispatchers(FAST)
    dispatcher._kafka.prepare = lambda row: None  # type: ignore[method-assign]
    dispatcher._kafka.produce = produce  # type: ignore[method-assign]
    dispatcher._kafka.brokers = lambda row: SimpleNamespace(  # type: ignore[method-assign]
        available=brokers_available or calls["produce"] <= 1
    )
    await until(lambda: calls["produce"] >= 1)
    await emit(db, [network_status(charger, i % 2 == 0, at(i)) for i in range(4, 8)])
    dispatcher.wake()
    await until(lambda: calls["produce"] >= 2)
    return dispatcher, calls


async def test_a_round_that_stops_at_its_first_event_saves_the_position_before_its_pause(
    db: Database, subscriptions: SubscriptionStore, dispatchers: Callable[..., Dispatcher]
) -> None:
    """The brokers go away after acknowledging events 1-4 (their round saved nothing: no
    lane, within the bound): the round that stops at event 5 saves the row at 4 before it
    waits for their return, not a quarter of the lease later."""
    await kafka_stream_that_fails_after_one_window(
        db, subscriptions, dispatchers, ConnectionError("brokers away"), brokers_available=False
    )

    async def saved() -> bool:
        return bool(await db.fetchval("SELECT after_id = 4 FROM stream_cursors"))

    await until(saved, within=3 * dispatcher_module._SAVE_WITHIN)


async def test_a_failing_producer_is_retried_at_the_probes_pace_with_a_position_unsaved(
    db: Database, subscriptions: SubscriptionStore, dispatchers: Callable[..., Dispatcher]
) -> None:
    """A failure of the producer itself (neither an outage nor a refusal: its credentials) is
    retried every ``kafka_probe_interval``, whatever position the stream holds unsaved: the
    pause is never cut to a save that is already due (that was a retry at once, ~1,700 in
    3 s)."""
    _, calls = await kafka_stream_that_fails_after_one_window(
        db,
        subscriptions,
        dispatchers,
        KafkaError("SASL authentication failed"),
        brokers_available=True,
    )
    await asyncio.sleep(3.0)
    assert calls["produce"] <= 4, calls  # probes 5 s apart (FAST): two at most in 3 s


async def test_a_stream_restarted_in_its_process_keeps_its_lease(
    db: Database,
    subscriptions: SubscriptionStore,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """A subscription changed (a PUT) while its stream idles: the old stream ends and gives
    its lease back, slowly (a busy pool), while the refresh closes the old sink, slowly too.
    No second stream of the subscription starts while the first is still giving its lease
    back (same holder: the give-back would release the new stream's lease, and another
    process could then stream it beside this one)."""
    sub = await webhook_subscription(subscriptions, receiver.url)
    dispatcher = dispatchers(FAST)
    await emit(db, _numbered("CP-1", 3))
    await receiver.wait_for(3)
    first = dispatcher._streams[sub.id][0]
    released = asyncio.Event()
    release = dispatcher.cursors.release

    async def slow_release(*args: Any) -> None:
        await asyncio.sleep(1.0)
        await release(*args)
        released.set()

    async def slow_close(subscription: Any) -> None:
        await asyncio.sleep(0.7)
        await Dispatcher._close_sink(subscription)

    dispatcher.cursors.release = slow_release  # type: ignore[method-assign]
    dispatcher._close_sink = slow_close  # type: ignore[method-assign]
    await subscriptions.replace_subscription(
        sub.id, via="webhook", notifications=sub.notifications, callback_url=receiver.url,
        kafka=None, kafka_password=None, keep_password=True,
    )  # fmt: skip
    dispatcher.wake()
    await until(released.is_set, within=10)
    now = dispatcher._streams.get(sub.id, (None,))[0]
    holder = await db.fetchval("SELECT holder FROM stream_cursors")
    restarted = now is not None and now is not first
    # A stream that believes it holds the lease holds it in the row.
    assert not (restarted and now.position is not None and holder != dispatcher._holder)
    # And the subscription is streamed again once the first stream is gone.
    await emit(db, _numbered("CP-1", 4)[3:])
    await receiver.wait_for(4)
