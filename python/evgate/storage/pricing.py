"""storage room: which tariff applies at a charger, in memory (issue 19).

StartTransaction snapshots the tariff that applies without a database round trip:
:class:`PricingDirectory` keeps every tariff, tariff group, location (its group and timezone)
and charger placement in memory, and reloads them all when ``NOTIFY evgate_pricing`` says one
changed (tariffs, groups and locations are few and change rarely; a reload is four queries).
After the LISTEN connection comes back it reloads too (notifications may have been missed). An
API change in this process calls :meth:`PricingDirectory.refresh` before it answers, so a
StartTransaction after the answer sees it here at once; other processes follow on NOTIFY.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import msgspec

from evgate.pricing import Driver, GroupEntry, Snapshot, Tariff, choose
from evgate.storage.db import Database, acting_for
from evgate.tasks import OwnedTask

__all__ = ["PricingDirectory"]

log = logging.getLogger(__name__)

_tariff = msgspec.json.Decoder(Tariff).decode
_entries = msgspec.json.Decoder(tuple[GroupEntry, ...]).decode


class _Place(msgspec.Struct, frozen=True):
    """A charger's or a location's tariff group, and the timezone its prices are read in."""

    group_id: int | None
    timezone: str | None


class _Group(msgspec.Struct, frozen=True):
    """A tariff group's entries and its owner (a sub-operator's id; None: the operator's),
    whose own id-tags alone its restrictions on who charges match."""

    entries: tuple[GroupEntry, ...]
    owner: int | None


class PricingDirectory:
    """charger → tariff group → the tariff that applies, in memory.

    After ``await start()``: :meth:`snapshot_for` answers synchronously; pass ``NOTIFY
    evgate_pricing`` to :meth:`notified` (and reconnects too). ``await stop()`` on shutdown.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._tariffs: dict[int, Tariff] = {}
        self._groups: dict[int, _Group] = {}
        self._locations: dict[int, _Place] = {}
        self._chargers: dict[str, _Place] = {}
        self._wake = asyncio.Event()
        self._task = OwnedTask(self._refresh_loop, "pricing-directory")

    def snapshot_for(self, charger_id: str, driver: Driver, at: datetime) -> Snapshot | None:
        """The tariff that applies to a transaction starting at ``at`` at ``charger_id`` for
        ``driver`` (its id-tag's group and owner): the first match of the charger's tariff
        group, else of its location's; None when none applies."""
        place = self._chargers.get(charger_id)
        if place is None or place.group_id is None:
            return None
        group = self._groups.get(place.group_id)
        if group is None:
            return None
        found = choose(group.entries, self._tariffs, driver, at, owner=group.owner)
        if found is None:
            return None
        return Snapshot(tariff_id=found[0], tariff=found[1], timezone=place.timezone or "UTC")

    async def start(self) -> None:
        await self.refresh()
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    def notified(self, _payload: str = "*") -> None:
        """Something changed (or notifications may have been missed): reload soon."""
        self._wake.set()

    async def refresh(self) -> None:
        """Reload everything now: the whole operator's, also when a sub-operator's request
        asks (acting for it, row-level security would leave out the others' prices)."""
        with acting_for(None):
            pool = self.db.pool  # the operator's
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            tariffs = await conn.fetch("SELECT id, terms FROM tariffs")
            groups = await conn.fetch("SELECT id, entries, sub_operator_id FROM tariff_groups")
            locations = await conn.fetch("SELECT id, tariff_group_id, timezone FROM locations")
            chargers = await conn.fetch(
                "SELECT id, location_id, tariff_group_id FROM chargers"
                " WHERE location_id IS NOT NULL OR tariff_group_id IS NOT NULL"
            )
        self._tariffs = {r[0]: _tariff(r[1]) for r in tariffs}
        self._groups = {r[0]: _Group(_entries(r[1]), r[2]) for r in groups}
        self._locations = {r[0]: _Place(r[1], r[2]) for r in locations}
        places: dict[str, _Place] = {}
        for charger_id, location_id, group_id in chargers:
            location = self._locations.get(location_id) if location_id is not None else None
            places[charger_id] = _Place(
                group_id if group_id is not None else location.group_id if location else None,
                location.timezone if location else None,
            )
        self._chargers = places

    async def _refresh_loop(self) -> None:
        retry = self.db.health.retry("the pricing directory", log, first=1.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.refresh()
            except Exception as exc:
                # The database may be away for a moment: try again rather than keep stale
                # tariffs for good.
                self._wake.set()
                await asyncio.sleep(retry.failed(exc))
            else:
                retry.ok()
