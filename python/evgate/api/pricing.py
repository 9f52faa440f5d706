"""api room: ``/api/v1/locations``, ``/api/v1/tariffs`` and ``/api/v1/tariff-groups`` — where
chargers stand and what charging there costs (issue 19).

Amounts are decimal strings (``"0.30"``; JSON numbers lose cents). A tariff or group that
cannot price (an unknown currency, a negative amount, tariffs of two currencies in one group,
...) is answered 422; deleting what is still used (a location with chargers, a tariff in a
group, a group a location or charger has) 409. Every change is in force in this process before
the answer (a StartTransaction after it gets the new tariff); other processes follow on NOTIFY.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import BigintCursor, BigintId, BodyBigintId
from evgate.api.context import ApiContext, Ctx
from evgate.api.inputs import set_fields
from evgate.api.pagination import Page, page_of
from evgate.api.problems import ApiError, Unprocessable
from evgate.api.services import PricingApi
from evgate.api.sub_operators import OwnerField, created_for, give
from evgate.pricing import EnergyPeriod, GroupEntry, Tariff, TariffInvalid
from evgate.storage.locations import (
    Address,
    Facility,
    Geoposition,
    Location,
    LocationBody,
    OpeningHours,
    ParkingType,
    check_location,
)
from evgate.storage.tariffs import StoredTariff, TariffGroup

__all__ = ["ROUTES", "LocationController", "TariffController", "TariffGroupController"]

Limit = Annotated[int, QueryParameter(ge=1, le=1000)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_UNSET: Any = msgspec.UNSET


def _service(ctx: ApiContext) -> PricingApi:
    if ctx.pricing is None:
        raise ApiError("locations and tariffs are not available in this process", status=503)
    return ctx.pricing


# -- locations -------------------------------------------------------------------------------


class LocationCreate(LocationBody, forbid_unknown_fields=True, frozen=True, kw_only=True):
    tariff_group_id: BodyBigintId | None = None
    # The sub-operator that owns it (null: the operator); absent: the token's own.
    sub_operator_id: OwnerField = _UNSET


class LocationPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Fields to change; null clears an optional one."""

    name: Name = _UNSET
    description: Annotated[str, msgspec.Meta(max_length=2000)] | None = _UNSET
    address: Address = _UNSET
    geoposition: Geoposition | None = _UNSET
    timezone: Annotated[str, msgspec.Meta(max_length=64)] | None = _UNSET
    opening_hours: OpeningHours = _UNSET
    parking_type: ParkingType | None = _UNSET
    facilities: tuple[Facility, ...] = _UNSET
    status: Literal["active", "disabled"] = _UNSET
    # The tariff group of its chargers (a charger's own group wins); null: none.
    tariff_group_id: BodyBigintId | None = _UNSET
    # Give it to a sub-operator (null: to the operator); a sub-operator's token cannot (403).
    sub_operator_id: OwnerField = _UNSET


def _check_location(timezone: str | None, address: Address | None) -> None:
    try:
        check_location(timezone, address)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None


class LocationController(Controller):
    path = "/api/v1/locations"
    tags = ["locations"]

    @post("/", status_code=201, summary="Create a location")
    async def create(self, ctx: Ctx, data: JSONBody[LocationCreate]) -> Location:
        _check_location(data.timezone, data.address)
        fields = {f: getattr(data, f) for f in LocationBody.__struct_fields__}
        service = _service(ctx)
        async with created_for(ctx, data.sub_operator_id):
            location = await service.locations.create(LocationBody(**fields), data.tariff_group_id)
        await service.refresh()
        return location

    @get("/", summary="List locations in id order (keyset pagination)")
    async def list_locations(
        self, ctx: Ctx, after: BigintCursor = None, limit: Limit = 100
    ) -> Page[Location]:
        items = await _service(ctx).locations.page(after, limit)
        return page_of(items, limit, lambda i: i.id)

    @get("/{location_id:int}", summary="One location, with its chargers")
    async def get_location(self, ctx: Ctx, location_id: BigintId) -> Location:
        return await _service(ctx).locations.get(location_id)

    @patch("/{location_id:int}", summary="Change a location (its tariff group too)")
    async def patch_location(
        self, ctx: Ctx, location_id: BigintId, data: JSONBody[LocationPatch]
    ) -> Location:
        changes = set_fields(data, without=("sub_operator_id",))
        _check_location(changes.get("timezone"), changes.get("address"))
        service = _service(ctx)

        async def change() -> Location:
            location = await service.locations.update(location_id, **changes)
            await service.refresh()
            return location

        return await give(ctx, "locations", location_id, data.sub_operator_id, change)

    @delete(
        "/{location_id:int}",
        status_code=204,
        summary="Delete a location; 409 while chargers stand there",
        opt={"problems": (409,)},
    )
    async def delete_location(self, ctx: Ctx, location_id: BigintId) -> None:
        service = _service(ctx)
        await service.locations.delete(location_id)
        await service.refresh()


# -- tariffs ---------------------------------------------------------------------------------


