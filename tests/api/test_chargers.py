"""The chargers registry API: secrets shown once, stored as digests; problem+json errors."""

from __future__ import annotations

import base64
import hashlib

import asyncpg
import httpx
import pytest
import websockets

from evgate.app import Evgate
from support import ocpp_charger, register_charger, until


async def _create(api: httpx.AsyncClient, charger_id: str = "CP-1", **extra: object) -> dict:
    r = await api.post("/api/v1/chargers", json={"id": charger_id, **extra})
    assert r.status_code == 201, r.text
    return r.json()


async def test_create_returns_secret_once_and_stores_only_its_digest(
    api: httpx.AsyncClient, database_url: str
) -> None:
    """201 with a 24-digit secret; the database holds its SHA-256 and never the secret."""
    body = await _create(api, "CP-1", description="bay 1")
    secret = body["secret"]
    assert len(secret) == 24 and secret.isdigit()
    assert body["id"] == "CP-1" and body["description"] == "bay 1"
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM chargers WHERE id = 'CP-1'")
        dump = await conn.fetchval("SELECT string_agg(c::text, ' ') FROM chargers c")
    finally:
        await conn.close()
    assert bytes(row["secret_digest"]) == hashlib.sha256(secret.encode()).digest()
    assert secret not in dump
    got = (await api.get("/api/v1/chargers/CP-1")).json()
    assert "secret" not in got and "secretDigest" not in got


async def test_secrets_differ(api: httpx.AsyncClient) -> None:
    """Every charger gets its own secret."""
    secrets = {(await _create(api, f"CP-{i}"))["secret"] for i in range(5)}
    assert len(secrets) == 5


async def test_duplicate_id_is_409(api: httpx.AsyncClient) -> None:
    """A second charger with the same id is a conflict, as problem+json."""
    await _create(api, "CP-1")
    r = await api.post("/api/v1/chargers", json={"id": "CP-1"})
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 409 and "CP-1" in r.json()["detail"]


@pytest.mark.parametrize(
    "bad_id", ["", "has space", "x" * 65, "slash/es", "ümlaut", "a?b", ".", "..", "CP-1\n"]
)
async def test_bad_id_is_422(api: httpx.AsyncClient, bad_id: str) -> None:
    """Ids outside 1-64 of A-Z a-z 0-9 . _ - :, and the dot-segments . and .. (no URL can
    name them), are refused with 422 naming the field."""
    r = await api.post("/api/v1/chargers", json={"id": bad_id})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "id" in r.json()["detail"]


@pytest.mark.parametrize("good_id", ["a", "CP.1_x-y:z", "X" * 64, "..."])
async def test_edge_ids_are_accepted(api: httpx.AsyncClient, good_id: str) -> None:
    """The id's whole alphabet and both length limits are accepted."""
    assert (await _create(api, good_id))["id"] == good_id


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{", 400), (b"[]", 400), (b'{"id": 5}', 400), (b'{"id": "a", "extra": 1}', 400)],
)
async def test_malformed_bodies(api: httpx.AsyncClient, body: bytes, status: int) -> None:
    """Bodies that are not JSON objects of the right shape get a 4xx problem document."""
    r = await api.post(
        "/api/v1/chargers", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"]


async def test_list_paginates_in_id_order(api: httpx.AsyncClient) -> None:
    """Keyset pages: nextCursor leads to the next page, null at the end."""
    for i in range(5):
        await _create(api, f"CP-{i}")
    r = (await api.get("/api/v1/chargers", params={"limit": 2})).json()
    assert [c["id"] for c in r["data"]] == ["CP-0", "CP-1"]
    seen = [c["id"] for c in r["data"]]
    while r["nextCursor"]:
        r = (
            await api.get("/api/v1/chargers", params={"limit": 2, "after": r["nextCursor"]})
        ).json()
        seen += [c["id"] for c in r["data"]]
    assert seen == [f"CP-{i}" for i in range(5)]


async def test_patch_and_delete(api: httpx.AsyncClient) -> None:
    """PATCH changes only the given fields; DELETE removes; later reads are 404."""
    await _create(api, "CP-1", description="old")
    r = await api.patch(
        "/api/v1/chargers/CP-1", json={"description": "new", "registrationStatus": "Pending"}
    )
    assert r.status_code == 200
    assert (r.json()["description"], r.json()["registrationStatus"]) == ("new", "Pending")
    assert (
        await api.patch("/api/v1/chargers/CP-1", json={"securityProfile": 4})
    ).status_code == 422
    assert (await api.delete("/api/v1/chargers/CP-1")).status_code == 204
    assert (await api.get("/api/v1/chargers/CP-1")).status_code == 404
    assert (await api.delete("/api/v1/chargers/CP-1")).status_code == 404
    assert (await api.patch("/api/v1/chargers/CP-1", json={})).status_code == 404


async def test_rotate_secret(api: httpx.AsyncClient, database_url: str) -> None:
    """Rotation returns a new secret; the stored digest is the new one's."""
    old = (await _create(api, "CP-1"))["secret"]
    r = await api.post("/api/v1/chargers/CP-1/secret")
    assert r.status_code == 200
    new = r.json()["secret"]
    assert r.json()["id"] == "CP-1" and new != old and len(new) == 24
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT secret_digest FROM chargers WHERE id = 'CP-1'")
    finally:
        await conn.close()
    assert bytes(stored) == hashlib.sha256(new.encode()).digest()
    assert (await api.post("/api/v1/chargers/nope/secret")).status_code == 404


async def test_every_endpoint_needs_a_token(evgate: Evgate) -> None:
    """No token or a wrong token: 401 problem+json with WWW-Authenticate."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{evgate.api_port}") as anon:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic x"}):
            for method, path in [
                ("GET", "/api/v1/chargers"),
                ("POST", "/api/v1/chargers"),
                ("GET", "/api/v1/chargers/CP-1"),
                ("POST", "/api/v1/chargers/CP-1/secret"),
            ]:
                r = await anon.request(method, path, headers=headers, json={"id": "CP-1"})
                assert r.status_code == 401, (method, path, headers)
                assert r.headers["content-type"] == "application/problem+json"
                assert r.headers["www-authenticate"].startswith("Bearer")


async def test_read_scope_cannot_write(api: httpx.AsyncClient, evgate: Evgate) -> None:
    """A read token lists chargers but gets 403 on any change."""
    from evgate.auth.registry import create_token
    from evgate.storage.tokens import TokenStore

    assert evgate.db is not None
    token = await create_token(TokenStore(evgate.db), "viewer", "read")
    await _create(api, "CP-1")
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{evgate.api_port}",
        headers={"Authorization": f"Bearer {token}"},
    ) as reader:
        assert (await reader.get("/api/v1/chargers")).status_code == 200
        r = await reader.post("/api/v1/chargers", json={"id": "CP-2"})
        assert r.status_code == 403 and r.json()["status"] == 403
        assert (await reader.delete("/api/v1/chargers/CP-1")).status_code == 403


async def test_openapi_and_docs_are_served(evgate: Evgate) -> None:
    """The OpenAPI document lists the chargers paths; the docs page and its assets load locally."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{evgate.api_port}") as anon:
        doc = (await anon.get("/api/openapi.json")).json()
        assert "/api/v1/chargers" in doc["paths"]
        assert "/api/v1/chargers/{charger_id}/secret" in doc["paths"]
        page = await anon.get("/api/docs")
        assert page.status_code == 200 and "/api/docs/assets/swagger-ui-bundle.js" in page.text
        assert "cdn" not in page.text.lower()
        asset = await anon.get("/api/docs/assets/swagger-ui-bundle.js")
        assert asset.status_code == 200 and len(asset.content) > 100_000


