"""storage room: reservations — made through evgate (ReserveNow), held once a charger accepts,
ended by a StartTransaction (``storage/ops/transactions.py``), a CancelReservation, the operator
or their expiry date; each change appends reservation.changed in its transaction.

Ids: ``POST /api/v1/reservations`` numbers a reservation from the ``reservation_ids`` sequence
(:meth:`ReservationStore.allocate`) before its ReserveNow is sent; a ReserveNow of the command
API brings the operator's own id, which :meth:`ReservationStore.claim` checks (not another
charger's reservation) and moves the sequence past, so the two never meet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from evgate.storage.db import Database, acting_for, tenant
from evgate.storage.errors import NotFound
from evgate.storage.outbox import record_reservation_changed

__all__ = [
    "STATUSES",
    "Reservation",
    "ReservationIdTaken",
    "ReservationStatus",
    "ReservationStore",
]


#: A reservation's status as the API shows it: ``requested`` (ReserveNow sent, no answer
#: recorded yet), ``active`` (the charger holds it), ``used`` (a StartTransaction took it),
#: ``expired``, ``canceled``, ``refused`` (the charger answered Faulted, Occupied, Rejected or
#: Unavailable: ``refusal``), ``failed`` (the command failed: ``error``).
ReservationStatus = Literal[
    "requested", "active", "used", "expired", "canceled", "refused", "failed"
]
# The stored (OCPP-like) status of each.
_STORED: dict[str, str] = {
    "requested": "Requested",
    "active": "Reserved",
    "used": "Used",
    "expired": "Expired",
    "canceled": "Cancelled",
    "refused": "Refused",
    "failed": "Failed",
}
_SHOWN = {stored: shown for shown, stored in _STORED.items()}
STATUSES: tuple[str, ...] = tuple(_STORED)


class Reservation(msgspec.Struct, rename="camel", kw_only=True):
    """A reservation made through evgate.

    Attributes:
        refusal: the charger's ReserveNow status when it refused (``refused``), else null.
        error: why the ReserveNow command failed (``failed``), else null.
        transaction_id: the transaction that used it (``used``).
    """

    id: int
    charger_id: str
    connector_id: int
    id_tag: str
    parent_id_tag: str | None
    expiry_date: datetime
    status: ReservationStatus
    refusal: str | None
    error: str | None
    transaction_id: int | None
    created_at: datetime
    ended_at: datetime | None


class ReservationIdTaken(Exception):
    """A ReserveNow's reservationId is another charger's reservation.

    Attributes:
        charger_id: whose it is; None when it is another tenant's (not named).
    """

    def __init__(self, reservation_id: int, charger_id: str | None) -> None:
        whose = "another charger" if charger_id is None else f"charger {charger_id}"
        super().__init__(
            f"reservationId {reservation_id} is a reservation of {whose}; "
            "POST /api/v1/reservations gives a free one"
        )
        self.charger_id = charger_id


# Reservation statuses (stored, OCPP-like) → reservation.changed's status.
_EVENT_STATUS = {"Reserved": "active", "Cancelled": "canceled", "Expired": "expired"}


#: How far ahead of the reservation id sequence an operator's own id may move it.
_SEQUENCE_STEP = 100_000


class ReservationStore:
    """Reservations: recorded when a charger accepts ReserveNow (:meth:`reserve`), ended by the
    StartTransaction that uses them (``storage/ops/transactions.py``), an accepted CancelReservation
    or the operator (:meth:`end`), or their expiry date (:meth:`expire_due`). Every change
    appends reservation.changed to the outbox in its transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def allocate(
        self,
        charger_id: str,
        connector_id: int,
        id_tag: str,
        expiry_date: datetime,
        parent_id_tag: str | None = None,
    ) -> Reservation:
        """Record a reservation to request (``requested``) with an id of evgate's, the
        reservationId to send in ReserveNow; no event: it is held only once the charger
        accepts (:meth:`reserve`). An id the operator took before through the command API is
        skipped."""
        while True:
            row = await self.db.fetchrow(
                "INSERT INTO reservations (charger_id, connector_id, id_tag, expiry_date,"
                " parent_id_tag, status) VALUES ($1, $2, $3, $4, $5, 'Requested')"
                " ON CONFLICT (id) DO NOTHING RETURNING *",
                charger_id,
                connector_id,
                id_tag,
                expiry_date,
                parent_id_tag,
            )
            if row is not None:
                return _reservation(row)

    async def claim(self, reservation_id: int, charger_id: str) -> None:
        """A ReserveNow with the operator's own ``reservation_id`` is about to be sent to
        ``charger_id``: move the id sequence past it, so that :meth:`allocate` never hands it
        out. The charger's own reservation of that id may be replaced (OCPP 1.6: a ReserveNow
        repeating an id replaces that reservation); another charger's may not.

        Raises:
            ReservationIdTaken: it is another charger's reservation.
        """
        # Every charger's reservations, a sub-operator's request too: the ids are one
        # sequence for all chargers, so another tenant's is taken as well (and not named).
        # Only the operator's ids near the sequence move it: an id far ahead (2^31 - 1) would
        # exhaust it for everyone; allocate() skips a taken id anyway, this only keeps it from
        # handing out one whose ReserveNow is on its way.
        moves = tenant() is None
        with acting_for(None):
            async with self.db.pool.acquire() as conn, conn.transaction():
                if moves:
                    # Forward only: setval never gives back an id a nextval handed out.
                    await conn.execute(
                        "SELECT setval('reservation_ids', $1) FROM reservation_ids"
                        " WHERE $1 > last_value AND $1 - last_value <= $2",
                        reservation_id,
                        _SEQUENCE_STEP,
                    )
                owner = await conn.fetchval(
                    "SELECT charger_id FROM reservations WHERE id = $1", reservation_id
                )
        if owner is not None and owner != charger_id:
            raise ReservationIdTaken(reservation_id, owner if tenant() is None else None)

    async def reserve(
        self,
        reservation_id: int,
        charger_id: str,
        connector_id: int,
        id_tag: str,
        expiry_date: datetime,
        parent_id_tag: str | None = None,
    ) -> Reservation | None:
        """A charger accepted ReserveNow ``reservation_id``: the reservation is held (a known
        id of this charger is replaced, as OCPP 1.6 says for a ReserveNow that repeats one) and
        reservation.changed ``active`` is appended. Returns it, or None when the id is another
        charger's reservation (:meth:`claim` refuses that before the command is sent; only a
        race gets here), which is left as it is."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO reservations AS r (id, charger_id, connector_id, id_tag,"
                " expiry_date, parent_id_tag) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (id) DO UPDATE SET connector_id = excluded.connector_id,"
                " id_tag = excluded.id_tag, expiry_date = excluded.expiry_date,"
                " parent_id_tag = excluded.parent_id_tag, status = 'Reserved', refusal = NULL,"
                " error = NULL, transaction_id = NULL, ended_at = NULL, created_at = now()"
                " WHERE r.charger_id = excluded.charger_id RETURNING *",
                reservation_id,
                charger_id,
                connector_id,
                id_tag,
                expiry_date,
                parent_id_tag,
            )
            if row is None:
                return None
            await record_reservation_changed(conn, [(charger_id, reservation_id)], "active")
        return _reservation(row)

    async def unanswered(
        self,
        reservation_id: int,
        charger_id: str,
        *,
        refusal: str | None = None,
        error: str | None = None,
    ) -> None:
        """The ReserveNow of a ``requested`` reservation was refused by the charger (its
        status: ``refusal``) or failed (``error``): it ends so. No event: it was never held.
        A reservation not ``requested`` (the operator's id of the command API) is left."""
        await self.db.execute(
            "UPDATE reservations SET status = CASE WHEN $3::text IS NULL THEN 'Failed'"
            " ELSE 'Refused' END, refusal = $3, error = $4, ended_at = now()"
            " WHERE id = $1 AND charger_id = $2 AND status = 'Requested'",
            reservation_id,
            charger_id,
            refusal,
            error,
        )

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
        its reservation.changed ``expired``), and up to ``limit`` ``requested`` ones (``failed``:
        their answer was never recorded); returns how many. Several processes may run it
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
            # A ReserveNow whose answer was never recorded (the process stopped meanwhile):
            # over now whatever the charger said. No event: it was never known to be held.
            unanswered = await conn.execute(
                "UPDATE reservations SET status = 'Failed', ended_at = now(),"
                " error = 'no answer to ReserveNow was recorded before its expiry date'"
                " WHERE id IN (SELECT id FROM reservations WHERE status = 'Requested'"
                " AND expiry_date <= now() ORDER BY expiry_date LIMIT $1"
                " FOR UPDATE SKIP LOCKED)",
                limit,
            )
        return len(rows) + int(unanswered.split()[-1])

    async def get(self, reservation_id: int) -> Reservation:
        """Raises: NotFound."""
        row = await self.db.fetchrow("SELECT * FROM reservations WHERE id = $1", reservation_id)
        if row is None:
            raise NotFound(f"no reservation {reservation_id}")
        return _reservation(row)

    async def page(
        self,
        *,
        charger_id: str | None = None,
        status: ReservationStatus | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Reservation]:
        """Reservations newest first (by id), filtered; ``before``: the last id of the
        previous page."""
        rows = await self.db.fetch(
            "SELECT * FROM reservations WHERE ($1::text IS NULL OR charger_id = $1)"
            " AND ($2::text IS NULL OR status = $2) AND ($3::int4 IS NULL OR id < $3)"
            " ORDER BY id DESC LIMIT $4",
            charger_id,
            None if status is None else _STORED[status],
            before,
            limit,
        )
        return [_reservation(r) for r in rows]


def _reservation(row: asyncpg.Record) -> Reservation:
    fields = {f: row[f] for f in Reservation.__struct_fields__}
    fields["status"] = _SHOWN[row["status"]]
    return Reservation(**fields)
