"""storage room: charging sessions — the writer ops the handlers submit, and the reads.

The ops are made once (module constants); handlers submit ``(op, item)`` pairs to the writer.
Their dedupe rules, which make a resent message (a charger resends what was not acknowledged)
leave no duplicate:

* ``TRANSACTION_STARTS``: key (charger, connector, start time, id-tag, meterStart); a resent
  StartTransaction gets the id (and idTagInfo status) of its first attempt, and is told it is
  not the first (``created``), so that no event is made twice.
* ``TRANSACTION_STOPS``: closes an open transaction of that charger and returns it; a second
  stop changes nothing and returns None.
* ``CONNECTOR_STATUS``: the latest status per (charger, connector) by the charger's timestamp;
  an older notification never overwrites a newer one. Returns what the write did (``created``,
  ``updated`` or None for a stale notification), which is what the events say.
* ``BOOT_INFO``: one row per charger, the latest BootNotification.
* ``CHARGER_MESSAGES``: key (charger, event type, timestamp) for security events; the status
  notifications carry no timestamp and are a log (a resend may appear twice).
* ``DATA_TRANSFERS``: a log, like the status notifications.

Every batch is written exactly once by the writer (``writer_commits``), so these rules are
about the charger's resends, not about evgate's own retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import NotFound
from evgate.storage.events import record_reservation_changed
from evgate.storage.writer import CopyRows, Statement, WriteOp
from evgate.tasks import OwnedTask

__all__ = [
    "AUTHORIZATION_ID",
    "BOOT_INFO",
    "CHARGER_MESSAGES",
    "COMMAND_REQUEST_ID",
    "CONNECTOR_STATUS",
    "DATA_TRANSFERS",
    "DIAGNOSTICS_REQUEST",
    "DIAGNOSTICS_REQUESTED",
    "SECURITY_EVENTS",
    "TRANSACTION_STARTS",
    "TRANSACTION_STOPS",
    "BootInfo",
    "ClosedTransaction",
    "Connector",
    "ConnectorStatuses",
    "ConnectorStore",
    "FetchEach",
    "Reservation",
    "ReservationExpiry",
    "ReservationStore",
    "StartedTransaction",
    "Transaction",
    "TransactionStart",
    "TransactionStarts",
    "TransactionStops",
    "TransactionStore",
    "in_rounds",
]

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")


def in_rounds(items: Sequence[ItemT], key: Callable[[ItemT], Hashable]) -> list[list[int]]:
    """The indexes of ``items`` split into rounds in which no key repeats, each item in the
    round after the previous item with its key: one set-based statement per round then
    touches a row at most once (PostgreSQL refuses an upsert that touches a row twice, and an
    ``UPDATE ... FROM`` applies only one of several matches), in submission order."""
    rounds: list[list[int]] = []
    seen: dict[Hashable, int] = {}
    for index, item in enumerate(items):
        k = key(item)
        n = seen[k] = seen.get(k, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(index)
    return rounds


class FetchEach(WriteOp[tuple[Any, ...], Any]):
    """Run one statement per item and return its first column (None without a row): for the
    rare messages whose events depend on what the statement did or drew (a sequence value, a
    row that a resend finds already there)."""

    def __init__(self, sql: str, name: str = "fetch_each") -> None:
        self.sql = sql
        self.name = name

    async def write(self, conn: asyncpg.Connection, items: list[tuple[Any, ...]]) -> list[Any]:
        return [await conn.fetchval(self.sql, *item) for item in items]


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

    def key(self) -> tuple[Any, ...]:
        return (self.charger_id, self.connector_id, self.started_at, self.id_tag, self.meter_start)


class StartedTransaction(msgspec.Struct, frozen=True, kw_only=True):
    """The stored transaction a StartTransaction answers with (its first attempt's, if resent)."""

    transaction_id: int
    id_tag_status: str
    id_tag_expiry: datetime | None
    parent_id_tag: str | None
    # This StartTransaction made the transaction (False for a resend): it has events to emit.
    created: bool = False
    # And it ended the reservation it named (status Used).
    reservation_used: bool = False


_START = """
INSERT INTO transactions AS t (charger_id, connector_id, id_tag, meter_start, started_at,
    id_tag_status, id_tag_expiry, parent_id_tag, external_session_id, reservation_id)
SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::int8[], $5::timestamptz[],
                     $6::text[], $7::timestamptz[], $8::text[], $9::text[], $10::int4[])
-- The no-op update makes RETURNING give the stored row of a resent StartTransaction.
ON CONFLICT (charger_id, connector_id, started_at, id_tag, meter_start)
    DO UPDATE SET updated_at = t.updated_at
RETURNING charger_id, connector_id, started_at, id_tag, meter_start, id, id_tag_status,
          id_tag_expiry, parent_id_tag, xmax = 0
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
        stored: dict[tuple[Any, ...], StartedTransaction] = {}
        inserted: set[tuple[Any, ...]] = set()
        for r in await conn.fetch(_START, *columns):
            stored[tuple(r[:5])] = StartedTransaction(
                transaction_id=r[5], id_tag_status=r[6], id_tag_expiry=r[7], parent_id_tag=r[8]
            )
            if r[9]:  # xmax = 0: inserted now, not found by the dedupe key
                inserted.add(tuple(r[:5]))
        reserved = [u for u in unique if u.reservation_id is not None]
        used: set[int] = set()
        if reserved:
            rows = await conn.fetch(
                _END_RESERVATIONS,
                [u.reservation_id for u in reserved],
                [u.charger_id for u in reserved],
                [stored[u.key()].transaction_id for u in reserved],
            )
            used = {r[0] for r in rows}
        results = []
        for item in items:
            key = item.key()
            result = stored[key]
            if key in inserted:  # the first item of a key made it; its twins are resends
                inserted.discard(key)
                result = msgspec.structs.replace(
                    result, created=True, reservation_used=item.reservation_id in used
                )
            results.append(result)
        return results


TRANSACTION_STARTS = TransactionStarts()


class ClosedTransaction(msgspec.Struct, frozen=True, kw_only=True):
    """A transaction as its StopTransaction closed it (what the stop's events and CDR say)."""

    transaction_id: int
    connector_id: int
    id_tag: str
    started_at: datetime
    meter_start: int
    stopped_at: datetime
    meter_stop: int
    stop_reason: str | None


_STOP = """
UPDATE transactions t SET meter_stop = u.meter_stop, stopped_at = u.stopped_at,
    stop_reason = u.stop_reason, stop_id_tag = u.stop_id_tag, updated_at = now()
FROM unnest($1::int4[], $2::text[], $3::int8[], $4::timestamptz[], $5::text[], $6::text[])
     AS u(id, charger_id, meter_stop, stopped_at, stop_reason, stop_id_tag)
WHERE t.id = u.id AND t.charger_id = u.charger_id AND t.stopped_at IS NULL
RETURNING t.id, t.connector_id, t.id_tag, t.started_at, t.meter_start, t.stopped_at,
          t.meter_stop, t.stop_reason
"""


class TransactionStops(WriteOp[tuple[Any, ...], ClosedTransaction | None]):
    """Closes the batch's transactions in one statement. Item: (transaction_id, charger_id,
    meter_stop, stopped_at, stop_reason, stop_id_tag). Result: the transaction it closed, or
    None (unknown, another charger's, or already closed: a resend)."""

    name = "transaction_stops"

    async def write(
        self, conn: asyncpg.Connection, items: list[tuple[Any, ...]]
    ) -> list[ClosedTransaction | None]:
        # Only the first stop of a transaction can close it: later ones in the batch are
        # resends, and an UPDATE ... FROM would apply just one of them anyway.
        first: dict[int, int] = {}
        for index, item in enumerate(items):
            first.setdefault(item[0], index)
        unique = [items[i] for i in first.values()]
        rows = await conn.fetch(_STOP, *zip(*unique, strict=True))
        closed = {
            r[0]: ClosedTransaction(
                transaction_id=r[0],
                connector_id=r[1],
                id_tag=r[2],
                started_at=r[3],
                meter_start=r[4],
                stopped_at=r[5],
                meter_stop=r[6],
                stop_reason=r[7],
            )
            for r in rows
        }
        return [
            closed.get(item[0]) if first[item[0]] == index else None
            for index, item in enumerate(items)
        ]


TRANSACTION_STOPS = TransactionStops()

_CONNECTOR_COLUMNS = (
    "charger_id",
    "connector_id",
    "status",
    "error_code",
    "info",
    "vendor_id",
    "vendor_error_code",
    "status_at",
    "updated_at",
)
# One statement per round of unique (charger, connector) keys (see in_rounds); RETURNING says
# which were written, and xmax = 0 which were inserted (the connector's first status).
_CONNECTOR = f"""
INSERT INTO connectors AS c ({", ".join(_CONNECTOR_COLUMNS)})
SELECT {", ".join(f"u.{c}" for c in _CONNECTOR_COLUMNS)}
FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::timestamptz[], $9::timestamptz[])
     AS u({", ".join(_CONNECTOR_COLUMNS)})
ON CONFLICT (charger_id, connector_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _CONNECTOR_COLUMNS[2:])}
WHERE c.status_at <= excluded.status_at
RETURNING c.charger_id, c.connector_id, xmax = 0
"""

ConnectorChange = Literal["created", "updated"]


class ConnectorStatuses(WriteOp[tuple[Any, ...], ConnectorChange | None]):
    """Upserts connector statuses, set-based. Item: (charger_id, connector_id, status,
    error_code, info, vendor_id, vendor_error_code, status_at, updated_at). Result:
    ``created`` (the connector's first status), ``updated``, or None (older than the stored
    one: nothing changed)."""

    name = "connector_status"

    async def write(
        self, conn: asyncpg.Connection, items: list[tuple[Any, ...]]
    ) -> list[ConnectorChange | None]:
        results: list[ConnectorChange | None] = [None] * len(items)
        for indexes in in_rounds(items, lambda item: (item[0], item[1])):
            round_items = [items[i] for i in indexes]
            written = {
                (r[0], r[1]): ("created" if r[2] else "updated")
                for r in await conn.fetch(_CONNECTOR, *zip(*round_items, strict=True))
            }
            for i in indexes:
                results[i] = written.get((items[i][0], items[i][1]))  # type: ignore[assignment]
        return results


CONNECTOR_STATUS = ConnectorStatuses()

_BOOT_COLUMNS = (
    "charger_id",
    "vendor",
    "model",
    "charge_point_serial_number",
    "charge_box_serial_number",
    "firmware_version",
    "iccid",
    "imsi",
    "meter_type",
    "meter_serial_number",
    "booted_at",
)
_BOOT = f"""
INSERT INTO charger_boot_info AS b ({", ".join(_BOOT_COLUMNS)}, registration_status)
SELECT u.*, coalesce(c.registration_status, 'Rejected')
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::timestamptz[])
     AS u({", ".join(_BOOT_COLUMNS)})
LEFT JOIN chargers c ON c.id = u.charger_id
ON CONFLICT (charger_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in (*_BOOT_COLUMNS[1:], "registration_status"))}
RETURNING charger_id, registration_status
"""


class BootInfo(WriteOp[tuple[Any, ...], str]):
    """Stores a BootNotification (item: a tuple in ``_BOOT_COLUMNS`` order: charger_id,
    vendor, model, charge point and charge box serials, firmware, ICCID, IMSI, meter type and
    serial, booted_at) and returns the registration status to answer, read in the same
    transaction: the operator's ``chargers.registration_status``, ``Rejected`` for a charger
    that is not (or no longer) registered."""

    name = "boot_info"

    async def write(self, conn: asyncpg.Connection, items: list[tuple[Any, ...]]) -> list[str]:
        latest = {item[0]: item for item in items}  # one row per charger: its last boot
        rows = await conn.fetch(_BOOT, *zip(*latest.values(), strict=True))
        status = {r[0]: r[1] for r in rows}
        return [status[item[0]] for item in items]


BOOT_INFO = BootInfo()

#: Item: (charger_id, kind, status, request_id, event_type, tech_info, sent_at, received_at).
CHARGER_MESSAGES = Statement(
    "INSERT INTO charger_messages (charger_id, kind, status, request_id, event_type, tech_info,"
    " sent_at, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    name="charger_messages",
)

#: Item: a CHARGER_MESSAGES row of a SecurityEventNotification. Result: its id, or None for a
#: resend (same charger, type and timestamp) that changed nothing and so has no event.
SECURITY_EVENTS = FetchEach(
    "INSERT INTO charger_messages (charger_id, kind, status, request_id, event_type, tech_info,"
    " sent_at, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
    " RETURNING id",
    name="security_events",
)

#: Item: (charger_id,). Result: the request id of the charger's latest accepted GetDiagnostics
#: (None if evgate sent none), read in the transaction of the status notification.
DIAGNOSTICS_REQUEST = FetchEach(
    "SELECT diagnostics_request_id FROM chargers WHERE id = $1", name="diagnostics_request"
)

#: Item: (). Result: a new authorizationId (AuthorizationNotification, authorization.changed).
AUTHORIZATION_ID = FetchEach("SELECT nextval('authorization_ids')", name="authorization_id")

#: Item: (). Result: a new command request id (GetConfiguration, GetDiagnostics).
COMMAND_REQUEST_ID = FetchEach("SELECT nextval('command_request_ids')", name="command_request_id")

#: Item: (charger_id,): the charger answered a GetDiagnostics, which gets a request id.
DIAGNOSTICS_REQUESTED = Statement(
    "UPDATE chargers SET diagnostics_request_id = nextval('command_request_ids') WHERE id = $1",
    name="diagnostics_requested",
)

#: Item: rows (charger_id, vendor_id, message_id, data, status, received_at).
DATA_TRANSFERS = CopyRows(
    "data_transfers", ("charger_id", "vendor_id", "message_id", "data", "status", "received_at")
)


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
    StartTransaction that uses them (``TRANSACTION_STARTS``), an accepted CancelReservation
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
