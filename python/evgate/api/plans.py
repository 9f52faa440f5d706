"""api room: subscription plans and users' subscriptions to them.

* ``/api/v1/subscription-plans``: create, list, read, change, delete (409 while users are
  subscribed to it);
* ``/api/v1/users/{id}/subscription``: the user's one subscription, set whole with ``PUT``
  (another plan replaces it), its status or end changed with ``PATCH``; it expires by itself
  once ``endsAt`` has passed.

Their service is ``ApiContext.accounts`` (:class:`~evgate.api.services.AccountsApi`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import BigintCursor, BigintId, BodyBigintId
from evgate.api.context import Ctx
from evgate.api.inputs import aware
from evgate.api.pagination import Page, page_of
from evgate.api.problems import Unprocessable
from evgate.storage.money import AmountError, parse_amount
from evgate.storage.plans import RenewalPeriod, SubscriptionPlan, UserSubscription

__all__ = ["ROUTES", "SubscriptionPlanController", "UserSubscriptionController"]

Amount = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]{1,15}(\.[0-9]{1,4})?$",
        description="a decimal string with at most the currency's decimals, e.g. 9.99",
    ),
]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
# What the API may set; "expired" is evgate's, once endsAt has passed.
SettableStatus = Literal["pending", "active", "suspended", "canceled"]


class Fee(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    amount: Amount
    currency: Currency


def _fee(fee: Fee) -> tuple[Decimal, str]:
    try:
        return parse_amount(fee.amount, fee.currency), fee.currency
    except AmountError as exc:
        raise Unprocessable(f"fee: {exc}") from None


class PlanCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name
    fee: Fee
    renewal_period: RenewalPeriod


class PlanPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name | None = None
    fee: Fee | None = None
    renewal_period: RenewalPeriod | None = None


class SubscriptionPlanController(Controller):
    path = "/api/v1/subscription-plans"
    tags = ["subscription plans"]

    @post(
        "/",
        status_code=201,
        summary="Add a subscription plan (409 if the name is taken)",
        opt={"problems": (409,)},
    )
    async def create(self, ctx: Ctx, data: JSONBody[PlanCreate]) -> SubscriptionPlan:
        amount, currency = _fee(data.fee)
        return await ctx.accounts.plans.create(data.name, amount, currency, data.renewal_period)

    @get("/", summary="List subscription plans in id order (keyset pagination)")
    async def list_plans(
        self,
        ctx: Ctx,
        after: BigintCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[SubscriptionPlan]:
        return page_of(await ctx.accounts.plans.page(after, limit), limit, lambda p: p.id)

    @get("/{plan_id:int}", summary="One subscription plan")
    async def get_plan(self, ctx: Ctx, plan_id: BigintId) -> SubscriptionPlan:
        return await ctx.accounts.plans.get(plan_id)

    @patch(
        "/{plan_id:int}",
        summary="Change a plan's name (409 if taken), fee or renewal period",
        opt={"problems": (409,)},
    )
    async def patch_plan(
        self, ctx: Ctx, plan_id: BigintId, data: JSONBody[PlanPatch]
    ) -> SubscriptionPlan:
        fee = None if data.fee is None else _fee(data.fee)
        return await ctx.accounts.plans.update(plan_id, data.name, fee, data.renewal_period)

    @delete(
        "/{plan_id:int}",
        status_code=204,
        summary="Remove a plan (409 while users are subscribed to it)",
        opt={"problems": (409,)},
    )
    async def delete_plan(self, ctx: Ctx, plan_id: BigintId) -> None:
        await ctx.accounts.plans.delete(plan_id)


class SubscriptionPut(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    plan_id: BodyBigintId
    # Default: now. endsAt default: one renewal period of the plan after startsAt.
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    status: SettableStatus = "active"


class SubscriptionPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    status: SettableStatus | None = None
    ends_at: datetime | None = None


class UserSubscriptionController(Controller):
    path = "/api/v1/users/{user_id:int}/subscription"
    tags = ["subscription plans"]

    @get("/", summary="The user's subscription (null if none)")
    async def get_subscription(self, ctx: Ctx, user_id: BigintId) -> UserSubscription | None:
        return await ctx.accounts.subscriptions.get(user_id)

    @put(
        "/",
        summary="Subscribe the user to a plan, replacing their subscription (422 for an"
        " unknown plan)",
    )
    async def put_subscription(
        self, ctx: Ctx, user_id: BigintId, data: JSONBody[SubscriptionPut]
    ) -> UserSubscription:
        starts_at = aware("startsAt", data.starts_at) or datetime.now(UTC)
        try:
            return await ctx.accounts.subscriptions.put(
                user_id, data.plan_id, starts_at, aware("endsAt", data.ends_at), data.status
            )
        except ValueError as exc:
            raise Unprocessable(str(exc)) from None

    @patch("/", summary="Change the user's subscription's status or end")
    async def patch_subscription(
        self, ctx: Ctx, user_id: BigintId, data: JSONBody[SubscriptionPatch]
    ) -> UserSubscription:
        try:
            return await ctx.accounts.subscriptions.update(
                user_id, data.status, aware("endsAt", data.ends_at)
            )
        except ValueError as exc:
            raise Unprocessable(str(exc)) from None


#: The controllers ``app.py`` passes to ``create_api``.
ROUTES = [SubscriptionPlanController, UserSubscriptionController]
