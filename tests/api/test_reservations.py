"""/api/v1/reservations: evgate numbers reservations, sends ReserveNow and CancelReservation to
a real OCPP charger and records what it answered; the command API's own reservationIds never
meet evgate's; bad input is a problem document."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from evgate.app import Evgate
from evgate.storage.reservations import ReservationStore
from support import TestCharger, ocpp_charger, register_charger, until


class ReservingCharger(TestCharger):
    """Answers ReserveNow with ``reserve_answer`` and CancelReservation with ``cancel_answer``,
    keeping what it was sent."""

    __test__ = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.reserve_answer = "Accepted"
        self.cancel_answer = "Accepted"
        self.received: list[tuple[str, dict[str, Any]]] = []

    @on(Action.reserve_now)
    def on_reserve_now(self, **payload: Any) -> Any:
        self.received.append(("ReserveNow", payload))
        return call_result.ReserveNow(status=self.reserve_answer)

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, **payload: Any) -> Any:
        self.received.append(("CancelReservation", payload))
        return call_result.CancelReservation(status=self.cancel_answer)


@contextlib.asynccontextmanager
async def _connected(
    evgate: Evgate, api: httpx.AsyncClient, charger_id: str = "CP-1"
) -> AsyncIterator[ReservingCharger]:
    secret = await register_charger(evgate, api, charger_id)
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{charger_id}?auth={secret}"
    async with ocpp_charger(url, charger_id, cls=ReservingCharger) as charger:
        await charger.boot()
        gateway = evgate.gateway
        assert gateway is not None
        await until(lambda: gateway.connection(charger_id) is not None)
        yield charger


def _later(seconds: float = 3600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def _body(charger_id: str = "CP-1") -> dict[str, Any]:
    return {"chargerId": charger_id, "connectorId": 1, "idTag": "TAG-1", "expiryDate": _later()}


async def test_reserve_use_and_list(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """POST numbers the reservation and sends it in ReserveNow: 201 active; a StartTransaction
    naming it makes it used, with its transaction; the list filters by charger and status."""
    async with _connected(evgate, api) as cp:
        body = {**_body(), "parentIdTag": "FLEET"}
        r = await api.post("/api/v1/reservations", json=body)
        assert r.status_code == 201, r.text
        made = r.json()
        assert (made["status"], made["chargerId"], made["refusal"]) == ("active", "CP-1", None)
        [(action, sent)] = cp.received
        assert action == "ReserveNow"
        assert (sent["reservation_id"], sent["id_tag"], sent["parent_id_tag"]) == (
            made["id"],
            "TAG-1",
            "FLEET",
        )
        second = (await api.post("/api/v1/reservations", json=_body())).json()
        assert second["id"] > made["id"]
        start = await cp.call(
            call.StartTransaction(
                connector_id=1,
                id_tag="TAG-1",
                meter_start=0,
                timestamp=datetime.now(UTC).isoformat(),
                reservation_id=made["id"],
            )
        )
    used = (await api.get(f"/api/v1/reservations/{made['id']}")).json()
    assert (used["status"], used["transactionId"]) == ("used", start.transaction_id)
    listed = (await api.get("/api/v1/reservations", params={"chargerId": "CP-1"})).json()
    assert [x["id"] for x in listed["data"]] == [second["id"], made["id"]]
    active = (await api.get("/api/v1/reservations", params={"status": "active"})).json()
    assert [x["id"] for x in active["data"]] == [second["id"]]
    page = (await api.get("/api/v1/reservations", params={"limit": 1})).json()
    assert [x["id"] for x in page["data"]] == [second["id"]]
    rest = (await api.get("/api/v1/reservations", params={"after": page["nextCursor"]})).json()
    assert [x["id"] for x in rest["data"]] == [made["id"]]
    assert (await api.get("/api/v1/reservations", params={"chargerId": "CP-9"})).json() == {
        "data": [],
        "nextCursor": None,
    }


@pytest.mark.parametrize("answer", ["Faulted", "Occupied", "Rejected", "Unavailable"])
async def test_a_refusal_is_recorded(evgate: Evgate, api: httpx.AsyncClient, answer: str) -> None:
    """The charger's refusal: 201 with status refused and its status in refusal, kept."""
    async with _connected(evgate, api) as cp:
        cp.reserve_answer = answer
        r = await api.post("/api/v1/reservations", json=_body())
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["refusal"]) == ("refused", answer)
    got = (await api.get(f"/api/v1/reservations/{r.json()['id']}")).json()
    assert (got["status"], got["refusal"], got["endedAt"] is not None) == ("refused", answer, True)


