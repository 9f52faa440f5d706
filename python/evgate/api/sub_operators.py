"""api room: ``/api/v1/sub-operators`` — the tenants inside the operator (issue 20).

Only the operator's tokens create, rename and delete sub-operators; a sub-operator's token may
read its own (row-level security shows it no other: another id is 404). A sub-operator that
still owns resources is not deleted (409); its tokens and subscriptions go with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import BigintCursor, BigintId, BodyBigintId
from evgate.api.context import ApiContext, Ctx
from evgate.api.pagination import Page, page_of
from evgate.api.security import operator_guard
from evgate.storage.db import acting_for, tenant
from evgate.storage.errors import BadReference, NotFound
from evgate.storage.sub_operators import Owned, SubOperator

__all__ = ["OwnerField", "SubOperatorController", "check_owner", "created_for", "give"]

R = TypeVar("R", bound=Any)

#: A resource's ``subOperatorId`` in a POST or PATCH body: the sub-operator that owns it
#: (null: the operator); absent: a POST's is the acting token's, a PATCH leaves it.
OwnerField = BodyBigintId | msgspec.UnsetType | None


def _refuse_another(wanted: int | None) -> None:
    acting = tenant()
    if acting is not None and wanted != acting:
        # The same answer whether or not ``wanted`` exists: it tells nothing of others.
        raise PermissionDeniedException(
            "a sub-operator's token cannot give a resource to another sub-operator or the operator"
        )


@asynccontextmanager
async def created_for(
    ctx: ApiContext, wanted: int | msgspec.UnsetType | None
) -> AsyncIterator[None]:
    """What the block creates belongs to the sub-operator ``wanted`` (a POST's
    ``subOperatorId``): the block acts for it, so that the columns' default
    (``evgate_tenant()``) stamps its rows and its events, in the creation's own transaction.
    Absent: the acting token's own (the operator's, or its tenant's).

    Raises:
        PermissionDeniedException: a sub-operator's token named another (403).
        BadReference: no such sub-operator (422, as any unknown id in a body).
    """
    if wanted is msgspec.UNSET or wanted == tenant():
        yield
        return
    await check_owner(ctx, wanted)
    with acting_for(wanted):
        yield


async def check_owner(ctx: ApiContext, wanted: int | None) -> None:
    """Refuse ``wanted`` as a new owner before anything changes: another's for a tenant's
    token (403), an unknown sub-operator (422)."""
    _refuse_another(wanted)
    if wanted is not None:
        try:
            await ctx.sub_operators.get(wanted)
        except NotFound:
            raise BadReference(f"no sub-operator {wanted}") from None


async def give(
    ctx: ApiContext,
    table: Owned,
    key: str | int,
    wanted: int | msgspec.UnsetType | None,
    change: Callable[[], Awaitable[R]],
) -> R:
    """Apply a PATCH: its other changes (``change()``, which returns the resource), then its
    ``subOperatorId`` (when present), so that a refused change gives nothing away; the new
    owner is checked before either.

    Raises:
        PermissionDeniedException: a sub-operator's token named another or the operator (403,
            the same whether or not that one exists).
        NotFound: no such resource; BadReference: no such sub-operator (422).
    """
    if wanted is msgspec.UNSET:
        return await change()
    await check_owner(ctx, wanted)
    changed = await change()
    await ctx.sub_operators.assign(table, key, wanted)
    return msgspec.structs.replace(changed, sub_operator_id=wanted)


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
