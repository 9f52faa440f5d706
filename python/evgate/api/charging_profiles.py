"""api room: ``/api/v1/chargers/{id}/charging-profiles`` — the operator's charging profiles.

``POST`` sends a SetChargingProfile (evgate gives the chargingProfileId, from 1000 up) and
stores the profile the charger accepted, so evgate knows what each charger was told; ``GET``
lists them beside the load-management engine's latest (``owner``); ``DELETE .../{id}`` sends
ClearChargingProfile for that id and forgets it; ``GET .../composite`` asks the charger's
GetCompositeSchedule. The engine's stack level (50) is refused, and on a charger in a circuit
so is a higher one for TxProfile and TxDefaultProfile: it would override the engine's limit.
Charger failures are answered as ``/commands`` answers them (409, 502, 503, 504).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.params import FromPath, JSONBody, Parameter, QueryParameter

from evgate.api.bounds import INT32_MAX
from evgate.api.circuits import circuits_of
from evgate.api.commands import call_charger
from evgate.api.context import ApiContext, Ctx
from evgate.api.problems import ApiError, Unprocessable
from evgate.events.builders import AppliedProfile
from evgate.protocol.v16 import (
    ChargingProfile,
    ChargingProfileKindType,
    ChargingProfilePurposeType,
    ChargingSchedule,
    ClearChargingProfileRequest,
    ClearChargingProfileResponse,
    GetCompositeScheduleRequest,
    RecurrencyKindType,
    SetChargingProfileRequest,
    SetChargingProfileResponse,
)
from evgate.storage.charging_profiles import ChargingProfileStore, StoredProfile
from evgate.storage.circuits import ENGINE_STACK_LEVEL

__all__ = ["ChargingProfileController"]

Int32 = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]
ProfileId = Annotated[int, Parameter(ge=1, le=INT32_MAX, description="a chargingProfileId")]


class SchedulePeriodIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """OCPP's ChargingSchedulePeriod with the bounds an API input states (int32, 1-3 phases)."""

    start_period: Int32
    limit: Annotated[float, msgspec.Meta(ge=0, le=1e9)]
    number_phases: Annotated[int, msgspec.Meta(ge=1, le=3)] | msgspec.UnsetType = msgspec.UNSET


class ScheduleIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """OCPP's ChargingSchedule with the bounds an API input states; sent as the protocol's
    ChargingSchedule (:meth:`ChargingProfileController` converts it)."""

    duration: Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)] | msgspec.UnsetType = msgspec.UNSET
    start_schedule: Annotated[datetime, msgspec.Meta(tz=True)] | msgspec.UnsetType = msgspec.UNSET
    charging_rate_unit: Literal["A", "W"]
    charging_schedule_period: Annotated[list[SchedulePeriodIn], msgspec.Meta(min_length=1)]
    min_charging_rate: Annotated[float, msgspec.Meta(ge=0, le=1e9)] | msgspec.UnsetType = (
        msgspec.UNSET
    )


class ProfileIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """A SetChargingProfile's connector and csChargingProfiles, without the id (evgate's)."""

    connector_id: Int32
    stack_level: Int32
    charging_profile_purpose: ChargingProfilePurposeType
    charging_profile_kind: ChargingProfileKindType
    charging_schedule: ScheduleIn
    transaction_id: Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)] | None = None
    recurrency_kind: RecurrencyKindType | None = None
    valid_from: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    valid_to: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


def _store(ctx: ApiContext) -> ChargingProfileStore:
    profiles = circuits_of(ctx).profiles
    if profiles is None:
        raise ApiError("charging profiles are not available in this process", status=503)
    return profiles


def _unset(value: Any) -> Any:
    return msgspec.UNSET if value is None else value


