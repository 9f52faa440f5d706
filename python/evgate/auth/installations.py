"""auth room: installations — groups of chargers with one authorization mode — and the
per-charger authorizer lookup the handlers use.

:class:`AuthorizerDirectory` keeps in memory which installation each charger belongs to and
one authorizer per installation (native, accept-all or webhook), so ``authorizer_for`` is a
dict lookup on the charger path (ARCHITECTURE rule 4). It is kept in sync with the database
through ``NOTIFY evgate_installation`` (payloads ``i:<installation id>`` and ``c:<charger id>``,
sent by the storage room in the changing transaction) and refreshed directly after this
process's own API changes, so an API answer is already in force when it is returned.

:class:`Installations` is the service behind the API: it checks settings (mode, webhook), stores
them and refreshes the directory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import msgspec

from evgate.auth.authorizer import AuthorizationQuestion, Authorizer, Decision
from evgate.auth.webhook import WebhookAuthorizer, WebhookSettings, check_webhook
from evgate.metrics import Counter
from evgate.storage.errors import NotFound
from evgate.storage.installations import AuthorizationMode, InstallationRow, InstallationStore
from evgate.tasks import OwnedTask

__all__ = [
    "AcceptAll",
    "AuthorizerDirectory",
    "DenyAll",
    "Installation",
    "InstallationInvalid",
    "Installations",
]

log = logging.getLogger(__name__)


class InstallationInvalid(ValueError):
    """The settings given for an installation cannot be used; the message says which and why."""


class AcceptAll:
    """``acceptAll`` mode: every id-tag may charge (home charging, free-vend sites)."""

    async def authorize(self, question: AuthorizationQuestion) -> Decision:
        return Decision(status="Accepted")


class DenyAll:
    """Every id-tag is Invalid. Fails closed where nothing better can decide: an installation
    whose stored webhook settings no longer parse (a downgrade, a hand edit; logged), and in
    place of the native id-tag list where none is wired in."""

    async def authorize(self, question: AuthorizationQuestion) -> Decision:
        return Decision(status="Invalid")


_ACCEPT_ALL = AcceptAll()
_UNUSABLE = DenyAll()


class Installation(msgspec.Struct, kw_only=True):
    """An installation with its webhook settings parsed."""

    id: int
    name: str
    authorization_mode: AuthorizationMode
    webhook: WebhookSettings | None
    allow_charging_when_offline: bool
    created_at: datetime
    updated_at: datetime
    # The sub-operator that owns it (None: the operator's own).
    sub_operator_id: int | None = None


def _parse_webhook(raw: dict[str, Any] | None) -> WebhookSettings | None:
    """Raises: InstallationInvalid."""
    if raw is None:
        return None
    try:
        settings = msgspec.convert(raw, WebhookSettings)
        check_webhook(settings)
    except (msgspec.ValidationError, ValueError) as exc:
        message = str(exc).replace("`$.", "`webhook.")
        raise InstallationInvalid(message) from None
    return settings


def _stored_webhook(settings: WebhookSettings | None) -> dict[str, Any] | None:
    """The settings as the JSON object that is stored: camelCase, unset members left out."""
    if settings is None:
        return None
    raw: dict[str, Any] = msgspec.to_builtins(settings)
    return {k: v for k, v in raw.items() if v is not None}


def _installation(row: InstallationRow) -> Installation:
    return Installation(
        id=row.id,
        name=row.name,
        authorization_mode=row.authorization_mode,
        webhook=_parse_webhook(row.webhook),
        allow_charging_when_offline=row.allow_charging_when_offline,
        created_at=row.created_at,
        updated_at=row.updated_at,
        sub_operator_id=row.sub_operator_id,
    )


def _check_mode(mode: AuthorizationMode, webhook: WebhookSettings | None) -> None:
    if mode == "webhook" and webhook is None:
        raise InstallationInvalid("authorizationMode webhook needs the webhook settings")


# -- the directory -------------------------------------------------------------------------------

ChangeListener = Callable[[str], None]


class AuthorizerDirectory:
    """charger → installation → authorizer, in memory.

    After ``await start()``: ``authorizer_for`` answers synchronously; pass each payload of
    ``NOTIFY evgate_installation`` to :meth:`notified`, and call :meth:`notified_all` when
    notifications may have been missed (the listening connection was re-established).
    ``await stop()`` on shutdown.

    Args:
        store: the installations' queries.
        native: the native id-tag list, for chargers in no installation or in ``native`` mode,
            and for ``webhook`` installations without a sessionStartUrl.
        http: the HTTP client for providers (owned by the caller).
        calls: the webhook call counter (``evgate.auth.webhook.webhook_counter``).
    """

    def __init__(
        self,
        store: InstallationStore,
        native: Authorizer,
        http: httpx.AsyncClient,
        calls: Counter,
    ) -> None:
        self.store = store
        self.native = native
        self._http = http
        self._calls = calls
        self._installations: dict[int, Installation] = {}
        self._authorizers: dict[int, Authorizer] = {}
        self._membership: dict[str, int] = {}
        # Chargers in no installation whose offline configuration may wait for a push (they
        # left one): only these need their row read when they boot. A charger joins the set
        # when the directory learns it left (``c:``, the NOTIFY of the change that marked its
        # row pending) and leaves it once its charger applied the change.
        self._offline_unsettled: set[str] = set()
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._task = OwnedTask(self._refresh_loop, "auth-directory")
        # Told "i:<id>" when an installation's offline flag changes (or it appears) and
        # "c:<charger id>" when a charger changes installation: the offline-config pusher.
        self.listeners: list[ChangeListener] = []

    # -- the lookups (synchronous: the charger path) ------------------------------------------

    def authorizer_for(self, charger_id: str) -> Authorizer:
        """The authorizer that decides for ``charger_id``: its installation's, else native."""
        installation_id = self._membership.get(charger_id)
        if installation_id is None:
            return self.native
        return self._authorizers.get(installation_id, self.native)

    def installation_of(self, charger_id: str) -> Installation | None:
        installation_id = self._membership.get(charger_id)
        return None if installation_id is None else self._installations.get(installation_id)

    def offline_unsettled(self, charger_id: str) -> bool:
        """Whether ``charger_id``, in no installation, may have an offline configuration
        waiting to be pushed (it left an installation): False for a charger that never was
        in one, whose boot then reads nothing."""
        return charger_id in self._offline_unsettled

    def offline_settled(self, charger_id: str) -> None:
        """``charger_id`` (in no installation) applied its offline configuration."""
        self._offline_unsettled.discard(charger_id)

    def members_of(self, installation_id: int) -> list[str]:
        return [c for c, i in self._membership.items() if i == installation_id]

    def webhook(self, installation_id: int) -> WebhookAuthorizer | None:
        """The installation's webhook authorizer, when it is in ``webhook`` mode."""
        authorizer = self._authorizers.get(installation_id)
        return authorizer if isinstance(authorizer, WebhookAuthorizer) else None

    # -- keeping in sync -----------------------------------------------------------------------

    async def start(self) -> None:
        await self._reload_all()
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    def notified(self, payload: str) -> None:
        """A ``NOTIFY evgate_installation`` payload arrived (synchronous, from the listener):
        the refresh happens on the directory's own task."""
        self._pending.add(payload)
        self._wake.set()

    def notified_all(self) -> None:
        """Notifications may have been lost: reload everything."""
        self.notified("*")

    async def refresh(self, payload: str) -> None:
        """Apply one change now (``i:<id>``, ``c:<charger id>`` or ``*``)."""
        kind, _, key = payload.partition(":")
        if kind == "i" and key.isdigit():
            await self._refresh_installation(int(key))
        elif kind == "c" and key:
            await self._refresh_charger(key)
        elif payload == "*":
            await self._reload_all()
        else:
            log.warning("ignoring unknown evgate_installation notification %r", payload)

    async def _refresh_loop(self) -> None:
        retry = self.store.db.health.retry("the installation refresher", log, first=1.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, set()
            if "*" in batch:
                batch = {"*"}
            for payload in sorted(batch):
                try:
                    await self.refresh(payload)
                except Exception as exc:
                    # The database may be away for a moment; try again a little later rather
                    # than keep a stale authorizer for good.
                    self._pending.add(payload)
                    await asyncio.sleep(retry.failed(exc))
                    self._wake.set()
                else:
                    retry.ok()

    async def _reload_all(self) -> None:
        rows = await self.store.all()
        membership = await self.store.memberships()
        self._offline_unsettled = await self.store.offline_unsettled()
        old = self._installations
        self._installations = {}
        self._authorizers = {}
        for row in rows:
            self._install(row)
        self._membership = {c: i for c, i in membership.items() if i is not None}
        for installation_id, installation in self._installations.items():
            before = old.get(installation_id)
            if before is not None and (
                before.allow_charging_when_offline != installation.allow_charging_when_offline
            ):
                self._tell(f"i:{installation_id}")

    def _install(self, row: InstallationRow) -> Installation | None:
        try:
            installation = _installation(row)
        except InstallationInvalid as exc:
            log.error("installation %d has unusable webhook settings: %s", row.id, exc)
            self._installations.pop(row.id, None)
            self._authorizers[row.id] = _UNUSABLE
            return None
        self._installations[row.id] = installation
        self._authorizers[row.id] = self._authorizer(installation)
        return installation

    def _authorizer(self, installation: Installation) -> Authorizer:
        if installation.authorization_mode == "acceptAll":
            return _ACCEPT_ALL
        if installation.authorization_mode == "webhook" and installation.webhook is not None:
            previous = self._authorizers.get(installation.id)
            if (
                isinstance(previous, WebhookAuthorizer)
                and previous.settings == installation.webhook
            ):
                # Unchanged settings keep their token and decision caches.
                return previous
            return WebhookAuthorizer(
                installation.id, installation.webhook, self._http, self.native, self._calls
            )
        return self.native

    async def _refresh_installation(self, installation_id: int) -> None:
        before = self._installations.get(installation_id)
        try:
            row = await self.store.get(installation_id)
        except NotFound:
            self._installations.pop(installation_id, None)
            self._authorizers.pop(installation_id, None)
            return
        after = self._install(row)
        if after is not None and (
            before is None
            or before.allow_charging_when_offline != after.allow_charging_when_offline
        ):
            self._tell(f"i:{installation_id}")

    async def _refresh_charger(self, charger_id: str) -> None:
        found = await self.store.memberships(charger_id)
        before = self._membership.get(charger_id)
        after = found.get(charger_id)
        if after is None:
            self._membership.pop(charger_id, None)
            if charger_id in found:
                # It left an installation (``set_charger_installation``): its row is pending,
                # read at its next boot.
                self._offline_unsettled.add(charger_id)
        else:
            self._membership[charger_id] = after
            self._offline_unsettled.discard(charger_id)
        if before != after:
            self._tell(f"c:{charger_id}")

    def _tell(self, change: str) -> None:
        for listener in self.listeners:
            try:
                listener(change)
            except Exception:
                log.exception("installation change listener failed on %s", change)


# -- the API's service -----------------------------------------------------------------------------


class Installations:
    """Create, read, change and delete installations; every change is in force in this
    process when the call returns, and in the others on their NOTIFY."""

    def __init__(self, store: InstallationStore, directory: AuthorizerDirectory) -> None:
        self.store = store
        self.directory = directory

    async def create(
        self,
        name: str,
        authorization_mode: AuthorizationMode,
        webhook: WebhookSettings | None,
        allow_charging_when_offline: bool,
    ) -> Installation:
        """Raises: InstallationInvalid."""
        if webhook is not None:
            try:
                check_webhook(webhook)
            except ValueError as exc:
                raise InstallationInvalid(str(exc)) from None
        _check_mode(authorization_mode, webhook)
        row = await self.store.create(
            name, authorization_mode, _stored_webhook(webhook), allow_charging_when_offline
        )
        await self.directory.refresh(f"i:{row.id}")
        return _installation(row)

    async def get(self, installation_id: int) -> Installation:
        """Raises: NotFound."""
        return _installation(await self.store.get(installation_id))

    async def page(self, after: int | None, limit: int) -> list[Installation]:
        return [_installation(r) for r in await self.store.page(after, limit)]

    async def update(
        self,
        installation_id: int,
        changes: dict[str, Any],
        webhook_changes: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET,
    ) -> Installation:
        """Change some settings.

        Args:
            installation_id: which installation.
            changes: some of ``name``, ``authorization_mode``, ``allow_charging_when_offline``.
            webhook_changes: UNSET keeps the webhook settings, None removes them, and a dict of
                camelCase members merges into them (a member set to None goes back to its
                default), so a secret need not be sent again to change a timeout.

        Raises:
            NotFound: no such installation. InstallationInvalid: the result is unusable.
        """
        row = await self.store.get(installation_id)
        webhook = row.webhook
        if webhook_changes is None:
            webhook = None
        elif isinstance(webhook_changes, dict):
            merged = {**(webhook or {}), **webhook_changes}
            webhook = {k: v for k, v in merged.items() if v is not None}
        settings = _parse_webhook(webhook)
        mode: AuthorizationMode = changes.get("authorization_mode", row.authorization_mode)
        _check_mode(mode, settings)
        row = await self.store.replace(
            installation_id,
            changes.get("name", row.name),
            mode,
            _stored_webhook(settings),
            changes.get("allow_charging_when_offline", row.allow_charging_when_offline),
        )
        await self.directory.refresh(f"i:{installation_id}")
        return _installation(row)

    async def delete(self, installation_id: int) -> None:
        """Raises: NotFound; InUse while chargers belong to it."""
        await self.store.delete(installation_id)
        await self.directory.refresh(f"i:{installation_id}")

    async def charger_moved(self, charger_id: str) -> None:
        """After a charger's installationId changed through this process's API."""
        await self.directory.refresh(f"c:{charger_id}")
