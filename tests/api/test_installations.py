"""The installations API: settings checked with a defined answer for every bad input,
credentials stored but never shown, PATCH merging webhook members, membership of chargers."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

URL = "/api/v1/installations"
PAYLOAD = "grant_type=password&username=op&password=hunter2-secret&client_secret=cs-42"
WEBHOOK = {
    "authenticationUrl": "https://provider.example/oauth/token",
    "authenticationPayload": PAYLOAD,
    "sessionStartUrl": "https://provider.example/sessions/start",
    "sessionEndUrl": "https://provider.example/sessions/end",
}


async def _create(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "Car park")
    r = await api.post(URL, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _problem(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    for word in words:
        assert word in r.json()["detail"], r.json()["detail"]


async def test_create_has_defaults(api: httpx.AsyncClient) -> None:
    """A name alone makes a native-mode installation without offline charging."""
    body = await _create(api)
    assert body["authorizationMode"] == "native" and body["webhook"] is None
    assert body["allowChargingWhenOffline"] is False and body["name"] == "Car park"
    assert (await api.get(f"{URL}/{body['id']}")).json() == body


async def test_webhook_defaults_and_masked_credentials(
    api: httpx.AsyncClient, database_url: str
) -> None:
    """Answers mask every payload value except the public ones; the database keeps them as
    given (evgate must present them to the provider)."""
    body = await _create(api, authorizationMode="webhook", webhook=WEBHOOK)
    shown = body["webhook"]
    assert shown["authenticationPayload"] == (
        "grant_type=password&username=op&password=***&client_secret=***"
    )
    assert shown["timeoutMs"] == 3000 and shown["onFailure"] == "deny"
    assert shown["cacheTtlSeconds"] == 86400
    for r in (await api.get(URL), await api.get(f"{URL}/{body['id']}")):
        assert "hunter2" not in r.text and "cs-42" not in r.text
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT webhook->>'authenticationPayload' FROM installations")
    finally:
        await conn.close()
    assert stored == PAYLOAD


async def test_patch_merges_webhook_members(api: httpx.AsyncClient) -> None:
    """Changing one webhook member keeps the others, secrets included; null resets one."""
    body = await _create(
        api, authorizationMode="webhook", webhook={**WEBHOOK, "onFailure": "cache"}
    )
    r = await api.patch(f"{URL}/{body['id']}", json={"webhook": {"timeoutMs": 1500}})
    assert r.status_code == 200, r.text
    shown = r.json()["webhook"]
    assert shown["timeoutMs"] == 1500 and shown["onFailure"] == "cache"
    assert shown["authenticationPayload"].startswith("grant_type=password&username=op")
    r = await api.patch(f"{URL}/{body['id']}", json={"webhook": {"onFailure": None}})
    assert r.json()["webhook"]["onFailure"] == "deny"
    assert r.json()["webhook"]["timeoutMs"] == 1500


async def test_patch_changes_mode_name_and_offline_flag(api: httpx.AsyncClient) -> None:
    """Every top-level member can be changed; an empty PATCH changes nothing."""
    body = await _create(api)
    r = await api.patch(
        f"{URL}/{body['id']}",
        json={"name": "Home", "authorizationMode": "acceptAll", "allowChargingWhenOffline": True},
    )
    assert r.status_code == 200
    assert (r.json()["name"], r.json()["authorizationMode"]) == ("Home", "acceptAll")
    assert r.json()["allowChargingWhenOffline"] is True
    same = await api.patch(f"{URL}/{body['id']}", json={})
    assert same.json()["name"] == "Home"


async def test_webhook_settings_may_stay_while_another_mode_is_used(
    api: httpx.AsyncClient,
) -> None:
    """Switching from webhook to native keeps the settings for later; removing them is only
    refused in webhook mode."""
    body = await _create(api, authorizationMode="webhook", webhook=WEBHOOK)
    r = await api.patch(f"{URL}/{body['id']}", json={"authorizationMode": "native"})
    assert r.status_code == 200 and r.json()["webhook"] is not None
    r = await api.patch(f"{URL}/{body['id']}", json={"authorizationMode": "webhook"})
    assert r.status_code == 200
    _problem(await api.patch(f"{URL}/{body['id']}", json={"webhook": None}), 422, "webhook")
    r = await api.patch(
        f"{URL}/{body['id']}", json={"authorizationMode": "native", "webhook": None}
    )
    assert r.status_code == 200 and r.json()["webhook"] is None


BAD_WEBHOOKS: dict[str, tuple[dict[str, Any], str]] = {
    "no hook URL": ({"timeoutMs": 500}, "sessionStartUrl"),
    "ftp URL": ({"sessionStartUrl": "ftp://p.example/start"}, "sessionStartUrl"),
    "relative URL": ({"sessionEndUrl": "/end"}, "sessionEndUrl"),
    "no host": ({"sessionStartUrl": "https:///start"}, "sessionStartUrl"),
    "credentials in URL": (
        {"sessionStartUrl": "https://u:p@p.example/start"},
        "authenticationPayload",
    ),
    "fragment": ({"sessionStartUrl": "https://p.example/start#x"}, "fragment"),
    "payload not a form": (
        {"sessionStartUrl": "https://p.example/s", "authenticationPayload": "just-text"},
        "form string",
    ),
    "basic without password": (
        {"sessionStartUrl": "https://p.example/s", "authenticationPayload": "username=u"},
        "username and password",
    ),
    "token URL without payload": (
        {"sessionStartUrl": "https://p.example/s", "authenticationUrl": "https://p.example/t"},
        "required with authenticationUrl",
    ),
    "mask sent back": (
        {
            "sessionStartUrl": "https://p.example/s",
            "authenticationPayload": "username=u&password=***",
        },
        "mask",
    ),
    "timeout too long": ({"sessionStartUrl": "https://p.example/s", "timeoutMs": 60_000}, ""),
    "timeout too short": ({"sessionStartUrl": "https://p.example/s", "timeoutMs": 10}, ""),
    "unknown policy": ({"sessionStartUrl": "https://p.example/s", "onFailure": "retry"}, ""),
    "unknown member": ({"sessionStartUrl": "https://p.example/s", "secretKey": "x"}, ""),
    "URL not a string": ({"sessionStartUrl": 5}, ""),
}


@pytest.mark.parametrize("case", sorted(BAD_WEBHOOKS))
async def test_bad_webhook_settings_are_refused(api: httpx.AsyncClient, case: str) -> None:
    """Each unusable webhook setting is a 4xx problem naming what is wrong; nothing is
    stored."""
    webhook, word = BAD_WEBHOOKS[case]
    r = await api.post(URL, json={"name": "x", "authorizationMode": "webhook", "webhook": webhook})
    assert r.status_code in (400, 422), r.text
    _problem(r, r.status_code, word)
    assert (await api.get(URL)).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"name": "x", "authorizationMode": "webhook"}, "webhook settings"),
        ({"name": "x", "authorizationMode": "remote"}, "authorizationMode"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({}, "name"),
        ({"name": "x", "allowChargingWhenOffline": "yes"}, "allowChargingWhenOffline"),
        ({"name": "x", "extra": 1}, "extra"),
    ],
)
async def test_bad_installation_bodies_are_refused(
    api: httpx.AsyncClient, body: dict[str, Any], word: str
) -> None:
    """A bad mode, webhook mode without settings, a bad name or an unknown member: a 4xx
    problem naming it."""
    r = await api.post(URL, json=body)
    assert r.status_code in (400, 422), r.text
    _problem(r, r.status_code, word)


async def test_patch_is_checked_like_create(api: httpx.AsyncClient) -> None:
    """A PATCH that would leave unusable settings is refused and changes nothing."""
    body = await _create(api, authorizationMode="webhook", webhook=WEBHOOK)
    r = await api.patch(f"{URL}/{body['id']}", json={"webhook": {"sessionStartUrl": "gopher://x"}})
    _problem(r, 422, "sessionStartUrl")
    r = await api.patch(
        f"{URL}/{body['id']}",
        json={"webhook": {"sessionStartUrl": None, "sessionEndUrl": None}},
    )
    _problem(r, 422, "sessionStartUrl")
    assert (await api.get(f"{URL}/{body['id']}")).json() == body


async def test_unknown_installation_is_404(api: httpx.AsyncClient) -> None:
    """GET, PATCH, DELETE and the sub-lists of a missing installation are 404 problems."""
    for r in (
        await api.get(f"{URL}/99"),
        await api.patch(f"{URL}/99", json={"name": "x"}),
        await api.delete(f"{URL}/99"),
        await api.get(f"{URL}/99/chargers"),
        await api.get(f"{URL}/99/session-ends"),
    ):
        _problem(r, 404, "99")


async def test_list_pages_in_id_order(api: httpx.AsyncClient) -> None:
    """Keyset pagination: nextCursor fetches the next page, null at the end."""
    ids = [(await _create(api, name=f"site {i}"))["id"] for i in range(3)]
    first = (await api.get(URL, params={"limit": 2})).json()
    assert [i["id"] for i in first["data"]] == ids[:2]
    rest = (await api.get(URL, params={"limit": 2, "after": first["nextCursor"]})).json()
    assert [i["id"] for i in rest["data"]] == ids[2:] and rest["nextCursor"] is None


async def _charger(api: httpx.AsyncClient, charger_id: str) -> None:
    r = await api.post("/api/v1/chargers", json={"id": charger_id})
    assert r.status_code == 201, r.text


async def test_chargers_join_and_leave(api: httpx.AsyncClient) -> None:
    """PATCH installationId joins a charger (shown on the charger and in the member list);
    null leaves; an unknown installation is 422."""
    installation = await _create(api)
    await _charger(api, "CP-1")
    assert (await api.get("/api/v1/chargers/CP-1")).json()["installationId"] is None
    r = await api.patch("/api/v1/chargers/CP-1", json={"installationId": installation["id"]})
    assert r.status_code == 200 and r.json()["installationId"] == installation["id"]
    members = (await api.get(f"{URL}/{installation['id']}/chargers")).json()["data"]
    assert [m["chargerId"] for m in members] == ["CP-1"]
    assert members[0]["offlineConfig"]["state"] == "pending"
    _problem(await api.patch("/api/v1/chargers/CP-1", json={"installationId": 999}), 422, "999")
    r = await api.patch("/api/v1/chargers/CP-1", json={"installationId": None})
    assert r.json()["installationId"] is None
    assert (await api.get(f"{URL}/{installation['id']}/chargers")).json()["data"] == []


async def test_an_installation_with_chargers_cannot_be_deleted(api: httpx.AsyncClient) -> None:
    """409 while a charger belongs to it (moving chargers back to the native list silently
    would change who may charge); 204 once empty."""
    installation = await _create(api)
    await _charger(api, "CP-1")
    await api.patch("/api/v1/chargers/CP-1", json={"installationId": installation["id"]})
    _problem(await api.delete(f"{URL}/{installation['id']}"), 409, "1 charger")
    await api.patch("/api/v1/chargers/CP-1", json={"installationId": None})
    assert (await api.delete(f"{URL}/{installation['id']}")).status_code == 204
    assert (await api.get(f"{URL}/{installation['id']}")).status_code == 404
