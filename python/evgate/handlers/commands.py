"""handlers room: what evgate's commands to chargers change, once the charger answered.

:class:`CommandEffects` wraps the ChargerLink the operator API sends commands through (the
cluster, so a command routed to another evgate process is seen once, here), and after the
charger's answer records what it changed, with its events:

* GetConfiguration: ChargePointSyncConfigurationNotification with the keys the charger
  reported — or, if the command failed, with the ``error`` — and a ``requestId`` drawn from
  the ``command_request_ids`` sequence;
* GetDiagnostics answered: a ``requestId`` from the same sequence becomes the charger's
  ``diagnostics_request_id``, which its DiagnosticsStatusNotifications then carry;
* ReserveNow ``Accepted``: the reservation is held (reservation.changed ``active``);
* CancelReservation ``Accepted``: it is ended (``canceled``).

The command's answer is returned whatever recording it did: the charger acted, and a failure
to record is logged (the writer itself waits out a database outage).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from msgspec import UNSET

from evgate.events.builders import ChargerRef, configuration_synced
from evgate.gateway.interface import ChargerLink, CommandError, ConnectionInfo
from evgate.handlers.services import utc_now
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
from evgate.storage.ops import chargers, outbox, sequences
from evgate.storage.ops.base import Results, Write
from evgate.storage.reservations import ReservationStore
from evgate.storage.writer import Writer

__all__ = ["CommandEffects"]

log = logging.getLogger(__name__)


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
            CommandError: as ``link.call``.
        """
        try:
            response = await self.link.call(charger_id, request)
        except CommandError as exc:
            if isinstance(request, GetConfigurationRequest):
                await self._record(charger_id, self._configuration(charger_id, None, exc))
            raise
        await self._record(charger_id, self._effects(charger_id, request, response))
        return response

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
            if response.status == ReservationStatus.accepted:
                await self.reservations.reserve(
                    request.reservation_id,
                    charger_id,
                    request.connector_id,
                    request.id_tag,
                    request.expiry_date,
                    None if request.parent_id_tag is UNSET else request.parent_id_tag,
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
