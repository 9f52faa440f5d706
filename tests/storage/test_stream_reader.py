"""The streams' shared read of the outbox (storage/stream_reader.py, issue 17): the streams of
a process read each window of the outbox once between them, and each still gets exactly what
its own read gave: every wanted row after its cursor below the horizon, in (xid, id) order,
``queued`` for the chargers with a pending delivery; a stream far behind the others gets all
of it too; a row of an old transaction that commits late is not jumped over."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from evgate.storage.db import Database
from evgate.storage.stream_cursors import Position, StreamCursorStore, StreamWindow
from evgate.storage.stream_reader import StreamReader

_FRESH = 0.2  # seconds a read that found the end answers "nothing new"


async def _subscription(db: Database, names: list[str]) -> int:
    sub_id: int = await db.fetchval(
        "INSERT INTO subscriptions (via, notifications, callback_url, webhook_secret)"
        " VALUES ('webhook', $1, 'http://127.0.0.1:9/hook', $2) RETURNING id",
        names,
        b"s" * 32,
    )
    return sub_id


async def _write(db: Database, rows: list[tuple[str, str]]) -> list[int]:
    """Append outbox rows (event, charger) in one transaction; returns their ids."""
    async with db.pool.acquire() as conn, conn.transaction():
        return [
            await conn.fetchval(
                "INSERT INTO outbox (event, charger_id, payload) VALUES ($1, $2, '{}')"
                " RETURNING id",
                event,
                charger,
            )
            for event, charger in rows
        ]


class _Counted:
    """The database, counting the statements that read the outbox's rows."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)

    async def fetch(self, sql: str, *args: Any) -> Any:
        if "FROM outbox o" in sql:
            self.reads += 1
        return await self.db.fetch(sql, *args)


@pytest.fixture
def counted(db: Database) -> _Counted:
    return _Counted(db)


@pytest.fixture
def reader(counted: _Counted) -> Iterator[StreamReader]:
    # Reads of 50 rows: the range holds 100 at most.
    yield StreamReader(StreamCursorStore(counted), 50, _FRESH)  # type: ignore[arg-type]


async def _all(reader: StreamReader, sub_id: int, limit: int = 50) -> list[StreamWindow]:
    """A stream's windows from the start until nothing is new."""
    windows, after = [], Position(0, 0)
    while (window := await reader.window(sub_id, after, limit)).end is not None:
        windows.append(window)
        after = window.end
    return windows


def _ids(windows: list[StreamWindow]) -> list[int]:
    return [e.outbox_id for w in windows for e in w.events]


async def test_several_streams_read_each_window_of_the_outbox_once(
    db: Database, counted: _Counted, reader: StreamReader
) -> None:
    """Five streams side by side, each wanting some of the events: one read per window for all
    of them, and each gets exactly its wanted rows in order, the unwanted ones passed."""
    names = ["a", "b", "c"]
    subs = [await _subscription(db, [names[i % 3]]) for i in range(5)]
    ids = await _write(db, [(names[i % 3], f"CP-{i % 7}") for i in range(200)])
    windows = await asyncio.gather(*(_all(reader, s) for s in subs))
    for i, got in enumerate(windows):
        want = [oid for n, oid in enumerate(ids) if names[n % 3] == names[i % 3]]
        assert _ids(got) == want
        assert sum(w.rows for w in got) == 200  # every row passed, wanted or not
        assert all(w.age is not None and w.age >= 0 for w in got)
    # Four windows of 50, and the read that found the end: not five streams' each.
    assert counted.reads <= 5


async def test_a_stream_that_finds_nothing_new_is_answered_from_memory_until_woken(
    db: Database, counted: _Counted, reader: StreamReader
) -> None:
    """A stream at the end asking again within ``fresh`` gets "nothing new" without a read,
    whichever stream asks; after wake() (events written), the next one reads and gets them."""
    subs = [await _subscription(db, ["a"]) for _ in range(3)]
    await _write(db, [("a", "CP-1")])
    ends = [(await _all(reader, s))[-1].end for s in subs]
    assert counted.reads == 1  # fewer rows than asked: the end, for every stream
    (late,) = await _write(db, [("a", "CP-1")])
    for sub_id, end in zip(subs, ends, strict=True):
        assert end is not None
        assert (await reader.window(sub_id, end, 50)).end is None
    assert counted.reads == 1
    reader.wake()
    for sub_id, end in zip(subs, ends, strict=True):
        assert end is not None
        assert [e.outbox_id for e in (await reader.window(sub_id, end, 50)).events] == [late]
    assert counted.reads == 2


