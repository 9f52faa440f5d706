"""api room: ``/api/v1/tokens`` — operator API tokens, managed by admin tokens only.

A token is shown once, in the answer that creates it; evgate keeps its SHA-256 digest. A
deleted token is refused from the next request on, by every evgate process (each request looks
its token up in the database). The bootstrap token is no row: it is neither listed nor deleted
here (unset ``EVGATE_BOOTSTRAP_TOKEN`` to retire it).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import BigintCursor, BigintId
from evgate.api.context import Ctx
from evgate.api.pagination import Page, page_of
from evgate.api.problems import Unprocessable
from evgate.api.security import Principal, admin_guard
from evgate.auth.registry import issue_token
from evgate.storage.tokens import ApiToken, Scope

__all__ = ["TokenController", "token_in_use"]


class TokenCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    # What the token may do: "read" (safe methods only) or "admin" (everything).
    scope: Scope = "read"


class TokenWithSecret(ApiToken, kw_only=True):
    """A token with the token itself: returned once, at creation."""

    token: str


class TokenController(Controller):
    path = "/api/v1/tokens"
    tags = ["tokens"]
    guards = [admin_guard]

    @post("/", status_code=201, summary="Create an API token; the token is shown only here")
    async def create(self, ctx: Ctx, data: JSONBody[TokenCreate]) -> TokenWithSecret:
        try:
            row, token = await issue_token(ctx.tokens, data.name, data.scope)
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
    """The token a request presented: its id (null for the bootstrap token) and scope."""

    token_id: int | None
    scope: Scope


@get("/api/v1/token", tags=["tokens"], summary="The token in use: its scope (any token)")
async def token_in_use(request: Request[Principal, Any, Any]) -> TokenInUse:
    """What the dashboard asks at sign-in: whether to show the actions (``admin``)."""
    principal = request.user
    scope: Scope = "admin" if principal.scope == "admin" else "read"
    return TokenInUse(token_id=principal.token_id, scope=scope)
