"""handlers room: diagnostics, firmware and log status notifications.

DiagnosticsStatusNotification, FirmwareStatusNotification, LogStatusNotification and
SignedFirmwareStatusNotification are each stored as a ``charger_messages`` row (kind = the
action, its status and requestId) and answered after it commits; a requestId beyond bigint
is refused with PropertyConstraintViolation. DiagnosticsStatusNotification
also emits DiagnosticsStatusNotification, whose ``requestId`` (OCPP 1.6 has none) is that of
the charger's latest accepted GetDiagnostics command (0 if none), read in the same
transaction.
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from evgate.events.builders import diagnostics_status
from evgate.handlers import ChargerContext, Routes
from evgate.handlers.services import INT64_MAX, INT64_MIN, HandlerServices, check_range
from evgate.protocol.v16 import (
    DiagnosticsStatusNotificationRequest,
    DiagnosticsStatusNotificationResponse,
    FirmwareStatusNotificationRequest,
    FirmwareStatusNotificationResponse,
    LogStatusNotificationRequest,
    LogStatusNotificationResponse,
    SignedFirmwareStatusNotificationRequest,
    SignedFirmwareStatusNotificationResponse,
)
from evgate.storage.ops import charger_messages, chargers, outbox
from evgate.storage.ops.base import Results, Write
from evgate.storage.ops.charger_messages import ChargerMessage

__all__ = ["charger_message", "record_message", "routes"]


def charger_message(
    services: HandlerServices,
    ctx: ChargerContext,
    kind: str,
    *,
    status: str | None = None,
    request_id: Any = UNSET,
    event_type: str | None = None,
    tech_info: Any = UNSET,
    sent_at: Any = None,
) -> ChargerMessage:
    """A message the charger reported, received now (absent fields None)."""
    return ChargerMessage(
        charger_id=ctx.charger_id,
        kind=kind,
        status=status,
        request_id=None if request_id is UNSET else request_id,
        event_type=event_type,
        tech_info=None if tech_info is UNSET else tech_info,
        sent_at=sent_at,
        received_at=services.clock(),
    )


async def record_message(
    services: HandlerServices, ctx: ChargerContext, kind: str, **fields: Any
) -> None:
    """Store one ``charger_messages`` row (fields as :func:`charger_message`) and return after
    it committed."""
    message = charger_message(services, ctx, kind, **fields)
    await services.writer.submit([charger_messages.charger_message(message)], key=ctx.charger_id)


def routes(services: HandlerServices) -> Routes:
    """The handlers of this module, by action."""

    async def record_status(ctx: ChargerContext, action: str, status: str, request_id: Any) -> None:
        if request_id is not UNSET:  # any integer to the schemas; stored as bigint
            check_range(request_id, INT64_MIN, INT64_MAX, "requestId")
        await record_message(services, ctx, action, status=status, request_id=request_id)

    # One handler per action, each annotated with its own request type (check_routes reads it).
    async def firmware_status_notification(
        ctx: ChargerContext, request: FirmwareStatusNotificationRequest
    ) -> FirmwareStatusNotificationResponse:
        await record_status(ctx, "FirmwareStatusNotification", request.status.value, UNSET)
        return FirmwareStatusNotificationResponse()

    async def log_status_notification(
        ctx: ChargerContext, request: LogStatusNotificationRequest
    ) -> LogStatusNotificationResponse:
        await record_status(ctx, "LogStatusNotification", request.status.value, request.request_id)
        return LogStatusNotificationResponse()

    async def signed_firmware_status_notification(
        ctx: ChargerContext, request: SignedFirmwareStatusNotificationRequest
    ) -> SignedFirmwareStatusNotificationResponse:
        await record_status(
            ctx, "SignedFirmwareStatusNotification", request.status.value, request.request_id
        )
        return SignedFirmwareStatusNotificationResponse()

    async def diagnostics_status_notification(
        ctx: ChargerContext, request: DiagnosticsStatusNotificationRequest
    ) -> DiagnosticsStatusNotificationResponse:
        kind = "DiagnosticsStatusNotification"
        message = charger_message(services, ctx, kind, status=request.status.value)
        request_id = chargers.diagnostics_request(ctx.charger_id)
        charger, now = ctx.charger, services.clock()

        def described(results: Results) -> list[Write[None]]:
            drawn = results[request_id] or 0
            return outbox.append([diagnostics_status(charger, request, drawn, now)])

        await services.emit(
            ctx.charger_id, [charger_messages.charger_message(message), request_id], described
        )
        return DiagnosticsStatusNotificationResponse()

    return {
        "DiagnosticsStatusNotification": diagnostics_status_notification,
        "FirmwareStatusNotification": firmware_status_notification,
        "LogStatusNotification": log_status_notification,
        "SignedFirmwareStatusNotification": signed_firmware_status_notification,
    }