KNOWN_KEY = "Migrated-Key:0123456789"  # what a charger from another central system holds


def _basic(charger_id: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{charger_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_put_secret_sets_a_known_secret(
    api: httpx.AsyncClient, evgate: Evgate, database_url: str
) -> None:
    """PUT .../secret makes a known AuthorizationKey the charger's secret: 204, stored as its
    SHA-256 only; the connection made with the old secret is dropped, the charger connects
    with the new one (Basic auth, a real OCPP client) and the old one is refused."""
    old = await register_charger(evgate, api, "CP-1")
    base = f"ws://127.0.0.1:{evgate.ws_port}"
    async with ocpp_charger(f"{base}/cp/CP-1?auth={old}", "CP-1") as charger:
        assert await charger.boot() == "Accepted"
        r = await api.put("/api/v1/chargers/CP-1/secret", json={"secret": KNOWN_KEY})
        assert r.status_code == 204, r.text
        await until(lambda: charger.ws.close_code is not None)
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT secret_digest FROM chargers WHERE id = 'CP-1'")
        dump = await conn.fetchval("SELECT string_agg(c::text, ',') FROM chargers c")
    finally:
        await conn.close()
    assert bytes(stored) == hashlib.sha256(KNOWN_KEY.encode()).digest()
    assert KNOWN_KEY not in dump
    async with ocpp_charger(
        f"{base}/ocpp/CP-1", "CP-1", additional_headers=_basic("CP-1", KNOWN_KEY)
    ) as charger:
        assert await charger.boot() == "Accepted"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with ocpp_charger(f"{base}/cp/CP-1?auth={old}", "CP-1"):
            pass
    assert refused.value.response.status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"secret": "a" * 15}, 422, "secret"),
        ({"secret": "a" * 41}, 422, "secret"),
        ({"secret": "sixteen-chars-ok\n"}, 422, "control characters"),
        ({"secret": "sixteen-chars\x00ok"}, 422, "control characters"),
        ({}, 422, "secret"),
        ({"secret": "sixteen-chars-ok", "extra": 1}, 422, "extra"),
        ({"secret": 1234567890123456}, 422, "secret"),
    ],
)
async def test_put_secret_refuses_bad_secrets(
    api: httpx.AsyncClient, database_url: str, body: dict, status: int, detail: str
) -> None:
    """A secret outside 16-40 characters, with a control character, missing or not a string:
    a problem document, and the charger keeps its secret."""
    created = await _create(api, "CP-1")
    r = await api.put("/api/v1/chargers/CP-1/secret", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert detail in r.json()["detail"]
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT secret_digest FROM chargers WHERE id = 'CP-1'")
    finally:
        await conn.close()
    assert bytes(stored) == hashlib.sha256(created["secret"].encode()).digest()


async def test_put_secret_of_an_unknown_charger_is_404(api: httpx.AsyncClient) -> None:
    """No such charger: 404 problem+json."""
    r = await api.put("/api/v1/chargers/nope/secret", json={"secret": KNOWN_KEY})
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
