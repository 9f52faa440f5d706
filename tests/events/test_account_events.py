"""The events of who charges and who pays (issue 20), end to end: a change through the API →
the outbox, committed with it → a real webhook receiver on loopback, each payload decoded
strictly as its catalog Struct (the catalog's fields; test_catalog.py checks the Structs
against the reference)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import msgspec

from evgate.app import Evgate
from evgate.events.catalog import PAYLOAD_TYPES
from evgate.pricing import Price
from evgate.storage.cdrs import Cdr, CdrStore
from evgate.storage.partners import PartnerInviteStore
from evgate.storage.plans import UserSubscriptionStore
from evgate.storage.settlements import SettlementStore
from support import Receiver


async def subscribe(api: httpx.AsyncClient, receiver: Receiver, *names: str) -> None:
    r = await api.post(
        "/public-api/notifications/v2.0",
        json={"notifications": list(names), "via": "webhook",
              "webhook": {"callbackUrl": receiver.url}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["data"]["notEmitted"] == []


async def received(receiver: Receiver, count: int) -> list[tuple[Any, dict[str, Any]]]:
    """The first ``count`` deliveries: (payload decoded strictly as its Struct, raw JSON)."""
    got = await receiver.wait_for(count)
    out = []
    for request in got:
        raw = msgspec.json.decode(request.body)
        out.append(
            (msgspec.json.decode(request.body, type=PAYLOAD_TYPES[raw["notification"]]), raw)
        )
    return out


async def test_user_changes_reach_the_webhook(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """UserChangedNotification on create, update and delete: the user as the catalog has it
    (id a string, status enabled/disabled, balance a number, userGroupIds, locale)."""
    await subscribe(api, receiver, "UserChangedNotification")
    group = (await api.post("/api/v1/user-groups", json={"name": "Fleet"})).json()
    r = await api.post(
        "/api/v1/users",
        json={"email": "ada@example.com", "firstName": "Ada", "language": "en-GB",
              "userGroupIds": [group["id"]]},
    )  # fmt: skip
    user_id = r.json()["id"]
    await api.patch(f"/api/v1/users/{user_id}", json={"status": "blocked"})
    await api.delete(f"/api/v1/users/{user_id}")
    events = await received(receiver, 3)
    assert [(p.action, p.user.status) for p, _ in events] == [
        ("created", "enabled"),
        ("updated", "disabled"),
        ("deleted", "disabled"),
    ]
    created, raw = events[0]
    assert raw["user"]["id"] == str(user_id) and raw["user"]["balance"] == 0.0
    assert (created.user.email, created.user.firstName, created.user.locale) == (
        "ada@example.com",
        "Ada",
        "en-GB",
    )
    assert created.user.userGroupIds == [group["id"]]
    assert "lastName" in raw["user"] and raw["user"]["lastName"] is None


async def test_balance_entries_reach_the_webhook(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """userBalance.changed per booked entry: credit or debit, the new balance, the catalog's
    type, the transaction id (null for the API's entries), amounts as exact JSON numbers."""
    await subscribe(api, receiver, "userBalance.changed")
    user_id = (await api.post("/api/v1/users", json={"email": "a@b.io"})).json()["id"]
    url = f"/api/v1/users/{user_id}/balance"
    assert (await api.post(url, json={"amount": "10.00", "type": "topUp"})).status_code == 201
    await api.post(url, json={"amount": "2.50", "type": "voucher"})
    await api.post(url, json={"amount": "-5.50", "type": "adjustment"})
    assert (await api.post(url, json={"amount": "-99.00", "type": "adjustment"})).status_code == 409
    events = await received(receiver, 3)
    assert [(p.type, str(p.credit), str(p.debit), str(p.updatedBalance)) for p, _ in events] == [
        ("api_top_up", "10.00", "0", "10.00"),
        ("voucher", "2.50", "0", "12.50"),
        ("add_to_balance", "0", "5.50", "7.00"),
    ]
    _, raw = events[0]
    assert (raw["userId"], raw["currency"], raw["transactionId"]) == (user_id, "EUR", None)


async def test_payment_method_changes_reach_the_webhook(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """user.paymentMethod.changed on create, update and delete (paymentMethodId a string); a
    method that loses the default to a new one is updated too."""
    await subscribe(api, receiver, "user.paymentMethod.changed")
    user_id = (await api.post("/api/v1/users", json={"email": "a@b.io"})).json()["id"]
    url = f"/api/v1/users/{user_id}/payment-methods"
    first = (await api.post(url, json={"type": "card"})).json()["id"]
    second = (await api.post(url, json={"type": "paypal", "default": True})).json()["id"]
    await api.patch(f"{url}/{second}", json={"issuer": "paypal"})
    await api.delete(f"{url}/{first}")
    events = await received(receiver, 5)
    assert [(p.paymentMethodId, p.action, p.userId) for p, _ in events] == [
        (str(first), "created", user_id),
        (str(first), "updated", user_id),  # no longer the default
        (str(second), "created", user_id),
        (str(second), "updated", user_id),
        (str(first), "deleted", user_id),
    ]


async def test_invoice_details_changes_reach_the_webhook(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """user.invoiceDetails.changed: created by the first PUT, updated by the next."""
    await subscribe(api, receiver, "user.invoiceDetails.changed")
    user_id = (await api.post("/api/v1/users", json={"email": "a@b.io"})).json()["id"]
    url = f"/api/v1/users/{user_id}/invoice-details"
    await api.put(url, json={"kind": "individual", "name": "Ada"})
    await api.put(url, json={"kind": "company", "name": "Acme", "taxId": "ATU1"})
    events = await received(receiver, 2)
    assert [(p.userId, p.action) for p, _ in events] == [
        (user_id, "created"),
        (user_id, "updated"),
    ]
    assert set(events[0][1]) == {"notification", "userId", "action", "lastUpdatedAt"}


async def test_plan_and_subscription_changes_reach_the_webhook(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """subscriptionPlan.changed on create, update, delete; user.subscription.changed on each
    change of a user's subscription and its expiry, with the deprecated user.subscriptionChanged
    before it where its enum has the status (cancelled spelled its way; none for suspended)."""
    await subscribe(
        api, receiver,
        "subscriptionPlan.changed", "user.subscriptionChanged", "user.subscription.changed",
    )  # fmt: skip
    plans = "/api/v1/subscription-plans"
    body = {"name": "Flat", "fee": {"amount": "9.90", "currency": "EUR"},
            "renewalPeriod": "monthly"}  # fmt: skip
    plan = (await api.post(plans, json=body)).json()["id"]
    await api.patch(f"{plans}/{plan}", json={"name": "Flat+"})
    user = (await api.post("/api/v1/users", json={"email": "a@b.io"})).json()["id"]
    url = f"/api/v1/users/{user}/subscription"
    await api.put(url, json={"planId": plan, "startsAt": "2030-01-01T00:00:00Z"})
    await api.patch(url, json={"status": "suspended"})
    await api.patch(url, json={"status": "canceled"})
    await api.put(
        url,
        json={"planId": plan, "startsAt": "2020-01-01T00:00:00Z",
              "endsAt": "2020-02-01T00:00:00Z"},
    )  # fmt: skip
    assert evgate.db is not None
    assert await UserSubscriptionStore(evgate.db).expire_due() == 1
    await api.delete(f"/api/v1/users/{user}")
    assert (await api.delete(f"{plans}/{plan}")).status_code == 204
    events = await received(receiver, 12)
    names = [raw["notification"] for _, raw in events]
    assert names == [
        "subscriptionPlan.changed",
        "subscriptionPlan.changed",
        "user.subscriptionChanged",
        "user.subscription.changed",
        "user.subscription.changed",
        "user.subscriptionChanged",
        "user.subscription.changed",
        "user.subscriptionChanged",
        "user.subscription.changed",
        "user.subscriptionChanged",
        "user.subscription.changed",
        "subscriptionPlan.changed",
    ], names
    assert [raw["action"] for _, raw in events if "subscriptionPlanId" in raw] == [
        "created",
        "updated",
        "deleted",
    ]
    assert {raw["subscriptionPlanId"] for _, raw in events if "subscriptionPlanId" in raw} == {plan}
    assert [
        raw["status"] for _, raw in events if raw["notification"] == "user.subscription.changed"
    ] == [
        "active",
        "suspended",
        "canceled",
        "active",
        "expired",
    ]
    deprecated = [p for p, raw in events if raw["notification"] == "user.subscriptionChanged"]
    assert [p.status for p in deprecated] == ["active", "cancelled", "active", "expired"]
    first, raw = events[3]
    assert (first.userId, first.planId, raw["endsAt"]) == (user, plan, "2030-02-01T00:00:00Z")
    assert deprecated[0].endDate == first.endsAt


async def test_partner_changes_reach_the_webhook(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """partner.changed on create, update and delete (only delete names the partner, and only
    its non-null fields); PartnerChangedNotification on create and delete."""
    await subscribe(api, receiver, "partner.changed", "PartnerChangedNotification")
    acme = (await api.post("/api/v1/partners", json={"name": "Acme", "externalId": "X-1"})).json()
    await api.patch(f"/api/v1/partners/{acme['id']}", json={"city": "Wien"})
    await api.delete(f"/api/v1/partners/{acme['id']}")
    bare = (await api.post("/api/v1/partners", json={"name": "Bare"})).json()
    await api.delete(f"/api/v1/partners/{bare['id']}")
    events = [raw for _, raw in await received(receiver, 9)]
    changed = [e for e in events if e["notification"] == "partner.changed"]
    assert [(e["partnerId"], e["action"]) for e in changed] == [
        (acme["id"], "created"),
        (acme["id"], "updated"),
        (acme["id"], "deleted"),
        (bare["id"], "created"),
        (bare["id"], "deleted"),
    ]
    assert set(changed[0]) == set(changed[1]) == {
        "notification", "partnerId", "action", "lastUpdatedAt",
    }  # fmt: skip
    assert (changed[2]["externalId"], changed[2]["companyName"]) == ("X-1", "Acme")
    assert "externalId" not in changed[4] and changed[4]["companyName"] == "Bare"
    legacy = [e for e in events if e["notification"] == "PartnerChangedNotification"]
    assert [(e["user"], e["action"]) for e in legacy] == [
        ({"id": str(acme["id"])}, "created"),
        ({"id": str(acme["id"])}, "deleted"),
        ({"id": str(bare["id"])}, "created"),
        ({"id": str(bare["id"])}, "deleted"),
    ]


async def test_partner_invite_changes_reach_the_webhook(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """partnerInvite.changed: created; updated when accepted (userId the user) and when
    expired; deleted when withdrawn."""
    await subscribe(api, receiver, "partnerInvite.changed")
    partner = (await api.post("/api/v1/partners", json={"name": "Acme"})).json()["id"]
    user = (await api.post("/api/v1/users", json={"email": "ada@example.com"})).json()["id"]
    invites = f"/api/v1/partners/{partner}/invites"
    first = (await api.post(invites, json={"email": "ada@example.com"})).json()["id"]
    await api.post(f"/api/v1/partner-invites/{first}/accept", json={"userId": user})
    second = (await api.post(invites, json={"email": "bob@example.com"})).json()["id"]
    assert evgate.db is not None
    await evgate.db.execute("UPDATE partner_invites SET expires_at = now() WHERE id = $1", second)
    assert await PartnerInviteStore(evgate.db).expire_due() == 1
    await api.delete(f"/api/v1/partner-invites/{second}")
    events = await received(receiver, 5)
    assert [(p.partnerInviteId, p.action, p.userId, p.email) for p, _ in events] == [
        (first, "created", None, "ada@example.com"),
        (first, "updated", user, "ada@example.com"),
        (second, "created", None, "bob@example.com"),
        (second, "updated", None, "bob@example.com"),
        (second, "deleted", None, "bob@example.com"),
    ]


async def test_a_partners_settlement_report_reaches_the_webhook(
    evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """settlementReport.created for a partner's report (made on demand, then by the monthly
    pass of the month after): the catalog's fields, amounts and energy as exact JSON numbers; a
    CDR of October recorded in November is the monthly report's previous periods' revenue; a
    sub-operator's report emits none (the catalog's partnerId is required). In 2024: not the
    month the running evgate's own monthly pass settles."""
    await subscribe(api, receiver, "settlementReport.created")
    assert evgate.db is not None
    db = evgate.db
    partner = (await api.post("/api/v1/partners", json={"name": "Acme"})).json()["id"]
    user = await db.fetchval(
        "INSERT INTO users (email, partner_id) VALUES ('a@b.io', $1) RETURNING id", partner
    )
    await db.execute("INSERT INTO id_tags (id_tag, user_id) VALUES ('ADA', $1)", user)
    sub = await db.fetchval("INSERT INTO sub_operators (name) VALUES ('A') RETURNING id")
    await db.execute(
        "INSERT INTO chargers (id, secret_digest, sub_operator_id) VALUES ('CP-A', $1, $2)",
        bytes(32),
        sub,
    )
    stopped = datetime(2024, 11, 20, 8, tzinfo=UTC)
    price = Price(
        currency="EUR", tariff_id=1, total_excl_tax=Decimal("4.10"),
        total_incl_tax=Decimal("4.92"), tax=Decimal("0.82"), tax_percent=Decimal(20),
        breakdown=(), energy_wh=Decimal(12345), charging_minutes=Decimal(60),
        idle_minutes=Decimal(0),
    )  # fmt: skip
    october = datetime(2024, 10, 31, 23, 50, tzinfo=UTC)  # sent on November 25th
    late = msgspec.structs.replace(
        price, total_excl_tax=Decimal("0.90"), tax=Decimal("0.18"),
        total_incl_tax=Decimal("1.08"), energy_wh=Decimal(3000),
    )  # fmt: skip
    async with db.pool.acquire() as conn:
        await CdrStore(db).insert(conn, Cdr(
            id="1-1", charger_id="CP-A", charge_point_id=1, transaction_id=1, connector_id=1,
            id_tag="ADA", started_at=stopped - timedelta(hours=1), stopped_at=stopped,
            meter_start_wh=0, meter_stop_wh=12345, energy_wh=12345, stop_reason=None,
            created_at=stopped, price=price,
        ))  # fmt: skip
        await CdrStore(db).insert(conn, Cdr(
            id="1-2", charger_id="CP-A", charge_point_id=1, transaction_id=2, connector_id=1,
            id_tag="ADA", started_at=october - timedelta(hours=1), stopped_at=october,
            meter_start_wh=0, meter_stop_wh=3000, energy_wh=3000, stop_reason=None,
            created_at=datetime(2024, 11, 25, tzinfo=UTC), price=late,
        ))  # fmt: skip
    r = await api.post(
        "/api/v1/settlement-reports",
        json={"subOperatorId": sub, "periodStart": "2024-11-01T00:00:00Z",
              "periodEnd": "2024-12-01T00:00:00Z"},
    )  # fmt: skip
    assert r.status_code == 201 and len(r.json()["data"]) == 1  # no event
    r = await api.post(
        "/api/v1/settlement-reports",
        json={"partnerId": partner, "periodStart": "2024-11-20T06:00:00+02:00",
              "periodEnd": "2024-11-21T00:00:00Z"},
    )  # fmt: skip
    report = r.json()["data"][0]
    monthly = SettlementStore(db, clock=lambda: datetime(2024, 12, 1, 3, tzinfo=UTC))
    assert await monthly.settle_due() == 2  # the partner's and the sub-operator's
    events = await received(receiver, 2)
    assert [raw["notification"] for _, raw in events] == ["settlementReport.created"] * 2
    (on_demand, raw), (month, month_raw) = events
    assert (on_demand.id, on_demand.reportUid, on_demand.partnerId) == (
        report["id"], f"SR-{report['id']}", partner,
    )  # fmt: skip
    assert on_demand.period == "2024-11-20T04:00:00Z/2024-11-21T00:00:00Z"
    assert month.period == "2024-11-01/2024-12-01" and month.partnerId == partner
    assert raw["issueDate"] == raw["lastUpdatedAt"] == report["createdAt"]
    body = (await receiver.wait_for(1))[0].body.decode()
    assert '"totalKwhDeliveredAsCPO":12.345' in body and '"totalRevenue":4.92' in body
    assert {k: raw[k] for k in raw if k.startswith("total")} == {
        "totalKwhDeliveredAsCPO": 12.345,
        "totalKwhDeliveredAsEmsp": 0,
        "totalRevenueCollectedCurrentPeriod": 4.92,
        "totalRevenueCollectedPreviousPeriods": 0,
        "totalCollectedBalanceCurrentPeriod": 4.92,
        "totalCollectedBalancePreviousPeriods": 4.92,
        "totalRevenue": 4.92,
        "totalExpenses": 0,
        "totalAmount": 4.92,
    }
    assert raw["currency"] == "EUR"
    assert {k: month_raw[k] for k in month_raw if k.startswith("total")} == {
        "totalKwhDeliveredAsCPO": 15.345,
        "totalKwhDeliveredAsEmsp": 0,
        "totalRevenueCollectedCurrentPeriod": 4.92,
        "totalRevenueCollectedPreviousPeriods": 1.08,
        "totalCollectedBalanceCurrentPeriod": 4.92,
        "totalCollectedBalancePreviousPeriods": 6.0,
        "totalRevenue": 6.0,
        "totalExpenses": 0,
        "totalAmount": 6.0,
    }
