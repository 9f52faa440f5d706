"""storage room: the writer's op of ``connectors`` — each connector's latest status.

:func:`status`: the latest status per (charger, connector) by the charger's timestamp; an
older notification never overwrites a newer one. Its result says what the write did
(``created``, ``updated`` or None for a stale notification), which is what the events say.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from evgate.storage.ops.base import Write, WriteOp, in_rounds

__all__ = ["CONNECTOR_STATUS", "ConnectorChange", "ConnectorStatus", "status"]

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


class ConnectorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A StatusNotification to store: a connector's status (connector 0: the charger itself)
    as of ``status_at`` (the charger's timestamp, or when it was received)."""

    charger_id: str
    connector_id: int
    status: str
    error_code: str
    info: str | None
    vendor_id: str | None
    vendor_error_code: str | None
    status_at: datetime
    updated_at: datetime


class ConnectorStatuses(WriteOp[ConnectorStatus, ConnectorChange | None]):
    """Upserts connector statuses, set-based. Result:
    ``created`` (the connector's first status), ``updated``, or None (older than the stored
    one: nothing changed)."""

    name = "connector_status"

    async def write(
        self, conn: asyncpg.Connection, items: list[ConnectorStatus]
    ) -> list[ConnectorChange | None]:
        results: list[ConnectorChange | None] = [None] * len(items)
        for indexes in in_rounds(items, lambda item: (item.charger_id, item.connector_id)):
            round_items = [items[i] for i in indexes]
            columns = [[getattr(i, c) for i in round_items] for c in _CONNECTOR_COLUMNS]
            written: dict[tuple[str, int], ConnectorChange] = {
                (r[0], r[1]): ("created" if r[2] else "updated")
                for r in await conn.fetch(_CONNECTOR, *columns)
            }
            for i in indexes:
                results[i] = written.get((items[i].charger_id, items[i].connector_id))
        return results


CONNECTOR_STATUS = ConnectorStatuses()


def status(item: ConnectorStatus) -> Write[ConnectorChange | None]:
    """Store a StatusNotification; its result says what changed (None: nothing, it is stale)."""
    return CONNECTOR_STATUS(item)
