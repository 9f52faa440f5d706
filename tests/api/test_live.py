"""The live feed: a publish never waits for a reader, a slow reader loses what does not fit and
is told to resync, streams are bounded in number, and closing ends every stream; the fleet's
counts are read at most once a second."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from evgate.api import services
from evgate.api.live import (
    ConnectionChange,
    LiveFeed,
    Resync,
    StatusChange,
    StreamEnded,
    StreamsFull,
)
from evgate.api.services import COUNTS_MAX_AGE, FleetService
from evgate.gateway.interface import MOVED, REPLACED, ConnectionInfo
from evgate.metrics import Registry
from evgate.storage.chargers import FleetCounts

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _status(n: int) -> StatusChange:
    return StatusChange(
        charger_id=f"CP-{n}", connector_id=1, status="Faulted", error_code="NoError", status_at=AT
    )


async def test_a_slow_reader_loses_what_does_not_fit_and_is_told_to_resync() -> None:
    metrics = Registry()
    feed = LiveFeed(queue_size=3, metrics=metrics)
    with feed.stream() as slow, feed.stream() as other:
        for n in range(5):
            feed.publish(_status(n))  # synchronous: never waits for a reader
        got = [await slow.next(1) for _ in range(4)]
        assert got == [_status(0), _status(1), _status(2), Resync()]
        assert feed.m_lost.value() == 4  # changes 3 and 4, for each stream
        # After the resync the stream carries changes again.
        feed.publish(_status(9))
        assert await slow.next(1) == _status(9)
        assert await other.next(1) == _status(0)
    assert feed.open_streams == 0


async def test_streams_are_bounded_and_end_when_the_feed_closes() -> None:
    feed = LiveFeed(queue_size=2, max_streams=2)
    with feed.stream() as first, feed.stream():
        with pytest.raises(StreamsFull), feed.stream():
            pass
        feed.publish(_status(1))
        feed.publish(_status(2))
        feed.publish(_status(3))  # full: the end must still get through
        feed.close()
        with pytest.raises(StreamEnded):
            await first.next(1)
        with pytest.raises(StreamEnded):
            await first.next(1)
    with feed.stream() as late, pytest.raises(StreamEnded):
        await late.next(1)


async def test_quiet_stream_times_out_with_none() -> None:
    feed = LiveFeed()
    with feed.stream() as stream:
        assert await stream.next(0.01) is None


async def test_a_connection_taken_over_is_no_disconnect() -> None:
    feed = LiveFeed()
    info = ConnectionInfo(
        charger_id="CP-1", connected_at=AT, remote_address="127.0.0.1:5", security_profile=1
    )
    with feed.stream() as stream:
        feed.charger_connected(info)
        feed.charger_disconnected(info, 1000, REPLACED)
        feed.charger_disconnected(info, 1000, MOVED)
        feed.charger_disconnected(info, 1006, "")
        first = await stream.next(1)
        second = await stream.next(1)
        assert isinstance(first, ConnectionChange) and first.network_status == "available"
        assert isinstance(second, ConnectionChange)
        assert second.network_status == "temporarily unavailable"
        assert await stream.next(0.01) is None


async def test_fleet_counts_are_read_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However many browsers ask, the counts' query runs once per COUNTS_MAX_AGE, as of when
    the read started."""
    now = [100.0]
    monkeypatch.setattr(services.time, "monotonic", lambda: now[0])
    reads: list[float] = []

    async def read() -> FleetCounts:
        reads.append(now[0])
        now[0] += 0.5  # the read takes half a second
        return FleetCounts(chargers=len(reads), network={}, connectors={})

    fleet = FleetService(feed=LiveFeed(), recent_messages=lambda _: None, connected=lambda: 0)
    assert (await fleet.counts(read)).chargers == 1
    now[0] = 100.0 + COUNTS_MAX_AGE  # one second after the read started
    assert (await fleet.counts(read)).chargers == 1
    now[0] += 0.01
    assert (await fleet.counts(read)).chargers == 2
    assert reads == [100.0, 101.01]
