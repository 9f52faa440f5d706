"""api room: ``/api/v1/tokens`` — API tokens, managed by admin tokens only.

A token is the operator's (it sees everything) or a sub-operator's (``subOperatorId``: it sees
and acts only on that tenant's resources, by row-level security). A sub-operator's admin token
lists, makes and revokes only its own sub-operator's tokens; the operator's others are 404 to it.

A token is shown once, in the answer that creates it; evgate keeps its SHA-256 digest. A
deleted token is refused from the next request on, by every evgate process (each request looks
its token up in the database). The bootstrap token is no row: it is neither listed nor deleted
here (unset ``EVGATE_BOOTSTRAP_TOKEN`` to retire it).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import BigintCursor, BigintId, BodyBigintId
from evgate.api.context import Ctx
from evgate.api.pagination import Page, page_of
from evgate.api.problems import Unprocessable
from evgate.api.security import Principal, admin_guard
from evgate.auth.registry import issue_token
from evgate.storage.errors import NotFound
from evgate.storage.tokens import ApiToken, Scope

__all__ = ["TokenController", "token_in_use"]


class TokenCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    # What the token may do: "read" (safe methods only) or "admin" (everything).
    scope: Scope = "read"
    # The sub-operator it acts for; null or absent: the operator (a sub-operator's token
    # makes only tokens of its own sub-operator: absent means its own).
    sub_operator_id: BodyBigintId | msgspec.UnsetType | None = msgspec.UNSET


class TokenWithSecret(ApiToken, kw_only=True):
    """A token with the token itself: returned once, at creation."""

    token: str


class TokenController(Controller):
    path = "/api/v1/tokens"
    tags = ["tokens"]
    guards = [admin_guard]

    @post(
        "/",
        status_code=201,
        summary="Create an API token, the operator's or a sub-operator's; the token is shown"
        " only here",
    )
    async def create(
        self, request: Request[Principal, Any, Any], ctx: Ctx, data: JSONBody[TokenCreate]
    ) -> TokenWithSecret:
        acting = request.user.sub_operator_id
        wanted = data.sub_operator_id
        if acting is not None and wanted is not msgspec.UNSET and wanted != acting:
            if wanted is None:
                raise PermissionDeniedException("a sub-operator's token cannot make the operator's")
            # Another sub-operator does not exist for a tenant's token (as at its own id).
            raise NotFound(f"no sub-operator {wanted}")
        sub_operator = acting if wanted is msgspec.UNSET else wanted
        try:
            row, token = await issue_token(ctx.tokens, data.name, data.scope, sub_operator)
        except ValueError as exc:  # the reserved name
            raise Unprocessable(str(exc)) from None
        return TokenWithSecret(**msgspec.structs.asdict(row), token=token)

    @get("/", summary="List API tokens in id order (never the tokens themselves)")
    async def list_tokens(
        self,
        ctx: Ctx,
        after: BigintCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[ApiToken]:
        items = await ctx.tokens.page(after, limit)
        return page_of(items, limit, lambda t: t.id)

    @delete(
        "/{token_id:int}",
        status_code=204,
        summary="Revoke an API token; it is refused from the next request on, on every node",
    )
    async def revoke(self, ctx: Ctx, token_id: BigintId) -> None:
        await ctx.tokens.delete(token_id)


class TokenInUse(msgspec.Struct, kw_only=True, rename="camel"):
    """The token a request presented: its id (null for the bootstrap token), scope and
    sub-operator (null: the operator's)."""

    token_id: int | None
    scope: Scope
    sub_operator_id: int | None


@get("/api/v1/token", tags=["tokens"], summary="The token in use: its scope (any token)")
async def token_in_use(request: Request[Principal, Any, Any]) -> TokenInUse:
    """What the dashboard asks at sign-in: whether to show the actions (``admin``)."""
    principal = request.user
    scope: Scope = "admin" if principal.scope == "admin" else "read"
    return TokenInUse(
        token_id=principal.token_id, scope=scope, sub_operator_id=principal.sub_operator_id
    )
