"""auth room: external authorization as one component for ``app.py`` to wire.

:class:`ExternalAuth` owns the parts of issue 7 and their start/stop order: the HTTP client
for providers, the :class:`AuthorizerDirectory` (``authorizer_for``), the API's
:class:`Installations` service, the :class:`SessionEndSender` and the
:class:`OfflineConfigPusher`. Wiring (``app.py``)::

    auth = ExternalAuth(InstallationStore(db), native, metrics, settings)
    services = HandlerServices(..., after_accepted_boot=auth.on_boot_accepted)
    gateway = Gateway(settings, routes, ...)
    await db.listen(INSTALLATION_CHANNEL, auth.directory.notified, auth.directory.notified_all)
    await db.listen(SESSION_END_CHANNEL, auth.session_end_notified, auth.sender.wake)
    await auth.start(gateway)        # after LISTEN, so no change is missed between the two
    ...                              # handlers: auth.directory.authorizer_for(charger_id)
    await auth.stop()                # before the gateway and the database
"""

from __future__ import annotations

import httpx

from evgate.auth.authorizer import Authorizer
from evgate.auth.installations import AuthorizerDirectory, Installations
from evgate.auth.offline import OfflineConfigPusher
from evgate.auth.session_ends import SessionEndSender
from evgate.auth.webhook import webhook_counter
from evgate.config import Settings
from evgate.gateway.interface import ChargerLink
from evgate.metrics import Registry
from evgate.storage.installations import InstallationStore

__all__ = ["ExternalAuth"]

# Providers are called with the installation's own timeout (asyncio.timeout around the
# whole exchange); these are only the client's outer bounds.
_HTTP_TIMEOUT = httpx.Timeout(30.0)
_HTTP_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50)


class ExternalAuth:
    """Installations, their authorizers, session-end delivery and the offline-config push."""

    def __init__(
        self,
        store: InstallationStore,
        native: Authorizer,
        metrics: Registry,
        settings: Settings,
    ) -> None:
        self.store = store
        # Redirects are not followed: a provider's answer is the one at the configured URL.
        self.http = httpx.AsyncClient(
            timeout=_HTTP_TIMEOUT, limits=_HTTP_LIMITS, follow_redirects=False
        )
        self.directory = AuthorizerDirectory(store, native, self.http, webhook_counter(metrics))
        self.installations = Installations(store, self.directory)
        self.sender = SessionEndSender(
            store,
            self.directory,
            retry_base=settings.session_end_retry_base,
            retry_max=settings.session_end_retry_max,
            poll_interval=settings.session_end_poll_interval,
        )
        self.pusher: OfflineConfigPusher | None = None

    async def start(self, link: ChargerLink) -> None:
        """Load the installations and start the sender and the pusher (which calls chargers
        through ``link``)."""
        await self.directory.start()
        self.sender.start()
        self.pusher = OfflineConfigPusher(self.store, self.directory, link)
        self.pusher.start()

    async def stop(self) -> None:
        """Stop every task and close the HTTP client. Safe to call more than once."""
        if self.pusher is not None:
            await self.pusher.stop()
        await self.sender.stop()
        await self.directory.stop()
        await self.http.aclose()

    def on_boot_accepted(self, charger_id: str) -> None:
        """A BootNotification of ``charger_id`` is being answered Accepted."""
        if self.pusher is not None:
            self.pusher.on_boot_accepted(charger_id)

    def session_end_notified(self, _payload: str) -> None:
        """``NOTIFY evgate_session_end``: a stop entered the outbox."""
        self.sender.wake()
