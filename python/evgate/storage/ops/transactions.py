"""storage room: the writer's ops of ``transactions`` — StartTransaction and StopTransaction.

Their dedupe rules make a resent message (a charger resends what was not acknowledged) leave no
duplicate:

* :func:`start`: key (charger, connector, start time, id-tag, meterStart); a resent
  StartTransaction gets the id (and idTagInfo status) of its first attempt, and is told it is
  not the first (``created``), so that no event is made twice. It ends the reservation it
  names (``reservations``, in the same statement batch).
* :func:`stop`: closes an open transaction of that charger and returns it; a second stop
  changes nothing and returns None. The operator closes one the same way (``api/charging.py``,
  with ``operator_reason``), so a StopTransaction the charger sends later is such a second
  stop.
  A priced transaction (one with a tariff snapshot) is
  returned with what its price depends on: its idle periods and its energy register samples.
* :func:`priced`: stores the price the handler computed, in the stop's transaction.

Every batch is written exactly once by the writer (``writer_commits``), so these rules are
about the charger's resends, not about evgate's own retries.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec

from evgate.pricing import IdlePeriod, Price, Reading, Snapshot
from evgate.storage.ops.base import Statement, Write, WriteOp, run_deferred

__all__ = [
    "TRANSACTION_STARTS",
    "TRANSACTION_STOPS",
    "StartedTransaction",
    "TransactionFacts",
    "TransactionPrice",
    "TransactionStart",
    "TransactionStop",
    "priced",
    "start",
    "stop",
]

_snapshot = msgspec.json.Decoder(Snapshot).decode
_idle = msgspec.json.Decoder(tuple[IdlePeriod, ...]).decode


def encode_snapshot(snapshot: Snapshot | None) -> str | None:
    """A tariff snapshot as its jsonb column holds it."""
    return None if snapshot is None else msgspec.json.encode(snapshot).decode()


def decode_snapshot(raw: str | None) -> Snapshot | None:
    """A tariff snapshot from its jsonb column."""
    return None if raw is None else _snapshot(raw)


class TransactionStart(msgspec.Struct, frozen=True, kw_only=True):
    """A StartTransaction to store, with the idTagInfo evgate decided."""

    charger_id: str
    connector_id: int
    id_tag: str
    meter_start: int
    started_at: datetime
    id_tag_status: str
    id_tag_expiry: datetime | None = None
    parent_id_tag: str | None = None
    external_session_id: str | None = None
    reservation_id: int | None = None
    # The tariff that applies (None: none does), snapshotted for the transaction's life.
    tariff: Snapshot | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.charger_id, self.connector_id, self.started_at, self.id_tag, self.meter_start)


class TransactionFacts(msgspec.Struct, kw_only=True):
    """What a transaction's events say about it (``events/builders.py``): how it started, the
    latest readings while it runs, and how it ended once stopped.

    ``meter_wh`` is the latest energy register reading (Wh), ``meter_stop`` once stopped.
    """

    transaction_id: int
    connector_id: int
    id_tag: str | None = None
    started_at: datetime
    meter_start: int
    meter_wh: float | None = None
    power_w: float | None = None
    soc_percent: float | None = None
    stopped_at: datetime | None = None
    meter_stop: int | None = None
    stop_reason: str | None = None  # the OCPP Reason
    # Its tariff snapshot (None: no tariff applied, it has no price).
    tariff: Snapshot | None = None
    # Once stopped, of a priced transaction: what its price depends on besides the meter.
    idle_periods: tuple[IdlePeriod, ...] = ()
    readings: tuple[Reading, ...] = ()
    # The price: the running amount while active, the price once stopped and priced.
    price: Price | None = None


class StartedTransaction(msgspec.Struct, frozen=True, kw_only=True):
    """The stored transaction a StartTransaction answers with (its first attempt's idTagInfo,
    if resent), and the transaction as this StartTransaction describes it (for its events)."""

    transaction: TransactionFacts
    id_tag_status: str
    id_tag_expiry: datetime | None
    parent_id_tag: str | None
    # This StartTransaction made the transaction (False for a resend): it has events to emit.
    created: bool = False
    # And it ended the reservation it named (status Used).
    reservation_used: bool = False


_START = """
INSERT INTO transactions AS t (charger_id, connector_id, id_tag, meter_start, started_at,
    id_tag_status, id_tag_expiry, parent_id_tag, external_session_id, reservation_id, tariff)
SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::int8[], $5::timestamptz[],
                     $6::text[], $7::timestamptz[], $8::text[], $9::text[], $10::int4[],
                     $11::jsonb[])
-- The no-op update makes RETURNING give the stored row of a resent StartTransaction.
ON CONFLICT (charger_id, connector_id, started_at, id_tag, meter_start)
    DO UPDATE SET updated_at = t.updated_at
RETURNING charger_id, connector_id, started_at, id_tag, meter_start, id, id_tag_status,
          id_tag_expiry, parent_id_tag, xmax = 0, tariff
"""

_END_RESERVATIONS = """
UPDATE reservations r SET status = 'Used', transaction_id = u.tx, ended_at = now()
FROM unnest($1::int4[], $2::text[], $3::int4[]) AS u(id, charger_id, tx)
WHERE r.id = u.id AND r.charger_id = u.charger_id AND r.status = 'Reserved'
RETURNING r.id
"""


class TransactionStarts(WriteOp[TransactionStart, StartedTransaction]):
    """Inserts the batch's StartTransactions in one statement (duplicates merged first) and
    ends the reservations they name."""

    name = "transaction_starts"

    async def write(
        self, conn: asyncpg.Connection, items: list[TransactionStart]
    ) -> list[StartedTransaction]:
        unique = list({item.key(): item for item in items}.values())
        columns = [
            [getattr(u, f) for u in unique]
            for f in (
                "charger_id",
                "connector_id",
                "id_tag",
                "meter_start",
                "started_at",
                "id_tag_status",
                "id_tag_expiry",
                "parent_id_tag",
                "external_session_id",
                "reservation_id",
            )
        ]
        columns.append([encode_snapshot(u.tariff) for u in unique])
        stored: dict[tuple[Any, ...], asyncpg.Record] = {}
        inserted: set[tuple[Any, ...]] = set()
        for r in await conn.fetch(_START, *columns):
            stored[tuple(r[:5])] = r
            if r[9]:  # xmax = 0: inserted now, not found by the dedupe key
                inserted.add(tuple(r[:5]))
        reserved = [u for u in unique if u.reservation_id is not None]
        used: set[int] = set()
        if reserved:
            rows = await conn.fetch(
                _END_RESERVATIONS,
                [u.reservation_id for u in reserved],
                [u.charger_id for u in reserved],
                [stored[u.key()][5] for u in reserved],
            )
            used = {r[0] for r in rows}
        results = []
        for item in items:
            key = item.key()
            r = stored[key]
            # The first item of a key made it; its twins are resends.
            created = key in inserted
            inserted.discard(key)
            results.append(
                StartedTransaction(
                    transaction=TransactionFacts(
                        transaction_id=r[5],
                        connector_id=item.connector_id,
                        id_tag=item.id_tag,
                        started_at=item.started_at,
                        meter_start=item.meter_start,
                        # The first attempt's snapshot, for a resend too.
                        tariff=decode_snapshot(r[10]),
                    ),
                    id_tag_status=r[6],
                    id_tag_expiry=r[7],
                    parent_id_tag=r[8],
                    created=created,
                    reservation_used=created and item.reservation_id in used,
                )
            )
        return results


TRANSACTION_STARTS = TransactionStarts()


class TransactionStop(msgspec.Struct, frozen=True, kw_only=True):
    """A StopTransaction to store: which transaction of which charger, and how it ended (as
    sent; None when absent)."""

    transaction_id: int
    charger_id: str
    meter_stop: int
    stopped_at: datetime
    stop_reason: str | None = None
    stop_id_tag: str | None = None
    # Set when the operator closes it (the charger lost its StopTransaction): their reason.
    operator_reason: str | None = None


_STOP = """
UPDATE transactions t SET meter_stop = u.meter_stop, stopped_at = u.stopped_at,
    stop_reason = u.stop_reason, stop_id_tag = u.stop_id_tag,
    operator_stop_reason = u.operator_reason, updated_at = now()
FROM unnest($1::int4[], $2::text[], $3::int8[], $4::timestamptz[], $5::text[], $6::text[],
            $7::text[])
     AS u(id, charger_id, meter_stop, stopped_at, stop_reason, stop_id_tag, operator_reason)
