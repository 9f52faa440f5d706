"""api room: ``/api/v1/installations`` — groups of chargers with one authorization mode.

Webhook credentials are stored (evgate must present them to the provider) but never shown:
answers mask every value of ``authenticationPayload`` except grant_type, username, client_id,
scope and audience. A PATCH merges ``webhook`` member by member, so changing a timeout does not
need the password again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import BigintCursor, BigintId
from evgate.api.context import ApiContext, Ctx
from evgate.api.inputs import set_fields
from evgate.api.pagination import Page, page_of
from evgate.api.problems import ApiError, Unprocessable
from evgate.api.sub_operators import OwnerField, created_for, give
from evgate.api.targets import check_tenant_target
from evgate.auth.installations import Installation, InstallationInvalid, Installations
from evgate.auth.webhook import OnFailure, Url, WebhookSettings, masked_payload
from evgate.storage.installations import OfflineState, PendingSessionEnd

__all__ = ["InstallationController"]

Mode = Annotated[
    Literal["native", "acceptAll", "webhook"],
    msgspec.Meta(
        description=(
            "native: evgate's id-tag list; acceptAll: every id-tag may charge; webhook: the"
            " provider at webhook.sessionStartUrl decides"
        )
    ),
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class InstallationCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name
    authorization_mode: Mode = "native"
    webhook: WebhookSettings | None = None
    allow_charging_when_offline: bool = False
    # The sub-operator that owns it (null: the operator); absent: the token's own.
    sub_operator_id: OwnerField = msgspec.UNSET


class WebhookPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Members to change; a member set to null is removed (or back to its default)."""

    authentication_url: Url | msgspec.UnsetType | None = msgspec.UNSET
    authentication_payload: (
        Annotated[str, msgspec.Meta(max_length=4000)] | msgspec.UnsetType | None
    ) = msgspec.UNSET
    session_start_url: Url | msgspec.UnsetType | None = msgspec.UNSET
    session_end_url: Url | msgspec.UnsetType | None = msgspec.UNSET
    timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=20_000)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    on_failure: OnFailure | msgspec.UnsetType | None = msgspec.UNSET
    cache_ttl_seconds: (
        Annotated[int, msgspec.Meta(ge=1, le=30 * 86400)] | msgspec.UnsetType | None
    ) = msgspec.UNSET