class TariffCreate(Tariff, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # The sub-operator that owns it (null: the operator); absent: the token's own.
    sub_operator_id: OwnerField = _UNSET


class TariffPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Terms to change; null clears an optional one (minPrice, maxPrice, validFrom/To)."""

    name: Name = _UNSET
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] = _UNSET
    connection_fee: Decimal = _UNSET
    price_per_kwh: Decimal = _UNSET
    energy_periods: tuple[EnergyPeriod, ...] = _UNSET
    price_per_minute: Decimal = _UNSET
    idle_fee_per_minute: Decimal = _UNSET
    idle_grace_minutes: Annotated[int, msgspec.Meta(ge=0, le=10080)] = _UNSET
    min_price: Decimal | None = _UNSET
    max_price: Decimal | None = _UNSET
    tax_percent: Decimal = _UNSET
    valid_from: datetime | None = _UNSET
    valid_to: datetime | None = _UNSET
    # Give it to a sub-operator (null: to the operator); a sub-operator's token cannot (403).
    sub_operator_id: OwnerField = _UNSET


class TariffController(Controller):
    path = "/api/v1/tariffs"
    tags = ["tariffs"]

    @post("/", status_code=201, summary="Create a tariff (amounts as decimal strings)")
    async def create(self, ctx: Ctx, data: JSONBody[TariffCreate]) -> StoredTariff:
        service = _service(ctx)
        try:
            terms = Tariff(**{f: getattr(data, f) for f in Tariff.__struct_fields__})
            async with created_for(ctx, data.sub_operator_id):
                tariff = await service.tariffs.create_tariff(terms)
        except TariffInvalid as exc:
            raise Unprocessable(str(exc)) from None
        await service.refresh()
        return tariff

    @get("/", summary="List tariffs in id order (keyset pagination)")
    async def list_tariffs(
        self, ctx: Ctx, after: BigintCursor = None, limit: Limit = 100
    ) -> Page[StoredTariff]:
        items = await _service(ctx).tariffs.tariffs(after, limit)
        return page_of(items, limit, lambda i: i.id)

    @get("/{tariff_id:int}", summary="One tariff")
    async def get_tariff(self, ctx: Ctx, tariff_id: BigintId) -> StoredTariff:
        return await _service(ctx).tariffs.get_tariff(tariff_id)

    @patch(
        "/{tariff_id:int}",
        summary="Change a tariff; running transactions keep the terms they started with",
    )
    async def patch_tariff(
        self, ctx: Ctx, tariff_id: BigintId, data: JSONBody[TariffPatch]
    ) -> StoredTariff:
        service = _service(ctx)

        async def change() -> StoredTariff:
            try:
                changes = set_fields(data, without=("sub_operator_id",))
                tariff = await service.tariffs.update_tariff(tariff_id, **changes)
            except TariffInvalid as exc:
                raise Unprocessable(str(exc)) from None
            await service.refresh()
            return tariff

        return await give(ctx, "tariffs", tariff_id, data.sub_operator_id, change)

    @delete(
        "/{tariff_id:int}",
        status_code=204,
        summary="Delete a tariff; 409 while a tariff group has it",
        opt={"problems": (409,)},
    )
    async def delete_tariff(self, ctx: Ctx, tariff_id: BigintId) -> None:
        service = _service(ctx)
        await service.tariffs.delete_tariff(tariff_id)
        await service.refresh()


# -- tariff groups ---------------------------------------------------------------------------

Entries = Annotated[tuple[GroupEntry, ...], msgspec.Meta(max_length=100)]


class TariffGroupCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name
    # In order: the first whose restrictions match a transaction applies.
    tariffs: Entries = ()
    # The sub-operator that owns it (null: the operator); absent: the token's own.
    sub_operator_id: OwnerField = _UNSET


class TariffGroupPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name = _UNSET
    tariffs: Entries = _UNSET
    # Give it to a sub-operator (null: to the operator); a sub-operator's token cannot (403).
    sub_operator_id: OwnerField = _UNSET


async def _group_change(
    service: PricingApi,
    group_id: int | None,
    name: str | None,
    entries: Sequence[GroupEntry] | None,
) -> TariffGroup:
    try:
        if group_id is None:
            assert name is not None
            group = await service.tariffs.create_group(name, entries or ())
        else:
            group = await service.tariffs.update_group(group_id, name, entries)
    except TariffInvalid as exc:
        raise Unprocessable(str(exc)) from None
    await service.refresh()
    return group


class TariffGroupController(Controller):
    path = "/api/v1/tariff-groups"
    tags = ["tariffs"]

    @post("/", status_code=201, summary="Create a tariff group (its tariffs: one currency)")
    async def create(self, ctx: Ctx, data: JSONBody[TariffGroupCreate]) -> TariffGroup:
        async with created_for(ctx, data.sub_operator_id):
            return await _group_change(_service(ctx), None, data.name, data.tariffs)

    @get("/", summary="List tariff groups in id order (keyset pagination)")
    async def list_groups(
        self, ctx: Ctx, after: BigintCursor = None, limit: Limit = 100
    ) -> Page[TariffGroup]:
        items = await _service(ctx).tariffs.groups(after, limit)
        return page_of(items, limit, lambda i: i.id)

    @get("/{group_id:int}", summary="One tariff group")
    async def get_group(self, ctx: Ctx, group_id: BigintId) -> TariffGroup:
        return await _service(ctx).tariffs.get_group(group_id)

    @patch("/{group_id:int}", summary="Rename a tariff group or replace its tariffs")
    async def patch_group(
        self, ctx: Ctx, group_id: BigintId, data: JSONBody[TariffGroupPatch]
    ) -> TariffGroup:
        changes = set_fields(data)
        return await give(
            ctx,
            "tariff_groups",
            group_id,
            data.sub_operator_id,
            lambda: _group_change(
                _service(ctx), group_id, changes.get("name"), changes.get("tariffs")
            ),
        )

    @delete(
        "/{group_id:int}",
        status_code=204,
        summary="Delete a tariff group; 409 while a location or a charger has it",
        opt={"problems": (409,)},
    )
    async def delete_group(self, ctx: Ctx, group_id: BigintId) -> None:
        service = _service(ctx)
        await service.tariffs.delete_group(group_id)
        await service.refresh()


ROUTES = [LocationController, TariffController, TariffGroupController]