class ChargingProfileController(Controller):
    path = "/api/v1/chargers/{charger_id:str}/charging-profiles"
    tags = ["charging profiles"]

    @post(
        "/",
        status_code=201,
        summary="Send a charging profile to the charger (SetChargingProfile) and store it",
        opt={"problems": (409, 502, 504)},
    )
    async def create(
        self, ctx: Ctx, charger_id: FromPath[str], data: JSONBody[ProfileIn]
    ) -> StoredProfile:
        tx_purposes = ("TxProfile", "TxDefaultProfile")
        if data.stack_level == ENGINE_STACK_LEVEL or (
            data.stack_level > ENGINE_STACK_LEVEL
            and data.charging_profile_purpose in tx_purposes
            and await circuits_of(ctx).store.member(charger_id) is not None
        ):
            raise Unprocessable(
                f"stackLevel {data.stack_level}: load management's TxProfiles use"
                f" {ENGINE_STACK_LEVEL}; use a lower one on a charger in a circuit"
            )
        store = _store(ctx)
        profile_id = await store.next_id()
        # The protocol's own type (its validation: at most one decimal in a limit).
        try:
            schedule = msgspec.convert(
                msgspec.to_builtins(data.charging_schedule), ChargingSchedule
            )
        except msgspec.ValidationError as exc:
            raise Unprocessable(f"chargingSchedule: {exc}") from None
        profile = ChargingProfile(
            charging_profile_id=profile_id,
            stack_level=data.stack_level,
            charging_profile_purpose=data.charging_profile_purpose,
            charging_profile_kind=data.charging_profile_kind,
            charging_schedule=schedule,
            transaction_id=_unset(data.transaction_id),
            recurrency_kind=_unset(data.recurrency_kind),
            valid_from=_unset(data.valid_from),
            valid_to=_unset(data.valid_to),
        )
        answer = await call_charger(
            ctx,
            charger_id,
            SetChargingProfileRequest(connector_id=data.connector_id, cs_charging_profiles=profile),
        )
        assert isinstance(answer, SetChargingProfileResponse)
        applied = AppliedProfile(
            id=profile_id,
            purpose=data.charging_profile_purpose.value,
            stack_level=data.stack_level,
            kind=data.charging_profile_kind.value,
            unit=schedule.charging_rate_unit.value,
            periods=tuple((p.start_period, p.limit) for p in schedule.charging_schedule_period),
            min_rate=_or_none(schedule.min_charging_rate),
            start=_or_none(schedule.start_schedule),
            duration=_or_none(schedule.duration),
            valid_from=data.valid_from,
            valid_to=data.valid_to,
            recurrency=None if data.recurrency_kind is None else data.recurrency_kind.value.lower(),  # type: ignore[arg-type]
        )
        stored = await store.store(
            profile_id,
            charger_id,
            data.connector_id,
            msgspec.to_builtins(profile),
            applied,
            answer.status.value,
            data.transaction_id,
        )
        if answer.status.value != "Accepted":
            raise ApiError(
                f"the charger answered {answer.status.value}", 502, status_answered=stored.status
            )
        return stored

    @get("/", summary="The charger's charging profiles: the operator's and the engine's")
    async def list_profiles(self, ctx: Ctx, charger_id: FromPath[str]) -> list[StoredProfile]:
        await ctx.chargers.get(charger_id)
        return await _store(ctx).of_charger(charger_id)

    @get(
        "/composite",
        summary="The charger's composite schedule (GetCompositeSchedule), as it answers",
        opt={"problems": (409, 502, 504)},
    )
    async def composite(
        self,
        ctx: Ctx,
        charger_id: FromPath[str],
        connector_id: Annotated[int, QueryParameter(name="connectorId", ge=0, le=INT32_MAX)],
        duration: Annotated[int, QueryParameter(ge=1, le=INT32_MAX)] = 86400,
    ) -> Response[bytes]:
        answer = await call_charger(
            ctx,
            charger_id,
            GetCompositeScheduleRequest(connector_id=connector_id, duration=duration),
        )
        return Response(msgspec.json.encode(answer), media_type="application/json")

    @delete(
        "/{profile_id:int}",
        status_code=204,
        summary="Clear one of the operator's profiles on the charger (ClearChargingProfile)",
        opt={"problems": (409, 502, 504)},
    )
    async def delete_profile(
        self,
        ctx: Ctx,
        charger_id: FromPath[str],
        profile_id: ProfileId,
    ) -> None:
        store = _store(ctx)
        await store.get(charger_id, profile_id)
        answer = await call_charger(ctx, charger_id, ClearChargingProfileRequest(id=profile_id))
        assert isinstance(answer, ClearChargingProfileResponse)
        # Unknown: the charger has no such profile any more; either way it holds none now.
        await store.delete(charger_id, profile_id)


def _or_none(value: Any) -> Any:
    return None if value is msgspec.UNSET else value
