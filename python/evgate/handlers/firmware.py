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
from evgate.handlers.services import INT64_MAX, INT64_MIN, HandlerServices, check_range, events
from evgate.protocol.v16 import (
    DiagnosticsStatusNotificationRequest,
    DiagnosticsStatusNotificationResponse,
    FirmwareStatusNotificationRequest,
    FirmwareStatusNotificationResponse,
    LogStatusNotificationRequest,
    LogStatusNotificationResponse,
    Message,
    SignedFirmwareStatusNotificationRequest,
    SignedFirmwareStatusNotificationResponse,
)
from evgate.storage.sessions import CHARGER_MESSAGES, DIAGNOSTICS_REQUEST
from evgate.storage.writer import Write

__all__ = ["message_row", "record_message", "routes"]


def message_row(
    services: HandlerServices,
    ctx: ChargerContext,
    kind: str,
    *,
    status: str | None = None,
    request_id: Any = UNSET,
    event_type: str | None = None,
    tech_info: Any = UNSET,
    sent_at: Any = None,
) -> tuple[Any, ...]:
    """A ``charger_messages`` row (see ``CHARGER_MESSAGES``)."""
    return (
        ctx.charger_id,
        kind,
        status,
        None if request_id is UNSET else request_id,
        event_type,
        None if tech_info is UNSET else tech_info,
        sent_at,
        services.clock(),
    )


async def record_message(
    services: HandlerServices, ctx: ChargerContext, kind: str, **fields: Any
) -> None:
    """Store one ``charger_messages`` row (fields as :func:`message_row`) and return after it
    committed."""
    await services.writer.submit(
        [(CHARGER_MESSAGES, message_row(services, ctx, kind, **fields))], key=ctx.charger_id
    )


def routes(services: HandlerServices) -> Routes:
    """The handlers of this module, by action."""

    def status_notification(
        action: str, request_type: type[Message], response: type[Message]
    ) -> Any:
        async def handler(ctx: ChargerContext, request: Any) -> Message:
            request_id = getattr(request, "request_id", UNSET)
            if request_id is not UNSET:  # any integer to the schemas; stored as bigint
                check_range(request_id, INT64_MIN, INT64_MAX, "requestId")
            await record_message(
                services, ctx, action, status=request.status.value, request_id=request_id
            )
            return response()

        handler.__name__ = action
        # The request type it takes, for the gateway's start-up check (check_routes).
        handler.__annotations__ = {"ctx": ChargerContext, "request": request_type}
        return handler

    async def diagnostics_status_notification(
        ctx: ChargerContext, request: DiagnosticsStatusNotificationRequest
    ) -> DiagnosticsStatusNotificationResponse:
        kind = "DiagnosticsStatusNotification"
        row = message_row(services, ctx, kind, status=request.status.value)
        charger, now = ctx.charger, services.clock()

        def described(results: list[Any]) -> list[Write]:
            return events([diagnostics_status(charger, request, results[1] or 0, now)])

        await services.emit(
            ctx.charger_id,
            [(CHARGER_MESSAGES, row), (DIAGNOSTICS_REQUEST, (ctx.charger_id,))],
            described,
        )
        return DiagnosticsStatusNotificationResponse()

    return {
        "DiagnosticsStatusNotification": diagnostics_status_notification,
        "FirmwareStatusNotification": status_notification(
            "FirmwareStatusNotification",
            FirmwareStatusNotificationRequest,
            FirmwareStatusNotificationResponse,
        ),
        "LogStatusNotification": status_notification(
            "LogStatusNotification", LogStatusNotificationRequest, LogStatusNotificationResponse
        ),
        "SignedFirmwareStatusNotification": status_notification(
            "SignedFirmwareStatusNotification",
            SignedFirmwareStatusNotificationRequest,
            SignedFirmwareStatusNotificationResponse,
        ),
    }
