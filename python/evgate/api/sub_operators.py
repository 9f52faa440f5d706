"""api room: ``/api/v1/sub-operators`` — the tenants inside the operator (issue 20).

Only the operator's tokens create, rename and delete sub-operators; a sub-operator's token may
read its own (row-level security shows it no other: another id is 404). A sub-operator that
still owns resources is not deleted (409); its tokens and subscriptions go with it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import BigintCursor, BigintId
from evgate.api.context import Ctx
from evgate.api.pagination import Page, page_of
from evgate.api.security import operator_guard
from evgate.storage.sub_operators import SubOperator

__all__ = ["SubOperatorController"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class SubOperatorIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Unique, compared case-insensitively.
    name: Name


class SubOperatorController(Controller):
    path = "/api/v1/sub-operators"
    tags = ["sub-operators"]

    @post(
        "/",
        status_code=201,
        summary="Add a sub-operator (operator tokens only; 409 if the name is taken)",
        guards=[operator_guard],
        opt={"problems": (409,)},
    )
    async def create(self, ctx: Ctx, data: JSONBody[SubOperatorIn]) -> SubOperator:
        return await ctx.sub_operators.create(data.name)

    @get("/", summary="List sub-operators in id order (a sub-operator's token: its own)")
    async def list_sub_operators(
        self,
        ctx: Ctx,
        after: BigintCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[SubOperator]:
        return page_of(await ctx.sub_operators.page(after, limit), limit, lambda s: s.id)

    @get("/{sub_operator_id:int}", summary="One sub-operator")
    async def get_sub_operator(self, ctx: Ctx, sub_operator_id: BigintId) -> SubOperator:
        return await ctx.sub_operators.get(sub_operator_id)

    @patch(
        "/{sub_operator_id:int}",
        summary="Rename a sub-operator (operator tokens only)",
        guards=[operator_guard],
        opt={"problems": (409,)},
    )
    async def patch_sub_operator(
        self, ctx: Ctx, sub_operator_id: BigintId, data: JSONBody[SubOperatorIn]
    ) -> SubOperator:
        return await ctx.sub_operators.rename(sub_operator_id, data.name)

    @delete(
        "/{sub_operator_id:int}",
        status_code=204,
        summary="Remove a sub-operator with its tokens and subscriptions (operator tokens"
        " only; 409 while it owns chargers, locations, circuits, tariffs, installations or"
        " id tags)",
        guards=[operator_guard],
        opt={"problems": (409,)},
    )
    async def delete_sub_operator(self, ctx: Ctx, sub_operator_id: BigintId) -> None:
        await ctx.sub_operators.delete(sub_operator_id)
