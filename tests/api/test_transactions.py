"""The sessions API: id-tags CRUD (kept in sync with the native authorizer through NOTIFY),
transactions with filters and pagination, connectors and meter values; errors as problems."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from evgate.app import Evgate
from evgate.auth.authorizer import AuthorizationQuestion
from evgate.storage.ops import transactions
from evgate.storage.ops.transactions import TransactionStart, TransactionStop
from support import until

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


async def decision(evgate: Evgate, id_tag: str, want: str) -> str:
    """The native authorizer's status for ``id_tag`` once it is ``want`` (NOTIFY is async)."""
    native = evgate.native
    assert native is not None
    seen: list[str] = []

    async def reached() -> bool:
        seen.append(
            (await native.authorize(AuthorizationQuestion(charger_id="CP-1", id_tag=id_tag))).status
        )
        return seen[-1] == want

    try:
        await until(reached, within=2)
    except AssertionError:
        pass  # the caller's assertion shows the status it saw
    return seen[-1]


async def test_id_tag_crud_and_the_authorizer_follows(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """Create, read (any case), patch, list, delete; each change reaches the authorizer."""
    r = await api.post(
        "/api/v1/id-tags",
        json={"idTag": "Tag-1", "parentIdTag": "FLEET", "expiryDate": "2099-01-01T00:00:00Z"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["idTag"] == "Tag-1" and r.json()["status"] == "Accepted"
    assert await decision(evgate, "TAG-1", "Accepted") == "Accepted"
    assert (await api.get("/api/v1/id-tags/tag-1")).json()["parentIdTag"] == "FLEET"
    r = await api.patch("/api/v1/id-tags/TAG-1", json={"status": "Blocked", "parentIdTag": None})
    assert r.json()["status"] == "Blocked" and r.json()["parentIdTag"] is None
    assert await decision(evgate, "tag-1", "Blocked") == "Blocked"
    assert [t["idTag"] for t in (await api.get("/api/v1/id-tags")).json()["data"]] == ["Tag-1"]
    assert (await api.delete("/api/v1/id-tags/tag-1")).status_code == 204
    assert await decision(evgate, "Tag-1", "Invalid") == "Invalid"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/api/v1/id-tags", {"idTag": "A" * 21}, 422),
        ("post", "/api/v1/id-tags", {"idTag": "A", "status": "ConcurrentTx"}, 422),
        ("post", "/api/v1/id-tags", {"idTag": "A", "expiryDate": "2030-01-01T00:00:00"}, 422),
        ("post", "/api/v1/id-tags", {"idTag": "A\x00"}, 422),  # no PostgreSQL text holds NUL
        ("get", "/api/v1/id-tags/NOPE", None, 404),
        ("patch", "/api/v1/id-tags/NOPE", {"status": "Blocked"}, 404),
        ("delete", "/api/v1/id-tags/NOPE", None, 404),
        ("get", "/api/v1/transactions/999", None, 404),
        ("get", "/api/v1/chargers/NOPE/connectors", None, 404),
        ("get", "/api/v1/chargers/NOPE/meter-values", None, 404),
    ],
)
async def test_bad_requests_are_problems(
    api: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    """Bad input and unknown ids: the status code and a problem+json body."""
    r = await api.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_id_tags_are_unique_case_insensitively(api: httpx.AsyncClient) -> None:
    """abc and ABC are one id-tag: the second create is 409."""
    assert (await api.post("/api/v1/id-tags", json={"idTag": "abc"})).status_code == 201
    assert (await api.post("/api/v1/id-tags", json={"idTag": "ABC"})).status_code == 409


async def test_transactions_filter_and_paginate_newest_first(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """Filters chargerId, idTag (any case), active, from/to; nextCursor walks the pages."""
    assert evgate.writer is not None
    ids = []
    for i, (charger, tag) in enumerate([("CP-1", "A"), ("CP-1", "B"), ("CP-2", "A")]):
        start = TransactionStart(
            charger_id=charger,
            connector_id=1,
            id_tag=tag,
            meter_start=0,
            started_at=T0 + timedelta(hours=i),
            id_tag_status="Accepted",
        )
        [stored] = await evgate.writer.submit([transactions.start(start)])
        ids.append(stored.transaction.transaction_id)
    stop = TransactionStop(
        transaction_id=ids[0], charger_id="CP-1", meter_stop=500, stopped_at=T0, stop_reason="Local"
    )
    await evgate.writer.submit([transactions.stop(stop)])

    async def listed(**params: object) -> list[int]:
        body = (await api.get("/api/v1/transactions", params=params)).json()
        return [t["id"] for t in body["data"]]

    assert await listed() == ids[::-1]
    assert await listed(chargerId="CP-1") == [ids[1], ids[0]]
    assert await listed(idTag="a") == [ids[2], ids[0]]
    assert await listed(active="true") == [ids[2], ids[1]]
    assert await listed(
        **{
            "from": (T0 + timedelta(minutes=30)).isoformat(),
            "to": (T0 + timedelta(hours=2)).isoformat(),
        }
    ) == [ids[1]]
    page = (await api.get("/api/v1/transactions", params={"limit": 2})).json()
    assert page["nextCursor"] == str(ids[1])
    rest = await listed(limit=2, after=page["nextCursor"])
    assert rest == [ids[0]]
    one = (await api.get(f"/api/v1/transactions/{ids[0]}")).json()
    assert (one["energyWh"], one["stopReason"], one["meterStop"]) == (500, "Local", 500)
