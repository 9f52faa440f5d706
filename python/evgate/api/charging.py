"""api room: charging data — transactions, connectors, meter values and the
id-tag list.

* ``GET /api/v1/transactions`` (newest first; filters chargerId, idTag, active, from, to) and
  ``GET /api/v1/transactions/{id}``; ``POST /api/v1/transactions/{id}/stop``: the operator
  closes a transaction whose StopTransaction the charger lost, as a StopTransaction would
  (the same writer ops, events and CDR, in one database transaction), marked with their
  reason (``operatorStopReason``; OCPP's stopReason ``Other``). A StopTransaction the charger
  sends for it later finds it closed: answered, nothing changed, no event;
* ``GET /api/v1/chargers/{id}/connectors`` and ``GET /api/v1/chargers/{id}/meter-values``
  (``resolution=raw|1m|15m|1h``; the coarse ones from the per-minute rollups);
* ``/api/v1/id-tags``: create, list, read, change, delete.

Their service is ``ApiContext.charging`` (:class:`~evgate.api.services.ChargingApi`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from evgate.api.bounds import (
    BodyBigintId,
    ConnectorFilter,
    MeterWh,
    TransactionCursor,
    TransactionId,
)
from evgate.api.context import Ctx
from evgate.api.inputs import aware, set_fields
from evgate.api.pagination import Page, page_of
from evgate.api.problems import Conflict, Unprocessable
from evgate.api.services import ChargingApi
from evgate.api.sub_operators import OwnerField, check_owner, created_for
from evgate.events.builders import ChargerRef
from evgate.storage.connectors import Connector
from evgate.storage.errors import ValueRefused
from evgate.storage.id_tags import IdTag, IdTagStatus
from evgate.storage.meter_values import MeterBucket, MeterSample, Resolution
from evgate.storage.ops import outbox
from evgate.storage.ops import transactions as transaction_ops
from evgate.storage.ops.base import Results, Write
from evgate.storage.ops.stops import after_stop
from evgate.storage.ops.transactions import TransactionStop
from evgate.storage.transactions import Transaction
from evgate.storage.writer import WriteRejected

__all__ = [
    "ROUTES",
    "ChargerDataController",
    "IdTagController",
    "TransactionController",
]


class TransactionStopIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    reason: Annotated[
        str, msgspec.Meta(min_length=1, max_length=500, description="why the operator closes it")
    ]
    meter_stop: (
        Annotated[
            MeterWh,
            msgspec.Meta(
                description=(
                    "the energy register at the stop (Wh); default: the transaction's latest"
                    " reading, else meterStart"
                )
            ),
        ]
        | None
    ) = None
    timestamp: (
        Annotated[datetime, msgspec.Meta(description="when it stopped; default: now")] | None
    ) = None


#: The OCPP stop reason of a transaction the operator closed.
OPERATOR_STOP_REASON = "Other"


async def stop_transaction(
    api: ChargingApi, transaction_id: int, data: TransactionStopIn
) -> Transaction:
    """Close an open transaction for the operator, with the events and CDR of a StopTransaction.

    Raises:
        NotFound: no such transaction (or its charger is deleted: no event could name it).
        Conflict: it is stopped already.
        Unprocessable: a time without offset or before the start, a meterStop below meterStart.
        ValueRefused: a reason PostgreSQL cannot store (U+0000).
    """
    tx = await api.transactions.get(transaction_id)
    if not tx.active:
        raise Conflict(f"transaction {transaction_id} is stopped already")
    now = datetime.now(UTC)
    at = aware("timestamp", data.timestamp) or now
    if at < tx.started_at:
        raise Unprocessable(f"timestamp is before the transaction's start ({tx.started_at})")
    meter_stop = data.meter_stop
    if meter_stop is None:
        meter_stop = tx.meter_start + int(max(0.0, tx.energy_wh or 0.0))
    elif meter_stop < tx.meter_start:
        raise Unprocessable(f"meterStop is below the transaction's meterStart ({tx.meter_start})")
    charger = ChargerRef(tx.charger_id, await api.chargers.number_of(tx.charger_id))
    stop = transaction_ops.stop(
        TransactionStop(
            transaction_id=transaction_id,
            charger_id=tx.charger_id,
            meter_stop=meter_stop,
            stopped_at=at,
            stop_reason=OPERATOR_STOP_REASON,
            operator_reason=data.reason,
        )
    )

    def described(results: Results) -> list[Write[Any]]:
        closed = results[stop]
        if closed is None:
            return []
        return after_stop(charger, closed, now)

    # Keyed by the charger: in order with its own writes (a StopTransaction racing this one
    # finds the transaction closed, or closes it first and this one is the 409).
    try:
        [results] = await api.writer.submit([outbox.emit([stop], described)], key=tx.charger_id)
    except WriteRejected as exc:
        # A reason PostgreSQL cannot store (U+0000): 422, as the API's own writes answer it.
        if isinstance(exc.__cause__, ValueRefused):
            raise exc.__cause__ from None
        raise
    if results[stop] is None:
        raise Conflict(f"transaction {transaction_id} is stopped already")
    api.stopped(tx.charger_id, transaction_id)
    return await api.transactions.get(transaction_id)


class TransactionController(Controller):
    path = "/api/v1/transactions"
    tags = ["transactions"]

    @get("/", summary="List transactions, newest first (keyset pagination)")
    async def list_transactions(
        self,
        ctx: Ctx,
        charger_id: Annotated[str | None, QueryParameter(name="chargerId")] = None,
        id_tag: Annotated[
            str | None, QueryParameter(name="idTag", description="case-insensitive")
        ] = None,
        active: Annotated[
            bool | None, QueryParameter(description="only open (true) or closed")
        ] = None,
        start: Annotated[
            datetime | None, QueryParameter(name="from", description="started at or after")
        ] = None,
        end: Annotated[
            datetime | None, QueryParameter(name="to", description="started before")
        ] = None,
        after: TransactionCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[Transaction]:
        items = await ctx.charging.transactions.page(
            charger_id=charger_id,
            id_tag=id_tag,
            active=active,
            start=start,
            end=end,
            before=after,
            limit=limit,
        )
        return page_of(items, limit, lambda t: t.id)

    @get("/{transaction_id:int}", summary="One transaction")
    async def get_transaction(self, ctx: Ctx, transaction_id: TransactionId) -> Transaction:
        return await ctx.charging.transactions.get(transaction_id)

    @post(
        "/{transaction_id:int}/stop",
        status_code=200,
        summary="Close an open transaction whose StopTransaction the charger lost",
        description=(
            "Closes it as a StopTransaction would (its events and CDR), with stopReason Other"
            " and the operator's reason as operatorStopReason. A StopTransaction the charger"
            " sends for it later is answered and changes nothing. 409 when it is stopped"
            " already."
        ),
        opt={"problems": (409,)},
    )
    async def stop_transaction(
        self, ctx: Ctx, transaction_id: TransactionId, data: JSONBody[TransactionStopIn]
    ) -> Transaction:
        return await stop_transaction(ctx.charging, transaction_id, data)


class ChargerDataController(Controller):
    path = "/api/v1/chargers/{charger_id:str}"
    tags = ["chargers"]

    @get("/connectors", summary="The charger's connectors and their latest status")
    async def connectors(self, ctx: Ctx, charger_id: FromPath[str]) -> list[Connector]:
        api = ctx.charging
        await api.chargers.get(charger_id)  # 404 for an unknown charger
        return await api.connectors.of_charger(charger_id)

    @get(
        "/meter-values",
        summary="The charger's meter values, raw or per 1m/15m/1h (min, max, avg, first, last)",
    )
    async def meter_values(
        self,
        ctx: Ctx,
        charger_id: FromPath[str],
        start: Annotated[
            datetime | None, QueryParameter(name="from", description="default: 24 hours ago")
        ] = None,
        end: Annotated[
            datetime | None, QueryParameter(name="to", description="default: now")
        ] = None,
        measurand: FromQuery[str | None] = None,
        connector_id: ConnectorFilter = None,
        resolution: FromQuery[Resolution] = "raw",
        after: Annotated[
            datetime | None, QueryParameter(description="the nextCursor of the previous page")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=10, le=10_000)] = 1000,
    ) -> Page[MeterSample | MeterBucket]:
        api = ctx.charging
        await api.chargers.get(charger_id)
        end = end or datetime.now(UTC)
        start = start or end - timedelta(days=1)
        if start.tzinfo is None or end.tzinfo is None:
            raise Unprocessable("from and to need a time zone offset (e.g. 2024-05-01T00:00:00Z)")
        rows, cursor = await api.meter_values.read(
            charger_id,
            start,
            end,
            resolution=resolution,
            measurand=measurand,
            connector_id=connector_id,
            after=after,
            limit=limit,
        )
        data: list[MeterSample | MeterBucket] = list(rows)
        return Page(data=data, next_cursor=cursor.isoformat() if cursor else None)


class IdTagCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    id_tag: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    status: IdTagStatus = "Accepted"
    expiry_date: datetime | None = None
    parent_id_tag: Annotated[str, msgspec.Meta(min_length=1, max_length=20)] | None = None
    # The user it belongs to (422 for an unknown one): their status and balance count too.
    user_id: BodyBigintId | None = None
    # The sub-operator that owns it (null: the operator); absent: the token's own.
    sub_operator_id: OwnerField = msgspec.UNSET


class IdTagPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    status: IdTagStatus | msgspec.UnsetType = msgspec.UNSET
    expiry_date: datetime | msgspec.UnsetType | None = msgspec.UNSET
    parent_id_tag: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=20)] | msgspec.UnsetType | None
    ) = msgspec.UNSET
    user_id: BodyBigintId | msgspec.UnsetType | None = msgspec.UNSET
    # Give it to a sub-operator (null: to the operator); a sub-operator's token cannot (403).
    sub_operator_id: OwnerField = msgspec.UNSET


class IdTagController(Controller):
    path = "/api/v1/id-tags"
    tags = ["id-tags"]

    @post(
        "/",
        status_code=201,
        summary="Add an id-tag (409 if it exists, case-insensitively; 422 for an unknown user)",
        opt={"problems": (409,)},
    )
    async def create(self, ctx: Ctx, data: JSONBody[IdTagCreate]) -> IdTag:
        async with created_for(ctx, data.sub_operator_id):
            return await ctx.charging.id_tags.create(
                data.id_tag,
                data.status,
                aware("expiryDate", data.expiry_date),
                data.parent_id_tag,
                data.user_id,
            )

    @get("/", summary="List id-tags in order (keyset pagination)")
    async def list_id_tags(
        self,
        ctx: Ctx,
        after: Annotated[
            str | None, QueryParameter(description="the last idTag of the previous page")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[IdTag]:
        items = await ctx.charging.id_tags.page(after, limit)
        return page_of(items, limit, lambda t: t.id_tag)

    @get("/{id_tag:str}", summary="One id-tag")
    async def get_id_tag(self, ctx: Ctx, id_tag: FromPath[str]) -> IdTag:
        return await ctx.charging.id_tags.get(id_tag)

    @patch("/{id_tag:str}", summary="Change an id-tag's status, expiry date, parent or user")
    async def patch_id_tag(
        self, ctx: Ctx, id_tag: FromPath[str], data: JSONBody[IdTagPatch]
    ) -> IdTag:
        fields = set_fields(data, without=("sub_operator_id",))
        if "expiry_date" in fields:
            aware("expiryDate", fields["expiry_date"])
        if data.sub_operator_id is not msgspec.UNSET:
            # With the rest, in one update: it notifies every process's id-tag list, whose
            # decisions carry the owner (the tariffs a tag's group may get depend on it).
            await check_owner(ctx, data.sub_operator_id)
            fields["sub_operator_id"] = data.sub_operator_id
        if not fields:
            return await ctx.charging.id_tags.get(id_tag)
        return await ctx.charging.id_tags.update(id_tag, **fields)

    @delete("/{id_tag:str}", status_code=204, summary="Remove an id-tag (it is Invalid from now)")
    async def delete_id_tag(self, ctx: Ctx, id_tag: FromPath[str]) -> None:
        await ctx.charging.id_tags.delete(id_tag)


#: The controllers ``app.py`` passes to ``create_api``.
ROUTES = [TransactionController, ChargerDataController, IdTagController]
