"""storage room: the writer's ops of ``charger_messages`` and ``data_transfers`` — the logs of
what chargers report.

* :func:`message`: a status notification (diagnostics, firmware, log, SignCertificate): a
  log, since these carry no timestamp (a resend may appear twice).
* :func:`security_event`: key (charger, event type, timestamp); its result is the stored
  row's id, or None for a resend that changed nothing (and so has no event).
* :func:`data_transfer`: a DataTransfer with the status answered, a log like the status
  notifications.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from evgate.storage.ops.base import FetchEach, Statement, Write, WriteOp

__all__ = [
    "CHARGER_MESSAGES",
    "DATA_TRANSFERS",
    "SECURITY_EVENTS",
    "ChargerMessage",
    "DataTransfer",
    "charger_message",
    "data_transfer",
    "security_event",
]


class ChargerMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message a charger reported: ``kind`` is its action; the other fields as it sent them
    (None when absent), and when it was received."""

    charger_id: str
    kind: str
    received_at: datetime
    status: str | None = None
    request_id: int | None = None
    event_type: str | None = None
    tech_info: str | None = None
    sent_at: datetime | None = None


def _message_args(m: ChargerMessage) -> tuple[Any, ...]:
    return (
        m.charger_id,
        m.kind,
        m.status,
        m.request_id,
        m.event_type,
        m.tech_info,
        m.sent_at,
        m.received_at,
    )


CHARGER_MESSAGES: Statement[ChargerMessage] = Statement(
    "INSERT INTO charger_messages (charger_id, kind, status, request_id, event_type, tech_info,"
    " sent_at, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    name="charger_messages",
    args=_message_args,
)

#: Result: the stored row's id, or None for a resend (same charger, type and timestamp) that
#: changed nothing and so has no event.
SECURITY_EVENTS: FetchEach[ChargerMessage, int | None] = FetchEach(
    "INSERT INTO charger_messages (charger_id, kind, status, request_id, event_type, tech_info,"
    " sent_at, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
    " RETURNING id",
    name="security_events",
    args=_message_args,
)


class DataTransfer(msgspec.Struct, frozen=True, kw_only=True):
    """A DataTransfer a charger sent (absent fields None) and the status evgate answered."""

    charger_id: str
    vendor_id: str
    message_id: str | None
    data: str | None
    status: str
    received_at: datetime


_DATA_TRANSFER_COLUMNS = ("charger_id", "vendor_id", "message_id", "data", "status", "received_at")


class DataTransfers(WriteOp[DataTransfer, None]):
    """Appends the batch's DataTransfers to ``data_transfers`` with one COPY."""

    name = "copy:data_transfers"

    async def write(self, conn: asyncpg.Connection, items: list[DataTransfer]) -> list[None]:
        await conn.copy_records_to_table(
            "data_transfers",
            records=[
                (i.charger_id, i.vendor_id, i.message_id, i.data, i.status, i.received_at)
                for i in items
            ],
            columns=_DATA_TRANSFER_COLUMNS,
        )
        return [None] * len(items)


DATA_TRANSFERS = DataTransfers()


def charger_message(item: ChargerMessage) -> Write[None]:
    """Log a message a charger reported."""
    return CHARGER_MESSAGES(item)


def security_event(item: ChargerMessage) -> Write[int | None]:
    """Store a SecurityEventNotification; its result is the row's id (None for a resend)."""
    return SECURITY_EVENTS(item)


def data_transfer(item: DataTransfer) -> Write[None]:
    """Log a DataTransfer with the status answered."""
    return DATA_TRANSFERS(item)
