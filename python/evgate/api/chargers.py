"""api room: ``/api/v1/chargers`` — the chargers registry."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from evgate.api.bounds import BodyBigintId
from evgate.api.circuits import circuits_of
from evgate.api.context import Ctx
from evgate.api.pagination import Page, page_of
from evgate.credentials import CHARGER_ID_PATTERN
from evgate.gateway.interface import ConnectionInfo
from evgate.storage.chargers import Charger
from evgate.storage.circuits import PhaseRotation

__all__ = ["ChargerController"]

ChargerId = Annotated[
    str,
    msgspec.Meta(
        pattern=CHARGER_ID_PATTERN,
        description=(
            "The charger's OCPP identity, as in its URL: 1-64 of A-Z a-z 0-9 . _ - :,"
            " other than . and .."
        ),
    ),
]
Profile = Annotated[
    int,
    msgspec.Meta(
        ge=1,
        le=3,
        description=(
            "Least OCPP security profile: 1 ws + secret, 2 wss + secret, 3 wss + client certificate"
        ),
    ),
]


ChargerAmperes = Annotated[float, msgspec.Meta(gt=0, le=100000, description="amperes per phase")]


class ChargerCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    id: ChargerId
    description: Annotated[str, msgspec.Meta(max_length=500)] = ""
    security_profile: Profile = 1
    lenient: bool = False


class ChargerPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    description: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType = msgspec.UNSET
    security_profile: Profile | msgspec.UnsetType = msgspec.UNSET
    lenient: bool | msgspec.UnsetType = msgspec.UNSET
    registration_status: Literal["Accepted", "Pending", "Rejected"] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    # The installation to join (its authorization mode applies at once); null leaves it.
    installation_id: BodyBigintId | msgspec.UnsetType | None = msgspec.UNSET
    # Load management (api/circuits.py): the circuit to join (null leaves it), the charger's
    # own maximum there (A per phase; the circuit's when it joins without one) and which
    # circuit phases its L1-L3 are wired to.
    circuit_id: BodyBigintId | msgspec.UnsetType | None = msgspec.UNSET
    max_current: ChargerAmperes | msgspec.UnsetType = msgspec.UNSET
    phase_rotation: PhaseRotation | msgspec.UnsetType = msgspec.UNSET


_MEMBERSHIP = ("circuit_id", "max_current", "phase_rotation")


class ChargerWithSecret(Charger, kw_only=True):
    """A charger with its secret: returned once, at creation or rotation."""

    secret: str


class ChargerView(Charger, kw_only=True):
    """A charger with its live connection to this process (null when not connected)."""

    connection: ConnectionInfo | None = None


class SecretOut(msgspec.Struct):
    id: str
    secret: str


class ChargerController(Controller):
    path = "/api/v1/chargers"
    tags = ["chargers"]

    @post(
        "/",
        status_code=201,
        summary="Register a charger; its secret is shown only here",
        opt={"problems": (409,)},
    )
    async def create(self, ctx: Ctx, data: JSONBody[ChargerCreate]) -> ChargerWithSecret:
        charger, secret = await ctx.registry.create(
            data.id, data.description, data.security_profile, data.lenient
        )
        return ChargerWithSecret(**msgspec.structs.asdict(charger), secret=secret)

    @get("/", summary="List chargers in id order (keyset pagination)")
    async def list_chargers(
        self,
        ctx: Ctx,
        after: Annotated[
            str | None, QueryParameter(description="the last id of the previous page")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[Charger]:
        items = await ctx.chargers.page(after, limit)
        return page_of(items, limit, lambda c: c.id)

    @get("/{charger_id:str}", summary="One charger, with its live connection (or null)")
    async def get_charger(self, ctx: Ctx, charger_id: FromPath[str]) -> ChargerView:
        charger = await ctx.chargers.get(charger_id)
        connection = await ctx.gateway.locate(charger_id) if ctx.gateway is not None else None
        return ChargerView(**msgspec.structs.asdict(charger), connection=connection)

    @patch("/{charger_id:str}", summary="Change a charger's settings")
    async def patch_charger(
        self, ctx: Ctx, charger_id: FromPath[str], data: JSONBody[ChargerPatch]
    ) -> Charger:
        fields = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        membership = {k: fields.pop(k) for k in _MEMBERSHIP if k in fields}
        if membership:
            await circuits_of(ctx).store.set_membership(charger_id, **membership)
        if not fields:
            return await ctx.chargers.get(charger_id)
        charger = await ctx.chargers.update(charger_id, **fields)
        if "installation_id" in fields and ctx.installations is not None:
            # In force in this process before the answer; other processes follow on NOTIFY.
            await ctx.installations.charger_moved(charger_id)
        return charger

    @delete("/{charger_id:str}", status_code=204, summary="Delete a charger; it is disconnected")
    async def delete_charger(self, ctx: Ctx, charger_id: FromPath[str]) -> None:
        await ctx.chargers.delete(charger_id)

    @post(
        "/{charger_id:str}/secret",
        status_code=200,
        summary="Rotate a charger's secret; the old one stops working at once",
    )
    async def rotate_secret(self, ctx: Ctx, charger_id: FromPath[str]) -> SecretOut:
        return SecretOut(id=charger_id, secret=await ctx.registry.rotate_secret(charger_id))
