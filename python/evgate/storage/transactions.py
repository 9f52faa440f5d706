"""storage room: transactions — the reads of ``transactions`` (the API's view, and the checks
handlers make). The writer's ops that start and stop them are ``storage/ops/transactions.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from evgate.pricing import Price, Snapshot
from evgate.storage.db import Database
from evgate.storage.errors import NotFound
from evgate.storage.ops.transactions import TransactionFacts, TransactionStart, decode_snapshot

__all__ = [
    "TRANSACTION_STOP_CHANNEL",
    "ClosedTransaction",
    "Transaction",
    "TransactionStore",
    "closed_transaction",
]

#: NOTIFY on a committed operator's stop (migration 0024's trigger, in the stop's own
#: transaction), so that the process holding the charger forgets the transaction; payload
#: ``<transaction id> <charger id>`` (see :func:`closed_transaction`).
TRANSACTION_STOP_CHANNEL = "evgate_transaction_stop"


class ClosedTransaction(msgspec.Struct, frozen=True, kw_only=True):
    """A transaction the operator closed, as its notification names it."""

    charger_id: str
    transaction_id: int


def closed_transaction(payload: str) -> ClosedTransaction | None:
    """The transaction a :data:`TRANSACTION_STOP_CHANNEL` payload names (None: not one)."""
    transaction_id, _, charger_id = payload.partition(" ")
    if not transaction_id.isdigit() or not charger_id:
        return None
    return ClosedTransaction(charger_id=charger_id, transaction_id=int(transaction_id))


class Transaction(msgspec.Struct, rename="camel", kw_only=True):
    """A transaction as the API shows it."""

    id: int
    charger_id: str
    connector_id: int
    id_tag: str
    id_tag_status: str
    parent_id_tag: str | None
    reservation_id: int | None
    meter_start: int
    started_at: datetime
    meter_stop: int | None
    stopped_at: datetime | None
    stop_reason: str | None
    stop_id_tag: str | None
    # Closed by the operator (POST /api/v1/transactions/{id}/stop): their reason; else null.
    operator_stop_reason: str | None
    active: bool
    # Stopped: meterStop - meterStart. Active: the latest energy register reading of the
    # transaction minus meterStart (null before the first).
    energy_wh: float | None
    # The tariff snapshotted at its start (null: none applied); its price once stopped (null
    # while running, and for a transaction no tariff applied to: ``pricing`` says which).
    tariff: Snapshot | None = None
    price: Price | None = None
    pricing: Literal["priced", "running", "noTariff"] = "noTariff"


_TX_SELECT = """
SELECT t.id, t.charger_id, t.connector_id, t.id_tag, t.id_tag_status, t.parent_id_tag,
       t.reservation_id, t.meter_start, t.started_at, t.meter_stop, t.stopped_at, t.stop_reason,
       t.stop_id_tag, t.operator_stop_reason, t.stopped_at IS NULL,
       CASE WHEN t.stopped_at IS NOT NULL THEN (t.meter_stop - t.meter_start)::float8
            ELSE (SELECT v.value - t.meter_start FROM meter_values v
                  WHERE v.charger_id = t.charger_id AND v.ts >= t.started_at
                    AND v.transaction_id = t.id AND v.value IS NOT NULL
                    AND v.measurand = 'Energy.Active.Import.Register' AND v.phase IS NULL
                  ORDER BY v.ts DESC LIMIT 1) END,
       t.tariff, t.price
FROM transactions t
"""
_price = msgspec.json.Decoder(Price).decode


# The fields _TX_SELECT reads in its column order (all but the three derived from tariff and
# price, which come last).
_SELECTED = Transaction.__struct_fields__[: Transaction.__struct_fields__.index("tariff")]


def _transaction(row: asyncpg.Record) -> Transaction:
    *columns, tariff, price = row
    fields = dict(zip(_SELECTED, columns, strict=True))
    snapshot = decode_snapshot(tariff)
    active = fields["active"]
    return Transaction(
        **fields,
        tariff=snapshot,
        price=None if price is None else _price(price),
        pricing="noTariff" if snapshot is None else "running" if active else "priced",
    )


class TransactionStore:
    """Reads of ``transactions``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, transaction_id: int) -> Transaction:
        """Raises: NotFound."""
        row = await self.db.fetchrow(_TX_SELECT + " WHERE t.id = $1", transaction_id)
        if row is None:
            raise NotFound(f"no transaction {transaction_id}")
        return _transaction(row)

    async def page(
        self,
        *,
        charger_id: str | None = None,
        id_tag: str | None = None,
        active: bool | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Transaction]:
        """Transactions newest first (by id), filtered; ``before``: the last id of the previous
        page. ``start``/``end`` bound the start time (``start <= startedAt < end``); the id-tag
        compares case-insensitively, as OCPP's CiString does."""
        rows = await self.db.fetch(
            _TX_SELECT + " WHERE ($1::text IS NULL OR t.charger_id = $1)"
            " AND ($2::text IS NULL OR upper(t.id_tag) = upper($2))"
            " AND ($3::bool IS NULL OR (t.stopped_at IS NULL) = $3)"
            " AND ($4::timestamptz IS NULL OR t.started_at >= $4)"
            " AND ($5::timestamptz IS NULL OR t.started_at < $5)"
            " AND ($6::int4 IS NULL OR t.id < $6)"
            " ORDER BY t.id DESC LIMIT $7",
            charger_id,
            id_tag,
            active,
            start,
            end,
            before,
            limit,
        )
        return [_transaction(r) for r in rows]

    async def open_of(self, charger_id: str, transaction_id: int) -> TransactionFacts | None:
        """The charger's transaction ``transaction_id`` if it is open (as its events describe
        it: the latest energy reading is ``meter_wh``), else None."""
        row = await self.db.fetchrow(
            _TX_SELECT + " WHERE t.id = $1 AND t.charger_id = $2 AND t.stopped_at IS NULL",
            transaction_id,
            charger_id,
        )
        if row is None:
            return None
        stored = _transaction(row)
        return TransactionFacts(
            transaction_id=stored.id,
            connector_id=stored.connector_id,
            id_tag=stored.id_tag,
            started_at=stored.started_at,
            meter_start=stored.meter_start,
            meter_wh=None if stored.energy_wh is None else stored.meter_start + stored.energy_wh,
            tariff=stored.tariff,
        )

    async def id_tag_of(self, charger_id: str, transaction_id: int) -> str | None:
        """The id-tag that started the charger's transaction ``transaction_id`` (open or not),
        or None for a transaction of no such charger."""
        found: str | None = await self.db.fetchval(
            "SELECT id_tag FROM transactions WHERE id = $1 AND charger_id = $2",
            transaction_id,
            charger_id,
        )
        return found

    async def has_open(self, id_tag: str, besides: TransactionStart | None = None) -> bool:
        """Whether ``id_tag`` has an open transaction (other than the one ``besides`` keys: a
        resent StartTransaction is not concurrent with itself)."""
        key = besides.key() if besides is not None else (None, None, None, None, None)
        found = await self.db.fetchval(
            "SELECT 1 FROM transactions WHERE upper(id_tag) = upper($1) AND stopped_at IS NULL"
            " AND ($2::text IS NULL OR (charger_id, connector_id, started_at, id_tag, meter_start)"
            " IS DISTINCT FROM ($2, $3, $4, $5, $6)) LIMIT 1",
            id_tag,
            *key,
        )
        return found is not None
