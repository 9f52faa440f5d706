"""api room: the notification subscription API, with AMPECO's paths and bodies
(``reference/ampeco-subscribe-api.md``), and evgate's list of failed deliveries.

Writes need an ``admin`` token (the API's scope guard). The token that creates a subscription
keys its ``X-Signature`` (see ``events/signing.py``: what is stored is the token's HMAC key
schedule, never the token). The Standard Webhooks secret is in the creation answer only; a
Kafka ``saslPassword`` is never in any answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import INT32_MAX, JSON_INT_MAX, BigintId, BodyBigintId
from evgate.api.context import ApiContext, Ctx
from evgate.api.pagination import Page, page_of
from evgate.api.problems import Conflict, Unprocessable
from evgate.api.security import Principal
from evgate.api.targets import check_tenant_target
from evgate.events import http
from evgate.events.catalog import NOT_EMITTED, SUBSCRIBABLE
from evgate.events.signing import hmac_state, new_webhook_secret, webhook_secret_text
from evgate.storage.deliveries import DeliveryCounts, FailedDelivery
from evgate.storage.kafka_settings import Codec, KafkaSettings, Mechanism, SecurityProtocol
from evgate.storage.subscriptions import SubscriptionRow

__all__ = ["NotificationActions", "SubscriptionController"]

T = TypeVar("T")

# Kafka's own rule for topic names; brokers as host:port.
_TOPIC = r"^[A-Za-z0-9._\-]{1,249}$"
_BROKER = r"^[A-Za-z0-9.\-\[\]:]{1,255}:[0-9]{1,5}$"


class WebhookIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    callback_url: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class KafkaIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """:class:`KafkaSettings` as a client sends them: bounded, and with the password."""

    topic: Annotated[str, msgspec.Meta(pattern=_TOPIC)]
    brokers: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=_BROKER)]],
        msgspec.Meta(min_length=1, max_length=50),
    ]
    compression_codec: Codec = "gzip"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: Mechanism | None = "PLAIN"
    sasl_username: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    sasl_password: Annotated[str, msgspec.Meta(max_length=1024)] | None = None

    def settings(self) -> KafkaSettings:
        """What is stored and shown: every field but the password (KafkaSettings has none)."""
        return msgspec.convert(self, KafkaSettings, from_attributes=True)


class SubscriptionIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """A subscription as clients send it (``id`` is read-only and ignored)."""

    via: Literal["webhook", "kafka"]
    notifications: Annotated[list[str], msgspec.Meta(min_length=1, max_length=100)]
    webhook: WebhookIn | None = None
    kafka: KafkaIn | None = None
    id: BodyBigintId | None = None


class WebhookOut(msgspec.Struct, rename="camel", kw_only=True):
    callback_url: str
    # The Standard Webhooks signing secret: in the creation answer only.
    secret: str | msgspec.UnsetType = msgspec.UNSET


class SubscriptionOut(msgspec.Struct, rename="camel", kw_only=True):
    id: int
    via: str
    notifications: list[str]
    webhook: WebhookOut | msgspec.UnsetType = msgspec.UNSET
    kafka: KafkaSettings | msgspec.UnsetType = msgspec.UNSET
    # evgate's additions: whether it delivers (a 410 from the receiver disables it; a PUT
    # enables it again), and which of the listed names evgate never emits.
    enabled: bool
    disabled_reason: str | None
    not_emitted: list[str]


class Data(msgspec.Struct, Generic[T]):
    data: T


class Links(msgspec.Struct):
    first: str
    last: str
    prev: str | None
    next: str | None


class Meta(msgspec.Struct):
    current_page: int
    from_: int | None = msgspec.field(name="from")
    last_page: int
    path: str
    per_page: int
    to: int | None
    total: int


class SubscriptionPage(msgspec.Struct):
    data: list[SubscriptionOut]
    links: Links
    meta: Meta


class ResendIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    notifications: Annotated[list[str], msgspec.Meta(max_length=100)] | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


class Resent(msgspec.Struct, rename="camel"):
    deliveries: int


def _names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in SUBSCRIBABLE]
    if unknown:
        raise Unprocessable(f"notifications: unknown event name(s) {unknown}", unknown=unknown)
    return list(dict.fromkeys(names))  # duplicates dropped, order kept


def _checked(
    ctx: ApiContext, body: SubscriptionIn, stored_password: bool = False
) -> tuple[str | None, KafkaSettings | None, str | None]:
    """The (callbackUrl, kafka settings without password, password) of a valid body;
    ``stored_password``: a PUT may leave out the password the subscription has.

    Raises:
        Unprocessable: the settings do not fit ``via``, or a sub-operator's request names a
            private target (api/targets.py).
    """
    if body.via == "webhook":
        if body.webhook is None:
            raise Unprocessable("webhook: required when via is 'webhook'")
        if body.kafka is not None:
            raise Unprocessable("kafka: not allowed when via is 'webhook'")
        url = urlsplit(body.webhook.callback_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise Unprocessable("webhook.callbackUrl: must be an absolute http(s) URL")
        try:
            # A URL the webhook client cannot send to (a port out of range, a name IDNA
            # refuses) is refused here rather than failing every attempt.
            http.target(body.webhook.callback_url, {})
        except ValueError as exc:
            raise Unprocessable(f"webhook.callbackUrl: {exc}") from None
        check_tenant_target(
            "webhook.callbackUrl", body.webhook.callback_url, ctx.tenant_private_targets
        )
        return body.webhook.callback_url, None, None
    if body.kafka is None:
        raise Unprocessable("kafka: required when via is 'kafka'")
    if body.webhook is not None:
        raise Unprocessable("webhook: not allowed when via is 'kafka'")
    k = body.kafka
    has_password = k.sasl_password or stored_password
    if k.security_protocol.startswith("SASL_") and not (k.sasl_username and has_password):
        raise Unprocessable(
            "kafka.saslUsername and kafka.saslPassword: required with a SASL securityProtocol"
        )
    for broker in k.brokers:
        check_tenant_target("kafka.brokers", broker, ctx.tenant_private_targets)
    return None, k.settings(), k.sasl_password


def _out(row: SubscriptionRow, secret: bytes | None = None) -> SubscriptionOut:
    webhook: WebhookOut | msgspec.UnsetType = msgspec.UNSET
    kafka: KafkaSettings | msgspec.UnsetType = msgspec.UNSET
    if row.via == "webhook" and row.callback_url is not None:
        webhook = WebhookOut(
            callback_url=row.callback_url,
            secret=webhook_secret_text(secret) if secret is not None else msgspec.UNSET,
        )
    elif row.kafka is not None:
        kafka = row.kafka
    return SubscriptionOut(
        id=row.id,
        via=row.via,
        notifications=row.notifications,
        webhook=webhook,
        kafka=kafka,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        not_emitted=[n for n in row.notifications if n in NOT_EMITTED],
    )


def _bearer(request: Request[Any, Any, Any]) -> str:
    return request.headers.get("authorization", "").partition(" ")[2].strip()


class SubscriptionController(Controller):
    path = "/public-api/notifications/v2.0"
    tags = ["notifications"]

    @post("/", status_code=201, summary="Subscribe to notifications (webhook or Kafka)")
    async def subscribe(
        self, ctx: Ctx, request: Request[Principal, Any, Any], data: JSONBody[SubscriptionIn]
    ) -> Data[SubscriptionOut]:
        names = _names(data.notifications)
        callback_url, kafka, password = _checked(ctx, data)
        secret = new_webhook_secret()
        service = ctx.notifications
        row = await service.subscriptions.create_subscription(
            via=data.via,
            notifications=names,
            callback_url=callback_url,
            kafka=kafka,
            kafka_password=password,
            webhook_secret=secret,
            token_hmac_state=hmac_state(_bearer(request).encode()),
            created_by=request.user.token_id,
        )
        if service.changed is not None:
            service.changed()
        return Data(_out(row, secret if row.via == "webhook" else None))

    @get("/", summary="List subscriptions (page-numbered, as AMPECO's API)")
    async def list_subscriptions(
        self,
        ctx: Ctx,
        request: Request[Principal, Any, Any],
        per_page: Annotated[int, QueryParameter(ge=1, le=100)] = 15,
        page: Annotated[int, QueryParameter(ge=1, le=INT32_MAX)] = 1,
    ) -> SubscriptionPage:
        subscriptions = ctx.notifications.subscriptions
        total = await subscriptions.count_subscriptions()
        rows = await subscriptions.subscriptions_page((page - 1) * per_page, per_page)
        last_page = max(1, -(-total // per_page))
        base = str(request.url).partition("?")[0]

        def link(n: int) -> str:
            return f"{base}?per_page={per_page}&page={n}"

        first = (page - 1) * per_page + 1 if rows else None
        return SubscriptionPage(
            data=[_out(r) for r in rows],
            links=Links(
                first=link(1),
                last=link(last_page),
                prev=link(page - 1) if page > 1 else None,
                next=link(page + 1) if page < last_page else None,
            ),
            meta=Meta(
                current_page=page,
                from_=first,
                last_page=last_page,
                path=base,
                per_page=per_page,
                to=(first + len(rows) - 1) if first is not None else None,
                total=total,
            ),
        )

    @get("/{subscription_id:int}", summary="One subscription")
    async def get_subscription(self, ctx: Ctx, subscription_id: BigintId) -> Data[SubscriptionOut]:
        return Data(_out(await ctx.notifications.subscriptions.get_subscription(subscription_id)))

    @put(
        "/{subscription_id:int}",
        summary="Replace a subscription's settings; enables it again if a 410 disabled it",
    )
    async def update_subscription(
        self, ctx: Ctx, subscription_id: BigintId, data: JSONBody[SubscriptionIn]
    ) -> Data[SubscriptionOut]:
        names = _names(data.notifications)
        service = ctx.notifications
        stored = await service.subscriptions.get_subscription(subscription_id)
        callback_url, kafka, password = _checked(ctx, data, stored.kafka_password is not None)
        row = await service.subscriptions.replace_subscription(
            subscription_id,
            via=data.via,
            notifications=names,
            callback_url=callback_url,
            kafka=kafka,
            kafka_password=password,
            # A PUT that leaves the password out keeps it (it is never shown to be sent back).
            keep_password=data.kafka is not None and data.kafka.sasl_password is None,
        )
        if service.changed is not None:
            service.changed()
        return Data(_out(row))

    @delete("/{subscription_id:int}", status_code=204, summary="Unsubscribe")
    async def unsubscribe(self, ctx: Ctx, subscription_id: BigintId) -> None:
        service = ctx.notifications
        await service.subscriptions.delete_subscription(subscription_id)
        if service.changed is not None:
            service.changed()

    @get(
        "/{subscription_id:int}/delivery-counts",
        summary="Deliveries waiting (to send or for a retry) and failed (evgate)",
    )
    async def delivery_counts(self, ctx: Ctx, subscription_id: BigintId) -> DeliveryCounts:
        service = ctx.notifications
        await service.subscriptions.get_subscription(subscription_id)  # 404 for an unknown one
        return await service.deliveries.counts(subscription_id)

    @get(
        "/{subscription_id:int}/failed-deliveries",
        summary="Deliveries that gave up (evgate): resend them with the resend action",
    )
    async def failed_deliveries(
        self,
        ctx: Ctx,
        subscription_id: BigintId,
        after: Annotated[
            int,
            QueryParameter(
                ge=0,
                le=JSON_INT_MAX,
                schema_extra={"minimum": 0},  # see bounds.ConnectorFilter
                description="the last eventId of the previous page",
            ),
        ] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> Page[FailedDelivery]:
        service = ctx.notifications
        await service.subscriptions.get_subscription(subscription_id)  # 404 for an unknown one
        items = await service.deliveries.failed_deliveries(subscription_id, after, limit)
        return page_of(items, limit, lambda d: d.event_id)


class NotificationActions(Controller):
    path = "/public-api/actions/notifications/v1.0"
    tags = ["notifications"]

    @post(
        "/{subscription_id:int}/resend",
        status_code=202,
        summary="Resend failed deliveries (of some events, made in a time range)",
        opt={"problems": (409,)},
    )
    async def resend(
        self, ctx: Ctx, subscription_id: BigintId, data: JSONBody[ResendIn]
    ) -> Data[Resent]:
        names = _names(data.notifications) if data.notifications else None
        if data.start_time and data.end_time and data.end_time <= data.start_time:
            raise Unprocessable("endTime: must be after startTime")
        service = ctx.notifications
        row = await service.subscriptions.get_subscription(subscription_id)
        if not row.enabled:
            raise Conflict(
                f"subscription {subscription_id} is disabled ({row.disabled_reason});"
                " PUT it to enable it again, then resend"
            )
        count = await service.deliveries.resend(
            subscription_id, names, data.start_time, data.end_time
        )
        if service.changed is not None:
            service.changed()
        return Data(Resent(deliveries=count))
