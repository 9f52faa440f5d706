"""Sub-operators' tokens see and act only on their tenant's resources (issue 20).

Tested as an attacker would: a tenant's token is turned on the other tenant's ids.
"""

from __future__ import annotations

import httpx

from evgate.app import Evgate
from evgate.credentials import digest


async def _tenant_client(evgate: Evgate, name: str) -> tuple[int, httpx.AsyncClient]:
    assert evgate.db is not None
    sub_operator = await evgate.db.fetchval(
        "INSERT INTO sub_operators (name) VALUES ($1) RETURNING id", name
    )
    token = f"token-of-{name}"
    await evgate.db.execute(
        "INSERT INTO api_tokens (name, scope, digest, sub_operator_id)"
        " VALUES ($1, 'admin', $2, $3)",
        name,
        digest(token),
        sub_operator,
    )
    client = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{evgate.api_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    return sub_operator, client


async def test_a_tenant_lists_and_reads_only_its_chargers(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    _, a = await _tenant_client(evgate, "A")
    _, b = await _tenant_client(evgate, "B")
    async with a, b:
        assert (await a.post("/api/v1/chargers", json={"id": "CP-A"})).status_code == 201
        assert (await b.post("/api/v1/chargers", json={"id": "CP-B"})).status_code == 201
        assert (await api.post("/api/v1/chargers", json={"id": "CP-OP"})).status_code == 201
        ids = {c["id"] for c in (await a.get("/api/v1/chargers")).json()["data"]}
        assert ids == {"CP-A"}
        assert (await a.get("/api/v1/chargers/CP-B")).status_code == 404
        assert (await a.get("/api/v1/chargers/CP-A")).status_code == 200
        assert (await b.delete("/api/v1/chargers/CP-A")).status_code == 404
        all_ids = {c["id"] for c in (await api.get("/api/v1/chargers")).json()["data"]}
        assert all_ids == {"CP-A", "CP-B", "CP-OP"}