class InstallationPatch(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    authorization_mode: Mode | msgspec.UnsetType = msgspec.UNSET
    # null removes the webhook settings (not allowed in webhook mode).
    webhook: WebhookPatch | msgspec.UnsetType | None = msgspec.UNSET
    allow_charging_when_offline: bool | msgspec.UnsetType = msgspec.UNSET
    # Give it to a sub-operator (null: to the operator); a sub-operator's token cannot (403).
    sub_operator_id: OwnerField = msgspec.UNSET


class WebhookView(msgspec.Struct, rename="camel", kw_only=True):
    """The webhook settings as shown: ``authenticationPayload`` with its secrets masked."""

    authentication_url: str | None
    authentication_payload: str | None
    session_start_url: str | None
    session_end_url: str | None
    timeout_ms: int
    on_failure: OnFailure
    cache_ttl_seconds: int


class InstallationView(msgspec.Struct, rename="camel", kw_only=True):
    id: int
    name: str
    authorization_mode: Mode
    webhook: WebhookView | None
    allow_charging_when_offline: bool
    created_at: datetime
    updated_at: datetime
    # The sub-operator that owns it (null: the operator's own).
    sub_operator_id: int | None


class OfflineConfigView(msgspec.Struct, rename="camel", kw_only=True):
    """The offline-charging configuration last asked of the charger, and its answers."""

    allow_offline: bool
    state: OfflineState
    results: dict[str, str]
    detail: str | None
    updated_at: datetime


class MemberView(msgspec.Struct, rename="camel", kw_only=True):
    charger_id: str
    offline_config: OfflineConfigView | None


def _view(installation: Installation) -> InstallationView:
    webhook = installation.webhook
    return InstallationView(
        id=installation.id,
        name=installation.name,
        authorization_mode=installation.authorization_mode,
        webhook=None
        if webhook is None
        else WebhookView(
            authentication_url=webhook.authentication_url,
            authentication_payload=masked_payload(webhook.authentication_payload),
            session_start_url=webhook.session_start_url,
            session_end_url=webhook.session_end_url,
            timeout_ms=webhook.timeout_ms,
            on_failure=webhook.on_failure,
            cache_ttl_seconds=webhook.cache_ttl_seconds,
        ),
        allow_charging_when_offline=installation.allow_charging_when_offline,
        created_at=installation.created_at,
        updated_at=installation.updated_at,
        sub_operator_id=installation.sub_operator_id,
    )


def _check_targets(ctx: ApiContext, webhook: WebhookSettings | WebhookPatch) -> None:
    """Refuse a sub-operator's webhook URL on a private host (api/targets.py).

    Raises:
        Unprocessable: one is.
    """
    for field, url in (
        ("webhook.authenticationUrl", webhook.authentication_url),
        ("webhook.sessionStartUrl", webhook.session_start_url),
        ("webhook.sessionEndUrl", webhook.session_end_url),
    ):
        if isinstance(url, str):  # a PATCH's unset or removed member calls nothing
            check_tenant_target(field, url, ctx.tenant_private_targets)


def _service(ctx: ApiContext) -> Installations:
    if ctx.installations is None:
        raise ApiError("installations are not available in this process", status=503)
    return ctx.installations


Limit = Annotated[int, QueryParameter(ge=1, le=1000)]


class InstallationController(Controller):
    path = "/api/v1/installations"
    tags = ["installations"]

    @post("/", status_code=201, summary="Create an installation")
    async def create(self, ctx: Ctx, data: JSONBody[InstallationCreate]) -> InstallationView:
        if data.webhook is not None:
            _check_targets(ctx, data.webhook)  # the token's tenant, before created_for acts
        try:
            async with created_for(ctx, data.sub_operator_id):
                installation = await _service(ctx).create(
                    data.name,
                    data.authorization_mode,
                    data.webhook,
                    data.allow_charging_when_offline,
                )
        except InstallationInvalid as exc:
            raise Unprocessable(str(exc)) from None
        return _view(installation)

    @get("/", summary="List installations in id order (keyset pagination)")
    async def list_installations(
        self,
        ctx: Ctx,
        after: BigintCursor = None,
        limit: Limit = 100,
    ) -> Page[InstallationView]:
        items = await _service(ctx).page(after, limit)
        return page_of([_view(i) for i in items], limit, lambda i: i.id)

    @get("/{installation_id:int}", summary="One installation")
    async def get_installation(self, ctx: Ctx, installation_id: BigintId) -> InstallationView:
        return _view(await _service(ctx).get(installation_id))

    @patch("/{installation_id:int}", summary="Change an installation's settings")
    async def patch_installation(
        self, ctx: Ctx, installation_id: BigintId, data: JSONBody[InstallationPatch]
    ) -> InstallationView:
        changes = set_fields(data, without=("webhook", "sub_operator_id"))
        webhook: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
        if data.webhook is None:
            webhook = None
        elif isinstance(data.webhook, WebhookPatch):
            _check_targets(ctx, data.webhook)
            webhook = msgspec.to_builtins(data.webhook)  # camelCase, unset members left out

        async def change() -> InstallationView:
            try:
                installation = await _service(ctx).update(installation_id, changes, webhook)
            except InstallationInvalid as exc:
                raise Unprocessable(str(exc)) from None
            return _view(installation)

        return await give(ctx, "installations", installation_id, data.sub_operator_id, change)

    @delete(
        "/{installation_id:int}",
        status_code=204,
        summary="Delete an installation; 409 while chargers belong to it",
        opt={"problems": (409,)},
    )
    async def delete_installation(self, ctx: Ctx, installation_id: BigintId) -> None:
        await _service(ctx).delete(installation_id)

    @get(
        "/{installation_id:int}/chargers",
        summary="The installation's chargers, each with its offline-configuration push result",
    )
    async def members(
        self,
        ctx: Ctx,
        installation_id: BigintId,
        after: Annotated[str | None, QueryParameter(description="the last charger id seen")] = None,
        limit: Limit = 100,
    ) -> Page[MemberView]:
        rows = await _service(ctx).store.members(installation_id, after, limit)
        items = [
            MemberView(
                charger_id=charger_id,
                offline_config=None
                if row is None
                else OfflineConfigView(
                    allow_offline=row.allow_offline,
                    state=row.state,
                    results=row.results,
                    detail=row.detail,
                    updated_at=row.updated_at,
                ),
            )
            for charger_id, row in rows
        ]
        return page_of(items, limit, lambda m: m.charger_id)

    @get(
        "/{installation_id:int}/session-ends",
        summary="Session ends not yet delivered to the provider, oldest first",
    )
    async def session_ends(
        self,
        ctx: Ctx,
        installation_id: BigintId,
        after: BigintCursor = None,
        limit: Limit = 100,
    ) -> Page[PendingSessionEnd]:
        service = _service(ctx)
        await service.store.get(installation_id)  # 404 for an unknown installation
        items = await service.store.pending_session_ends(installation_id, after, limit)
        return page_of(items, limit, lambda e: e.id)
