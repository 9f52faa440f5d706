"""storage room: the outbox rows a charger's message writes, and EMIT — the op that writes
state and its events in one transaction, in submission order.

Handlers give their state writes to :func:`emit` (``HandlerServices.emit``) with the outbox
rows that describe them (:func:`append`), or with a pure function that builds those rows from
the state writes' :class:`~evgate.storage.ops.base.Results`; never an outbox write beside an
Emission (see :class:`Emit` for why). Changes made outside the writer append their events on
their own connection (``storage/outbox.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg

from evgate.storage.ops.base import (
    CopyRows,
    Results,
    Write,
    WriteOp,
    before_commit,
    bytea_literal,
    text_literal,
    write_grouped,
)

__all__ = [
    "EMIT",
    "OUTBOX",
    "OUTBOX_COLUMNS",
    "WANTED_LOCK",
    "Emission",
    "WantedEvents",
    "append",
    "emit",
    "filter_by",
    "left_out",
    "read_wanted",
    "still_wanted_sql",
]

OUTBOX_COLUMNS = ("event", "charger_id", "payload")

# Up to this many rows a batch's outbox rows ride in its COMMIT's round trip as one literal
# INSERT; more (a storm's batches) are COPYed, which PostgreSQL parses and Python encodes
# for less per row.
_TAIL_ROWS = 64

_INSERT = f"INSERT INTO outbox ({', '.join(OUTBOX_COLUMNS)}) VALUES "


class WantedEvents(NamedTuple):
    """The events some enabled subscription names, as the subscriptions were at
    ``generation`` (migration 0027: every change to what they want moves it)."""

    generation: int
    events: frozenset[str]


# Both read in one statement, so the names are those of that generation.
_READ_WANTED = (
    "SELECT w.generation, ARRAY(SELECT DISTINCT unnest(s.notifications) FROM subscriptions s"
    " WHERE s.enabled) FROM outbox_wanted w"
)

#: Taken (shared, to the transaction's end) before a batch that left events out reads the
#: generation: a change that makes more events wanted takes it exclusively (migration 0027).
WANTED_LOCK = "SELECT pg_advisory_xact_lock_shared(1702258548, 26)"


async def read_wanted(conn: asyncpg.Connection) -> WantedEvents:
    """The events wanted now, with their generation."""
    row = await conn.fetchrow(_READ_WANTED)
    assert row is not None  # migration 0027 made the row; nothing deletes it
    return WantedEvents(row[0], frozenset(row[1]))


def still_wanted_sql(wanted: WantedEvents) -> str:
    """An SQL condition: the subscriptions are still at ``wanted``'s generation. Rows filtered
    by ``wanted`` lose no event a subscription is owed if it holds in a statement of their
    transaction run after :data:`WANTED_LOCK` (under READ COMMITTED: its snapshot is then
    taken after the lock, and the lock holds back, to the transaction's end, any change that
    would make more events wanted)."""
    return f"(SELECT generation FROM outbox_wanted) = {int(wanted.generation)}"


@dataclass
class _Filter:
    wanted: WantedEvents
    left_out: bool = False  # a row of the batch was not written


# Per connection in a writer batch: the wanted events the batch filters its rows by.
_FILTERS: weakref.WeakKeyDictionary[asyncpg.Connection, _Filter] = weakref.WeakKeyDictionary()


def filter_by(conn: asyncpg.Connection, wanted: WantedEvents | None) -> None:
    """The writer's batch on ``conn`` keeps only the outbox rows of ``wanted``'s events (from
    now until the next call; None: every row). If it leaves one out (:func:`left_out`), the
    writer commits it only where :func:`still_wanted_sql` holds."""
    if wanted is None:
        _FILTERS.pop(conn, None)
    else:
        _FILTERS[conn] = _Filter(wanted)


def left_out(conn: asyncpg.Connection) -> bool:
    """Whether the writer's batch on ``conn`` left an outbox row out (since :func:`filter_by`)."""
    found = _FILTERS.get(conn)
    return found is not None and found.left_out


