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

__all__ = ["EMIT", "OUTBOX", "OUTBOX_COLUMNS", "Emission", "append", "emit", "wanted_rows_sql"]

OUTBOX_COLUMNS = ("event", "charger_id", "payload")

# Up to this many rows a batch's outbox rows ride in its COMMIT's round trip as one literal
# INSERT; more (a storm's batches) are COPYed, which PostgreSQL parses and Python encodes
# for less per row.
_TAIL_ROWS = 64


# The literal INSERT keeps only the rows of events an enabled subscription names (the others
# would be written, indexed, fanned out to no one and pruned: ~40 % of the WAL of a fleet's
# batches). The names are read once per statement (an InitPlan: no join, so the VALUES keep
# their order and the ids the charger's). A subscription committed while a batch runs is
# safe: the shared advisory lock before the INSERT, held to the end of the transaction, makes
# a subscription that makes events wanted wait for the batch, and the batch's INSERT (its
# snapshot taken after the lock) wait for that subscription (migration 0026, same key). Any
# subscription counts (a tenant's too: the fan-out sorts out whose the event is); COPY (a
# storm's batches), the API's events (storage/outbox.py) and ops that insert events
# themselves keep every row, which the fan-out skips as before.
_INSERT_WANTED = (
    "SELECT pg_advisory_xact_lock_shared(1702258548, 26);"
    f" INSERT INTO outbox ({', '.join(OUTBOX_COLUMNS)}) SELECT * FROM (VALUES "
)
_OF_WANTED_EVENTS = (
    f") AS v({', '.join(OUTBOX_COLUMNS)}) WHERE v.event = ANY(ARRAY("
    "SELECT DISTINCT unnest(s.notifications) FROM subscriptions s WHERE s.enabled))"
)


def wanted_rows_sql(values: str) -> str:
    """The statements that append the outbox rows ``values`` (literal ``(event, charger_id,
    payload)`` tuples, comma-separated) that some enabled subscription wants."""
    return _INSERT_WANTED + values + _OF_WANTED_EVENTS


class OutboxRows(CopyRows):
    """Appends a batch's outbox rows, in submission order: in the COMMIT's round trip
    (``before_commit``) for the few rows of a batch at a fleet's pace, those of events some
    subscription wants; by COPY for many, all of them."""

    async def write(
        self, conn: asyncpg.Connection, items: list[Sequence[tuple[Any, ...]]]
    ) -> list[None]:
        records = [row for item in items for row in item]
        if len(records) > _TAIL_ROWS:
            return await super().write(conn, items)
        if records:
            values = ",".join(
                f"({text_literal(event)},{text_literal(charger_id)},{bytea_literal(payload)})"
                for event, charger_id, payload in records
            )
            await before_commit(conn, wanted_rows_sql(values))
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
