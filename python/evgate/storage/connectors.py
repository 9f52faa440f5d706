"""storage room: connectors — the reads of ``connectors`` (each connector's latest status). The
writer's op that stores a StatusNotification is ``storage/ops/connectors.py``.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from evgate.storage.db import Database

__all__ = ["Connector", "ConnectorBrief", "ConnectorStore"]


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


class ConnectorBrief(msgspec.Struct, rename="camel", kw_only=True):
    """A connector's status as a list of chargers shows it."""

    connector_id: int
    status: str
    error_code: str


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

    async def of_chargers(self, charger_ids: list[str]) -> dict[str, list[ConnectorBrief]]:
        """The connectors of several chargers (a page of them), by charger, in order."""
        rows = await self.db.fetch(
            "SELECT charger_id, connector_id, status, error_code FROM connectors"
            " WHERE charger_id = ANY($1::text[]) ORDER BY charger_id, connector_id",
            charger_ids,
        )
        found: dict[str, list[ConnectorBrief]] = {}
        for r in rows:
            found.setdefault(r[0], []).append(
                ConnectorBrief(connector_id=r[1], status=r[2], error_code=r[3])
            )
        return found