class OutboxRows(CopyRows):
    """Appends a batch's outbox rows, in submission order: in the COMMIT's round trip
    (``before_commit``) for the few rows of a batch at a fleet's pace, by COPY for many.

    In a writer batch only the rows of events some enabled subscription names are written
    (:func:`filter_by`; the others would be written, indexed, fanned out to no one and pruned:
    ~40 % of the WAL of a fleet's batches, and the parse of their payloads). Any subscription
    counts (a tenant's too: the fan-out sorts out whose the event is). Outside a writer batch
    every row is written, as the API's events (``storage/outbox.py``) and ops that insert
    events themselves; the fan-out skips those nobody wants.
    """

    async def write(
        self, conn: asyncpg.Connection, items: list[Sequence[tuple[Any, ...]]]
    ) -> list[None]:
        records = [row for item in items for row in item]
        batch = _FILTERS.get(conn)
        if batch is not None:
            kept = [row for row in records if row[0] in batch.wanted.events]
            batch.left_out |= len(kept) < len(records)
            records = kept
        if len(records) > _TAIL_ROWS:
            await super().write(conn, [records])
        elif records:
            values = ",".join(
                f"({text_literal(event)},{text_literal(charger_id)},{bytea_literal(payload)})"
                for event, charger_id, payload in records
            )
            await before_commit(conn, _INSERT + values)
        return [None] * len(items)


#: Item: outbox rows (``events.builders.OutboxEntry``, a typed row in OUTBOX_COLUMNS order).
OUTBOX = OutboxRows("outbox", OUTBOX_COLUMNS)


def append(entries: Iterable[tuple[str, str, bytes]]) -> list[Write[None]]:
    """The follow-up writes that append these outbox rows ``(event, charger_id, payload)``
    (an ``OutboxEntry`` is one): none for none."""
    rows = list(entries)
    return [OUTBOX(rows)] if rows else []


class Emission(NamedTuple):
    """One submission's state writes and the writes that follow from them (its outbox rows,
    a CDR), for :data:`EMIT`.

    Attributes:
        writes: the state changes, writes of any writer ops but EMIT.
        then: the follow-up writes (:func:`append` among them): given, or a pure function of
            the ``writes``' results called inside the transaction — again if the writer retries
            it — so that events say what the state writes actually did (a resent message
            finds its row there and makes no event).
    """

    writes: Sequence[Write[Any]]
    then: Sequence[Write[Any]] | Callable[[Results], Sequence[Write[Any]]] = ()


class Emit(WriteOp[Emission, Results]):
    """The writer op of every state change that has events: the batch's state writes first,
    then every follow-up write, the outbox rows in one COPY in submission order.

    Why one op: the writer merges each op across the submissions of a batch and runs the ops
    in the order they first appear in it, so outbox rows written by several ops (or by OUTBOX
    beside other ops) could land in an order other than the submissions'. A charger's events
    must keep its order, and two submissions of one charger can share a batch (the
    connection observer's and a handler's); inside EMIT they cannot be reordered. The result
    of an Emission is the :class:`Results` of its ``writes``.
    """

    name = "emit"

    def __init__(self) -> None:
        # Per connection: the inner ops of the last write, told when its transaction commits
        # (the meter op then keeps the series it numbered; see WriteOp.committed).
        self._ran: weakref.WeakKeyDictionary[asyncpg.Connection, list[WriteOp[Any, Any]]] = (
            weakref.WeakKeyDictionary()
        )

    def weight(self, item: Emission) -> int:
        then = item.then
        follow_ups = 1 if callable(then) else sum(op.weight(i) for op, i in then)
        return sum(op.weight(i) for op, i in item.writes) + follow_ups

    async def write(self, conn: asyncpg.Connection, items: list[Emission]) -> list[Results]:
        self._ran.pop(conn, None)
        grouped, state_ops = await write_grouped(conn, [item.writes for item in items])
        results = [
            Results(item.writes, result) for item, result in zip(items, grouped, strict=True)
        ]
        follow_ups = [
            item.then(result) if callable(item.then) else item.then
            for item, result in zip(items, results, strict=True)
        ]
        _, follow_up_ops = await write_grouped(conn, follow_ups)
        self._ran[conn] = [*state_ops, *follow_up_ops]
        return results

    def committed(self, conn: asyncpg.Connection) -> None:
        """Tell the inner ops of the last write on ``conn`` that it committed."""
        for op in self._ran.pop(conn, ()):
            op.committed(conn)


EMIT = Emit()


def emit(
    writes: Sequence[Write[Any]],
    then: Sequence[Write[Any]] | Callable[[Results], Sequence[Write[Any]]] = (),
) -> Write[Results]:
    """The write of ``writes`` with their follow-ups (see :class:`Emission`)."""
    return EMIT(Emission(writes, then))