WHERE t.id = u.id AND t.charger_id = u.charger_id AND t.stopped_at IS NULL
RETURNING t.id, t.connector_id, t.id_tag, t.started_at, t.meter_start, t.stopped_at,
          t.meter_stop, t.stop_reason, t.tariff, t.idle_periods, t.charger_id
"""

# The energy register samples of priced transactions (the total at the outlet, the OCPP
# default location), for their price: time-of-day energy and the last energy increase.
_READINGS = """
SELECT v.transaction_id, v.ts, v.value FROM meter_values v
JOIN unnest($1::int4[], $2::text[], $3::timestamptz[], $4::timestamptz[])
     AS u(id, charger_id, started_at, stopped_at)
  ON v.charger_id = u.charger_id AND v.ts BETWEEN u.started_at AND u.stopped_at
     AND v.transaction_id = u.id
WHERE v.measurand = 'Energy.Active.Import.Register' AND v.phase IS NULL
  AND v.location = 'Outlet' AND v.value IS NOT NULL
ORDER BY v.transaction_id, v.ts
"""


class TransactionStops(WriteOp[TransactionStop, TransactionFacts | None]):
    """Closes the batch's transactions in one statement. Result: the transaction it closed, or
    None (unknown, another charger's, or already closed: a resend)."""

    name = "transaction_stops"
    # A priced stop reads the transaction's readings: those of its own batch too (the
    # charger's MeterValues beside the operator's stop), which run first and are written
    # before the read (run_deferred), so the price counts every reading committed with it.
    reads_batch = True

    async def write(
        self, conn: asyncpg.Connection, items: list[TransactionStop]
    ) -> list[TransactionFacts | None]:
        # Only the first stop of a transaction can close it: later ones in the batch are
        # resends, and an UPDATE ... FROM would apply just one of them anyway.
        first: dict[int, int] = {}
        for index, item in enumerate(items):
            first.setdefault(item.transaction_id, index)
        unique = [items[i] for i in first.values()]
        rows = await conn.fetch(
            _STOP,
            [u.transaction_id for u in unique],
            [u.charger_id for u in unique],
            [u.meter_stop for u in unique],
            [u.stopped_at for u in unique],
            [u.stop_reason for u in unique],
            [u.stop_id_tag for u in unique],
            [u.operator_reason for u in unique],
        )
        closed = {
            r[0]: TransactionFacts(
                transaction_id=r[0],
                connector_id=r[1],
                id_tag=r[2],
                started_at=r[3],
                meter_start=r[4],
                stopped_at=r[5],
                meter_stop=r[6],
                stop_reason=r[7],
                tariff=decode_snapshot(r[8]),
                idle_periods=_idle(r[9]),
            )
            for r in rows
        }
        priced = [r for r in rows if r[8] is not None]
        if priced:
            await run_deferred(conn)
            readings: dict[int, list[Reading]] = {}
            for v in await conn.fetch(
                _READINGS,
                [r[0] for r in priced],
                [r[10] for r in priced],
                [r[3] for r in priced],
                [r[5] for r in priced],
            ):
                readings.setdefault(v[0], []).append(Reading(v[1], Decimal(repr(v[2]))))
            for tx_id, samples in readings.items():
                closed[tx_id] = msgspec.structs.replace(closed[tx_id], readings=tuple(samples))
        return [
            closed.get(item.transaction_id) if first[item.transaction_id] == index else None
            for index, item in enumerate(items)
        ]


TRANSACTION_STOPS = TransactionStops()


def start(item: TransactionStart) -> Write[StartedTransaction]:
    """Store a StartTransaction; its result is the stored transaction."""
    return TRANSACTION_STARTS(item)


def stop(item: TransactionStop) -> Write[TransactionFacts | None]:
    """Store a StopTransaction; its result is the transaction it closed (None for a resend)."""
    return TRANSACTION_STOPS(item)


class TransactionPrice(msgspec.Struct, frozen=True, kw_only=True):
    """The price of a stopped transaction, to store with it."""

    transaction_id: int
    price: Price


TRANSACTION_PRICES: Statement[TransactionPrice] = Statement(
    "UPDATE transactions SET price = $2 WHERE id = $1",
    name="transaction_prices",
    args=lambda item: (item.transaction_id, msgspec.json.encode(item.price).decode()),
)


def priced(item: TransactionPrice) -> Write[None]:
    """Store a stopped transaction's price (in the stop's transaction)."""
    return TRANSACTION_PRICES(item)
