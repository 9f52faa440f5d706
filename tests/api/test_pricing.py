"""Locations, tariffs and tariff groups: the issue's requests as written, their defined
answers (409 deleting what is used, 422 for what cannot price), and their catalog events
written in the change's own transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from ocpp.v16 import call

from evgate.app import Evgate
from evgate.auth.authorizer import AuthorizationQuestion
from evgate.pricing import Driver
from support import ocpp_charger, register_charger, until

LOCATION = {
    "name": "Car park",
    "address": {"street": "Main 1", "city": "Utrecht", "postalCode": "3511", "country": "NL"},
    "geoposition": {"latitude": 52.09, "longitude": 5.12},
    "timezone": "Europe/Amsterdam",
}
TARIFF = {
    "name": "Standard",
    "currency": "EUR",
    "connectionFee": "1.00",
    "pricePerKwh": "0.30",
    "pricePerMinute": "0.05",
    "taxPercent": "21",
}


async def _post(api: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post(url, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _problem(r: httpx.Response, status: int, word: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert word in r.json()["detail"], r.json()["detail"]


async def _events(database_url: str, name: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT payload FROM outbox WHERE event = $1 ORDER BY id", name)
    finally:
        await conn.close()
    return [json.loads(r[0]) for r in rows]


async def test_the_issues_requests_work_as_written(api: httpx.AsyncClient) -> None:
    location = await _post(api, "/api/v1/locations", LOCATION)
    assert location["id"] >= 1 and location["address"]["country"] == "NL"
    assert location["chargerIds"] == [] and location["tariffGroupId"] is None
    tariff = await _post(api, "/api/v1/tariffs", TARIFF)
    assert tariff["pricePerKwh"] == "0.30" and tariff["taxPercent"] == "21"
    group = await _post(
        api, "/api/v1/tariff-groups", {"name": "Public", "tariffs": [{"tariffId": tariff["id"]}]}
    )
    assert group["currency"] == "EUR" and group["tariffs"][0]["tariffId"] == tariff["id"]
    r = await api.patch(f"/api/v1/locations/{location['id']}", json={"tariffGroupId": group["id"]})
    assert r.status_code == 200 and r.json()["tariffGroupId"] == group["id"], r.text
    r = await api.post("/api/v1/chargers", json={"id": "CP-1"})
    assert r.status_code == 201
    r = await api.patch("/api/v1/chargers/CP-1", json={"locationId": location["id"]})
    assert r.status_code == 200 and r.json()["locationId"] == location["id"], r.text
    shown = (await api.get(f"/api/v1/locations/{location['id']}")).json()
    assert shown["chargerIds"] == ["CP-1"] and shown["name"] == "Car park"
    assert (await api.get("/api/v1/tariffs")).json()["data"][0]["id"] == tariff["id"]


async def test_deleting_what_is_used_is_a_conflict(api: httpx.AsyncClient) -> None:
    location = await _post(api, "/api/v1/locations", LOCATION)
    tariff = await _post(api, "/api/v1/tariffs", TARIFF)
    group = await _post(
        api, "/api/v1/tariff-groups", {"name": "Public", "tariffs": [{"tariffId": tariff["id"]}]}
    )
    await api.patch(f"/api/v1/locations/{location['id']}", json={"tariffGroupId": group["id"]})
    await api.post("/api/v1/chargers", json={"id": "CP-1"})
    await api.patch("/api/v1/chargers/CP-1", json={"locationId": location["id"]})
    _problem(await api.delete(f"/api/v1/locations/{location['id']}"), 409, "chargers")
    _problem(await api.delete(f"/api/v1/tariffs/{tariff['id']}"), 409, "group")
    _problem(await api.delete(f"/api/v1/tariff-groups/{group['id']}"), 409, "location")
    # Once unused, each goes.
    await api.patch("/api/v1/chargers/CP-1", json={"locationId": None})
    assert (await api.delete(f"/api/v1/locations/{location['id']}")).status_code == 204
    assert (await api.delete(f"/api/v1/tariff-groups/{group['id']}")).status_code == 204
    assert (await api.delete(f"/api/v1/tariffs/{tariff['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/tariffs/{tariff['id']}")).status_code == 404


async def test_what_cannot_price_is_unprocessable(api: httpx.AsyncClient) -> None:
    bad_tariffs = [
        ({**TARIFF, "currency": "EUX"}, "ISO 4217"),
        ({**TARIFF, "pricePerKwh": "-0.30"}, "pricePerKwh"),
        ({**TARIFF, "taxPercent": "121"}, "taxPercent"),
        ({**TARIFF, "minPrice": "5", "maxPrice": "4"}, "minPrice"),
    ]
    for body, word in bad_tariffs:
        _problem(await api.post("/api/v1/tariffs", json=body), 422, word)
    eur = await _post(api, "/api/v1/tariffs", TARIFF)
    usd = await _post(api, "/api/v1/tariffs", {**TARIFF, "currency": "USD"})
    two = {"name": "Mixed", "tariffs": [{"tariffId": eur["id"]}, {"tariffId": usd["id"]}]}
    _problem(await api.post("/api/v1/tariff-groups", json=two), 422, "one currency")
    _problem(
        await api.post("/api/v1/tariff-groups", json={"name": "x", "tariffs": [{"tariffId": 999}]}),
        422,
        "999",
    )
    group = await _post(
        api, "/api/v1/tariff-groups", {"name": "EUR", "tariffs": [{"tariffId": eur["id"]}]}
    )
    _problem(await api.patch(f"/api/v1/tariff-groups/{group['id']}", json=two), 422, "currency")
    # A tariff moving to another currency than its group's other tariffs: 422 too.
    eur2 = await _post(api, "/api/v1/tariffs", TARIFF)
    r = await api.patch(
        f"/api/v1/tariff-groups/{group['id']}",
        json={"tariffs": [{"tariffId": eur["id"]}, {"tariffId": eur2["id"]}]},
    )
    assert r.status_code == 200, r.text
    _problem(
        await api.patch(f"/api/v1/tariffs/{eur2['id']}", json={"currency": "USD"}),
        422,
        "another currency",
    )
    for body, word in [
        ({**LOCATION, "timezone": "Mars/Olympus"}, "IANA"),
        ({**LOCATION, "address": {**LOCATION["address"], "country": "XX"}}, "3166"),  # type: ignore[dict-item]
    ]:
        _problem(await api.post("/api/v1/locations", json=body), 422, word)
    r = await api.post(
        "/api/v1/locations", json={**LOCATION, "geoposition": {"latitude": 91, "longitude": 0}}
    )
    assert r.status_code == 422
    location = await _post(api, "/api/v1/locations", LOCATION)
    _problem(
        await api.patch(f"/api/v1/locations/{location['id']}", json={"tariffGroupId": 12345}),
        422,
        "no tariff group",
    )


async def test_changes_emit_their_catalog_events(api: httpx.AsyncClient, database_url: str) -> None:
    location = await _post(api, "/api/v1/locations", LOCATION)
    await api.patch(f"/api/v1/locations/{location['id']}", json={"name": "Garage"})
    await api.post("/api/v1/chargers", json={"id": "CP-1"})
    await api.patch("/api/v1/chargers/CP-1", json={"locationId": location["id"]})
    await api.patch("/api/v1/chargers/CP-1", json={"description": "no move: no event"})
    await api.patch("/api/v1/chargers/CP-1", json={"locationId": None})
    tariff = await _post(api, "/api/v1/tariffs", TARIFF)
    await api.patch(f"/api/v1/tariffs/{tariff['id']}", json={"pricePerKwh": "0.35"})
    await api.delete(f"/api/v1/tariffs/{tariff['id']}")
    await api.delete(f"/api/v1/locations/{location['id']}")
    locations = await _events(database_url, "LocationChangedNotification")
    actions = ["created", "updated", "updated", "updated", "deleted"]
    assert [e["action"] for e in locations] == actions
    # The charger moving in and out changes the location's charge points.
    assert [len(e["location"]["public_charge_points_ids"]) for e in locations] == [0, 0, 1, 0, 0]
    first = locations[0]["location"]
    assert first["name"] == {"en": "Car park"} and first["country"] == "NL"
    assert first["post_code"] == "3511" and first["timezone"] == "Europe/Amsterdam"
    assert first["geoposition"] == {"latitude": 52.09, "longitude": 5.12}
    assert locations[1]["location"]["name"] == {"en": "Garage"}
    tariffs = await _events(database_url, "TariffChangedNotification")
    assert [e["action"] for e in tariffs] == ["created", "updated", "deleted"]
    pricing = tariffs[0]["tariff"]["pricing"]
    assert pricing == {
        # Amounts in events are JSON numbers, as the catalog types them (their exact digits:
        # tests/events/test_priced_transaction_end_to_end.py).
        "connectionFee": 1.0,
        "pricePerKwh": 0.3,
        "pricePeriodInMinutes": 1,
        "pricePerPeriod": 0.05,
    }
    assert tariffs[1]["tariff"]["pricing"]["pricePerKwh"] == 0.35
    assert tariffs[0]["tariff"]["type"] == "duration+energy"


async def test_the_chargers_own_group_wins_and_restrictions_choose(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """What StartTransaction snapshots (the in-memory directory, current once the API has
    answered): the charger's own tariff group over its location's, the first entry whose
    id-tag groups match, none for a charger without either."""
    assert evgate.pricing is not None
    location = await _post(api, "/api/v1/locations", LOCATION)
    public = await _post(api, "/api/v1/tariffs", TARIFF)
    fleet = await _post(api, "/api/v1/tariffs", {**TARIFF, "name": "Fleet"})
    own = await _post(api, "/api/v1/tariffs", {**TARIFF, "name": "Own"})
    entries = [{"tariffId": fleet["id"], "idTagGroups": ["FLEET"]}, {"tariffId": public["id"]}]
    group = await _post(api, "/api/v1/tariff-groups", {"name": "Public", "tariffs": entries})
    await api.patch(f"/api/v1/locations/{location['id']}", json={"tariffGroupId": group["id"]})
    for charger in ("CP-1", "CP-2", "CP-3"):
        await api.post("/api/v1/chargers", json={"id": charger})
    for charger in ("CP-1", "CP-2"):
        await api.patch(f"/api/v1/chargers/{charger}", json={"locationId": location["id"]})
    now = datetime.now(UTC)
    snapshot = evgate.pricing.snapshot_for("CP-1", Driver(), now)
    assert snapshot is not None and snapshot.tariff_id == public["id"]
    assert snapshot.timezone == "Europe/Amsterdam"
    snapshot = evgate.pricing.snapshot_for("CP-1", Driver(parent_id_tag="fleet"), now)
    assert snapshot is not None and snapshot.tariff_id == fleet["id"]
    mine = await _post(api, "/api/v1/tariff-groups",
                       {"name": "Own", "tariffs": [{"tariffId": own["id"]}]})  # fmt: skip
    r = await api.patch("/api/v1/chargers/CP-2", json={"tariffGroupId": mine["id"]})
    assert r.status_code == 200, r.text
    snapshot = evgate.pricing.snapshot_for("CP-2", Driver(parent_id_tag="FLEET"), now)
    assert snapshot is not None and snapshot.tariff_id == own["id"]
    assert evgate.pricing.snapshot_for("CP-3", Driver(), now) is None
    _problem(await api.patch("/api/v1/chargers/CP-3", json={"tariffGroupId": 999}), 422,
             "no tariff group 999")  # fmt: skip


async def test_who_charges_counts_only_for_the_groups_owner(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """Issue 20's review, through the gateway with real OCPP chargers: a sub-operator's id-tag
    whose parentIdTag names the operator's STAFF group (free text) is priced at the operator's
    charger with the operator's unrestricted tariff, not the STAFF one, which the operator's
    own STAFF id-tag still gets; the sub-operator's own group restricted to its STAFF prices
    its own id-tag with it, and the operator's STAFF id-tag with its unrestricted tariff. An
    id-tag the operator gives to the sub-operator is priced as the sub-operator's from then on."""
    r = await api.post("/api/v1/sub-operators", json={"name": "Reseller"})
    assert r.status_code == 201, r.text
    body = {"name": "reseller", "scope": "admin", "subOperatorId": r.json()["id"]}
    r = await api.post("/api/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    free = {**TARIFF, "name": "Staff", "connectionFee": "0", "pricePerKwh": "0",
            "pricePerMinute": "0"}  # fmt: skip
    secrets: dict[str, str] = {}
    wanted: dict[tuple[str, str], int] = {}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{evgate.api_port}",
        headers={"Authorization": f"Bearer {r.json()['token']}"},
        timeout=10,
    ) as tenant:
        for client, charger, tag in ((api, "CP-O", "O-TAG"), (tenant, "CP-T", "A-TAG")):
            staff = await _post(client, "/api/v1/tariffs", free)
            public = await _post(client, "/api/v1/tariffs", TARIFF)
            entries = [{"tariffId": staff["id"], "idTagGroups": ["STAFF"]},
                       {"tariffId": public["id"]}]  # fmt: skip
            group = await _post(client, "/api/v1/tariff-groups",
                                {"name": "Site", "tariffs": entries})  # fmt: skip
            secrets[charger] = await register_charger(evgate, client, charger)
            r = await client.patch(f"/api/v1/chargers/{charger}",
                                   json={"tariffGroupId": group["id"]})  # fmt: skip
            assert r.status_code == 200, r.text
            await _post(client, "/api/v1/id-tags", {"idTag": tag, "parentIdTag": "STAFF"})
            other = "A-TAG" if tag == "O-TAG" else "O-TAG"
            wanted |= {(charger, tag): staff["id"], (charger, other): public["id"]}
        # The operator's STAFF id-tag, given to the sub-operator: its owner follows in every
        # process's id-tag list (the PATCH notifies), so it is priced as the tenant's.
        await _post(api, "/api/v1/id-tags", {"idTag": "G-TAG", "parentIdTag": "STAFF"})
        r = await api.patch("/api/v1/id-tags/G-TAG", json={"subOperatorId": body["subOperatorId"]})
        assert r.status_code == 200, r.text
        native = evgate.native
        assert native is not None
        question = AuthorizationQuestion(charger_id="CP-O", id_tag="G-TAG")

        async def given() -> bool:  # the PATCH's NOTIFY arrived
            return (await native.authorize(question)).sub_operator_id == body["subOperatorId"]

        await until(given)
        wanted |= {("CP-O", "G-TAG"): wanted["CP-O", "A-TAG"],
                   ("CP-T", "G-TAG"): wanted["CP-T", "A-TAG"]}  # fmt: skip
    got: dict[tuple[str, str], int] = {}
    for charger, secret in secrets.items():
        url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{charger}?auth={secret}"
        async with ocpp_charger(url, charger) as cp:
            for tag in ("O-TAG", "A-TAG", "G-TAG"):

                async def accepted(tag: str = tag) -> bool:  # the id-tag's NOTIFY arrived
                    answer = await cp.call(call.Authorize(id_tag=tag))
                    return bool(answer.id_tag_info["status"] == "Accepted")

                await until(accepted)
                start = await cp.call(call.StartTransaction(
                    connector_id=1, id_tag=tag, meter_start=0,
                    timestamp=datetime.now(UTC).isoformat(),
                ))  # fmt: skip
                assert start.id_tag_info["parent_id_tag"] == "STAFF"
                r = await api.get(f"/api/v1/transactions/{start.transaction_id}")
                assert r.status_code == 200, r.text
                got[charger, tag] = r.json()["tariff"]["tariffId"]
    assert got == wanted
