"""storage room: the streams' shared read of the outbox (issue 17) — one read of the outbox
per window for every stream of a process, however many subscriptions it streams.

Each operator's subscription reading the outbox itself from its cursor cost PostgreSQL the
rows once per subscription (20 webhook subscriptions: 20 reads of the same rows every poll).
Rows below the horizon (``pg_snapshot_xmin``) are final: every transaction below it has ended,
so no row can later appear between rows already read, and a read that returned fewer rows
than its limit had every row below the horizon of its time. So :class:`StreamReader` (owned by
the dispatcher) keeps the rows it read as one contiguous range, complete, and makes each
stream's window from it in Python:

* **One read.** A stream that wants rows past the range's end gets them from one read of the
  outbox (after the end, below the horizon, in (xid, id) order, ``rows`` at most), which every
  stream asking meanwhile awaits (single flight); a read that found the end ran less than
  ``fresh`` seconds ago answers "nothing new" from memory, unless :meth:`StreamReader.wake`
  said new events were written since. Every row's payload is read, whichever streams want it:
  the writer keeps only the events some subscription wants (``storage/ops/outbox.py``).
* **Bounded.** Rows every local stream has passed are dropped, and the range never holds more
  than two reads' rows: a stream behind the range (stalled, or started behind) reads its own
  window as before (``StreamCursorStore.read``, one statement); a stream ahead of it (its
  cursor moved by another process) starts the range again at its cursor.
* **The window.** Of the range's rows after the stream's cursor, those its subscription
  wants: the event's name in its ``notifications`` (an operator's subscription:
  ``deliveries.wanted_by`` with ``sub_operator_id`` NULL is exactly that; a subscription that
  is not the operator's any more reads its own window, by that rule in SQL). Its names, and
  whether it has a pending delivery at all, are read after the rows (one statement for every
  streamed subscription), so they are at least as new as the rows (an event committed after a
  widening is read with the widened names). ``queued`` (the event's charger has a pending
  delivery: it goes to that lane, never past it) is asked per window only of a subscription
  that had a pending delivery then, or that made lanes or took its lease since
  (:meth:`StreamReader.laned`: another process may have made lanes while it held the lease).
"""

from __future__ import annotations

import asyncio
import bisect
import time

import msgspec

from evgate.storage.stream_cursors import (
    Position,
    StreamCursorStore,
    StreamedEvent,
    StreamWindow,
)
from evgate.tasks import cancel_and_wait, retrieve, service_task

__all__ = ["StreamReader"]

# The rows after a position below the horizon, with each one's age (the first wanted row's
# is the stream's lag; which row that is depends on the subscription).
_READ = (
    "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon)"
    " SELECT o.xid, o.id, o.charger_id, o.event, o.payload,"
    " extract(epoch FROM now() - o.created_at)::float8 AS age"
    " FROM outbox o, h WHERE (o.xid, o.id) > ($1::xid8, $2::bigint) AND o.xid < h.horizon"
    " ORDER BY o.xid, o.id LIMIT $3"
)
# What the operator's subscriptions want, and which have a pending delivery (a lane) at all.
_SUBSCRIPTIONS = (
    "SELECT s.id, s.notifications, EXISTS (SELECT 1 FROM deliveries d"
    " WHERE d.subscription_id = s.id AND d.state = 'pending') AS lanes"
    " FROM subscriptions s WHERE s.sub_operator_id IS NULL"
)
_QUEUED = (
    "SELECT DISTINCT charger_id FROM deliveries WHERE subscription_id = $1"
    " AND state = 'pending' AND charger_id = ANY($2::text[])"
)

_Key = tuple[int, int]  # a Position as a tuple: (xid, id), ordered


class _Row(msgspec.Struct, frozen=True):
    """An outbox row of the range; ``written``: when its transaction began, on this process's
    ``time.monotonic()`` clock (the read's time less the row's age then)."""

    xid: int
    id: int
    charger_id: str
    event: str
    payload: bytes
    written: float

    def key(self) -> _Key:
        return (self.xid, self.id)


