"""storage room: reservations — made through evgate (ReserveNow), held once a charger accepts,
ended by a StartTransaction (``storage/ops/transactions.py``), a CancelReservation, the operator
or their expiry date; each change appends reservation.changed in its transaction.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import NotFound
from evgate.storage.outbox import record_reservation_changed
from evgate.tasks import OwnedTask

__all__ = ["Reservation", "ReservationExpiry", "ReservationStore"]

log = logging.getLogger(__name__)


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
                health.ok("reservation expiry")
            await asyncio.sleep(self.interval)


def _reservation(row: asyncpg.Record) -> Reservation:
    return Reservation(**{f: row[f] for f in Reservation.__struct_fields__})