async def test_a_stream_far_behind_the_others_still_gets_everything_in_order(
    db: Database, counted: _Counted, reader: StreamReader
) -> None:
    """The range keeps two reads' rows at most: a stream that starts when the others are far
    ahead reads its own windows until it reaches the range, and skips nothing."""
    ahead, behind = await _subscription(db, ["a"]), await _subscription(db, ["a"])
    ids = await _write(db, [("a", f"CP-{i % 5}") for i in range(400)])
    windows = await _all(reader, ahead)
    assert _ids(windows) == ids
    assert reader.held <= 100  # bounded, however far behind a stream is
    reads = counted.reads
    assert _ids(await _all(reader, behind)) == ids
    assert counted.reads - reads >= 6  # its own reads: the range did not hold its rows
    # Caught up, it shares the reads again.
    reader.wake()
    more = await _write(db, [("a", "CP-1") for _ in range(30)])
    reads = counted.reads
    end = windows[-1].end
    assert end is not None
    ends = await asyncio.gather(*(reader.window(s, end, 50) for s in (ahead, behind)))
    assert [[e.outbox_id for e in w.events] for w in ends] == [more, more]
    assert counted.reads - reads == 1


async def test_queued_says_which_chargers_have_a_pending_delivery(
    db: Database, reader: StreamReader
) -> None:
    """An event of a charger with a pending delivery of the subscription is ``queued`` (it
    goes to that lane), whether the lane was there when the rows were read or was made by
    the stream after (``laned``) from rows already in memory; another charger's is not."""
    sub_id = await _subscription(db, ["a"])
    other = await _subscription(db, ["a"])
    ids = await _write(db, [("a", "CP-1"), ("a", "CP-2"), ("a", "CP-1"), ("a", "CP-2")])

    async def lane(charger: str, outbox_id: int) -> None:
        await db.execute(
            "INSERT INTO deliveries (subscription_id, outbox_id, charger_id, event, state)"
            " VALUES ($1, $2, $3, 'a', 'pending')",
            sub_id,
            outbox_id,
            charger,
        )

    # Read with no lane anywhere; then the stream makes CP-1's lane (its advance).
    first = await reader.window(sub_id, Position(0, 0), 2)
    assert [e.queued for e in first.events] == [False, False]
    await lane("CP-1", ids[0])
    reader.laned(sub_id)
    assert first.end is not None
    rest = await reader.window(sub_id, first.end, 2)
    assert [(e.charger_id, e.queued) for e in rest.events] == [("CP-1", True), ("CP-2", False)]
    # The other subscription's events are not held by this one's lane.
    assert not any(e.queued for e in (await reader.window(other, Position(0, 0), 4)).events)
    # A lane there when the rows are read.
    reader.wake()
    more = await _write(db, [("a", "CP-1")])
    assert rest.end is not None
    (late,) = (await reader.window(sub_id, rest.end, 2)).events
    assert (late.outbox_id, late.queued) == (more[0], True)


async def test_a_row_of_an_old_transaction_committed_late_is_not_jumped_over(
    db: Database, counted: _Counted, reader: StreamReader
) -> None:
    """A transaction that took its xid first and commits after later ones: nothing after it
    is read while it is open, and its row comes first once it commits, for every stream,
    from one read."""
    subs = [await _subscription(db, ["a"]) for _ in range(2)]
    late = await db.pool.acquire()
    try:
        tx = late.transaction()
        await tx.start()
        old = await late.fetchval(
            "INSERT INTO outbox (event, charger_id, payload) VALUES ('a', 'CP-L', '{}')"
            " RETURNING id"
        )
        later = await _write(db, [("a", "CP-1"), ("a", "CP-2")])
        for sub_id in subs:
            assert (await reader.window(sub_id, Position(0, 0), 50)).end is None
        await tx.commit()
    finally:
        await db.pool.release(late)
    reader.wake()
    reads = counted.reads
    for sub_id in subs:
        assert _ids(await _all(reader, sub_id)) == [old, *later]
    assert counted.reads - reads == 1