async def test_cancel_and_expiry(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """DELETE sends CancelReservation with its id: 200 canceled; again: 409. A rejected
    cancellation is 409 and leaves it active. A reservation past its expiry date is expired."""
    async with _connected(evgate, api) as cp:
        made = (await api.post("/api/v1/reservations", json=_body())).json()
        r = await api.delete(f"/api/v1/reservations/{made['id']}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "canceled"
        assert cp.received[-1] == ("CancelReservation", {"reservation_id": made["id"]})
        again = await api.delete(f"/api/v1/reservations/{made['id']}")
        assert again.status_code == 409 and "canceled" in again.json()["detail"]

        kept = (await api.post("/api/v1/reservations", json=_body())).json()
        cp.cancel_answer = "Rejected"
        r = await api.delete(f"/api/v1/reservations/{kept['id']}")
        assert r.status_code == 409 and r.json()["chargerStatus"] == "Rejected"
        assert (await api.get(f"/api/v1/reservations/{kept['id']}")).json()["status"] == "active"

        body = {**_body(), "expiryDate": _later(1)}
        brief = (await api.post("/api/v1/reservations", json=body)).json()
    assert evgate.db is not None
    store = ReservationStore(evgate.db)

    async def expired() -> bool:
        await store.expire_due()  # as the expiry task does, every 10 s
        return (await store.get(brief["id"])).status == "expired"

    await until(expired, within=10)
    got = (await api.get(f"/api/v1/reservations/{brief['id']}")).json()
    assert got["status"] == "expired"


async def test_failed_command_is_recorded(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """A charger that is not connected: 409 with reservationId; that reservation is failed,
    with the error."""
    await api.post("/api/v1/chargers", json={"id": "CP-2"})
    r = await api.post("/api/v1/reservations", json=_body("CP-2"))
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    got = (await api.get(f"/api/v1/reservations/{r.json()['reservationId']}")).json()
    assert got["status"] == "failed" and "ChargerNotConnected" in got["error"]


async def test_command_api_ids_never_meet_evgates(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """A ReserveNow of the command API keeps the operator's id, but evgate's numbering moves
    past it; another charger's reservation's id is refused (422) before anything is sent; the
    charger's own id may be repeated (OCPP: it replaces that reservation)."""
    async with _connected(evgate, api, "CP-1") as one, _connected(evgate, api, "CP-2") as two:
        payload = {"connectorId": 1, "idTag": "TAG-1", "expiryDate": _later()}
        r = await api.post(
            "/api/v1/chargers/CP-1/commands/ReserveNow", json={**payload, "reservationId": 1000}
        )
        assert r.status_code == 200 and r.json() == {"status": "Accepted"}
        assert (await api.get("/api/v1/reservations/1000")).json()["status"] == "active"
        ours = (await api.post("/api/v1/reservations", json=_body("CP-1"))).json()
        assert ours["id"] > 1000
        r = await api.post(
            "/api/v1/chargers/CP-2/commands/ReserveNow",
            json={**payload, "reservationId": ours["id"]},
        )
        assert r.status_code == 422 and "charger CP-1" in r.json()["detail"]
        assert [a for a, _ in two.received] == []
        r = await api.post(
            "/api/v1/chargers/CP-1/commands/ReserveNow", json={**payload, "reservationId": 1000}
        )
        assert r.status_code == 200
        assert [a for a, _ in one.received] == ["ReserveNow"] * 3
        r = await api.post(
            "/api/v1/chargers/CP-1/commands/CancelReservation", json={"reservationId": 1000}
        )
        assert r.status_code == 200
    assert (await api.get("/api/v1/reservations/1000")).json()["status"] == "canceled"
    assert (await api.get(f"/api/v1/reservations/{ours['id']}")).json()["status"] == "active"


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"chargerId": None}, 422, "chargerId"),
        ({"chargerId": "bad id"}, 422, "chargerId"),
        ({"connectorId": -1}, 422, "connectorId"),
        ({"connectorId": 2**31}, 422, "connectorId"),
        ({"idTag": "T" * 21}, 422, "idTag"),
        ({"idTag": ""}, 422, "idTag"),
        ({"parentIdTag": "P" * 21}, 422, "parentIdTag"),
        ({"expiryDate": "2030-01-01T00:00:00"}, 422, "time zone"),
        ({"expiryDate": "2000-01-01T00:00:00Z"}, 422, "not in the future"),
        ({"expiryDate": 5}, 422, "expiryDate"),
        ({"extra": 1}, 422, "extra"),
        ({"chargerId": "NOPE"}, 404, "no charger"),
    ],
)
async def test_bad_reservations_are_problems(
    api: httpx.AsyncClient, change: dict[str, Any], status: int, says: str
) -> None:
    """Each bad body is a problem document naming what is wrong; no reservation is made."""
    await api.post("/api/v1/chargers", json={"id": "CP-1"})
    body = {k: v for k, v in {**_body(), **change}.items() if v is not None}
    r = await api.post("/api/v1/reservations", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert says in r.json()["detail"]
    assert (await api.get("/api/v1/reservations")).json()["data"] == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/reservations/999", 404),
        ("GET", "/api/v1/reservations/0", 404),
        ("GET", "/api/v1/reservations/2147483648", 404),
        ("DELETE", "/api/v1/reservations/999", 404),
        ("GET", "/api/v1/reservations?status=Reserved", 422),
        ("GET", "/api/v1/reservations?status=null", 422),
        ("GET", "/api/v1/reservations?status=active&status=used", 422),
        ("GET", "/api/v1/reservations?after=0", 422),
        ("GET", "/api/v1/reservations?limit=1001", 422),
    ],
)
async def test_bad_reads_are_problems(
    api: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    """Unknown or impossible ids: 404; a status or cursor outside the documented ones: 422."""
    r = await api.request(method, path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"


async def test_a_request_never_answered_fails_at_its_expiry(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """A reservation still requested at its expiry date (the process stopped before the
    charger's answer was recorded) ends failed, saying so; no reservation.changed."""
    assert evgate.db is not None
    store = ReservationStore(evgate.db)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    made = await store.allocate("CP-1", 1, "TAG-1", soon)

    async def ended() -> bool:
        await store.expire_due()
        return (await store.get(made.id)).status != "requested"

    await until(ended, within=10)
    got = (await api.get(f"/api/v1/reservations/{made.id}")).json()
    assert got["status"] == "failed" and "no answer" in got["error"]
    events = await evgate.db.fetchval(
        "SELECT count(*) FROM outbox WHERE event = 'reservation.changed'"
    )
    assert events == 0


async def test_the_openapi_document_shows_issue_21s_calls(api: httpx.AsyncClient) -> None:
    """The reservations, the operator's transaction stop and the PUT of a secret are in the
    OpenAPI document, with their problem answers."""
    paths = (await api.get("/api/openapi.json")).json()["paths"]
    expected = {
        "/api/v1/reservations": {"get", "post"},
        "/api/v1/reservations/{reservation_id}": {"get", "delete"},
        "/api/v1/transactions/{transaction_id}/stop": {"post"},
        "/api/v1/chargers/{charger_id}/secret": {"post", "put"},
    }
    for path, methods in expected.items():
        assert methods <= paths[path].keys(), path
    assert {"404", "409", "422"} <= paths["/api/v1/reservations"]["post"]["responses"].keys()
    assert "409" in paths["/api/v1/transactions/{transaction_id}/stop"]["post"]["responses"]
