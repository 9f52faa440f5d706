"""The circuits API (load management, issue 18): create / read / change / delete, the tree's
rules, a charger's membership through PATCH /api/v1/chargers/{id}, circuit.changed."""

from __future__ import annotations

import json

import asyncpg
import httpx


async def _circuit(api: httpx.AsyncClient, **body: object) -> dict:
    r = await api.post("/api/v1/circuits", json={"name": "Depot", "maxCurrent": 32, **body})
    assert r.status_code == 201, r.text
    return r.json()


async def test_the_issues_requests_work_as_written(api: httpx.AsyncClient) -> None:
    """POST a circuit (201 with its id), PATCH a charger into it, GET shows the charger, empty
    allocations and consumption (no transaction yet)."""
    r = await api.post(
        "/api/v1/circuits",
        json={"name": "Depot", "maxCurrent": 32, "phases": 3, "minChargePointCurrent": 6},
    )
    assert r.status_code == 201, r.text
    circuit = r.json()
    assert circuit["maxCurrent"] == 32 and circuit["phases"] == 3
    assert circuit["offlineReservedCurrent"] == 0 and circuit["parentCircuitId"] is None
    assert (await api.post("/api/v1/chargers", json={"id": "CP-1"})).status_code == 201
    r = await api.patch(
        "/api/v1/chargers/CP-1", json={"circuitId": circuit["id"], "maxCurrent": 32}
    )
    assert r.status_code == 200, r.text
    got = (await api.get(f"/api/v1/circuits/{circuit['id']}")).json()
    assert got["chargers"] == [
        {"chargerId": "CP-1", "circuitId": circuit["id"], "maxCurrent": 32, "phaseRotation": "RST"}
    ]
    assert got["allocations"] == [] and got["consumption"] == []


async def test_membership_changes_and_leaves(api: httpx.AsyncClient) -> None:
    """Joining without maxCurrent takes the circuit's; phaseRotation alone changes only it;
    circuitId null leaves; a change for a charger in no circuit is 422."""
    circuit = await _circuit(api, maxCurrent=63)
    await api.post("/api/v1/chargers", json={"id": "CP-1"})
    assert (await api.patch("/api/v1/chargers/CP-1", json={"maxCurrent": 16})).status_code == 422
    await api.patch("/api/v1/chargers/CP-1", json={"circuitId": circuit["id"]})
    await api.patch("/api/v1/chargers/CP-1", json={"phaseRotation": "S"})
    [member] = (await api.get(f"/api/v1/circuits/{circuit['id']}")).json()["chargers"]
    assert member["maxCurrent"] == 63 and member["phaseRotation"] == "S"
    r = await api.patch("/api/v1/chargers/CP-1", json={"phaseRotation": "XYZ"})
    assert r.status_code == 422
    await api.patch("/api/v1/chargers/CP-1", json={"circuitId": None})
    assert (await api.get(f"/api/v1/circuits/{circuit['id']}")).json()["chargers"] == []
    r = await api.patch("/api/v1/chargers/CP-1", json={"circuitId": 999})
    assert r.status_code == 422


async def test_delete_is_refused_while_it_has_chargers_or_children(
    api: httpx.AsyncClient,
) -> None:
    """409 with a sub-circuit, 409 with a charger, 204 when empty, then 404."""
    feeder = await _circuit(api, name="Feeder", maxCurrent=63)
    child = await _circuit(api, name="Row A", parentCircuitId=feeder["id"])
    r = await api.delete(f"/api/v1/circuits/{feeder['id']}")
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    await api.post("/api/v1/chargers", json={"id": "CP-1"})
    await api.patch("/api/v1/chargers/CP-1", json={"circuitId": child["id"]})
    assert (await api.delete(f"/api/v1/circuits/{child['id']}")).status_code == 409
    await api.patch("/api/v1/chargers/CP-1", json={"circuitId": None})
    assert (await api.delete(f"/api/v1/circuits/{child['id']}")).status_code == 204
    assert (await api.delete(f"/api/v1/circuits/{feeder['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/circuits/{feeder['id']}")).status_code == 404


async def test_the_tree_stays_a_tree(api: httpx.AsyncClient) -> None:
    """A parent below the circuit (a cycle), a missing parent, a three-phase circuit under a
    one-phase one, a reserve above the breaker: each 422, nothing changed."""
    a = await _circuit(api, name="A", maxCurrent=100)
    b = await _circuit(api, name="B", parentCircuitId=a["id"])
    r = await api.patch(f"/api/v1/circuits/{a['id']}", json={"parentCircuitId": b["id"]})
    assert r.status_code == 422, r.text
    assert (await api.get(f"/api/v1/circuits/{a['id']}")).json()["parentCircuitId"] is None
    orphan = {"name": "x", "maxCurrent": 1, "parentCircuitId": 999}
    assert (await api.post("/api/v1/circuits", json=orphan)).status_code == 422
    single = await _circuit(api, name="1ph", phases=1)
    r = await api.post(
        "/api/v1/circuits", json={"name": "3ph", "maxCurrent": 16, "parentCircuitId": single["id"]}
    )
    assert r.status_code == 422
    r = await api.patch(f"/api/v1/circuits/{a['id']}", json={"phases": 1})
    assert r.status_code == 422  # its child B is three-phase
    r = await api.patch(f"/api/v1/circuits/{a['id']}", json={"offlineReservedCurrent": 101})
    assert r.status_code == 422
    assert (
        await api.post("/api/v1/circuits", json={"name": "x", "maxCurrent": 0})
    ).status_code == 422


async def test_circuit_changed_is_in_the_outbox_of_each_change(
    api: httpx.AsyncClient, database_url: str
) -> None:
    """created, updated, deleted — each with the catalog's fields, in the change's
    transaction; a refused change emits nothing."""
    circuit = await _circuit(api)
    await api.patch(f"/api/v1/circuits/{circuit['id']}", json={"maxCurrent": 40})
    await api.patch(f"/api/v1/circuits/{circuit['id']}", json={"parentCircuitId": circuit["id"]})
    await api.delete(f"/api/v1/circuits/{circuit['id']}")
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT payload FROM outbox WHERE event = 'circuit.changed' ORDER BY id"
        )
    finally:
        await conn.close()
    payloads = [json.loads(r["payload"]) for r in rows]
    assert [p["action"] for p in payloads] == ["created", "updated", "deleted"]
    assert all(p["circuitId"] == circuit["id"] for p in payloads)
    assert set(payloads[0]) == {"notification", "circuitId", "action", "lastUpdatedAt"}
