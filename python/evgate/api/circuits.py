"""api room: ``/api/v1/circuits`` — circuits (breakers in a tree) for load management.

A charger joins a circuit through ``PATCH /api/v1/chargers/{id}`` (``circuitId``,
``maxCurrent``, ``phaseRotation``). ``GET /api/v1/circuits/{id}`` shows its chargers and what
this process's smart-charging engine knows now: the limit of each transaction and the
measured current per phase.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import BigintCursor, BigintId, BodyBigintId
from evgate.api.context import ApiContext, Ctx
from evgate.api.inputs import set_fields
from evgate.api.pagination import Page, page_of
from evgate.api.problems import ApiError
from evgate.api.services import CircuitService
from evgate.api.sub_operators import OwnerField, created_for, give
from evgate.storage.circuits import Allocation, Circuit, Member, PhaseLoad

__all__ = ["CircuitController", "circuits_of"]

Amperes = Annotated[float, msgspec.Meta(gt=0, le=100000, description="amperes per phase")]
Reserve = Annotated[float, msgspec.Meta(ge=0, le=100000, description="amperes per phase")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class CircuitCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name
    max_current: Amperes
    phases: Literal[1, 3] = 3
    parent_circuit_id: BodyBigintId | None = None
    min_charge_point_current: Reserve = 6.0
    offline_reserved_current: Reserve = 0.0
    # The sub-operator that owns it (null: the operator); absent: the token's own.
    sub_operator_id: OwnerField = msgspec.UNSET


class CircuitPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    max_current: Amperes | msgspec.UnsetType = msgspec.UNSET
    phases: Literal[1, 3] | msgspec.UnsetType = msgspec.UNSET
    parent_circuit_id: BodyBigintId | msgspec.UnsetType | None = msgspec.UNSET
    min_charge_point_current: Reserve | msgspec.UnsetType = msgspec.UNSET
    offline_reserved_current: Reserve | msgspec.UnsetType = msgspec.UNSET
    # Give it to a sub-operator (null: to the operator); a sub-operator's token cannot (403).
    sub_operator_id: OwnerField = msgspec.UNSET


class CircuitView(Circuit, kw_only=True):
    """A circuit with its chargers, and the live view of this process's engine."""

    chargers: list[Member]
    allocations: list[Allocation]
    consumption: list[PhaseLoad]


def circuits_of(ctx: ApiContext) -> CircuitService:
    """The circuit service (503 in an API run without one)."""
    if ctx.circuits is None:
        raise ApiError("circuits are not available in this process", status=503)
    return ctx.circuits


class CircuitController(Controller):
    path = "/api/v1/circuits"
    tags = ["circuits"]

    @post("/", status_code=201, summary="Create a circuit", opt={"problems": (422,)})
    async def create(self, ctx: Ctx, data: JSONBody[CircuitCreate]) -> Circuit:
        async with created_for(ctx, data.sub_operator_id):
            fields = set_fields(data, without=("sub_operator_id",))
            return await circuits_of(ctx).store.create(**fields)

    @get("/", summary="List circuits in id order (keyset pagination)")
    async def list_circuits(
        self,
        ctx: Ctx,
        after: BigintCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[Circuit]:
        items = await circuits_of(ctx).store.page(after, limit)
        return page_of(items, limit, lambda c: c.id)

    @get(
        "/{circuit_id:int}",
        summary="One circuit, its chargers, the live limits per transaction and the measured"
        " current per phase",
    )
    async def get_circuit(self, ctx: Ctx, circuit_id: BigintId) -> CircuitView:
        circuit = await circuits_of(ctx).store.get(circuit_id)
        live = circuits_of(ctx).live(circuit_id)
        return CircuitView(
            **msgspec.structs.asdict(circuit),
            chargers=await circuits_of(ctx).store.members(circuit_id),
            allocations=live.allocations,
            consumption=live.consumption,
        )

    @patch("/{circuit_id:int}", summary="Change a circuit", opt={"problems": (422,)})
    async def patch_circuit(
        self, ctx: Ctx, circuit_id: BigintId, data: JSONBody[CircuitPatch]
    ) -> Circuit:
        fields = set_fields(data, without=("sub_operator_id",))

        async def change() -> Circuit:
            if not fields:
                return await circuits_of(ctx).store.get(circuit_id)
            return await circuits_of(ctx).store.update(circuit_id, **fields)

        return await give(ctx, "circuits", circuit_id, data.sub_operator_id, change)

    @delete(
        "/{circuit_id:int}",
        status_code=204,
        summary="Delete a circuit (refused while it has chargers or sub-circuits)",
        opt={"problems": (409,)},
    )
    async def delete_circuit(self, ctx: Ctx, circuit_id: BigintId) -> None:
        await circuits_of(ctx).store.delete(circuit_id)
