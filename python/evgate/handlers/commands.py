"""handlers room: what evgate's commands to chargers change, once the charger answered.

:class:`CommandEffects` wraps the ChargerLink the operator API sends commands through (the
cluster, so a command routed to another evgate process is seen once, here), and after the
charger's answer records what it changed, with its events:

* GetConfiguration: ChargePointSyncConfigurationNotification with the keys the charger
  reported — or, if the command failed, with the ``error`` — and a ``requestId`` drawn from
  the ``command_request_ids`` sequence;
* GetDiagnostics answered: a ``requestId`` from the same sequence becomes the charger's
  ``diagnostics_request_id``, which its DiagnosticsStatusNotifications then carry;
* ReserveNow: its reservationId is claimed before it is sent (another charger's reservation's
  id, or one outside PostgreSQL's integer, is refused: InvalidCommand; the id sequence moves
  past the operator's own id, so ``POST /api/v1/reservations`` never hands it out).
  ``Accepted``: the reservation is held (reservation.changed ``active``); refused (Faulted,
  Occupied, Rejected, Unavailable) or failed: a reservation evgate numbered (``requested``)
  records that (``refused`` with the charger's status, ``failed`` with the error);
* CancelReservation ``Accepted``: it is ended (``canceled``);
* ChangeConfiguration of ``AuthorizationKey``: a key outside the security whitepaper's 16-40
  characters is refused before it is sent (InvalidCommand). An accepted one is stored by the
  process that holds the charger's connection (its gateway calls :class:`AuthorizationKeys`,
  wired by ``app.py``), not here: a routed command's caller may give up or miss the answer
  while the charger already uses the new key, and the holder retries until it is stored.

The command's answer is returned whatever recording it did: the charger acted, and a failure
to record is logged (the writer itself waits out a database outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from msgspec import UNSET

from evgate.events.builders import ChargerRef, configuration_synced
from evgate.gateway.interface import (
    ChargerLink,
    CommandError,
    ConnectionInfo,
    InvalidCommand,
    authorization_key,
)
from evgate.handlers.services import INT32_MAX, utc_now
from evgate.protocol.v16 import (
    CancelReservationRequest,
    CancelReservationResponse,
    CancelReservationStatus,
    GetConfigurationRequest,
    GetConfigurationResponse,
    GetDiagnosticsRequest,
    Message,
    ReservationStatus,
    ReserveNowRequest,
    ReserveNowResponse,
)
from evgate.storage.errors import NotFound
from evgate.storage.ops import chargers, outbox, sequences
from evgate.storage.ops.base import Results, Write
from evgate.storage.reservations import ReservationIdTaken, ReservationStore
from evgate.storage.writer import Writer
from evgate.tasks import service_task

__all__ = ["AuthorizationKeys", "CommandEffects", "KeySaver"]

log = logging.getLogger(__name__)

#: Stores a charger's new secret digest (``ChargerStore.set_secret_digest``).
KeySaver = Callable[[str, bytes], Awaitable[None]]


class AuthorizationKeys:
    """Stores the digest of each AuthorizationKey a charger accepted. The charger uses the new
    key from now on, so it must not be lost: while the database is away it is retried with
    backoff (newest key per charger wins) on one owned task.

    Args:
        save: see :data:`KeySaver`.
        wait: how long ``accepted`` waits for the key to be stored before it returns anyway.
    """

    def __init__(self, save: KeySaver, wait: float) -> None:
        self._save = save
        self._wait = wait
        # Charger id -> (digest, set when stored): the keys not stored yet.
        self._unsaved: dict[str, tuple[bytes, asyncio.Event]] = {}
        self._saver: asyncio.Task[None] | None = None

    async def accepted(self, charger_id: str, new_digest: bytes) -> None:
        """Store ``new_digest`` as the charger's secret; return once it is stored, or after
        ``wait`` seconds (it is then stored when the database is back)."""
        stored = asyncio.Event()
        self._unsaved[charger_id] = (new_digest, stored)
        if self._saver is None:
            self._saver = service_task(self._save_all(), name="authorization-keys")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._wait):
                await stored.wait()

    async def stop(self) -> None:
        """Stop storing; a key still unstored is logged (it was accepted and is lost)."""
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
        for charger_id in self._unsaved:
            log.error("charger %s's new AuthorizationKey was never stored (shutdown)", charger_id)

    async def _save_all(self) -> None:
        delay = 0.1
        try:
            while self._unsaved:
                charger_id, (new_digest, stored) = next(iter(self._unsaved.items()))
                try:
                    await self._save(charger_id, new_digest)
                except NotFound:
                    log.warning("charger %s was deleted before its new key was stored", charger_id)
                except Exception:
                    log.warning(
                        "storing charger %s's new AuthorizationKey failed; retrying in %.1f s",
                        charger_id,
                        delay,
                        exc_info=True,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                delay = 0.1
                stored.set()
                if self._unsaved.get(charger_id, (None,))[0] == new_digest:
                    del self._unsaved[charger_id]
        finally:
            self._saver = None


class CommandEffects:
    """A ChargerLink that records what commands changed (see the module docstring).

    Args:
        link: the link commands go through (the cluster).
        writer: the group-commit writer.
        reservations: the reservation store.
        number_of: a charger's ``number`` (the gateway's credential index), None if unknown.
    """

    def __init__(
        self,
        link: ChargerLink,
        writer: Writer,
        reservations: ReservationStore,
        number_of: Callable[[str], int | None],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.link = link
        self.writer = writer
        self.reservations = reservations
        self.number_of = number_of
        self.clock = clock

    def connection(self, charger_id: str) -> ConnectionInfo | None:
        return self.link.connection(charger_id)

    async def locate(self, charger_id: str) -> ConnectionInfo | None:
        return await self.link.locate(charger_id)

    async def call(self, charger_id: str, request: Message) -> Message:
        """As ``link.call``, then record what the answer (or the failure) changed.

        Raises:
            InvalidCommand: a weak AuthorizationKey (or one the holder cannot store), a
                ReserveNow whose reservationId is another charger's reservation.
            CommandError: as ``link.call``.
        """
        authorization_key(request)  # a weak key is refused here, before it is routed
        if isinstance(request, ReserveNowRequest):
            await self._claim(charger_id, request.reservation_id)
        try:
            response = await self.link.call(charger_id, request)
        except CommandError as exc:
            if isinstance(request, GetConfigurationRequest):
                await self._record(charger_id, self._configuration(charger_id, None, exc))
            elif isinstance(request, ReserveNowRequest):
                error = f"{type(exc).__name__}: {exc}"
                unanswered = self.reservations.unanswered(
                    request.reservation_id, charger_id, error=error
                )
                await self._record(charger_id, unanswered)
            raise
        await self._record(charger_id, self._effects(charger_id, request, response))
        return response

    async def _claim(self, charger_id: str, reservation_id: int) -> None:
        if not -INT32_MAX - 1 <= reservation_id <= INT32_MAX:
            raise InvalidCommand(f"reservationId {reservation_id} is outside 32-bit integers")
        try:
            await self.reservations.claim(reservation_id, charger_id)
        except ReservationIdTaken as exc:
            raise InvalidCommand(str(exc)) from None

    async def _record(self, charger_id: str, effects: Any) -> None:
        try:
            await effects
        except Exception:
            log.exception("recording the effects of a command to %s failed", charger_id)

    async def _effects(self, charger_id: str, request: Message, response: Message) -> None:
        if isinstance(request, GetConfigurationRequest):
            assert isinstance(response, GetConfigurationResponse)
            keys = [] if response.configuration_key is UNSET else response.configuration_key
            await self._configuration(charger_id, keys, None)
        elif isinstance(request, GetDiagnosticsRequest):
            await self.writer.submit([chargers.diagnostics_requested(charger_id)], key=charger_id)
        elif isinstance(request, ReserveNowRequest):
            assert isinstance(response, ReserveNowResponse)
            if response.status != ReservationStatus.accepted:
                await self.reservations.unanswered(
                    request.reservation_id, charger_id, refusal=response.status.value
                )
            elif (
                await self.reservations.reserve(
                    request.reservation_id,
                    charger_id,
                    request.connector_id,
                    request.id_tag,
                    request.expiry_date,
                    None if request.parent_id_tag is UNSET else request.parent_id_tag,
                )
                is None
            ):
                log.warning(
                    "charger %s accepted reservation %d, which is another charger's since",
                    charger_id,
                    request.reservation_id,
                )
        elif isinstance(request, CancelReservationRequest):
            assert isinstance(response, CancelReservationResponse)
            if response.status == CancelReservationStatus.accepted:
                await self.reservations.end(request.reservation_id, "Cancelled", charger_id)

    async def _configuration(
        self, charger_id: str, keys: list[Any] | None, failure: CommandError | None
    ) -> None:
        number = self.number_of(charger_id)
        if number is None:
            return
        charger, now = ChargerRef(charger_id, number), self.clock()
        error = None if failure is None else f"{type(failure).__name__}: {failure}"

        drawn = sequences.command_request_id()

        def described(results: Results) -> list[Write[None]]:
            request_id = results[drawn]
            return outbox.append([configuration_synced(charger, keys, now, request_id, error)])

        await self.writer.submit([outbox.emit([drawn], described)], key=charger_id)
