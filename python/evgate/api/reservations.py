"""api room: ``/api/v1/reservations`` — reservations that evgate numbers.

* ``POST``: evgate numbers the reservation (its ``reservation_ids`` sequence), records it
  (``requested``), sends ReserveNow and answers 201 with what the charger said: ``active``, or
  ``refused`` with its status in ``refusal`` (Faulted, Occupied, Rejected, Unavailable). A
  command that fails is the problem the command API gives it (409 not connected, 502, 503,
  504, with ``reservationId``), and the reservation is ``failed`` with the ``error``;
* ``GET`` (newest first; filters chargerId, status) and ``GET /{id}``;
* ``DELETE /{id}``: CancelReservation to the charger; 200 with the reservation ``canceled``,
  409 when it is not ``active`` or the charger rejects the cancellation.

Their service is ``ApiContext.reservations``; the answers' effects are recorded where every
command's are (``handlers/commands.py``), so a ReserveNow of the command API is recorded alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import JSONBody, Parameter, QueryParameter

from evgate.api.bounds import INT32_MAX
from evgate.api.commands import call_charger
from evgate.api.context import Ctx
from evgate.api.inputs import aware
from evgate.api.pagination import Page, page_of
from evgate.api.problems import ApiError, Conflict, Unprocessable
from evgate.credentials import CHARGER_ID_PATTERN
from evgate.protocol.v16 import (
    CancelReservationRequest,
    CancelReservationResponse,
    CancelReservationStatus,
    ReserveNowRequest,
)
from evgate.storage.reservations import STATUSES, Reservation, ReservationStatus

__all__ = ["ReservationController"]

#: A reservation's id in a path (an ``integer`` column).
ReservationId = Annotated[int, Parameter(ge=1, le=INT32_MAX, description="a reservation id")]
IdTag = Annotated[str, msgspec.Meta(min_length=1, max_length=20)]


class ReservationCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    charger_id: Annotated[str, msgspec.Meta(pattern=CHARGER_ID_PATTERN)]
    connector_id: Annotated[
        int,
        msgspec.Meta(ge=0, le=INT32_MAX, description="0: any connector (if the charger can)"),
    ]
    id_tag: IdTag
    expiry_date: Annotated[
        datetime, msgspec.Meta(description="when it ends, with a time zone offset; in the future")
    ]
    parent_id_tag: IdTag | None = None


class ReservationController(Controller):
    path = "/api/v1/reservations"
    tags = ["reservations"]

    @post(
        "/",
        status_code=201,
        summary="Reserve a connector: evgate numbers the reservation and sends ReserveNow",
        description=(
            "201 with the reservation as the charger answered: status active, or refused with"
            " the charger's status in refusal. A failed command is 409/502/503/504 with"
            " reservationId; the reservation is then failed, with its error. 404: no such"
            " charger."
        ),
        opt={"problems": (404, 409, 502, 504)},
    )
    async def create(self, ctx: Ctx, data: JSONBody[ReservationCreate]) -> Reservation:
        if aware("expiryDate", data.expiry_date) <= datetime.now(UTC):
            raise Unprocessable("expiryDate is not in the future")
        await ctx.chargers.get(data.charger_id)  # 404 before an id is spent
        store = ctx.reservations.store
        reservation = await store.allocate(
            data.charger_id, data.connector_id, data.id_tag, data.expiry_date, data.parent_id_tag
        )
        request = ReserveNowRequest(
            connector_id=data.connector_id,
            expiry_date=data.expiry_date,
            id_tag=data.id_tag,
            reservation_id=reservation.id,
            **({} if data.parent_id_tag is None else {"parent_id_tag": data.parent_id_tag}),
        )
        try:
            await call_charger(ctx, data.charger_id, request)
        except ApiError as exc:
            exc.extra["reservationId"] = reservation.id
            raise
        return await store.get(reservation.id)

    @get("/", summary="List reservations, newest first (keyset pagination)")
    async def list_reservations(
        self,
        ctx: Ctx,
        charger_id: Annotated[str | None, QueryParameter(name="chargerId")] = None,
        status: Annotated[
            ReservationStatus | None,
            # Absent is "any": the document says string (a query has no null).
            QueryParameter(schema_extra={"type": "string", "enum": list(STATUSES)}),
        ] = None,
        after: Annotated[
            int | None,
            QueryParameter(ge=1, le=INT32_MAX, description="the nextCursor of the previous page"),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[Reservation]:
        items = await ctx.reservations.store.page(
            charger_id=charger_id, status=status, before=after, limit=limit
        )
        return page_of(items, limit, lambda r: r.id)

    @get("/{reservation_id:int}", summary="One reservation")
    async def get_reservation(self, ctx: Ctx, reservation_id: ReservationId) -> Reservation:
        return await ctx.reservations.store.get(reservation_id)

    @delete(
        "/{reservation_id:int}",
        status_code=200,
        summary="Cancel an active reservation (CancelReservation to its charger)",
        description=(
            "200 with the reservation canceled; 409 when it is not active, when the charger"
            " is not connected, or when the charger rejects the cancellation (chargerStatus)."
        ),
        opt={"problems": (409, 502, 504)},
    )
    async def cancel_reservation(self, ctx: Ctx, reservation_id: ReservationId) -> Reservation:
        store = ctx.reservations.store
        reservation = await store.get(reservation_id)
        if reservation.status != "active":
            raise Conflict(f"reservation {reservation_id} is {reservation.status}, not active")
        answer = await call_charger(
            ctx, reservation.charger_id, CancelReservationRequest(reservation_id=reservation_id)
        )
        assert isinstance(answer, CancelReservationResponse)
        if answer.status != CancelReservationStatus.accepted:
            raise Conflict(
                f"charger {reservation.charger_id} rejected the cancellation",
                chargerStatus=answer.status.value,
            )
        return await store.get(reservation_id)
