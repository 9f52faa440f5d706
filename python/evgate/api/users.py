"""api room: who charges and who pays — users, user groups and balances.

* ``/api/v1/users``: create, list (id order, keyset pagination), read, change, delete; a
  user's email is unique (case-insensitively); ``status`` ``blocked`` refuses their id tags;
* ``/api/v1/users/{id}/balance``: the balance (``GET``), a booked entry (``POST``: a top-up, a
  voucher or an adjustment; 409 if it would take the balance below zero) and the entries
  (``GET .../balance/entries``);
* ``/api/v1/user-groups``: groups, and whether their prepaid members may charge at or below
  zero (``allowEmptyBalance``);
* ``/api/v1/users/{id}/payment-methods`` (one default per user) and
  ``/api/v1/users/{id}/invoice-details``: a body holding anything that looks like a card
  number is refused (422, ``api/cards.py``).

Their service is ``ApiContext.accounts`` (:class:`~evgate.api.services.AccountsApi`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import JSON_INT_MAX, BigintCursor, BigintId, BodyBigintId
from evgate.api.cards import REFUSE_CARD_NUMBERS
from evgate.api.context import Ctx
from evgate.api.inputs import set_fields
from evgate.api.pagination import Page, page_of
from evgate.api.problems import Unprocessable
from evgate.storage.balances import BalanceEntry, BookingType
from evgate.storage.money import AmountError
from evgate.storage.payments import (
    InvoiceDetails,
    InvoiceKind,
    PaymentMethod,
    PaymentMethodType,
)
from evgate.storage.users import Money, User, UserGroup, UserStatus

__all__ = [
    "ROUTES",
    "BalanceController",
    "InvoiceDetailsController",
    "PaymentMethodController",
    "UserController",
    "UserGroupController",
]

Email = Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Phone = Annotated[str, msgspec.Meta(pattern=r"^\+?[0-9 ()./-]{3,31}$")]
Language = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$",
        max_length=35,
        description="a BCP 47 language tag, e.g. en-GB",
    ),
]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
# Litestar documents no bounds of a list's items from their Meta: written out for the document
# (msgspec checks the items' own Meta).
GroupIds = Annotated[
    list[BodyBigintId],
    msgspec.Meta(
        max_length=100,
        extra_json_schema={
            "extra": {"items": {"type": "integer", "minimum": 1, "maximum": JSON_INT_MAX}}
        },
    ),
]
Amount = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^-?[0-9]{1,15}(\.[0-9]{1,4})?$",
        description="a decimal string with at most the currency's decimals, e.g. 10.00",
    ),
]


class UserCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    email: Email
    first_name: Name | None = None
    last_name: Name | None = None
    phone: Phone | None = None
    language: Language | None = None
    status: UserStatus = "active"
    user_group_ids: GroupIds = msgspec.field(default_factory=list)
    # A prepaid user with a balance at or below zero is refused (see user groups).
    prepaid: bool = False
    currency: Currency = "EUR"


class UserPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    email: Email | msgspec.UnsetType = msgspec.UNSET
    first_name: Name | msgspec.UnsetType | None = msgspec.UNSET
    last_name: Name | msgspec.UnsetType | None = msgspec.UNSET
    phone: Phone | msgspec.UnsetType | None = msgspec.UNSET
    language: Language | msgspec.UnsetType | None = msgspec.UNSET
    status: UserStatus | msgspec.UnsetType = msgspec.UNSET
    user_group_ids: GroupIds | msgspec.UnsetType = msgspec.UNSET
    prepaid: bool | msgspec.UnsetType = msgspec.UNSET
    currency: Currency | msgspec.UnsetType = msgspec.UNSET


def _fields(data: msgspec.Struct) -> dict[str, Any]:
    return set_fields(data, without=("user_group_ids",))


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["users"]

    @post(
        "/",
        status_code=201,
        summary="Add a user (409 if the email is taken, case-insensitively)",
        opt={"problems": (409,)},
    )
    async def create(self, ctx: Ctx, data: JSONBody[UserCreate]) -> User:
        return await ctx.accounts.users.create(_fields(data), list(data.user_group_ids))

    @get("/", summary="List users in id order (keyset pagination)")
    async def list_users(
        self,
        ctx: Ctx,
        after: BigintCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[User]:
        return page_of(await ctx.accounts.users.page(after, limit), limit, lambda u: u.id)

    @get("/{user_id:int}", summary="One user")
    async def get_user(self, ctx: Ctx, user_id: BigintId) -> User:
        return await ctx.accounts.users.get(user_id)

    @patch(
        "/{user_id:int}",
        summary="Change a user (a blocked user's id tags are refused); the currency changes"
        " only at a zero balance (409)",
        opt={"problems": (409,)},
    )
    async def patch_user(self, ctx: Ctx, user_id: BigintId, data: JSONBody[UserPatch]) -> User:
        groups = data.user_group_ids
        return await ctx.accounts.users.update(
            user_id, _fields(data), None if groups is msgspec.UNSET else list(groups)
        )

    @delete(
        "/{user_id:int}",
        status_code=204,
        summary="Remove a user and their balance entries (409 while they own id tags)",
        opt={"problems": (409,)},
    )
    async def delete_user(self, ctx: Ctx, user_id: BigintId) -> None:
        await ctx.accounts.users.delete(user_id)


class BookingCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    amount: Amount
    # topUp and voucher credit; an adjustment is either sign.
    type: BookingType


class BalanceController(Controller):
    path = "/api/v1/users/{user_id:int}/balance"
    tags = ["users"]

    @get("/", summary="The user's balance")
    async def get_balance(self, ctx: Ctx, user_id: BigintId) -> Money:
        return await ctx.accounts.balances.balance(user_id)

    @post(
        "/",
        status_code=201,
        summary="Book an entry on the user's balance (409 if it would go below zero)",
        opt={"problems": (409,)},
    )
    async def book(
        self, ctx: Ctx, user_id: BigintId, data: JSONBody[BookingCreate]
    ) -> BalanceEntry:
        try:
            return await ctx.accounts.balances.book(user_id, data.amount, data.type)
        except AmountError as exc:
            raise Unprocessable(str(exc)) from None

    @get("/entries", summary="The user's booked entries, oldest first (keyset pagination)")
    async def entries(
        self,
        ctx: Ctx,
        user_id: BigintId,
        after: BigintCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[BalanceEntry]:
        items = await ctx.accounts.balances.entries(user_id, after, limit)
        return page_of(items, limit, lambda e: e.id)


class UserGroupCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name
    allow_empty_balance: bool = False


class UserGroupPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name | None = None
    allow_empty_balance: bool | None = None


class UserGroupController(Controller):
    path = "/api/v1/user-groups"
    tags = ["users"]

    @post(
        "/",
        status_code=201,
        summary="Add a user group (409 if the name is taken)",
        opt={"problems": (409,)},
    )
    async def create(self, ctx: Ctx, data: JSONBody[UserGroupCreate]) -> UserGroup:
        return await ctx.accounts.groups.create(data.name, data.allow_empty_balance)

    @get("/", summary="List user groups in id order (keyset pagination)")
    async def list_groups(
        self,
        ctx: Ctx,
        after: BigintCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[UserGroup]:
        return page_of(await ctx.accounts.groups.page(after, limit), limit, lambda g: g.id)

    @get("/{group_id:int}", summary="One user group")
    async def get_group(self, ctx: Ctx, group_id: BigintId) -> UserGroup:
        return await ctx.accounts.groups.get(group_id)

    @patch(
        "/{group_id:int}",
        summary="Rename a group (409 if the name is taken) or change its balance rule",
        opt={"problems": (409,)},
    )
    async def patch_group(
        self, ctx: Ctx, group_id: BigintId, data: JSONBody[UserGroupPatch]
    ) -> UserGroup:
        return await ctx.accounts.groups.update(group_id, data.name, data.allow_empty_balance)

    @delete(
        "/{group_id:int}",
        status_code=204,
        summary="Remove a user group (409 while it has members)",
        opt={"problems": (409,)},
    )
    async def delete_group(self, ctx: Ctx, group_id: BigintId) -> None:
        await ctx.accounts.groups.delete(group_id)


Issuer = Annotated[str, msgspec.Meta(min_length=1, max_length=50, description="e.g. visa")]
LastFour = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}$")]
Month = Annotated[int, msgspec.Meta(ge=1, le=12)]
Year = Annotated[int, msgspec.Meta(ge=2000, le=2199)]
ProviderToken = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=500, description="the payment provider's reference, opaque"
    ),
]
_NO_CARDS = {REFUSE_CARD_NUMBERS: True}


class PaymentMethodCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    type: PaymentMethodType
    issuer: Issuer | None = None
    last_four: LastFour | None = None
    expiry_month: Month | None = None
    expiry_year: Year | None = None
    # A user's first method is their default anyway; true takes it from the current one.
    default: bool = False
    provider_token: ProviderToken | None = None


class PaymentMethodPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    type: PaymentMethodType | msgspec.UnsetType = msgspec.UNSET
    issuer: Issuer | msgspec.UnsetType | None = msgspec.UNSET
    last_four: LastFour | msgspec.UnsetType | None = msgspec.UNSET
    expiry_month: Month | msgspec.UnsetType | None = msgspec.UNSET
    expiry_year: Year | msgspec.UnsetType | None = msgspec.UNSET
    default: bool | msgspec.UnsetType = msgspec.UNSET
    provider_token: ProviderToken | msgspec.UnsetType | None = msgspec.UNSET


def _method_fields(data: msgspec.Struct) -> dict[str, Any]:
    return set_fields(data, without=("default",))


class PaymentMethodController(Controller):
    path = "/api/v1/users/{user_id:int}/payment-methods"
    tags = ["users"]

    @post(
        "/",
        status_code=201,
        summary="Add a payment method (422 for anything that looks like a card number)",
        opt=_NO_CARDS,
    )
    async def create(
        self, ctx: Ctx, user_id: BigintId, data: JSONBody[PaymentMethodCreate]
    ) -> PaymentMethod:
        return await ctx.accounts.payment_methods.create(
            user_id, _method_fields(data), data.default
        )

    @get("/", summary="The user's payment methods in id order (keyset pagination)")
    async def list_methods(
        self,
        ctx: Ctx,
        user_id: BigintId,
        after: BigintCursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[PaymentMethod]:
        items = await ctx.accounts.payment_methods.of_user(user_id, after, limit)
        return page_of(items, limit, lambda m: m.id)

    @get("/{method_id:int}", summary="One payment method")
    async def get_method(self, ctx: Ctx, user_id: BigintId, method_id: BigintId) -> PaymentMethod:
        return await ctx.accounts.payment_methods.get(user_id, method_id)

    @patch(
        "/{method_id:int}",
        summary="Change a payment method; default true makes it the user's one default",
        opt=_NO_CARDS,
    )
    async def patch_method(
        self,
        ctx: Ctx,
        user_id: BigintId,
        method_id: BigintId,
        data: JSONBody[PaymentMethodPatch],
    ) -> PaymentMethod:
        default = None if data.default is msgspec.UNSET else data.default
        return await ctx.accounts.payment_methods.update(
            user_id, method_id, _method_fields(data), default
        )

    @delete("/{method_id:int}", status_code=204, summary="Remove a payment method")
    async def delete_method(self, ctx: Ctx, user_id: BigintId, method_id: BigintId) -> None:
        await ctx.accounts.payment_methods.delete(user_id, method_id)


Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]


class InvoiceDetailsPut(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    kind: InvoiceKind
    # The person's or the company's name.
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    tax_id: Annotated[str, msgspec.Meta(min_length=1, max_length=50)] | None = None
    street: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    post_code: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    city: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    country: Country | None = None


class InvoiceDetailsController(Controller):
    path = "/api/v1/users/{user_id:int}/invoice-details"
    tags = ["users"]

    @get("/", summary="The user's invoice details (null while none are set)")
    async def get_details(self, ctx: Ctx, user_id: BigintId) -> InvoiceDetails | None:
        return await ctx.accounts.invoice_details.get(user_id)

    @put("/", summary="Set the user's invoice details, whole", opt=_NO_CARDS)
    async def put_details(
        self, ctx: Ctx, user_id: BigintId, data: JSONBody[InvoiceDetailsPut]
    ) -> InvoiceDetails:
        details, _ = await ctx.accounts.invoice_details.put(user_id, msgspec.structs.asdict(data))
        return details


#: The controllers ``app.py`` passes to ``create_api``.
ROUTES = [
    UserController,
    BalanceController,
    UserGroupController,
    PaymentMethodController,
    InvoiceDetailsController,
]
