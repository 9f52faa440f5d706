"""auth room: pushing an installation's offline-charging choice to its chargers.

``allowChargingWhenOffline`` becomes three OCPP configuration keys, sent with
ChangeConfiguration: ``LocalAuthorizeOffline`` and ``AllowOfflineTxForUnknownId`` (the
choice), and ``LocalPreAuthorize`` always ``false``, so that a charger that is online asks
evgate (and through it the installation's provider) before every session instead of starting
on its own cache.

Each process pushes to the chargers connected to it: after an accepted BootNotification
(:meth:`OfflineConfigPusher.on_boot_accepted`), and when the directory reports a change of
the flag or of a charger's installation (every process hears it through NOTIFY, and only the
one holding the connection acts). What each charger answered is stored per charger
(``charger_offline_config``) and shown by ``GET /api/v1/installations/{id}/chargers``; a
charger that is offline stays ``pending`` until it boots again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from evgate.auth.installations import AuthorizerDirectory
from evgate.gateway.interface import ChargerLink, ChargerNotConnected, CommandError
from evgate.protocol.v16 import ChangeConfigurationRequest, ChangeConfigurationResponse
from evgate.storage.installations import InstallationStore, OfflineState
from evgate.tasks import OwnedTask

__all__ = ["OfflineConfigPusher", "offline_keys"]

log = logging.getLogger(__name__)


def offline_keys(allow_offline: bool) -> list[tuple[str, str]]:
    """The (key, value) pairs that carry the choice, in the order they are sent."""
    value = "true" if allow_offline else "false"
    return [
        ("LocalAuthorizeOffline", value),
        ("AllowOfflineTxForUnknownId", value),
        ("LocalPreAuthorize", "false"),
    ]


def _state(results: dict[str, str]) -> OfflineState:
    statuses = set(results.values())
    if statuses <= {"Accepted"}:
        return "applied"
    if statuses <= {"Accepted", "RebootRequired"}:
        return "reboot_required"
    return "rejected"


class OfflineConfigPusher:
    """Pushes offline-charging configuration to the chargers connected to this process.

    The ``on_*`` methods are synchronous and cheap (they queue the charger); one owned task
    does the pushes, ``concurrency`` chargers at a time. The queue holds each charger at most
    once, so it is bounded by the number of chargers. ``start()`` / ``await stop()``.
    """

    def __init__(
        self,
        store: InstallationStore,
        directory: AuthorizerDirectory,
        link: ChargerLink,
        concurrency: int = 50,
    ) -> None:
        self.store = store
        self.directory = directory
        self.link = link
        self.concurrency = concurrency
        # The chargers to push to, in order, each once.
        self._queue: OrderedDict[str, None] = OrderedDict()
        self._wake = asyncio.Event()
        self._task = OwnedTask(self._run, "auth-offline")
        directory.listeners.append(self.on_directory_change)

    # -- what triggers a push --------------------------------------------------------------------

    def on_boot_accepted(self, charger_id: str) -> None:
        """Call after a BootNotification was answered Accepted (the CALLRESULT sent)."""
        self._enqueue(charger_id)

    def on_installation_changed(self, installation_id: int) -> None:
        """The installation's allowChargingWhenOffline changed (or it was created)."""
        for charger_id in self.directory.members_of(installation_id):
            if self.link.connection(charger_id) is not None:
                self._enqueue(charger_id)

    def on_directory_change(self, change: str) -> None:
        """The directory's listener: ``i:<installation id>`` or ``c:<charger id>``."""
        kind, _, key = change.partition(":")
        if kind == "i" and key.isdigit():
            self.on_installation_changed(int(key))
        elif kind == "c" and self.link.connection(key) is not None:
            self._enqueue(key)

    def _enqueue(self, charger_id: str) -> None:
        self._queue[charger_id] = None
        self._wake.set()

    # -- the task --------------------------------------------------------------------------------

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch: list[str] = []
                while self._queue and len(batch) < self.concurrency:
                    batch.append(self._queue.popitem(last=False)[0])
                async with asyncio.TaskGroup() as group:
                    for charger_id in batch:
                        group.create_task(self._push_guarded(charger_id))

    async def _push_guarded(self, charger_id: str) -> None:
        try:
            await self.push(charger_id)
        except Exception:
            log.exception("offline configuration push to charger %s failed", charger_id)

    async def push(self, charger_id: str) -> None:
        """Push the wanted configuration to one charger now and record its answers.

        The wanted value is the installation's flag; for a charger in no installation, only
        a pending change (it left one) is pushed, and otherwise its configuration is left as
        the owner set it.
        """
        installation = self.directory.installation_of(charger_id)
        if installation is not None:
            allow = installation.allow_charging_when_offline
        else:
            # Known in memory: a charger that never left an installation has nothing pending,
            # and its boot costs no query (issue 23: nothing per CALL that memory knows).
            if not self.directory.offline_unsettled(charger_id):
                return
            row = await self.store.offline_config(charger_id)
            if row is None or row.state == "applied":
                self.directory.offline_settled(charger_id)
                return
            allow = row.allow_offline
        results: dict[str, str] = {}
        try:
            for key, value in offline_keys(allow):
                response = await self.link.call(
                    charger_id, ChangeConfigurationRequest(key=key, value=value)
                )
                assert isinstance(response, ChangeConfigurationResponse)
                results[key] = str(response.status)
        except ChargerNotConnected:
            return  # stays pending; pushed on its next boot
        except CommandError as exc:
            log.warning("offline configuration push to charger %s failed: %r", charger_id, exc)
            await self.store.record_offline_result(
                charger_id, allow, "failed", results, f"{type(exc).__name__}: {exc}"
            )
            return
        state = _state(results)
        if state != "applied":
            log.warning(
                "charger %s did not apply the offline configuration: %s", charger_id, results
            )
        await self.store.record_offline_result(charger_id, allow, state, results)
        if installation is None and state == "applied":
            self.directory.offline_settled(charger_id)
