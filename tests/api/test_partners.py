"""Partners, their invites and members (issue 20): an invite is pending until the user with
its email accepts it (the user joins the partner) or it expires; a partner with members is not
deleted."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from ocpp.v16 import call

from evgate.app import Evgate
from evgate.storage.partners import PartnerInviteStore, partner_of_id_tag
from support import ocpp_charger, register_charger

ACME = {"name": "Acme", "registrationNumber": "FN 12345a", "vatNumber": "ATU12345678",
        "street": "Ring 1", "postCode": "1010", "city": "Wien", "country": "AT"}  # fmt: skip


async def _partner(api: httpx.AsyncClient) -> int:
    r = await api.post("/api/v1/partners", json=ACME)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _user(api: httpx.AsyncClient, email: str = "ada@example.com") -> int:
    r = await api.post("/api/v1/users", json={"email": email})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def test_partner_crud(api: httpx.AsyncClient) -> None:
    """The issue's example, then read, change, list, delete."""
    r = await api.post("/api/v1/partners", json={"name": "Acme"})
    assert r.status_code == 201 and r.json()["vatNumber"] is None
    partner = await _partner(api)
    r = await api.patch(f"/api/v1/partners/{partner}", json={"vatNumber": None, "city": "Graz"})
    assert (r.json()["vatNumber"], r.json()["city"], r.json()["name"]) == (None, "Graz", "Acme")
    assert len((await api.get("/api/v1/partners")).json()["data"]) == 2
    assert (await api.delete(f"/api/v1/partners/{partner}")).status_code == 204
    assert (await api.get(f"/api/v1/partners/{partner}")).status_code == 404


async def test_an_invite_accepted_by_its_user_makes_them_a_member(api: httpx.AsyncClient) -> None:
    """Pending → accepted by the user with the invite's email (any case), who joins the
    partner; another user's acceptance is 422, a second acceptance 409; a partner with members
    is not deleted until they leave."""
    partner = await _partner(api)
    ada, bob = await _user(api, "Ada@Example.com"), await _user(api, "bob@example.com")
    r = await api.post(f"/api/v1/partners/{partner}/invites", json={"email": "ada@example.com"})
    assert r.status_code == 201, r.text
    invite = r.json()
    assert (invite["status"], invite["userId"], invite["partnerId"]) == ("pending", None, partner)
    r = await api.post(f"/api/v1/partners/{partner}/invites", json={"email": "ADA@example.com"})
    assert r.status_code == 409  # one pending invite per email
    accept = f"/api/v1/partner-invites/{invite['id']}/accept"
    assert (await api.post(accept, json={"userId": bob})).status_code == 422
    r = await api.post(accept, json={"userId": ada})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["userId"]) == ("accepted", ada)
    assert (await api.get(f"/api/v1/users/{ada}")).json()["partnerId"] == partner
    assert (await api.post(accept, json={"userId": ada})).status_code == 409
    members = (await api.get(f"/api/v1/partners/{partner}/members")).json()["data"]
    assert [m["id"] for m in members] == [ada]
    assert (await api.delete(f"/api/v1/partners/{partner}")).status_code == 409
    assert (await api.delete(f"/api/v1/partners/{partner}/members/{bob}")).status_code == 404
    assert (await api.delete(f"/api/v1/partners/{partner}/members/{ada}")).status_code == 204
    assert (await api.get(f"/api/v1/users/{ada}")).json()["partnerId"] is None
    assert (await api.delete(f"/api/v1/partners/{partner}")).status_code == 204
    assert (await api.get(f"/api/v1/partner-invites/{invite['id']}")).status_code == 404


