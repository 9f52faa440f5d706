"""Subscription plans and users' subscriptions (issue 20): plans with a fee per renewal
period, one subscription per user, its end by default one period after its start, and its
expiry once the end has passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from evgate.app import Evgate
from evgate.storage.plans import UserSubscriptionStore, plan_of_id_tag

PLAN = {"name": "Flat", "fee": {"amount": "9.9", "currency": "EUR"}, "renewalPeriod": "monthly"}
PLANS = "/api/v1/subscription-plans"


async def _plan(api: httpx.AsyncClient, **body: object) -> dict[str, object]:
    r = await api.post("/api/v1/subscription-plans", json={**PLAN, **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _user(api: httpx.AsyncClient) -> int:
    r = await api.post("/api/v1/users", json={"email": "ada@example.com"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def test_plan_crud(api: httpx.AsyncClient) -> None:
    """Create (the fee in the currency's decimals), list, change, delete; a name is unique;
    a plan someone is subscribed to is not deleted."""
    plan = await _plan(api)
    assert plan["fee"] == {"amount": "9.90", "currency": "EUR"}
    assert plan["renewalPeriod"] == "monthly"
    r = await api.post("/api/v1/subscription-plans", json={**PLAN, "name": "FLAT"})
    assert r.status_code == 409
    r = await api.patch(
        f"/api/v1/subscription-plans/{plan['id']}",
        json={"fee": {"amount": "1000", "currency": "JPY"}, "renewalPeriod": "yearly"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["fee"], r.json()["name"]) == ({"amount": "1000", "currency": "JPY"}, "Flat")
    assert [p["id"] for p in (await api.get("/api/v1/subscription-plans")).json()["data"]] == [
        plan["id"]
    ]
    user = await _user(api)
    await api.put(f"/api/v1/users/{user}/subscription", json={"planId": plan["id"]})
    assert (await api.delete(f"/api/v1/subscription-plans/{plan['id']}")).status_code == 409
    await api.delete(f"/api/v1/users/{user}")
    assert (await api.delete(f"/api/v1/subscription-plans/{plan['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/subscription-plans/{plan['id']}")).status_code == 404


async def test_a_users_subscription_and_its_expiry(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """PUT subscribes (end: one renewal period later), another PUT changes the plan, PATCH
    cancels; a subscription past its end is expired by the expiry task's run."""
    monthly, weekly = await _plan(api), await _plan(api, name="Week", renewalPeriod="weekly")
    user = await _user(api)
    url = f"/api/v1/users/{user}/subscription"
    # None yet: null, not a 404 (which would say the user is not there).
    none_yet = await api.get(url)
    assert (none_yet.status_code, none_yet.json()) == (200, None)
    assert (await api.get("/api/v1/users/999/subscription")).status_code == 404
    start = datetime(2030, 1, 31, 12, tzinfo=UTC)
    r = await api.put(url, json={"planId": monthly["id"], "startsAt": start.isoformat()})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["endsAt"]) == ("active", "2030-02-28T12:00:00Z")
    r = await api.put(url, json={"planId": weekly["id"], "startsAt": start.isoformat()})
    assert (r.json()["planId"], r.json()["endsAt"]) == (weekly["id"], "2030-02-07T12:00:00Z")
    r = await api.patch(url, json={"status": "canceled"})
    assert r.json()["status"] == "canceled"

    past = datetime.now(UTC) - timedelta(days=2)
    r = await api.put(
        url,
        json={"planId": weekly["id"], "startsAt": past.isoformat(),
              "endsAt": (past + timedelta(days=1)).isoformat()},
    )  # fmt: skip
    assert r.json()["status"] == "active"
    assert evgate.db is not None
    assert await UserSubscriptionStore(evgate.db).expire_due() == 1  # as the expiry task does
    assert (await api.get(url)).json()["status"] == "expired"
    assert await UserSubscriptionStore(evgate.db).expire_due() == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/api/v1/subscription-plans", {**PLAN, "renewalPeriod": "daily"}, 422),
        ("post", PLANS, {**PLAN, "fee": {"amount": "-1", "currency": "EUR"}}, 422),
        ("post", PLANS, {**PLAN, "fee": {"amount": "1.001", "currency": "EUR"}}, 422),
        ("post", PLANS, {**PLAN, "fee": {"amount": "1", "currency": "eu"}}, 422),
        ("get", "/api/v1/subscription-plans/999", None, 404),
        ("patch", "/api/v1/subscription-plans/999", {"name": "X"}, 404),
        ("delete", "/api/v1/subscription-plans/999", None, 404),
        ("put", "/api/v1/users/{user}/subscription", {"planId": 999}, 422),
        ("put", "/api/v1/users/{user}/subscription", {"planId": 1, "status": "expired"}, 422),
        ("put", "/api/v1/users/{user}/subscription",
         {"planId": 1, "startsAt": "2030-01-01T00:00:00"}, 422),
        ("put", "/api/v1/users/{user}/subscription",
         {"planId": 1, "startsAt": "2030-01-02T00:00:00Z", "endsAt": "2030-01-01T00:00:00Z"}, 422),
        ("patch", "/api/v1/users/{user}/subscription", {"status": "active"}, 404),
        ("put", "/api/v1/users/999/subscription", {"planId": 1}, 404),
    ],
)  # fmt: skip
async def test_bad_requests_are_problems(
    api: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    await _plan(api)
    user = await _user(api)
    r = await api.request(method.upper(), path.format(user=user), json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"


async def test_the_plan_of_an_id_tag_for_pricing(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """plan_of_id_tag: the plan of the id tag's user's active subscription at that time; none
    before its start, at its end, once canceled, or for an id tag of no user."""
    plan = await _plan(api)
    user = await _user(api)
    await api.post("/api/v1/id-tags", json={"idTag": "ADA-1", "userId": user})
    await api.post("/api/v1/id-tags", json={"idTag": "NOBODY"})
    start = datetime(2030, 1, 1, tzinfo=UTC)
    url = f"/api/v1/users/{user}/subscription"
    await api.put(url, json={"planId": plan["id"], "startsAt": start.isoformat()})
    assert evgate.db is not None
    async with evgate.db.pool.acquire() as conn:
        day = timedelta(days=1)
        assert await plan_of_id_tag(conn, "ada-1", start + day) == plan["id"]
        assert await plan_of_id_tag(conn, "ADA-1", start - day) is None
        assert await plan_of_id_tag(conn, "ADA-1", datetime(2030, 2, 1, tzinfo=UTC)) is None
        assert await plan_of_id_tag(conn, "NOBODY", start + day) is None
        await api.patch(url, json={"status": "canceled"})
        assert await plan_of_id_tag(conn, "ADA-1", start + day) is None
