"""gateway room: the credential index — every charger's credentials in memory, for the
synchronous upgrade check (ARCHITECTURE rule 4), kept in sync with the database.

The credentials come from a loader coroutine (``ChargerStore.credentials``); change
notifications are handed in by ``app.py`` through the gateway (``credentials_changed`` on each
``NOTIFY evgate_charger``, ``credentials_reset`` after the listening connection was
re-established). Each change is refreshed on the index's own task, in notification order, and
handed to ``on_change`` (the gateway, which closes a connection the change invalidates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec

from evgate.outages import Dependency
from evgate.storage.chargers import ChargerCredentials
from evgate.tasks import service_task

__all__ = ["CredentialIndex", "CredentialLoader"]

log = logging.getLogger("evgate.gateway")

#: Loads the credentials of one charger (a list of 0 or 1) or, given None, of all.
CredentialLoader = Callable[[str | None], Awaitable[list[ChargerCredentials]]]
# More pending notifications than this and one full reload is cheaper than a query each.
_RELOAD_ALL_ABOVE = 64


class CredentialIndex:
    """Charger id → credentials, loaded at start and refreshed on change notifications.

    Args:
        load: see :data:`CredentialLoader`.
        on_change: called with a charger's id and its new credentials (None: deleted) after
            the index took them.
        health: where a failed refresh goes (the database's outages: ``Database.health``).
    """

    def __init__(
        self,
        load: CredentialLoader,
        on_change: Callable[[str, ChargerCredentials | None], None],
        health: Dependency | None = None,
    ) -> None:
        self._load = load
        self._on_change = on_change
        self._health = health or Dependency("the credential store", lambda _: False)
        #: What the upgrade check reads (``upgrade.decide``'s ``index``).
        self.by_id: dict[str, ChargerCredentials] = {}
        self._dirty: set[str] = set()
        self._reload_all = False
        self._refresher: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False

    async def start(self) -> None:
        """Load every charger's credentials, then apply what was notified meanwhile."""
        for credentials in await self._load(None):
            self.by_id[credentials.id] = credentials
        self._started = True
        if self._dirty or self._reload_all:
            self._kick_refresher()

    async def stop(self) -> None:
        """Stop refreshing. Safe to call more than once."""
        self._stopping = True
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    def get(self, charger_id: str) -> ChargerCredentials | None:
        """What the upgrade check currently holds for the charger (None: unknown)."""
        return self.by_id.get(charger_id)

    def adopt_secret(self, charger_id: str, secret_digest: bytes) -> None:
        """The charger took a new secret (an AuthorizationKey): admit it at once, before the
        database's notification of the stored digest comes round."""
        credentials = self.by_id.get(charger_id)
        if credentials is not None:
            self.by_id[charger_id] = msgspec.structs.replace(
                credentials, secret_digest=secret_digest
            )

    def changed(self, charger_id: str) -> None:
        """The database says this charger's credentials changed (or it was created/deleted)."""
        self._dirty.add(charger_id)
        if self._started:
            self._kick_refresher()

    def reset(self) -> None:
        """Notifications may have been missed (the listening connection dropped): reload all."""
        self._reload_all = True
        if self._started:
            self._kick_refresher()

    def _kick_refresher(self) -> None:
        if self._refresher is None and not self._stopping:
            self._refresher = service_task(self._refresh(), name="gateway-credentials")

    async def _refresh(self) -> None:
        try:
            while self._dirty or self._reload_all:
                if self._reload_all or len(self._dirty) > _RELOAD_ALL_ABOVE:
                    self._reload_all = False
                    self._dirty.clear()
                    fresh = {c.id: c for c in await self._load(None)}
                    for charger_id in set(self.by_id) | set(fresh):
                        self._apply(charger_id, fresh.get(charger_id))
                    continue
                charger_id = self._dirty.pop()
                found = await self._load(charger_id)
                self._apply(charger_id, found[0] if found else None)
        except Exception as exc:
            # The database is unreachable: keep the index as it is; the listener's reconnect
            # will ask for a full reload.
            self._health.report(exc, "refreshing charger credentials", log)
        finally:
            self._refresher = None

    def _apply(self, charger_id: str, credentials: ChargerCredentials | None) -> None:
        if credentials is None:
            self.by_id.pop(charger_id, None)
        else:
            self.by_id[charger_id] = credentials
        self._on_change(charger_id, credentials)
