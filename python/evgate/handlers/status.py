"""handlers room: StatusNotification — the latest state of each connector.

Connector 0 is the charger itself. Any status and error code is accepted and stored with its
info and vendor codes; a notification older (by the charger's timestamp, or the time received
when it has none) than the one stored never overwrites it, so a late resend does no harm.

A notification that changed the stored status emits HardwareStatusNotification; a connector's
first one (connector 0, the charger itself, excepted) also evse.changed ``created``, before
it. A stale one changes nothing and emits nothing.
"""

from __future__ import annotations

from msgspec import UNSET

from evgate.events.builders import evse_changed, hardware_status
from evgate.handlers import ChargerContext, Routes
from evgate.handlers.services import INT32_MAX, HandlerServices, check_range
from evgate.protocol.v16 import StatusNotificationRequest, StatusNotificationResponse
from evgate.storage.ops import connectors, outbox
from evgate.storage.ops.base import Results, Write
from evgate.storage.ops.connectors import ConnectorStatus

__all__ = ["routes"]


def routes(services: HandlerServices) -> Routes:
    """The handlers of this module, by action."""

    async def status_notification(
        ctx: ChargerContext, request: StatusNotificationRequest
    ) -> StatusNotificationResponse:
        connector_id = check_range(request.connector_id, 0, INT32_MAX, "connectorId")
        now = services.clock()
        status = ConnectorStatus(
            charger_id=ctx.charger_id,
            connector_id=connector_id,
            status=request.status.value,
            error_code=request.error_code.value,
            info=None if request.info is UNSET else request.info,
            vendor_id=None if request.vendor_id is UNSET else request.vendor_id,
            vendor_error_code=None
            if request.vendor_error_code is UNSET
            else request.vendor_error_code,
            status_at=now if request.timestamp is UNSET else request.timestamp,
            updated_at=now,
        )
        stored = connectors.status(status)
        charger = ctx.charger

        def described(results: Results) -> list[Write[None]]:
            change = results[stored]
            if change is None:
                return []
            entries = [hardware_status(charger, request, now)]
            if change == "created" and connector_id > 0:
                entries.insert(0, evse_changed(charger, connector_id, "created", now))
            return outbox.append(entries)

        results = await services.emit(ctx.charger_id, [stored], described)
        if results[stored] is not None:
            services.status_changed(status)
            if services.load is not None:
                services.load.status_changed(ctx.charger_id, connector_id, request.status.value)
        return StatusNotificationResponse()

    return {"StatusNotification": status_notification}