async def test_an_invite_expires_after_its_time(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """An invite past its time is refused (409) even before the expiry task ran; the task
    then marks it expired; a new invite to the same email can be made."""
    partner = await _partner(api)
    ada = await _user(api)
    r = await api.post(f"/api/v1/partners/{partner}/invites", json={"email": "ada@example.com"})
    invite = r.json()
    assert evgate.db is not None
    await evgate.db.execute(
        "UPDATE partner_invites SET expires_at = now() - interval '1 second' WHERE id = $1",
        invite["id"],
    )
    accept = f"/api/v1/partner-invites/{invite['id']}/accept"
    r = await api.post(accept, json={"userId": ada})
    assert r.status_code == 409 and "expired" in r.json()["detail"]
    assert await PartnerInviteStore(evgate.db).expire_due() == 1  # as the expiry task does
    assert (await api.get(f"/api/v1/partner-invites/{invite['id']}")).json()["status"] == "expired"
    r = await api.post(f"/api/v1/partners/{partner}/invites", json={"email": "ada@example.com"})
    assert r.status_code == 201


async def test_an_invites_time_is_the_setting(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """EVGATE_PARTNER_INVITE_DAYS (7 by default) after it is made."""
    partner = await _partner(api)
    invite = (
        await api.post(f"/api/v1/partners/{partner}/invites", json={"email": "a@b.io"})
    ).json()
    assert evgate.db is not None
    days = await evgate.db.fetchval(
        "SELECT extract(epoch FROM expires_at - created_at) / 86400 FROM partner_invites"
        " WHERE id = $1",
        invite["id"],
    )
    assert round(days) == evgate.settings.partner_invite_days == 7


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/api/v1/partners", {"name": ""}, 422),
        ("post", "/api/v1/partners", {"name": "A", "country": "Austria"}, 422),
        ("post", "/api/v1/partners", {"name": "A", "tenant": 1}, 422),
        ("get", "/api/v1/partners/999", None, 404),
        ("patch", "/api/v1/partners/999", {"name": "B"}, 404),
        ("delete", "/api/v1/partners/999", None, 404),
        ("post", "/api/v1/partners/999/invites", {"email": "a@b.io"}, 404),
        ("post", "/api/v1/partners/{partner}/invites", {"email": "nope"}, 422),
        ("get", "/api/v1/partners/999/members", None, 404),
        ("get", "/api/v1/partner-invites/999", None, 404),
        ("post", "/api/v1/partner-invites/999/accept", {"userId": 1}, 404),
        ("delete", "/api/v1/partner-invites/999", None, 404),
    ],
)
async def test_bad_requests_are_problems(
    api: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    partner = await _partner(api)
    r = await api.request(method.upper(), path.format(partner=partner), json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"


async def test_accepting_for_an_unknown_user_is_422(api: httpx.AsyncClient) -> None:
    partner = await _partner(api)
    r = await api.post(f"/api/v1/partners/{partner}/invites", json={"email": "a@b.io"})
    r = await api.post(f"/api/v1/partner-invites/{r.json()['id']}/accept", json={"userId": 999})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


async def test_the_partner_of_an_id_tag_for_billing(evgate: Evgate, api: httpx.AsyncClient) -> None:
    """partner_of_id_tag: the partner of the id tag's user once they accepted its invite."""
    partner = await _partner(api)
    ada = await _user(api)
    await api.post("/api/v1/id-tags", json={"idTag": "ADA-1", "userId": ada})
    assert evgate.db is not None
    async with evgate.db.pool.acquire() as conn:
        assert await partner_of_id_tag(conn, "ada-1") is None
        r = await api.post(f"/api/v1/partners/{partner}/invites", json={"email": "ada@example.com"})
        await api.post(f"/api/v1/partner-invites/{r.json()['id']}/accept", json={"userId": ada})
        assert await partner_of_id_tag(conn, "ada-1") == partner
        assert await partner_of_id_tag(conn, "UNKNOWN") is None


async def _charge(evgate: Evgate, url: str, charger_id: str, id_tag: str) -> int:
    """A transaction of ``id_tag`` by a real OCPP charger, started and stopped; its id."""
    async with ocpp_charger(url, charger_id) as cp:
        start = await cp.call(call.StartTransaction(
            connector_id=1, id_tag=id_tag, meter_start=0, timestamp=datetime.now(UTC).isoformat()
        ))  # fmt: skip
        tx = int(start.transaction_id)
        await cp.call(call.StopTransaction(
            meter_stop=1500, timestamp=datetime.now(UTC).isoformat(), transaction_id=tx,
            id_tag=id_tag,
        ))  # fmt: skip
    return tx


async def test_a_members_cdr_is_billed_to_the_partner(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """A real charger's transactions: the CDR of a partner member's id tag carries the
    partner's id (partnerId), a non-member's none; a member who left is billed to nobody from
    then on, and the CDR made before keeps its partner."""
    partner = await _partner(api)
    ada, bob = await _user(api), await _user(api, "bob@example.com")
    await api.post("/api/v1/id-tags", json={"idTag": "ADA-1", "userId": ada})
    await api.post("/api/v1/id-tags", json={"idTag": "BOB-1", "userId": bob})
    r = await api.post(f"/api/v1/partners/{partner}/invites", json={"email": "ada@example.com"})
    await api.post(f"/api/v1/partner-invites/{r.json()['id']}/accept", json={"userId": ada})
    secret = await register_charger(evgate, api, "CP-1")
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-1?auth={secret}"
    assert evgate.db is not None

    async def cdr_of(tx: int) -> dict[str, object]:
        assert evgate.db is not None
        cdr_id = await evgate.db.fetchval("SELECT id FROM cdrs WHERE transaction_id = $1", tx)
        r = await api.get(f"/api/v1/cdrs/{cdr_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    member = await cdr_of(await _charge(evgate, url, "CP-1", "ada-1"))  # case-insensitive
    other = await cdr_of(await _charge(evgate, url, "CP-1", "BOB-1"))
    assert (member["idTag"], member["partnerId"]) == ("ada-1", partner)
    assert (other["idTag"], other["partnerId"]) == ("BOB-1", None)
    await api.delete(f"/api/v1/partners/{partner}/members/{ada}")
    after = await cdr_of(await _charge(evgate, url, "CP-1", "ADA-1"))
    assert after["partnerId"] is None
    assert (await cdr_of(int(str(member["transactionId"]))))["partnerId"] == partner
