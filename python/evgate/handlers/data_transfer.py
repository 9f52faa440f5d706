"""handlers room: DataTransfer from chargers.

Every request is stored with the status answered and emits chargePoint.dataTransferReceived.
A vendorId with a registered vendor handler (``HandlerServices.vendors``) gets that handler's
answer; any other gets ``UnknownVendorId``.
"""

from __future__ import annotations

from msgspec import UNSET

from evgate.events.builders import data_transfer as data_transfer_received
from evgate.handlers import ChargerContext, Routes
from evgate.handlers.services import HandlerServices
from evgate.protocol.v16 import DataTransferRequest, DataTransferResponse, DataTransferStatus
from evgate.storage.ops import charger_messages, outbox
from evgate.storage.ops.charger_messages import DataTransfer

__all__ = ["routes"]


def routes(services: HandlerServices) -> Routes:
    """The handlers of this module, by action."""

    async def data_transfer(
        ctx: ChargerContext, request: DataTransferRequest
    ) -> DataTransferResponse:
        vendor = services.vendors.get(request.vendor_id)
        if vendor is None:
            response = DataTransferResponse(status=DataTransferStatus.unknown_vendor_id)
        else:
            response = await vendor(ctx, request)
        transfer = DataTransfer(
            charger_id=ctx.charger_id,
            vendor_id=request.vendor_id,
            message_id=None if request.message_id is UNSET else request.message_id,
            data=None if request.data is UNSET else request.data,
            status=response.status.value,
            received_at=services.clock(),
        )
        await services.emit(
            ctx.charger_id,
            [charger_messages.data_transfer(transfer)],
            outbox.append([data_transfer_received(ctx.charger, request)]),
        )
        return response

    return {"DataTransfer": data_transfer}
