"""api room: ``/api/v1/chargers`` — the chargers registry."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.params import FromPath, JSONBody, QueryParameter

from evgate.api.bounds import JSON_INT_MAX, BodyBigintId
from evgate.api.circuits import circuits_of
from evgate.api.context import Ctx
from evgate.api.inputs import set_fields
from evgate.api.pagination import Page, page_of
from evgate.api.problems import Unprocessable
from evgate.api.sub_operators import OwnerField, created_for, give
from evgate.credentials import CHARGER_ID_PATTERN, KEY_LENGTH
from evgate.gateway.interface import ConnectionInfo
from evgate.storage.chargers import BootInfo, Charger, ChargerFilter, NetworkStatus
from evgate.storage.circuits import PhaseRotation
from evgate.storage.connectors import ConnectorBrief

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
    # The sub-operator that owns it (null: the operator); absent: the token's own.
    sub_operator_id: OwnerField = msgspec.UNSET


class ChargerPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    description: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType = msgspec.UNSET
    security_profile: Profile | msgspec.UnsetType = msgspec.UNSET
    lenient: bool | msgspec.UnsetType = msgspec.UNSET
    registration_status: Literal["Accepted", "Pending", "Rejected"] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    # The installation to join (its authorization mode applies at once); null leaves it.
    installation_id: BodyBigintId | msgspec.UnsetType | None = msgspec.UNSET
    # Where it stands (its tariff group applies), and a tariff group of its own (which wins);
    # null: none.
    location_id: BodyBigintId | msgspec.UnsetType | None = msgspec.UNSET
    tariff_group_id: BodyBigintId | msgspec.UnsetType | None = msgspec.UNSET
    # Load management (api/circuits.py): the circuit to join (null leaves it), the charger's
    # own maximum there (A per phase; the circuit's when it joins without one) and which
    # circuit phases its L1-L3 are wired to.
    circuit_id: BodyBigintId | msgspec.UnsetType | None = msgspec.UNSET
    max_current: ChargerAmperes | msgspec.UnsetType = msgspec.UNSET
    phase_rotation: PhaseRotation | msgspec.UnsetType = msgspec.UNSET
    # Give it to a sub-operator (null: to the operator); a sub-operator's token cannot (403).
    sub_operator_id: OwnerField = msgspec.UNSET


_MEMBERSHIP = ("circuit_id", "max_current", "phase_rotation")


class ChargerWithSecret(Charger, kw_only=True):
    """A charger with its secret: returned once, at creation or rotation."""

    secret: str


class ChargerView(Charger, kw_only=True):
    """A charger with its live connection (null when not connected) and its last
    BootNotification (null if none)."""

    connection: ConnectionInfo | None = None
    boot: BootInfo | None = None


class ChargerListed(Charger, kw_only=True):
    """A charger in a list, with its connectors' statuses (connector 0 is the charger)."""

    connectors: list[ConnectorBrief] = []


class SecretOut(msgspec.Struct):
    id: str
    secret: str


class SecretIn(msgspec.Struct, forbid_unknown_fields=True):
    secret: Annotated[
        str,
        msgspec.Meta(
            min_length=KEY_LENGTH[0],
            max_length=KEY_LENGTH[1],
            description=(
                "The secret the charger already has (an OCPP AuthorizationKey:"
                " 16-40 characters, no control characters)"
            ),
        ),
    ]


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
        async with created_for(ctx, data.sub_operator_id):
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
        q: Annotated[
            str | None,
            QueryParameter(
                max_length=64, description="a part of the id or description, case-insensitive"
            ),
        ] = None,
        network_status: Annotated[
            NetworkStatus | None, QueryParameter(name="networkStatus")
        ] = None,
        connector_status: Annotated[
            str | None,
            QueryParameter(
                name="connectorStatus",
                max_length=32,
                description="a status one of its connectors has (Available, Faulted, ...)",
            ),
        ] = None,
        installation_id: Annotated[
            int | None, QueryParameter(name="installationId", ge=1, le=JSON_INT_MAX)
        ] = None,
    ) -> Page[ChargerListed]:
        where = ChargerFilter(
            text=q,
            network_status=network_status,
            connector_status=connector_status,
            installation_id=installation_id,
        )
        items = await ctx.chargers.page(after, limit, where)
        connectors = await ctx.charging.connectors.of_chargers([c.id for c in items])
        listed = [
            ChargerListed(**msgspec.structs.asdict(c), connectors=connectors.get(c.id, []))
            for c in items
        ]
        return page_of(listed, limit, lambda c: c.id)

    @get("/{charger_id:str}", summary="One charger, with its live connection (or null)")
    async def get_charger(self, ctx: Ctx, charger_id: FromPath[str]) -> ChargerView:
        charger = await ctx.chargers.get(charger_id)
        connection = await ctx.gateway.locate(charger_id) if ctx.gateway is not None else None
        return ChargerView(
            **msgspec.structs.asdict(charger),
            connection=connection,
            boot=await ctx.chargers.boot_info(charger_id),
        )

    @patch("/{charger_id:str}", summary="Change a charger's settings")
    async def patch_charger(
        self, ctx: Ctx, charger_id: FromPath[str], data: JSONBody[ChargerPatch]
    ) -> Charger:
        fields = set_fields(data, without=("sub_operator_id",))

        async def change() -> Charger:
            membership = {k: fields.pop(k) for k in _MEMBERSHIP if k in fields}
            if membership:
                await circuits_of(ctx).store.set_membership(charger_id, **membership)
            if not fields:
                return await ctx.chargers.get(charger_id)
            charger = await ctx.chargers.update(charger_id, **fields)
            if "installation_id" in fields and ctx.installations is not None:
                # In force in this process before the answer; other processes follow on NOTIFY.
                await ctx.installations.charger_moved(charger_id)
            if {"location_id", "tariff_group_id"} & fields.keys() and ctx.pricing is not None:
                await ctx.pricing.refresh()  # its tariff, in force here before the answer
            return charger

        return await give(ctx, "chargers", charger_id, data.sub_operator_id, change)

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

    @put(
        "/{charger_id:str}/secret",
        status_code=204,
        summary="Set a charger's secret to a known value; the old one stops working at once",
        description=(
            "For chargers moved from another central system with their Basic-auth password"
            " (AuthorizationKey) kept: stored as its SHA-256 digest, never shown again."
        ),
    )
    async def set_secret(
        self, ctx: Ctx, charger_id: FromPath[str], data: JSONBody[SecretIn]
    ) -> None:
        try:
            await ctx.registry.set_secret(charger_id, data.secret)
        except ValueError as exc:
            raise Unprocessable(str(exc)) from None
