"""api room: partners (corporate customers), their invites and members.

* ``/api/v1/partners``: create, list, read, change, delete (409 while it has members);
* ``/api/v1/partners/{id}/invites``: invite an email (409 if a pending invite has it), list;
* ``/api/v1/partner-invites/{id}``: read, withdraw; ``POST .../accept`` ``{"userId"}``: the
  user with the invite's email joins the partner (409 once accepted or expired);
* ``/api/v1/partners/{id}/members``: list; ``DELETE .../members/{userId}``: the user leaves.

Their service is ``ApiContext.accounts`` (:class:`~evgate.api.services.AccountsApi`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import BigintCursor, BigintId, BodyBigintId
from evgate.api.context import Ctx
from evgate.api.inputs import set_fields
from evgate.api.pagination import Page, page_of
from evgate.api.problems import Conflict
from evgate.api.users import Country, Email
from evgate.storage.partners import InviteNotPending, Partner, PartnerInvite
from evgate.storage.users import User

__all__ = ["ROUTES", "PartnerController", "PartnerInviteController"]

Text50 = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]


class PartnerCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    registration_number: Text50 | None = None
    vat_number: Text50 | None = None
    # The operator's own id for it (partner.changed names it when it is deleted).
    external_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    street: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    post_code: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    city: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    country: Country | None = None


class PartnerPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    registration_number: Text50 | msgspec.UnsetType | None = msgspec.UNSET
    vat_number: Text50 | msgspec.UnsetType | None = msgspec.UNSET
    external_id: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | msgspec.UnsetType | None
    ) = msgspec.UNSET
    street: Annotated[str, msgspec.Meta(max_length=200)] | msgspec.UnsetType | None = msgspec.UNSET
    post_code: Annotated[str, msgspec.Meta(max_length=20)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    city: Annotated[str, msgspec.Meta(max_length=100)] | msgspec.UnsetType | None = msgspec.UNSET
    country: Country | msgspec.UnsetType | None = msgspec.UNSET


class InviteCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    email: Email


class InviteAccept(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    user_id: BodyBigintId


Limit = Annotated[int, QueryParameter(ge=1, le=1000)]


class PartnerController(Controller):
    path = "/api/v1/partners"
    tags = ["partners"]

    @post("/", status_code=201, summary="Add a partner")
    async def create(self, ctx: Ctx, data: JSONBody[PartnerCreate]) -> Partner:
        return await ctx.accounts.partners.create(set_fields(data))

    @get("/", summary="List partners in id order (keyset pagination)")
    async def list_partners(
        self, ctx: Ctx, after: BigintCursor = None, limit: Limit = 100
    ) -> Page[Partner]:
        return page_of(await ctx.accounts.partners.page(after, limit), limit, lambda p: p.id)

    @get("/{partner_id:int}", summary="One partner")
    async def get_partner(self, ctx: Ctx, partner_id: BigintId) -> Partner:
        return await ctx.accounts.partners.get(partner_id)

    @patch("/{partner_id:int}", summary="Change a partner")
    async def patch_partner(
        self, ctx: Ctx, partner_id: BigintId, data: JSONBody[PartnerPatch]
    ) -> Partner:
        fields = set_fields(data)
        if not fields:
            return await ctx.accounts.partners.get(partner_id)
        return await ctx.accounts.partners.update(partner_id, fields)

    @delete(
        "/{partner_id:int}",
        status_code=204,
        summary="Remove a partner and its invites (409 while it has members)",
        opt={"problems": (409,)},
    )
    async def delete_partner(self, ctx: Ctx, partner_id: BigintId) -> None:
        await ctx.accounts.partners.delete(partner_id)

    @post(
        "/{partner_id:int}/invites",
        status_code=201,
        summary="Invite an email to the partner (409 if a pending invite has it)",
        opt={"problems": (409,)},
    )
    async def invite(
        self, ctx: Ctx, partner_id: BigintId, data: JSONBody[InviteCreate]
    ) -> PartnerInvite:
        return await ctx.accounts.invites.create(partner_id, data.email)

    @get("/{partner_id:int}/invites", summary="The partner's invites in id order")
    async def invites(
        self, ctx: Ctx, partner_id: BigintId, after: BigintCursor = None, limit: Limit = 100
    ) -> Page[PartnerInvite]:
        items = await ctx.accounts.invites.of_partner(partner_id, after, limit)
        return page_of(items, limit, lambda i: i.id)

    @get("/{partner_id:int}/members", summary="The partner's members in id order")
    async def members(
        self, ctx: Ctx, partner_id: BigintId, after: BigintCursor = None, limit: Limit = 100
    ) -> Page[User]:
        items = await ctx.accounts.partners.members(partner_id, after, limit)
        return page_of(items, limit, lambda u: u.id)

    @delete(
        "/{partner_id:int}/members/{user_id:int}",
        status_code=204,
        summary="The user leaves the partner",
    )
    async def remove_member(self, ctx: Ctx, partner_id: BigintId, user_id: BigintId) -> None:
        await ctx.accounts.partners.remove_member(partner_id, user_id)


class PartnerInviteController(Controller):
    path = "/api/v1/partner-invites"
    tags = ["partners"]

    @get("/{invite_id:int}", summary="One partner invite")
    async def get_invite(self, ctx: Ctx, invite_id: BigintId) -> PartnerInvite:
        return await ctx.accounts.invites.get(invite_id)

    @post(
        "/{invite_id:int}/accept",
        status_code=200,
        summary="The user with the invite's email accepts it and joins the partner (422 for"
        " another email; 409 once accepted or expired)",
        opt={"problems": (409,)},
    )
    async def accept(
        self, ctx: Ctx, invite_id: BigintId, data: JSONBody[InviteAccept]
    ) -> PartnerInvite:
        try:
            return await ctx.accounts.invites.accept(invite_id, data.user_id)
        except InviteNotPending as exc:
            raise Conflict(str(exc)) from None

    @delete("/{invite_id:int}", status_code=204, summary="Withdraw an invite")
    async def delete_invite(self, ctx: Ctx, invite_id: BigintId) -> None:
        await ctx.accounts.invites.delete(invite_id)


#: The controllers ``app.py`` passes to ``create_api``.
ROUTES = [PartnerController, PartnerInviteController]
