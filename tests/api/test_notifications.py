"""The notification subscription API (AMPECO's paths and bodies), the CDR endpoint, and the
charger events the registry emits — against a running evgate."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from evgate.app import Evgate
from evgate.auth.registry import create_token
from evgate.storage.cdrs import Cdr, CdrStore
from evgate.storage.tokens import TokenStore
from support import Receiver

SUBS = "/public-api/notifications/v2.0"
RESEND = "/public-api/actions/notifications/v1.0/{}/resend"
WEBHOOK = {"via": "webhook", "notifications": ["BootNotification"],
           "webhook": {"callbackUrl": "http://127.0.0.1:9/hook"}}  # fmt: skip


def _kafka(**extra: Any) -> dict[str, Any]:
    settings = {"topic": "evgate.events", "brokers": ["127.0.0.1:9092"], **extra}
    return {"via": "kafka", "notifications": ["cdr.received"], "kafka": settings}


async def _create(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post(SUBS, json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def _sql(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def _token(api: httpx.AsyncClient) -> str:
    """The (bootstrap, admin) token the test client presents."""
    return api.headers["authorization"].partition(" ")[2]


async def test_webhook_subscription_round_trip(api: httpx.AsyncClient, database_url: str) -> None:
    """201 {"data": ...} with an id and the Standard Webhooks secret (only then); GET shows the
    same without the secret; the creating token is not stored, nor its digest."""
    created = await _create(api, WEBHOOK)
    assert created["via"] == "webhook" and created["notifications"] == ["BootNotification"]
    assert created["webhook"]["secret"].startswith("whsec_")
    assert created["enabled"] is True and created["notEmitted"] == []
    got = (await api.get(f"{SUBS}/{created['id']}")).json()["data"]
    assert got["webhook"] == {"callbackUrl": WEBHOOK["webhook"]["callbackUrl"]}  # type: ignore[index]
    (row,) = await _sql(
        database_url, "SELECT s::text AS dump, token_hmac_state FROM subscriptions s"
    )
    assert _token(api) not in row["dump"]
    assert hashlib.sha256(_token(api).encode()).hexdigest() not in row["dump"]
    assert len(row["token_hmac_state"]) == 64


async def test_kafka_password_is_never_returned_and_a_put_without_it_keeps_it(
    api: httpx.AsyncClient, database_url: str
) -> None:
    body = _kafka(securityProtocol="SASL_SSL", saslMechanism="SCRAM-SHA-512",
                  saslUsername="u", saslPassword="p4ss")  # fmt: skip
    created = await _create(api, body)
    assert created["kafka"] == {
        "topic": "evgate.events", "brokers": ["127.0.0.1:9092"], "compressionCodec": "gzip",
        "securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512", "saslUsername": "u",
    }  # fmt: skip
    sub_id = created["id"]
    del body["kafka"]["saslPassword"]
    body["kafka"]["topic"] = "renamed"
    r = await api.put(f"{SUBS}/{sub_id}", json=body)
    assert r.status_code == 200 and r.json()["data"]["kafka"]["topic"] == "renamed"
    listed = (await api.get(SUBS)).text + (await api.get(f"{SUBS}/{sub_id}")).text
    assert "p4ss" not in listed and "saslPassword" not in listed
    (row,) = await _sql(database_url, "SELECT kafka_password FROM subscriptions")
    assert row["kafka_password"] == "p4ss"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({**WEBHOOK, "notifications": ["NoSuchEvent"]}, "NoSuchEvent"),
        ({**WEBHOOK, "notifications": []}, "notifications"),
        ({"via": "webhook", "notifications": ["BootNotification"]}, "webhook"),
        ({"via": "kafka", "notifications": ["BootNotification"]}, "kafka"),
        ({**WEBHOOK, "via": "sms"}, "via"),
        ({**WEBHOOK, "kafka": _kafka()["kafka"]}, "kafka"),
        ({**WEBHOOK, "webhook": {"callbackUrl": "ftp://x/y"}}, "callbackUrl"),
        ({**WEBHOOK, "webhook": {"callbackUrl": "/relative"}}, "callbackUrl"),
        ({**WEBHOOK, "webhook": {"callbackUrl": "http://x/" + "a" * 500}}, "callbackUrl"),
        # What the webhook client could not send to (events/http.py's target()).
        ({**WEBHOOK, "webhook": {"callbackUrl": "http://x:99999/hook"}}, "callbackUrl"),
        ({**WEBHOOK, "webhook": {"callbackUrl": "http://" + "ü" * 70 + ".x/"}}, "callbackUrl"),
        (_kafka(securityProtocol="SASL_PLAINTEXT"), "saslUsername"),
        (_kafka(topic="bad topic"), "topic"),
        (_kafka(brokers=["no-port"]), "brokers"),
        (_kafka(brokers=[]), "brokers"),
        (_kafka(compressionCodec="zstd"), "compressionCodec"),
        ({**WEBHOOK, "extra": 1}, "extra"),
    ],
)
async def test_bad_subscriptions_are_422(
    api: httpx.AsyncClient, body: dict[str, Any], detail: str
) -> None:
    """Unknown event names, missing or mismatched settings, bad values: 422 naming the field."""
    r = await api.post(SUBS, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert detail in r.json()["detail"]


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    r = await api.post(SUBS, content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400


async def test_names_evgate_never_emits_are_accepted_and_listed(api: httpx.AsyncClient) -> None:
    body = {**WEBHOOK, "notifications": ["installerJob.changed", "BootNotification",
                                         "installerJob.changed"]}  # fmt: skip
    created = await _create(api, body)
    assert created["notifications"] == ["installerJob.changed", "BootNotification"]
    assert created["notEmitted"] == ["installerJob.changed"]


async def test_list_pages_like_ampeco(api: httpx.AsyncClient) -> None:
    """?per_page=N: data, links (first, last, prev, next) and meta (total, pages, ...)."""
    ids = [(await _create(api, WEBHOOK))["id"] for _ in range(3)]
    r = (await api.get(SUBS, params={"per_page": 2})).json()
    assert [s["id"] for s in r["data"]] == ids[:2]
    assert r["meta"] | {"path": None} == {
        "current_page": 1, "from": 1, "last_page": 2, "path": None, "per_page": 2, "to": 2,
        "total": 3,
    }  # fmt: skip
    assert r["links"]["prev"] is None and r["links"]["next"].endswith("page=2")
    page2 = (await api.get(r["links"]["next"])).json()
    assert [s["id"] for s in page2["data"]] == ids[2:] and page2["links"]["next"] is None
    assert (await api.get(SUBS, params={"per_page": 0})).status_code in (400, 422)


async def test_unknown_ids_are_404_and_delete_is_204(api: httpx.AsyncClient) -> None:
    sub_id = (await _create(api, WEBHOOK))["id"]
    assert (await api.delete(f"{SUBS}/{sub_id}")).status_code == 204
    for method, path, body in [
        ("GET", f"{SUBS}/{sub_id}", None),
        ("PUT", f"{SUBS}/{sub_id}", WEBHOOK),
        ("DELETE", f"{SUBS}/{sub_id}", None),
        ("GET", f"{SUBS}/{sub_id}/failed-deliveries", None),
        ("POST", RESEND.format(sub_id), {}),
    ]:
        r = await api.request(method, path, json=body)
        assert r.status_code == 404, (method, path)
        assert r.headers["content-type"] == "application/problem+json"


async def test_tokens_and_scopes(api: httpx.AsyncClient, evgate: Evgate) -> None:
    """No token: 401. A read token lists and reads but cannot subscribe, change or resend."""
    assert evgate.db is not None
    sub_id = (await _create(api, WEBHOOK))["id"]
    base = f"http://127.0.0.1:{evgate.api_port}"
    async with httpx.AsyncClient(base_url=base) as anon:
        assert (await anon.get(SUBS)).status_code == 401
        assert (await anon.post(SUBS, json=WEBHOOK)).status_code == 401
    token = await create_token(TokenStore(evgate.db), "viewer", "read")
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        assert (await c.get(SUBS)).status_code == 200
        assert (await c.get(f"{SUBS}/{sub_id}")).status_code == 200
        assert (await c.post(SUBS, json=WEBHOOK)).status_code == 403
        assert (await c.put(f"{SUBS}/{sub_id}", json=WEBHOOK)).status_code == 403
        assert (await c.delete(f"{SUBS}/{sub_id}")).status_code == 403
        assert (await c.post(RESEND.format(sub_id), json={})).status_code == 403


async def test_resend_answers(api: httpx.AsyncClient, database_url: str) -> None:
    """202 with how many were queued; 422 for unknown names or an empty time range; 409 while
    the subscription is disabled."""
    sub_id = (await _create(api, WEBHOOK))["id"]
    r = await api.post(RESEND.format(sub_id), json={"notifications": ["BootNotification"]})
    assert r.status_code == 202 and r.json() == {"data": {"deliveries": 0}}
    assert (await api.post(RESEND.format(sub_id), json={"notifications": ["x"]})).status_code == 422
    window = {"startTime": "2025-01-02T00:00:00Z", "endTime": "2025-01-01T00:00:00Z"}
    assert (await api.post(RESEND.format(sub_id), json=window)).status_code == 422
    await _sql(database_url, "UPDATE subscriptions SET enabled = false, disabled_reason = '410'")
    r = await api.post(RESEND.format(sub_id), json={})
    assert r.status_code == 409 and "disabled" in r.json()["detail"]
    r = await api.put(f"{SUBS}/{sub_id}", json=WEBHOOK)
    assert r.json()["data"]["enabled"] is True


async def test_cdr_endpoint(api: httpx.AsyncClient, evgate: Evgate) -> None:
    """A stored CDR reads back by id; an unknown id is 404."""
    assert evgate.db is not None
    at = datetime(2025, 1, 2, tzinfo=UTC)
    cdr = Cdr(id="7-41", charger_id="CP-1", charge_point_id=7, transaction_id=41, connector_id=1,
              id_tag="T", started_at=at, stopped_at=at, meter_start_wh=10, meter_stop_wh=30,
              energy_wh=20, stop_reason="Local", created_at=at)  # fmt: skip
    async with evgate.db.pool.acquire() as conn:
        await CdrStore(evgate.db).insert(conn, cdr)
        await CdrStore(evgate.db).insert(conn, cdr)  # a retried stop: no second CDR
    r = await api.get("/api/v1/cdrs/7-41")
    assert r.status_code == 200 and msgspec.convert(r.json(), Cdr) == cdr
    assert (await api.get("/api/v1/cdrs/nope")).status_code == 404


async def test_charger_changes_are_notified_with_x_signature(api: httpx.AsyncClient) -> None:
    """Creating, changing and deleting a charger through the API reaches a subscribed webhook
    as chargePoint.changed (and the fuller ChargePointChangedNotification), X-Signature keyed
    with the token that subscribed; a failed change (404) notifies nothing."""
    receiver = Receiver()
    await receiver.start()
    try:
        await _create(api, {"via": "webhook", "notifications": ["chargePoint.changed"],
                            "webhook": {"callbackUrl": receiver.url}})  # fmt: skip
        assert (await api.post("/api/v1/chargers", json={"id": "CP-9"})).status_code == 201
        await api.patch("/api/v1/chargers/CP-9", json={"description": "bay 9"})
        assert (await api.patch("/api/v1/chargers/NOPE", json={"lenient": True})).status_code == 404
        await api.delete("/api/v1/chargers/CP-9")
        got = await receiver.wait_for(3)
    finally:
        await receiver.stop()
    bodies = [msgspec.json.decode(r.body) for r in got]
    assert [b["action"] for b in bodies] == ["created", "updated", "deleted"]
    assert {b["networkId"] for b in bodies} == {"CP-9"} and len(
        {b["chargePointId"] for b in bodies}
    ) == 1
    for r in got:
        expected = hmac.new(_token(api).encode(), r.body, hashlib.sha256).hexdigest()
        assert r.headers["x-signature"] == expected
