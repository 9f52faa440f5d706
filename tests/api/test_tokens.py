"""API tokens: the bootstrap token is valid where it is configured and revoked by no other
process; tokens are created, listed and revoked through the API by admin tokens only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from evgate.app import Evgate
from evgate.credentials import digest
from support import BOOTSTRAP_TOKEN, running_evgate


async def _status_with(evgate: Evgate, token: str) -> int:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{evgate.api_port}",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        return (await client.get("/api/v1/chargers")).status_code


async def test_bootstrap_token_is_an_admin_token_that_is_never_stored(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """EVGATE_BOOTSTRAP_TOKEN works as an admin token (it can write), and neither it nor its
    digest is in the database: no other process can delete it."""
    r = await api.post("/api/v1/chargers", json={"id": "CP-B"})
    assert r.status_code == 201, r.text
    assert evgate.db is not None
    rows = await evgate.db.fetch("SELECT name, digest FROM api_tokens")
    assert rows == []
    dump = await evgate.db.fetchval("SELECT string_agg(t::text, ' ') FROM api_tokens t")
    assert dump is None or hashlib.sha256(BOOTSTRAP_TOKEN.encode()).hexdigest() not in dump


async def test_a_bootstrap_row_an_older_version_wrote_is_not_a_token(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """Review of issue 14, finding 11: an old-version node restarting during a rolling upgrade
    stores its bootstrap token as a row named ``bootstrap`` again (migration 0010 deleted it);
    this version does not accept it. The same digest under another name is a token."""
    assert evgate.db is not None
    old_token = "an-old-nodes-bootstrap-token"
    stored = digest(old_token)
    await evgate.db.execute(
        "INSERT INTO api_tokens (name, scope, digest) VALUES ('bootstrap', 'admin', $1)", stored
    )
    assert await _status_with(evgate, old_token) == 401
    await evgate.db.execute("UPDATE api_tokens SET name = 'ci' WHERE digest = $1", stored)
    assert await _status_with(evgate, old_token) == 200


async def test_two_nodes_with_two_bootstrap_tokens_keep_both(
    database_url: str, tmp_path: Path
) -> None:
    """Issue 14 item 8: a second node started on the same database with another
    EVGATE_BOOTSTRAP_TOKEN leaves the first node's token working there; each token is valid
    on the node that has it configured, and only there."""
    first_token, second_token = "first-node-bootstrap-token", "second-node-bootstrap-token"
    async with running_evgate(
        database_url, tmp_path / "a", bootstrap_token=first_token, node_id="node-a"
    ) as first:
        assert await _status_with(first, first_token) == 200
        async with running_evgate(
            database_url, tmp_path / "b", bootstrap_token=second_token, node_id="node-b"
        ) as second:
            assert await _status_with(second, second_token) == 200
            assert await _status_with(first, first_token) == 200
            assert await _status_with(first, second_token) == 401
            assert await _status_with(second, first_token) == 401
        assert await _status_with(first, first_token) == 200


async def test_restarting_with_another_bootstrap_token_revokes_the_old_one(
    database_url: str, tmp_path: Path
) -> None:
    """README: the bootstrap token 'exists while set': after a restart with another value
    (or none), the old value is refused 401."""
    async with running_evgate(
        database_url, tmp_path, bootstrap_token="first-bootstrap-token"
    ) as first:
        assert await _status_with(first, "first-bootstrap-token") == 200
    async with running_evgate(
        database_url, tmp_path, bootstrap_token="other-bootstrap-tok"
    ) as second:
        assert await _status_with(second, "other-bootstrap-tok") == 200
        assert await _status_with(second, "first-bootstrap-token") == 401
    async with running_evgate(database_url, tmp_path, bootstrap_token=None) as third:
        assert await _status_with(third, "other-bootstrap-tok") == 401


def _client(app: Evgate, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.api_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


async def test_create_list_and_revoke_tokens_on_every_node(
    api: httpx.AsyncClient, evgate: Evgate, database_url: str, tmp_path: Path
) -> None:
    """POST shows the token once and stores its digest; GET lists tokens without it; DELETE
    makes it refused at once here and on another node of the same database."""
    r = await api.post("/api/v1/tokens", json={"name": "ci", "scope": "read"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"id", "name", "scope", "subOperatorId", "createdAt", "token"}
    assert (created["name"], created["scope"]) == ("ci", "read")
    token = created["token"]
    assert evgate.db is not None
    stored = await evgate.db.fetchval("SELECT digest FROM api_tokens WHERE id = $1", created["id"])
    assert bytes(stored) == hashlib.sha256(token.encode()).digest()

    listed = (await api.get("/api/v1/tokens")).json()
    assert listed == {
        "data": [{k: created[k] for k in ("id", "name", "scope", "subOperatorId", "createdAt")}],
        "nextCursor": None,
    }

    async with (
        running_evgate(database_url, tmp_path / "b", node_id="node-b") as other,
        _client(evgate, token) as here,
        _client(other, token) as there,
    ):
        assert (await here.get("/api/v1/chargers")).status_code == 200
        assert (await there.get("/api/v1/chargers")).status_code == 200
        assert (await here.post("/api/v1/chargers", json={"id": "X"})).status_code == 403
        assert (await api.delete(f"/api/v1/tokens/{created['id']}")).status_code == 204
        assert (await here.get("/api/v1/chargers")).status_code == 401
        assert (await there.get("/api/v1/chargers")).status_code == 401
    assert (await api.get("/api/v1/tokens")).json()["data"] == []
    assert (await api.delete(f"/api/v1/tokens/{created['id']}")).status_code == 404


async def test_only_admin_tokens_manage_tokens(api: httpx.AsyncClient, evgate: Evgate) -> None:
    """A read token gets 403 on every token route (listing too); an admin token made through
    the API may manage tokens; bad bodies are 422 problems."""
    reader = (await api.post("/api/v1/tokens", json={"name": "viewer"})).json()
    assert reader["scope"] == "read"  # the default: least privilege
    async with _client(evgate, reader["token"]) as as_reader:
        for method, path in [
            ("GET", "/api/v1/tokens"),
            ("POST", "/api/v1/tokens"),
            ("DELETE", f"/api/v1/tokens/{reader['id']}"),
        ]:
            r = await as_reader.request(method, path, json={"name": "x", "scope": "admin"})
            assert r.status_code == 403, (method, path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
    admin = (await api.post("/api/v1/tokens", json={"name": "ops", "scope": "admin"})).json()
    async with _client(evgate, admin["token"]) as as_admin:
        assert (await as_admin.delete(f"/api/v1/tokens/{reader['id']}")).status_code == 204
        assert [t["name"] for t in (await as_admin.get("/api/v1/tokens")).json()["data"]] == ["ops"]
    for body in (
        {"name": "bootstrap", "scope": "admin"},  # reserved for EVGATE_BOOTSTRAP_TOKEN
        {"name": "x", "scope": "root"},
        {"name": ""},
        {"name": "x", "token": "chosen-by-me"},
    ):
        r = await api.post("/api/v1/tokens", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
