"""Sub-operators (issue 20): their API, SubOperatorChangedNotification, the subOperatorId of
the resources a sub-operator owns, tokens scoped to one, and the operator-only routes.

A real evgate (the ``api``/``evgate`` fixtures: the operator's bootstrap token); a
sub-operator's token is made through the API, as an operator would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest

from evgate.app import Evgate
from evgate.events.catalog import SubOperatorChangedNotification
from evgate.pricing import Driver
from evgate.storage.db import acting_for
from support import Receiver, running_evgate

# The tenants' receivers are on loopback, which only this setting lets a sub-operator's token
# name as a target (api/targets.py; tests/api/test_tenant_targets.py tests the refusal).
pytestmark = pytest.mark.evgate_settings(tenant_private_targets=True)

PROBLEM = "application/problem+json"


def _client(evgate: Evgate, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{evgate.api_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


async def _tenant(
    api: httpx.AsyncClient, evgate: Evgate, name: str, scope: str = "admin"
) -> tuple[int, httpx.AsyncClient]:
    """A new sub-operator and a client with an admin token scoped to it."""
    r = await api.post("/api/v1/sub-operators", json={"name": name})
    assert r.status_code == 201, r.text
    sub_operator = r.json()["id"]
    r = await api.post(
        "/api/v1/tokens", json={"name": name, "scope": scope, "subOperatorId": sub_operator}
    )
    assert r.status_code == 201, r.text
    return sub_operator, _client(evgate, r.json()["token"])


def _evgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evgate.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _is_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM


# 1. /api/v1/sub-operators


async def test_create_list_get_rename_and_delete(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/v1/sub-operators", json={"name": "Reseller A"})
    assert r.status_code == 201, r.text
    a = r.json()
    assert set(a) == {"id", "name", "createdAt", "updatedAt"}
    assert a["name"] == "Reseller A"
    b = (await api.post("/api/v1/sub-operators", json={"name": "Site B"})).json()
    assert (await api.get(f"/api/v1/sub-operators/{a['id']}")).json() == a
    page = (await api.get("/api/v1/sub-operators", params={"limit": 1})).json()
    assert [s["id"] for s in page["data"]] == [a["id"]]
    assert page["nextCursor"] == str(a["id"])
    rest = (await api.get("/api/v1/sub-operators", params={"after": page["nextCursor"]})).json()
    assert [s["id"] for s in rest["data"]] == [b["id"]] and rest["nextCursor"] is None

    r = await api.patch(f"/api/v1/sub-operators/{a['id']}", json={"name": "Reseller Alpha"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Reseller Alpha" and r.json()["updatedAt"] >= a["updatedAt"]

    assert (await api.delete(f"/api/v1/sub-operators/{a['id']}")).status_code == 204
    _is_problem(await api.get(f"/api/v1/sub-operators/{a['id']}"), 404)
    _is_problem(await api.delete(f"/api/v1/sub-operators/{a['id']}"), 404)
    _is_problem(await api.patch(f"/api/v1/sub-operators/{a['id']}", json={"name": "x"}), 404)


async def test_names_are_unique_case_insensitively(api: httpx.AsyncClient) -> None:
    first = (await api.post("/api/v1/sub-operators", json={"name": "Reseller A"})).json()
    _is_problem(await api.post("/api/v1/sub-operators", json={"name": "reseller a"}), 409)
    other = (await api.post("/api/v1/sub-operators", json={"name": "Other"})).json()
    r = await api.patch(f"/api/v1/sub-operators/{other['id']}", json={"name": "RESELLER A"})
    _is_problem(r, 409)
    assert (await api.get(f"/api/v1/sub-operators/{first['id']}")).json()["name"] == "Reseller A"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"name": ""}, 422),
        ({"name": "x" * 201}, 422),
        ({"name": 7}, 422),
        ({"name": "A", "id": 9}, 422),
        ({"name": "A\u0000B"}, 422),
        ("not json", 400),
    ],
)
async def test_bad_bodies_are_problems(api: httpx.AsyncClient, body: object, status: int) -> None:
    if isinstance(body, str):
        r = await api.post(
            "/api/v1/sub-operators", content=body, headers={"content-type": "application/json"}
        )
    else:
        r = await api.post("/api/v1/sub-operators", json=body)
    _is_problem(r, status)


async def test_bad_ids_are_404(api: httpx.AsyncClient) -> None:
    for path in ("/api/v1/sub-operators/0", "/api/v1/sub-operators/99999999999999999999",
                 "/api/v1/sub-operators/abc", "/api/v1/sub-operators/424242"):  # fmt: skip
        _is_problem(await api.get(path), 404)


async def test_a_sub_operator_that_owns_a_charger_is_not_deleted(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """409 while it owns a charger (the RESTRICT foreign key); once the charger is the
    operator's again it is deleted, its tokens and subscriptions with it."""
    sub_operator, tenant = await _tenant(api, evgate, "A")
    async with tenant:
        assert (await tenant.post("/api/v1/chargers", json={"id": "CP-A"})).status_code == 201
        r = await tenant.post(
            "/public-api/notifications/v2.0",
            json={"notifications": ["BootNotification"], "via": "webhook",
                  "webhook": {"callbackUrl": "http://127.0.0.1:9/hook"}},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        r = await api.delete(f"/api/v1/sub-operators/{sub_operator}")
        _is_problem(r, 409)
        assert "chargers" in r.json()["detail"]
        r = await api.patch("/api/v1/chargers/CP-A", json={"subOperatorId": None})
        assert r.status_code == 200, r.text
        assert (await api.delete(f"/api/v1/sub-operators/{sub_operator}")).status_code == 204
        assert (await tenant.get("/api/v1/chargers")).status_code == 401
    assert evgate.db is not None
    assert await evgate.db.fetchval("SELECT count(*) FROM api_tokens") == 0
    assert await evgate.db.fetchval("SELECT count(*) FROM subscriptions") == 0


async def test_a_tenant_reads_only_its_own_sub_operator_and_changes_none(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    a_id, a = await _tenant(api, evgate, "A")
    b_id, b = await _tenant(api, evgate, "B")
    async with a, b:
        assert (await a.get(f"/api/v1/sub-operators/{a_id}")).json()["name"] == "A"
        assert [s["id"] for s in (await a.get("/api/v1/sub-operators")).json()["data"]] == [a_id]
        _is_problem(await a.get(f"/api/v1/sub-operators/{b_id}"), 404)
        _is_problem(await a.post("/api/v1/sub-operators", json={"name": "C"}), 403)
        _is_problem(await a.patch(f"/api/v1/sub-operators/{a_id}", json={"name": "Z"}), 403)
        _is_problem(await a.patch(f"/api/v1/sub-operators/{b_id}", json={"name": "Z"}), 403)
        _is_problem(await a.delete(f"/api/v1/sub-operators/{a_id}"), 403)
        _is_problem(await a.delete(f"/api/v1/sub-operators/{b_id}"), 403)
    names = [s["name"] for s in (await api.get("/api/v1/sub-operators")).json()["data"]]
    assert names == ["A", "B"]


async def test_created_and_deleted_reach_the_webhook(
    api: httpx.AsyncClient, evgate: Evgate, receiver: Receiver
) -> None:
    """SubOperatorChangedNotification on create and delete (none on a rename: the catalog's
    enum has no updated), with the catalog's fields; its outbox rows are the sub-operator's."""
    r = await api.post(
        "/public-api/notifications/v2.0",
        json={"notifications": ["SubOperatorChangedNotification"], "via": "webhook",
              "webhook": {"callbackUrl": receiver.url}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["data"]["notEmitted"] == []
    created = (await api.post("/api/v1/sub-operators", json={"name": "A"})).json()
    await api.patch(f"/api/v1/sub-operators/{created['id']}", json={"name": "A2"})
    assert (await api.delete(f"/api/v1/sub-operators/{created['id']}")).status_code == 204
    got = await receiver.wait_for(2)
    raws = [msgspec.json.decode(g.body) for g in got]
    events = [msgspec.json.decode(g.body, type=SubOperatorChangedNotification) for g in got]
    assert [(e.subOperator.id, e.action) for e in events] == [
        (created["id"], "created"),
        (created["id"], "deleted"),
    ]
    assert set(raws[0]) == {"notification", "subOperator", "action", "lastUpdatedAt"}
    assert raws[0]["notification"] == "SubOperatorChangedNotification"
    assert evgate.db is not None
    stamped = await evgate.db.fetch(
        "SELECT sub_operator_id FROM outbox WHERE event = 'SubOperatorChangedNotification'"
    )
    assert [r["sub_operator_id"] for r in stamped] == [created["id"], created["id"]]


# 3. Tokens scoped to a sub-operator


async def test_the_operator_makes_a_sub_operators_token(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """POST /api/v1/tokens with subOperatorId: listed with it, GET /api/v1/token says it; an
    unknown sub-operator is 422 (as any unknown id in a body); the bootstrap token is the
    operator's."""
    me = (await api.get("/api/v1/token")).json()
    assert me == {"tokenId": None, "scope": "admin", "subOperatorId": None}
    sub_operator = (await api.post("/api/v1/sub-operators", json={"name": "A"})).json()["id"]
    r = await api.post(
        "/api/v1/tokens", json={"name": "a", "scope": "read", "subOperatorId": sub_operator}
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["subOperatorId"] == sub_operator
    listed = (await api.get("/api/v1/tokens")).json()["data"]
    assert [(t["id"], t["subOperatorId"]) for t in listed] == [(created["id"], sub_operator)]
    async with _client(evgate, created["token"]) as tenant:
        me = (await tenant.get("/api/v1/token")).json()
        assert me == {"tokenId": created["id"], "scope": "read", "subOperatorId": sub_operator}
    _is_problem(await api.post("/api/v1/tokens", json={"name": "x", "subOperatorId": 424242}), 422)
    _is_problem(await api.post("/api/v1/tokens", json={"name": "x", "subOperatorId": 0}), 422)
    _is_problem(await api.post("/api/v1/tokens", json={"name": "x", "subOperatorId": "1"}), 422)
    operators = await api.post("/api/v1/tokens", json={"name": "ops", "subOperatorId": None})
    assert operators.status_code == 201 and operators.json()["subOperatorId"] is None


async def test_a_tenant_makes_only_its_own_tokens(api: httpx.AsyncClient, evgate: Evgate) -> None:
    """A sub-operator's admin token makes tokens of its own sub-operator (absent or its own
    id); another sub-operator's id is 404 (another's is no different from none); null (the
    operator's) is 403; a read token of the tenant makes none."""
    a_id, a = await _tenant(api, evgate, "A")
    b_id, b = await _tenant(api, evgate, "B")
    async with a, b:
        r = await a.post("/api/v1/tokens", json={"name": "a-ci", "scope": "admin"})
        assert r.status_code == 201, r.text
        assert r.json()["subOperatorId"] == a_id
        r = await a.post("/api/v1/tokens", json={"name": "a-ro", "subOperatorId": a_id})
        assert r.status_code == 201 and r.json()["subOperatorId"] == a_id
        async with _client(evgate, r.json()["token"]) as reader:
            _is_problem(await reader.post("/api/v1/tokens", json={"name": "z"}), 403)
        _is_problem(await a.post("/api/v1/tokens", json={"name": "x", "subOperatorId": b_id}), 404)
        _is_problem(await a.post("/api/v1/tokens", json={"name": "x", "subOperatorId": 4242}), 404)
        _is_problem(await a.post("/api/v1/tokens", json={"name": "x", "subOperatorId": None}), 403)
    assert evgate.db is not None
    owners = await evgate.db.fetch("SELECT name, sub_operator_id FROM api_tokens ORDER BY id")
    assert [(o["name"], o["sub_operator_id"]) for o in owners] == [
        ("A", a_id), ("B", b_id), ("a-ci", a_id), ("a-ro", a_id)
    ]  # fmt: skip


async def test_a_tenant_sees_and_revokes_only_its_own_tokens(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """The list of a sub-operator's token holds its sub-operator's tokens only; the
    operator's and another tenant's are 404 to DELETE, and still work."""
    operators = (await api.post("/api/v1/tokens", json={"name": "ops", "scope": "admin"})).json()
    a_id, a = await _tenant(api, evgate, "A")
    _, b = await _tenant(api, evgate, "B")
    async with a, b, _client(evgate, operators["token"]) as ops:
        listed = (await a.get("/api/v1/tokens")).json()["data"]
        assert [(t["name"], t["subOperatorId"]) for t in listed] == [("A", a_id)]
        b_token = (await b.get("/api/v1/tokens")).json()["data"][0]["id"]
        _is_problem(await a.delete(f"/api/v1/tokens/{operators['id']}"), 404)
        _is_problem(await a.delete(f"/api/v1/tokens/{b_token}"), 404)
        assert (await ops.get("/api/v1/chargers")).status_code == 200
        assert (await b.get("/api/v1/chargers")).status_code == 200
        spare = (await a.post("/api/v1/tokens", json={"name": "spare"})).json()
        assert (await a.delete(f"/api/v1/tokens/{spare['id']}")).status_code == 204
        assert [t["name"] for t in (await a.get("/api/v1/tokens")).json()["data"]] == ["A"]


async def test_a_revoked_tenant_token_is_refused_at_once_on_every_node(
    api: httpx.AsyncClient, evgate: Evgate, database_url: str, tmp_path: Path
) -> None:
    """DELETE /api/v1/tokens/{id} of a sub-operator's token: 401 from the next request on,
    here and on a second evgate process of the same database."""
    sub_operator = (await api.post("/api/v1/sub-operators", json={"name": "A"})).json()["id"]
    created = (
        await api.post(
            "/api/v1/tokens", json={"name": "a", "scope": "admin", "subOperatorId": sub_operator}
        )
    ).json()
    async with (
        running_evgate(database_url, tmp_path / "b", node_id="node-b") as other,
        _client(evgate, created["token"]) as here,
        _client(other, created["token"]) as there,
    ):
        assert (await here.post("/api/v1/chargers", json={"id": "CP-A"})).status_code == 201
        ids = [c["id"] for c in (await there.get("/api/v1/chargers")).json()["data"]]
        assert ids == ["CP-A"]
        assert (await api.delete(f"/api/v1/tokens/{created['id']}")).status_code == 204
        _is_problem(await here.get("/api/v1/chargers"), 401)
        _is_problem(await there.get("/api/v1/chargers"), 401)


async def test_cli_makes_a_sub_operators_token(database_url: str) -> None:
    """`evgate tokens create --sub-operator N` stores the token as N's; `tokens list` shows
    it; an unknown sub-operator is exit status 1 with nothing stored."""
    env = {"EVGATE_DATABASE_URL": database_url}
    conn = await asyncpg.connect(database_url)
    try:
        tenant = await conn.fetchval("INSERT INTO sub_operators (name) VALUES ('c') RETURNING id")
    finally:
        await conn.close()
    out = _evgate("tokens", "create", "--name", "reseller", "--sub-operator", str(tenant), env=env)
    assert out.returncode == 0, out.stderr
    listed = _evgate("tokens", "list", env=env).stdout
    (line,) = [x for x in listed.splitlines() if "reseller" in x]
    assert line.split()[1:3] == ["read", str(tenant)]
    bad = _evgate("tokens", "create", "--name", "x", "--sub-operator", "424242", env=env)
    assert bad.returncode == 1 and "no sub-operator 424242" in bad.stderr
    assert "  x" not in _evgate("tokens", "list", env=env).stdout


# 2. subOperatorId on the resources a sub-operator may own

_TARIFF = {"name": "T", "currency": "EUR", "pricePerKwh": "0.30"}
_ADDRESS = {"street": "Main 1", "city": "Wien", "postalCode": "1010", "country": "AT"}
# Each resource: its collection, a creation body, and its id in the created body.
RESOURCES = [
    ("/api/v1/chargers", {"id": "CP-1"}, "id"),
    ("/api/v1/locations", {"name": "Depot", "address": _ADDRESS}, "id"),
    ("/api/v1/circuits", {"name": "Feeder", "maxCurrent": 63}, "id"),
    ("/api/v1/tariffs", _TARIFF, "id"),
    ("/api/v1/tariff-groups", {"name": "G"}, "id"),
    ("/api/v1/installations", {"name": "Site"}, "id"),
    ("/api/v1/id-tags", {"idTag": "04A2B3C4"}, "idTag"),
]
IDS = [r[0].rsplit("/", 1)[1] for r in RESOURCES]


@pytest.mark.parametrize(("path", "body", "key"), RESOURCES, ids=IDS)
async def test_the_operator_gives_a_resource_to_a_sub_operator(
    api: httpx.AsyncClient, evgate: Evgate, path: str, body: dict[str, object], key: str
) -> None:
    """subOperatorId in GET bodies (null: the operator's), set by POST and PATCH with an
    operator token; the sub-operator's token then sees it; an unknown sub-operator is 422."""
    a_id, a = await _tenant(api, evgate, "A")
    async with a:
        r = await api.post(path, json=body)
        assert r.status_code == 201, r.text
        item = f"{path}/{r.json()[key]}"
        assert r.json()["subOperatorId"] is None
        _is_problem(await a.get(item), 404)
        r = await api.patch(item, json={"subOperatorId": a_id})
        assert r.status_code == 200, r.text
        assert r.json()["subOperatorId"] == a_id
        assert (await api.get(item)).json()["subOperatorId"] == a_id
        assert (await a.get(item)).json()["subOperatorId"] == a_id
        listed = (await a.get(path)).json()["data"]
        assert [x["subOperatorId"] for x in listed] == [a_id]
        _is_problem(await api.patch(item, json={"subOperatorId": 424242}), 422)
        _is_problem(await api.patch(f"{path}/999999", json={"subOperatorId": a_id}), 404)
        r = await api.patch(item, json={"subOperatorId": None})
        assert r.status_code == 200 and r.json()["subOperatorId"] is None
        _is_problem(await a.get(item), 404)
        await api.delete(item)

        r = await api.post(path, json={**body, "subOperatorId": a_id})
        assert r.status_code == 201, r.text
        assert r.json()["subOperatorId"] == a_id
        assert (await a.get(f"{path}/{r.json()[key]}")).status_code == 200
        r = await api.post(path, json={**body, "subOperatorId": 424242})
        _is_problem(r, 422)


@pytest.mark.parametrize(("path", "body", "key"), RESOURCES, ids=IDS)
async def test_a_tenants_creations_are_its_own_and_it_gives_none_away(
    api: httpx.AsyncClient, evgate: Evgate, path: str, body: dict[str, object], key: str
) -> None:
    """A sub-operator's token creates its own (without saying so, or naming itself); naming
    another sub-operator, an unknown one or null (the operator) is 403 on POST and PATCH,
    and the resource stays its own."""
    a_id, a = await _tenant(api, evgate, "A")
    b_id, b = await _tenant(api, evgate, "B")
    async with a, b:
        for wrong in (b_id, 424242, None):
            _is_problem(await a.post(path, json={**body, "subOperatorId": wrong}), 403)
        r = await a.post(path, json=body)
        assert r.status_code == 201, r.text
        assert r.json()["subOperatorId"] == a_id
        item = f"{path}/{r.json()[key]}"
        assert (await api.get(item)).json()["subOperatorId"] == a_id
        assert (await a.patch(item, json={"subOperatorId": a_id})).status_code == 200
        for wrong in (b_id, 424242, None):
            _is_problem(await a.patch(item, json={"subOperatorId": wrong}), 403)
        _is_problem(await b.patch(item, json={"subOperatorId": b_id}), 404)
        assert (await api.get(item)).json()["subOperatorId"] == a_id
        # With its own id, a second one too (ids are unique: another key).
        second = {**body, "subOperatorId": a_id}
        if key == "idTag":
            second["idTag"] = "04A2B3C5"
        elif path.endswith("chargers"):
            second["id"] = "CP-2"
        r = await a.post(path, json=second)
        assert r.status_code == 201 and r.json()["subOperatorId"] == a_id, r.text


async def test_a_tenants_tariff_leaves_the_others_prices_in_force(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """A sub-operator's request that changes prices reloads this process's pricing
    directory; it must reload the whole operator's, not the rows the tenant sees."""
    tariff = (await api.post("/api/v1/tariffs", json=_TARIFF)).json()
    entries = [{"tariffId": tariff["id"]}]
    group = (await api.post("/api/v1/tariff-groups", json={"name": "G", "tariffs": entries})).json()
    assert (await api.post("/api/v1/chargers", json={"id": "CP-OP"})).status_code == 201
    r = await api.patch("/api/v1/chargers/CP-OP", json={"tariffGroupId": group["id"]})
    assert r.status_code == 200, r.text
    directory = evgate.pricing
    assert directory is not None
    assert directory.snapshot_for("CP-OP", Driver(), datetime.now(UTC)) is not None
    a_id, a = await _tenant(api, evgate, "A")
    async with a:
        assert (await a.post("/api/v1/tariffs", json=_TARIFF)).status_code == 201
    assert directory.snapshot_for("CP-OP", Driver(), datetime.now(UTC)) is not None
    # The request's own reload races the one its NOTIFY wakes: this one is the request's.
    with acting_for(a_id):
        await directory.refresh()
    assert directory.snapshot_for("CP-OP", Driver(), datetime.now(UTC)) is not None


# 4. Routes over what no sub-operator owns refuse a sub-operator's token

# Every route of the operator-only families (as the OpenAPI document names them).
OPERATOR_ONLY = [
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/users"),
    ("GET", "/api/v1/users/{user_id}"),
    ("PATCH", "/api/v1/users/{user_id}"),
    ("DELETE", "/api/v1/users/{user_id}"),
    ("GET", "/api/v1/users/{user_id}/balance"),
    ("POST", "/api/v1/users/{user_id}/balance"),
    ("GET", "/api/v1/users/{user_id}/balance/entries"),
    ("POST", "/api/v1/user-groups"),
    ("GET", "/api/v1/user-groups"),
    ("GET", "/api/v1/user-groups/{group_id}"),
    ("PATCH", "/api/v1/user-groups/{group_id}"),
    ("DELETE", "/api/v1/user-groups/{group_id}"),
    ("POST", "/api/v1/users/{user_id}/payment-methods"),
    ("GET", "/api/v1/users/{user_id}/payment-methods"),
    ("GET", "/api/v1/users/{user_id}/payment-methods/{method_id}"),
    ("PATCH", "/api/v1/users/{user_id}/payment-methods/{method_id}"),
    ("DELETE", "/api/v1/users/{user_id}/payment-methods/{method_id}"),
    ("GET", "/api/v1/users/{user_id}/invoice-details"),
    ("PUT", "/api/v1/users/{user_id}/invoice-details"),
    ("POST", "/api/v1/subscription-plans"),
    ("GET", "/api/v1/subscription-plans"),
    ("GET", "/api/v1/subscription-plans/{plan_id}"),
    ("PATCH", "/api/v1/subscription-plans/{plan_id}"),
    ("DELETE", "/api/v1/subscription-plans/{plan_id}"),
    ("GET", "/api/v1/users/{user_id}/subscription"),
    ("PUT", "/api/v1/users/{user_id}/subscription"),
    ("PATCH", "/api/v1/users/{user_id}/subscription"),
    ("POST", "/api/v1/partners"),
    ("GET", "/api/v1/partners"),
    ("GET", "/api/v1/partners/{partner_id}"),
    ("PATCH", "/api/v1/partners/{partner_id}"),
    ("DELETE", "/api/v1/partners/{partner_id}"),
    ("POST", "/api/v1/partners/{partner_id}/invites"),
    ("GET", "/api/v1/partners/{partner_id}/invites"),
    ("GET", "/api/v1/partners/{partner_id}/members"),
    ("DELETE", "/api/v1/partners/{partner_id}/members/{user_id}"),
    ("GET", "/api/v1/partner-invites/{invite_id}"),
    ("POST", "/api/v1/partner-invites/{invite_id}/accept"),
    ("DELETE", "/api/v1/partner-invites/{invite_id}"),
    ("POST", "/api/v1/sub-operators"),
    ("PATCH", "/api/v1/sub-operators/{sub_operator_id}"),
    ("DELETE", "/api/v1/sub-operators/{sub_operator_id}"),
]
FAMILIES = ("/api/v1/users", "/api/v1/user-groups", "/api/v1/subscription-plans",
            "/api/v1/partners", "/api/v1/partner-invites")  # fmt: skip


def _concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "1", path)


@pytest.fixture
async def tenant_and_user(
    api: httpx.AsyncClient, evgate: Evgate
) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    """A sub-operator's admin token, and a user, a group, a plan, a partner and its invite
    with id 1 each (so that a 403 is not a 404 in disguise)."""
    user = (await api.post("/api/v1/users", json={"email": "ada@example.com"})).json()
    assert (await api.post("/api/v1/user-groups", json={"name": "G"})).status_code == 201
    partner = (await api.post("/api/v1/partners", json={"name": "Acme"})).json()
    r = await api.post(f"/api/v1/partners/{partner['id']}/invites", json={"email": "b@c.io"})
    assert r.status_code == 201, r.text
    _, tenant = await _tenant(api, evgate, "A")
    async with tenant:
        yield tenant, user["id"]


@pytest.mark.parametrize(
    ("method", "path"), OPERATOR_ONLY, ids=[f"{m} {p}" for m, p in OPERATOR_ONLY]
)
async def test_a_sub_operators_token_gets_403_on_operator_only_routes(
    api: httpx.AsyncClient,
    tenant_and_user: tuple[httpx.AsyncClient, int],
    method: str,
    path: str,
) -> None:
    tenant, _ = tenant_and_user
    r = await tenant.request(method, _concrete(path), json={})
    _is_problem(r, 403)
    # The operator's token is not refused there (a body may be wrong: not 403).
    assert (await api.request(method, _concrete(path), json={})).status_code != 403


async def test_every_route_of_the_operator_only_families_is_listed(api: httpx.AsyncClient) -> None:
    """A route added to one of those families later is tested above, or this fails."""
    document = (await api.get("/api/openapi.json")).json()
    routes = {
        (method.upper(), path.rstrip("/") or "/")
        for path, item in document["paths"].items()
        if path.startswith(FAMILIES)
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert routes == {r for r in OPERATOR_ONLY if r[1].startswith(FAMILIES)}


async def test_a_sub_operators_token_keeps_its_own_resources(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """The routes over what a sub-operator may own stay open to its token."""
    _, tenant = await _tenant(api, evgate, "A")
    async with tenant:
        for path in ("/api/v1/chargers", "/api/v1/locations", "/api/v1/tariffs",
                     "/api/v1/tariff-groups", "/api/v1/circuits", "/api/v1/installations",
                     "/api/v1/id-tags", "/api/v1/transactions",
                     "/api/v1/reservations", "/api/v1/tokens", "/api/v1/sub-operators",
                     "/public-api/notifications/v2.0"):  # fmt: skip
            r = await tenant.get(path)
            assert r.status_code == 200, (path, r.text)


@pytest.mark.parametrize(
    ("path", "body", "key", "refused"),
    [
        (*RESOURCES[0], {"locationId": 999999}),
        (*RESOURCES[1], {"tariffGroupId": 999999}),
        (*RESOURCES[2], {"parentCircuitId": 999999}),
        (*RESOURCES[4], {"tariffs": [{"tariffId": 999999}]}),
        (*RESOURCES[6], {"userId": 999999}),
    ],
    ids=[IDS[i] for i in (0, 1, 2, 4, 6)],
)
async def test_a_refused_patch_gives_nothing_away(
    api: httpx.AsyncClient,
    evgate: Evgate,
    path: str,
    body: dict[str, object],
    key: str,
    refused: dict[str, object],
) -> None:
    """Second review of issue 20: a PATCH with a subOperatorId whose other change is refused
    (422) gave the resource away all the same; the owner changes only with the rest."""
    a_id, a = await _tenant(api, evgate, "A")
    async with a:
        r = await api.post(path, json=body)
        assert r.status_code == 201, r.text
        item = f"{path}/{r.json()[key]}"
        r = await api.patch(item, json={"subOperatorId": a_id, **refused})
        assert r.status_code == 422, r.text
        assert (await api.get(item)).json()["subOperatorId"] is None
        _is_problem(await a.get(item), 404)
