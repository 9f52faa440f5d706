"""storage room: transactions, connectors and reservations — the reads, and the reservations'
changes made outside the writer (the writer's ops of these tables are in ``storage/ops/``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Literal, TypeVar

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import NotFound
from evgate.storage.events import record_reservation_changed
from evgate.storage.ops.transactions import TransactionStart
from evgate.tasks import OwnedTask

__all__ = [
    "Connector",
    "ConnectorStore",
    "Reservation",
    "ReservationExpiry",
    "ReservationStore",
    "Transaction",
    "TransactionStore",
]

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")


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
    active: bool
    # Stopped: meterStop - meterStart. Active: the latest energy register reading of the
    # transaction minus meterStart (null before the first).
    energy_wh: float | None


_TX_SELECT = """
SELECT t.id, t.charger_id, t.connector_id, t.id_tag, t.id_tag_status, t.parent_id_tag,
       t.reservation_id, t.meter_start, t.started_at, t.meter_stop, t.stopped_at, t.stop_reason,
       t.stop_id_tag, t.stopped_at IS NULL,
       CASE WHEN t.stopped_at IS NOT NULL THEN (t.meter_stop - t.meter_start)::float8
            ELSE (SELECT v.value - t.meter_start FROM meter_values v
                  WHERE v.charger_id = t.charger_id AND v.ts >= t.started_at
                    AND v.transaction_id = t.id AND v.value IS NOT NULL
                    AND v.measurand = 'Energy.Active.Import.Register' AND v.phase IS NULL
                  ORDER BY v.ts DESC LIMIT 1) END
FROM transactions t
"""


def _transaction(row: asyncpg.Record) -> Transaction:
    return Transaction(**dict(zip(Transaction.__struct_fields__, row, strict=True)))


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

    async def open_of(self, charger_id: str, transaction_id: int) -> Transaction | None:
        """The charger's transaction ``transaction_id`` if it is open, else None."""
        row = await self.db.fetchrow(
            _TX_SELECT + " WHERE t.id = $1 AND t.charger_id = $2 AND t.stopped_at IS NULL",
            transaction_id,
            charger_id,
        )
        return None if row is None else _transaction(row)

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


