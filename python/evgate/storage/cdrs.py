"""storage room: charge detail records — the ``cdrs`` row (:class:`Cdr`, one per ended
transaction, written with the StopTransaction's rows by ``storage/ops/cdrs.py``) and its reads
(:class:`CdrStore`, for the API)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from evgate.pricing import Price
from evgate.storage.db import Database
from evgate.storage.errors import NotFound

__all__ = ["CDR_COLUMNS", "INSERT_CDR", "Cdr", "CdrStore", "cdr_args"]


class Cdr(msgspec.Struct, kw_only=True, rename="camel"):
    """A charge detail record: one ended transaction, as ``GET /api/v1/cdrs/{id}`` shows it."""

    id: str
    charger_id: str
    charge_point_id: int
    transaction_id: int
    connector_id: int
    id_tag: str | None
    started_at: datetime
    stopped_at: datetime
    meter_start_wh: int
    meter_stop_wh: int
    energy_wh: int
    stop_reason: str | None
    created_at: datetime
    # The transaction's price (null: no tariff applied, so it has none; not a price of 0).
    price: Price | None = None
    pricing: Literal["priced", "noTariff"] = "noTariff"
    # The partner the transaction is billed to: its id tag's user's partner at the stop (null:
    # none). Set by the database when the CDR is inserted (:data:`INSERT_CDR`), never by the
    # writer's caller.
    partner_id: int | None = None
    # The sub-operator it is settled to: its charger's owner at the stop (null: the operator's
    # charger), kept when the charger changes hands. Set by the database, as ``partner_id``.
    sub_operator_id: int | None = None

    def __post_init__(self) -> None:
        self.pricing = "noTariff" if self.price is None else "priced"


CDR_COLUMNS = (
    "id",
    "charger_id",
    "charger_number",
    "transaction_id",
    "connector_id",
    "id_tag",
    "started_at",
    "stopped_at",
    "meter_start_wh",
    "meter_stop_wh",
    "energy_wh",
    "stop_reason",
    "created_at",
    "price",
)
# A retried StopTransaction makes no second CDR (the id is derived from the transaction). The
# partner and the sub-operator are looked up in the same statement (no round trip more per
# stop), as they are now, at the stop: the partner of the user who owns the id tag ($6), the
# owner of the charger ($2).
INSERT_CDR = (
    f"INSERT INTO cdrs ({', '.join(CDR_COLUMNS)}, partner_id, sub_operator_id) VALUES"
    f" ({', '.join(f'${i}' for i in range(1, len(CDR_COLUMNS) + 1))},"
    " (SELECT u.partner_id FROM id_tags t JOIN users u ON u.id = t.user_id"
    " WHERE upper(t.id_tag) = upper($6::text)),"
    " (SELECT sub_operator_id FROM chargers WHERE id = $2::text)) ON CONFLICT (id) DO NOTHING"
)


def cdr_args(cdr: Cdr) -> tuple[Any, ...]:
    """The arguments of :data:`INSERT_CDR` for ``cdr``, in CDR_COLUMNS order."""
    return (
        cdr.id,
        cdr.charger_id,
        cdr.charge_point_id,
        cdr.transaction_id,
        cdr.connector_id,
        cdr.id_tag,
        cdr.started_at,
        cdr.stopped_at,
        cdr.meter_start_wh,
        cdr.meter_stop_wh,
        cdr.energy_wh,
        cdr.stop_reason,
        cdr.created_at,
        None if cdr.price is None else msgspec.json.encode(cdr.price).decode(),
    )


_price = msgspec.json.Decoder(Price).decode


class CdrStore:
    """Charge detail records: written with the StopTransaction's rows, read by the API."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, cdr_id: str) -> dict[str, Any]:
        """The CDR's columns (``charger_number`` as ``charge_point_id``). Raises: NotFound."""
        columns = ", ".join(
            "charger_number AS charge_point_id" if c == "charger_number" else c
            for c in (*CDR_COLUMNS, "partner_id", "sub_operator_id")
        )
        row = await self.db.fetchrow(f"SELECT {columns} FROM cdrs WHERE id = $1", cdr_id)
        if row is None:
            raise NotFound(f"no CDR {cdr_id!r}")
        found = dict(row)
        if found["price"] is not None:
            found["price"] = _price(found["price"])
        return found

    async def insert(self, conn: asyncpg.Connection, cdr: Cdr) -> None:
        """Insert a CDR on ``conn`` (in the caller's transaction); a second one with the same
        id is ignored."""
        await conn.execute(INSERT_CDR, *cdr_args(cdr))