class _Wants(msgspec.Struct, frozen=True):
    """What an operator's subscription wants (its event names), and whether it had a pending
    delivery, when the subscriptions were last read."""

    names: frozenset[str]
    lanes: bool


class StreamReader:
    """The outbox rows the streams of a process read, read once (see the module docstring).
    :meth:`window` per round; :meth:`laned` after an advance that made lanes; :meth:`forget`
    when a stream stops reading (its lease lost or given back); :meth:`wake` after events are
    written; ``await`` :meth:`close` at the end."""

    def __init__(self, cursors: StreamCursorStore, rows: int, fresh: float) -> None:
        """``rows``: what one read takes (a stream's largest window); ``fresh``: how long a
        read that found nothing more answers so (the streams' poll interval)."""
        self.cursors = cursors
        self.db = cursors.db
        self._rows = rows
        self._fresh = fresh
        # The range: every outbox row after ``_start`` up to ``_end`` (both positions), in
        # order (bisected by their keys). None: no range yet.
        self._start: _Key | None = None
        self._end: _Key = (0, 0)
        self._range: list[_Row] = []
        # When (monotonic) the last read that found the end began; wake() makes it stale.
        self._complete_at = -float("inf")
        self._stale = True
        self._reading: asyncio.Task[None] | None = None
        self._epoch = 0  # moved by every restart of the range (a read of the old one is void)
        # The operator's subscriptions as read after the range's last rows, and that read's
        # number; the number of those reads started when each subscription last made lanes.
        self._wants: dict[int, _Wants] = {}
        self._wants_seq = 0
        self._wants_started = 0
        self._laned: dict[int, int] = {}
        # Where each local stream last asked from (rows before all of them are dropped).
        self._at: dict[int, _Key] = {}
        #: Reads of the outbox made, shared or a stream's own (for tests and figures).
        self.reads = 0

    async def window(self, subscription_id: int, after: Position, limit: int) -> StreamWindow:
        """The next ``limit`` outbox rows after ``after`` below the horizon, and of them the
        events the subscription wants (``StreamCursorStore.read``'s answer), from the range
        when it holds them."""
        at = (after.xid, after.id)
        self._at[subscription_id] = at
        if self._reading is not None and (self._start is None or at > self._end):
            await self._extend()  # the read in flight may bring the range up to it
        if self._start is None or at > self._end:
            self._restart(at)  # ahead of the range (or none yet): the range follows it
        got = self._after(at, limit)
        # Fewer than asked: read more, unless the last read found the end (and either gave
        # some of these rows, or ran so recently that nothing new is to be expected).
        if got is not None and len(got) < limit and not self._caught_up(bool(got)):
            await self._extend()
            got = self._after(at, limit)
        if got is None:
            self.reads += 1  # behind the range: its own read, as before it was shared
            return await self.cursors.read(subscription_id, after, limit)
        return await self._window(subscription_id, after, limit, got)

    @property
    def held(self) -> int:
        """How many outbox rows the range holds now (at most two reads')."""
        return len(self._range)

    def laned(self, subscription_id: int) -> None:
        """The subscription's stream made lanes (its advance returned), or took its lease
        (another process may have made some while it held it): its next windows ask which of
        their chargers have one until the subscriptions are read again."""
        self._laned[subscription_id] = self._wants_started

    def forget(self, subscription_id: int) -> None:
        """The subscription's stream reads no more here (for now): its place holds no rows."""
        self._at.pop(subscription_id, None)

    def wake(self) -> None:
        """New events were written: the next stream past the range's end reads again."""
        self._stale = True

    async def close(self) -> None:
        await cancel_and_wait(self._reading)
        self._reading = None

    # The range.

    def _restart(self, at: _Key) -> None:
        self._start = self._end = at
        self._range = []
        self._complete_at = -float("inf")
        self._epoch += 1

    def _after(self, at: _Key, limit: int) -> list[_Row] | None:
        """The range's next ``limit`` rows after ``at``; None: ``at`` is before the range."""
        if self._start is None or at < self._start:
            return None
        first = bisect.bisect_right(self._range, at, key=_Row.key)
        return self._range[first : first + limit]

    def _caught_up(self, some: bool) -> bool:
        """Whether the last read found the end of the outbox below its horizon, and (for a
        stream it leaves with ``some`` rows, or none) is recent enough to be believed: the
        rows it gave are all there were then; none, nothing new since, unless woken."""
        if self._complete_at == -float("inf"):
            return False
        return some or (not self._stale and time.monotonic() - self._complete_at < self._fresh)

    async def _extend(self) -> None:
        """Read past the range's end, or wait for the read in flight (whose result is shared:
        a stream cancelled while it waits does not cancel it)."""
        if self._reading is None:
            self._reading = service_task(self._read(), name="stream-reader")
            self._reading.add_done_callback(retrieve)
        await asyncio.shield(self._reading)

    async def _read(self) -> None:
        try:
            assert self._start is not None
            self._stale = False  # a wake() from now on asks for the next read
            began = time.monotonic()
            end, epoch = self._end, self._epoch
            self.reads += 1
            rows = await self.db.fetch(_READ, end[0], end[1], self._rows)
            read_at = time.monotonic()
            if self._epoch != epoch:
                return  # started again meanwhile: these rows are not after its end
            complete = began if len(rows) < self._rows else -float("inf")
            if not rows:
                self._complete_at = complete
                return
            self._wants_started += 1
            seq = self._wants_started
            subs = await self.db.fetch(_SUBSCRIPTIONS)
            if self._epoch != epoch:
                return
            self._range.extend(
                _Row(int(r["xid"]), r["id"], r["charger_id"], r["event"], r["payload"],
                     read_at - r["age"])
                for r in rows
            )  # fmt: skip
            self._end = self._range[-1].key()
            self._wants = {s["id"]: _Wants(frozenset(s["notifications"]), s["lanes"]) for s in subs}
            self._wants_seq = seq
            self._complete_at = complete
            self._trim()
        except BaseException:
            self._stale = True  # not read: the next stream past the end tries again
            raise
        finally:
            self._reading = None

    def _trim(self) -> None:
        """Drop the rows every local stream in the range has passed, and the oldest beyond two
        reads' (a stream left behind reads its own windows)."""
        assert self._start is not None
        inside = [at for at in self._at.values() if at >= self._start]
        drop = bisect.bisect_right(self._range, min(inside, default=self._end), key=_Row.key)
        drop = max(drop, len(self._range) - 2 * self._rows)
        if drop:
            self._start = self._range[drop - 1].key()
            del self._range[:drop]

    # A stream's window.

    async def _window(
        self, subscription_id: int, after: Position, limit: int, rows: list[_Row]
    ) -> StreamWindow:
        if not rows:
            return StreamWindow([], None, 0)
        wants = self._wants.get(subscription_id)
        if wants is None:
            # Not the operator's (made a tenant's) or made after the read: its own window,
            # by the rule in SQL (deliveries.wanted_by).
            self.reads += 1
            return await self.cursors.read(subscription_id, after, limit)
        names = wants.names
        wanted = [r for r in rows if r.event in names]
        queued: set[str] = set()
        if wanted and (wants.lanes or self._laned.get(subscription_id, -1) >= self._wants_seq):
            chargers = sorted({r.charger_id for r in wanted})
            found = await self.db.fetch(_QUEUED, subscription_id, chargers)
            queued = {r["charger_id"] for r in found}
        events = [
            StreamedEvent(r.id, r.xid, r.charger_id, r.event, r.payload, r.charger_id in queued)
            for r in wanted
        ]
        now = time.monotonic()
        last = rows[-1]
        age = now - wanted[0].written if wanted else None
        return StreamWindow(events, Position(last.xid, last.id), len(rows), age, read_at=now)
