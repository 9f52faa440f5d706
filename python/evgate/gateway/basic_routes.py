"""gateway room: the smallest routing table — BootNotification and Heartbeat answered at once.

For a gateway run without the handlers' table (gateway tests, ``bench/gateway.py``): every
other action answers ``NotImplemented``. It writes nothing, so it acknowledges no state.
"""

from __future__ import annotations

from datetime import UTC, datetime

from evgate.handlers.contract import ChargerContext, Routes
from evgate.protocol.v16 import (
    BootNotificationRequest,
    BootNotificationResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    RegistrationStatus,
)

__all__ = ["basic_routes"]


def basic_routes(heartbeat_interval: int = 60) -> Routes:
    """BootNotification → Accepted with ``heartbeat_interval``; Heartbeat → the time."""

    async def boot_notification(
        ctx: ChargerContext, request: BootNotificationRequest
    ) -> BootNotificationResponse:
        return BootNotificationResponse(
            status=RegistrationStatus.accepted,
            current_time=datetime.now(UTC),
            interval=heartbeat_interval,
        )

    async def heartbeat(ctx: ChargerContext, request: HeartbeatRequest) -> HeartbeatResponse:
        return HeartbeatResponse(current_time=datetime.now(UTC))

    return {"BootNotification": boot_notification, "Heartbeat": heartbeat}
