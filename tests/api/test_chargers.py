"""The chargers registry API: secrets shown once, stored as digests; problem+json errors."""

from __future__ import annotations

import hashlib

import asyncpg
import httpx
import pytest

from evgate.app import Evgate


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
