"""handlers room: BootNotification and Heartbeat.

BootNotification stores what the charger says of itself (vendor, model, serials, firmware,
ICCID, IMSI, meter type and serial) and answers with the registration status the operator set
on the charger (``PATCH /api/v1/chargers/{id}`` ``registrationStatus``), read in the same
transaction: Accepted, Pending or Rejected, with ``Settings.heartbeat_interval``. A second
BootNotification is handled like the first; each emits BootNotification. Heartbeat changes
nothing and answers at once.
"""

from __future__ import annotations

from msgspec import UNSET

from evgate.events.builders import boot_notification as boot_event
from evgate.handlers import ChargerContext, Routes
from evgate.handlers.services import HandlerServices, events
from evgate.protocol.v16 import (
    BootNotificationRequest,
    BootNotificationResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    RegistrationStatus,
)
from evgate.storage.sessions import BOOT_INFO

__all__ = ["routes"]


def _or_none(value: str | object) -> str | None:
    return None if value is UNSET else value  # type: ignore[return-value]


def routes(services: HandlerServices) -> Routes:
    """The handlers of this module, by action."""

    async def boot_notification(
        ctx: ChargerContext, request: BootNotificationRequest
    ) -> BootNotificationResponse:
        now = services.clock()
        info = (
            ctx.charger_id,
            request.charge_point_vendor,
            request.charge_point_model,
            _or_none(request.charge_point_serial_number),
            _or_none(request.charge_box_serial_number),
            _or_none(request.firmware_version),
            _or_none(request.iccid),
            _or_none(request.imsi),
            _or_none(request.meter_type),
            _or_none(request.meter_serial_number),
            now,
        )
        [status] = await services.emit(
            ctx.charger_id, [(BOOT_INFO, info)], events([boot_event(ctx.charger, request, now)])
        )
        ctx.state["registration_status"] = status
        if status == RegistrationStatus.accepted:
            services.after_accepted_boot(ctx.charger_id)
        return BootNotificationResponse(
            status=RegistrationStatus(status),
            current_time=now,
            interval=services.heartbeat_interval,
        )

    async def heartbeat(ctx: ChargerContext, request: HeartbeatRequest) -> HeartbeatResponse:
        return HeartbeatResponse(current_time=services.clock())

    return {"BootNotification": boot_notification, "Heartbeat": heartbeat}