class Connector(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    """A connector's latest status (connector 0 is the charger itself)."""

    connector_id: int
    status: str
    error_code: str
    status_at: datetime
    updated_at: datetime
    info: str | None = None
    vendor_id: str | None = None
    vendor_error_code: str | None = None


class ConnectorStore:
    """Reads of ``connectors``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def of_charger(self, charger_id: str) -> list[Connector]:
        rows = await self.db.fetch(
            "SELECT connector_id, status, error_code, status_at, updated_at, info, vendor_id,"
            " vendor_error_code FROM connectors WHERE charger_id = $1 ORDER BY connector_id",
            charger_id,
        )
        return [Connector(**dict(zip(Connector.__struct_fields__, r, strict=True))) for r in rows]


class Reservation(msgspec.Struct, rename="camel", kw_only=True):
    """A reservation made through evgate."""

    id: int
    charger_id: str
    connector_id: int
    id_tag: str
    parent_id_tag: str | None
    expiry_date: datetime
    status: str
    transaction_id: int | None
    created_at: datetime
    ended_at: datetime | None


# Reservation statuses (stored, OCPP-like) → reservation.changed's status.
_EVENT_STATUS = {"Reserved": "active", "Cancelled": "canceled", "Expired": "expired"}


class ReservationStore:
    """Reservations: recorded when a charger accepts ReserveNow (:meth:`reserve`), ended by the
    StartTransaction that uses them (``storage/ops/transactions.py``), an accepted CancelReservation
    or the operator (:meth:`end`), or their expiry date (:meth:`expire_due`). Every change
    appends reservation.changed to the outbox in its transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        charger_id: str,
        connector_id: int,
        id_tag: str,
        expiry_date: datetime,
        parent_id_tag: str | None = None,
    ) -> Reservation:
        """Record a reservation with an id of evgate's (the reservationId to send in
        ReserveNow); no event: it is held only once the charger accepts (:meth:`reserve`)."""
        row = await self.db.fetchrow(
            "INSERT INTO reservations (charger_id, connector_id, id_tag, expiry_date,"
            " parent_id_tag) VALUES ($1, $2, $3, $4, $5) RETURNING *",
            charger_id,
            connector_id,
            id_tag,
            expiry_date,
            parent_id_tag,
        )
        assert row is not None
        return _reservation(row)

    async def reserve(
        self,
        reservation_id: int,
        charger_id: str,
        connector_id: int,
        id_tag: str,
        expiry_date: datetime,
        parent_id_tag: str | None = None,
    ) -> Reservation:
        """A charger accepted ReserveNow ``reservation_id``: the reservation is held (a known
        id is replaced, as OCPP 1.6 says for a ReserveNow that repeats one) and
        reservation.changed ``active`` is appended."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO reservations (id, charger_id, connector_id, id_tag, expiry_date,"
                " parent_id_tag) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET"
                " charger_id = excluded.charger_id, connector_id = excluded.connector_id,"
                " id_tag = excluded.id_tag, expiry_date = excluded.expiry_date,"
                " parent_id_tag = excluded.parent_id_tag, status = 'Reserved',"
                " transaction_id = NULL, ended_at = NULL, created_at = now() RETURNING *",
                reservation_id,
                charger_id,
                connector_id,
                id_tag,
                expiry_date,
                parent_id_tag,
            )
            assert row is not None
            await record_reservation_changed(conn, [(charger_id, reservation_id)], "active")
        return _reservation(row)

    async def end(
        self,
        reservation_id: int,
        status: Literal["Cancelled", "Expired"],
        charger_id: str | None = None,
    ) -> bool:
        """End a reservation (of ``charger_id``, if given) that is still ``Reserved``;
        reservation.changed says so. Returns whether it was."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            owner = await conn.fetchval(
                "UPDATE reservations SET status = $2, ended_at = now()"
                " WHERE id = $1 AND status = 'Reserved' AND ($3::text IS NULL OR charger_id = $3)"
                " RETURNING charger_id",
                reservation_id,
                status,
                charger_id,
            )
            if owner is not None:
                await record_reservation_changed(
                    conn, [(owner, reservation_id)], _EVENT_STATUS[status]
                )
        return owner is not None

    async def expire_due(self, limit: int = 1000) -> int:
        """Expire up to ``limit`` held reservations whose expiry date has passed (each with
        its reservation.changed ``expired``); returns how many. Several processes may run it
        at once: each takes different rows (SKIP LOCKED)."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE reservations SET status = 'Expired', ended_at = now() WHERE id IN"
                " (SELECT id FROM reservations WHERE status = 'Reserved' AND expiry_date <= now()"
                " ORDER BY expiry_date LIMIT $1 FOR UPDATE SKIP LOCKED)"
                " RETURNING charger_id, id",
                limit,
            )
            await record_reservation_changed(conn, [(r[0], r[1]) for r in rows], "expired")
        return len(rows)

    async def get(self, reservation_id: int) -> Reservation:
        """Raises: NotFound."""
        row = await self.db.fetchrow("SELECT * FROM reservations WHERE id = $1", reservation_id)
        if row is None:
            raise NotFound(f"no reservation {reservation_id}")
        return _reservation(row)


class ReservationExpiry:
    """Owns the task that expires due reservations every ``interval`` seconds: ``start()``,
    ``await stop()``."""

    def __init__(self, store: ReservationStore, interval: float = 10.0) -> None:
        self.store = store
        self.interval = interval
        self._task = OwnedTask(self._run, "reservation-expiry")

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        health = self.store.db.health
        while True:
            try:
                while await self.store.expire_due() > 0:
                    pass  # a backlog (after downtime): keep going until none is due
            except Exception as exc:  # the database may be away; the next run tries again
                health.report(exc, "reservation expiry", log)
            else:
                health.ok()
            await asyncio.sleep(self.interval)


def _reservation(row: asyncpg.Record) -> Reservation:
    return Reservation(**{f: row[f] for f in Reservation.__struct_fields__})
