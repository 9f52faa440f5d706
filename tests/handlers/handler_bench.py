"""The handler tests' workbench (imported by their conftest and tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evgate.auth.native import NativeAuthorizer
from evgate.handlers import ChargerContext, Routes
from evgate.handlers.services import HandlerServices
from evgate.storage.chargers import ChargerStore
from evgate.storage.db import Database
from evgate.storage.id_tags import IdTagStore
from evgate.storage.writer import Writer


@dataclass
class Bench:
    """What a handler test works with."""

    db: Database
    writer: Writer
    services: HandlerServices
    routes: Routes
    id_tags: IdTagStore
    native: NativeAuthorizer
    chargers: ChargerStore

    async def call(self, action: str, request: Any, charger_id: str = "CP-1") -> Any:
        """Run ``action``'s handler as the gateway would, for a fresh connection context."""
        return await self.routes[action](ChargerContext(charger_id), request)

    async def add_id_tag(self, id_tag: str, **fields: Any) -> None:
        """Add an id-tag and apply it to the authorizer (as its NOTIFY would)."""
        await self.id_tags.create(id_tag, **fields)
        await self.native.load()

    async def rows(self, sql: str, *args: Any) -> list[Any]:
        return await self.db.fetch(sql, *args)
