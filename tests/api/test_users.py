"""Users, user groups and balances (issue 20): the API, the native authorizer's refusals from
memory (a blocked user, a prepaid user at zero) with a real OCPP client, balances serialised per
user under parallel requests, and the stop's charge booked in the stop's transaction."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from ocpp.v16 import call

from evgate.app import Evgate
from evgate.storage.balances import book_transaction_charge
from evgate.storage.ops import balances, outbox
from evgate.storage.ops.balances import TransactionCharge
from support import ocpp_charger, register_charger

from .test_transactions import decision


async def _user(api: httpx.AsyncClient, **body: object) -> dict[str, object]:
    r = await api.post("/api/v1/users", json={"email": "ada@example.com", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_user_crud_paging_and_a_case_insensitive_email(api: httpx.AsyncClient) -> None:
    """The issue's example creates a user with a zero balance in its currency; the email is
    unique whatever its case; patch, keyset pages and delete work."""
    r = await api.post(
        "/api/v1/users",
        json={"email": "ada@example.com", "firstName": "Ada", "lastName": "L",
              "prepaid": True, "currency": "EUR"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    ada = r.json()
    assert ada["status"] == "active" and ada["balance"] == {"amount": "0.00", "currency": "EUR"}
    assert ada["userGroupIds"] == [] and ada["prepaid"] is True
    r = await api.post("/api/v1/users", json={"email": "ADA@Example.com"})
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    ids = [ada["id"]] + [(await _user(api, email=f"u{i}@example.com"))["id"] for i in range(4)]
    page = (await api.get("/api/v1/users", params={"limit": 3})).json()
    assert [u["id"] for u in page["data"]] == ids[:3] and page["nextCursor"] == str(ids[2])
    page = (await api.get("/api/v1/users", params={"after": ids[2], "limit": 3})).json()
    assert [u["id"] for u in page["data"]] == ids[3:] and page["nextCursor"] is None
    r = await api.patch(
        f"/api/v1/users/{ada['id']}",
        json={"status": "blocked", "phone": "+43 1 234", "language": "en-GB", "lastName": None},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["phone"], r.json()["lastName"]) == (
        "blocked",
        "+43 1 234",
        None,
    )
    assert r.json()["updatedAt"] > ada["updatedAt"]
    assert (await api.get(f"/api/v1/users/{ada['id']}")).json()["language"] == "en-GB"
    assert (await api.delete(f"/api/v1/users/{ada['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/users/{ada['id']}")).status_code == 404


async def test_groups_and_id_tags_reference_what_exists(api: httpx.AsyncClient) -> None:
    """A user's groups and an id tag's user must exist (422); a group with members and a user
    with id tags are not deleted (409); the id tag shows its userId."""
    group = (await api.post("/api/v1/user-groups", json={"name": "Fleet"})).json()
    assert group["allowEmptyBalance"] is False
    r = await api.post(
        "/api/v1/users", json={"email": "a@b.io", "userGroupIds": [group["id"], 999]}
    )
    assert r.status_code == 422, r.text
    user = await _user(api, email="a@b.io", userGroupIds=[group["id"]])
    assert user["userGroupIds"] == [group["id"]]
    assert (await api.delete(f"/api/v1/user-groups/{group['id']}")).status_code == 409
    r = await api.post("/api/v1/id-tags", json={"idTag": "T-1", "userId": 999})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = await api.post("/api/v1/id-tags", json={"idTag": "T-1", "userId": user["id"]})
    assert r.status_code == 201 and r.json()["userId"] == user["id"]
    assert (await api.patch("/api/v1/id-tags/T-1", json={"userId": 998})).status_code == 422
    assert (await api.delete(f"/api/v1/users/{user['id']}")).status_code == 409
    r = await api.patch("/api/v1/id-tags/t-1", json={"userId": None})
    assert r.status_code == 200 and r.json()["userId"] is None
    r = await api.patch(f"/api/v1/users/{user['id']}", json={"userGroupIds": []})
    assert r.json()["userGroupIds"] == []
    assert (await api.delete(f"/api/v1/user-groups/{group['id']}")).status_code == 204
    assert (await api.delete(f"/api/v1/users/{user['id']}")).status_code == 204


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/api/v1/users", {"email": "not-an-email"}, 422),
        ("post", "/api/v1/users", {"email": "a@b.io", "status": "deleted"}, 422),
        ("post", "/api/v1/users", {"email": "a@b.io", "currency": "eur"}, 422),
        ("post", "/api/v1/users", {"email": "a@b.io", "language": "english please"}, 422),
        ("post", "/api/v1/users", {"email": "a@b.io", "firstName": "A\x00"}, 422),
        ("post", "/api/v1/users", {"email": "a@b.io", "balance": "5.00"}, 422),
        ("get", "/api/v1/users/999", None, 404),
        ("patch", "/api/v1/users/999", {"status": "blocked"}, 404),
        ("delete", "/api/v1/users/999", None, 404),
        ("get", "/api/v1/users/999/balance", None, 404),
        ("get", "/api/v1/users/999/balance/entries", None, 404),
        ("post", "/api/v1/users/999/balance", {"amount": "1.00", "type": "topUp"}, 404),
        ("post", "/api/v1/user-groups", {"name": ""}, 422),
        ("delete", "/api/v1/user-groups/999", None, 404),
    ],
)
async def test_bad_requests_are_problems(
    api: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    """Bad input and unknown ids: the status code and a problem+json body."""
    r = await api.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("currency", "body", "status"),
    [
        ("EUR", {"amount": "10.001", "type": "topUp"}, 422),  # finer than a cent
        ("JPY", {"amount": "5.5", "type": "topUp"}, 422),  # yen have no decimals
        ("EUR", {"amount": "-1.00", "type": "topUp"}, 422),  # a debit is an adjustment
        ("EUR", {"amount": "0", "type": "adjustment"}, 422),
        ("EUR", {"amount": "1e3", "type": "topUp"}, 422),
        ("EUR", {"amount": 10, "type": "topUp"}, 422),  # a string, never a float
        ("EUR", {"amount": "1.00", "type": "gift"}, 422),
        ("EUR", {"amount": "-0.01", "type": "adjustment"}, 409),  # below zero
    ],
)
async def test_bad_bookings_are_refused_whole(
    api: httpx.AsyncClient, currency: str, body: object, status: int
) -> None:
    """A booking that is not an amount of the user's currency, of the wrong sign or that would
    take the balance below zero is a problem, and books nothing."""
    user = await _user(api, currency=currency)
    r = await api.post(f"/api/v1/users/{user['id']}/balance", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert (await api.get(f"/api/v1/users/{user['id']}/balance/entries")).json()["data"] == []


async def test_entries_book_the_balance_in_the_currencys_minor_unit(
    api: httpx.AsyncClient,
) -> None:
    """A top-up, a voucher and a negative adjustment: each answered with the entry and the
    balance after it, listed in order; amounts as strings with the currency's decimals."""
    user = await _user(api, currency="BHD", prepaid=True)
    url = f"/api/v1/users/{user['id']}/balance"
    r = await api.post(url, json={"amount": "10", "type": "topUp"})
    assert r.status_code == 201, r.text
    assert (r.json()["amount"], r.json()["balance"], r.json()["currency"]) == (
        "10.000",
        "10.000",
        "BHD",
    )
    await api.post(url, json={"amount": "0.125", "type": "voucher"})
    await api.post(url, json={"amount": "-3.5", "type": "adjustment"})
    assert (await api.get(url)).json() == {"amount": "6.625", "currency": "BHD"}
    entries = (await api.get(f"{url}/entries")).json()["data"]
    assert [(e["type"], e["amount"], e["balance"]) for e in entries] == [
        ("topUp", "10.000", "10.000"),
        ("voucher", "0.125", "10.125"),
        ("adjustment", "-3.500", "6.625"),
    ]
    assert (await api.get(f"/api/v1/users/{user['id']}")).json()["balance"]["amount"] == "6.625"
    r = await api.patch(f"/api/v1/users/{user['id']}", json={"currency": "EUR"})
    assert r.status_code == 409, r.text  # the currency changes only at zero


async def test_parallel_debits_never_take_a_balance_below_zero(api: httpx.AsyncClient) -> None:
    """Forty parallel debits of 1.00 against a balance of 10.00, mixed with ten top-ups of
    0.50: every request is answered, the balance equals its booked entries, and never went
    below zero (each entry's balance after it is at least zero)."""
    user = await _user(api)
    url = f"/api/v1/users/{user['id']}/balance"
    assert (await api.post(url, json={"amount": "10.00", "type": "topUp"})).status_code == 201
    debits = [api.post(url, json={"amount": "-1.00", "type": "adjustment"}) for _ in range(40)]
    top_ups = [api.post(url, json={"amount": "0.50", "type": "topUp"}) for _ in range(10)]
    answers = await asyncio.gather(*debits, *top_ups)
    assert {r.status_code for r in answers} <= {201, 409}
    booked_debits = sum(1 for r in answers[:40] if r.status_code == 201)
    assert all(r.status_code == 201 for r in answers[40:])
    assert 10 <= booked_debits <= 15
    entries = (await api.get(f"{url}/entries", params={"limit": 1000})).json()["data"]
    assert len(entries) == 1 + booked_debits + 10
    assert all(Decimal(e["balance"]) >= 0 for e in entries)
    total = sum(Decimal(e["amount"]) for e in entries)
    assert (await api.get(url)).json()["amount"] == str(total) == entries[-1]["balance"]
    assert Decimal(entries[-1]["balance"]) == Decimal("15.00") - booked_debits


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def test_a_blocked_users_id_tag_is_refused_by_a_real_charger(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """Authorize and StartTransaction of a blocked user's id tag are answered Blocked; the
    user unblocked, Accepted again (the authorizer follows NOTIFY, no query per Authorize)."""
    user = await _user(api)
    assert (
        await api.post("/api/v1/id-tags", json={"idTag": "ADA-1", "userId": user["id"]})
    ).is_success
    secret = await register_charger(evgate, api, "CP-U")
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-U?auth={secret}"
    async with ocpp_charger(url, "CP-U") as cp:
        assert (await cp.call(call.Authorize(id_tag="ADA-1"))).id_tag_info["status"] == "Accepted"
        r = await api.patch(f"/api/v1/users/{user['id']}", json={"status": "blocked"})
        assert r.status_code == 200
        assert await decision(evgate, "ADA-1", "Blocked") == "Blocked"
        assert (await cp.call(call.Authorize(id_tag="ada-1"))).id_tag_info["status"] == "Blocked"
        start = await cp.call(
            call.StartTransaction(connector_id=1, id_tag="ADA-1", meter_start=0, timestamp=_now())
        )
        assert start.id_tag_info["status"] == "Blocked"
        await api.patch(f"/api/v1/users/{user['id']}", json={"status": "active"})
        assert await decision(evgate, "ADA-1", "Accepted") == "Accepted"
        assert (await cp.call(call.Authorize(id_tag="ADA-1"))).id_tag_info["status"] == "Accepted"


async def test_a_prepaid_user_at_zero_is_refused_unless_their_group_allows_it(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """A prepaid user's id tag is Blocked at a zero balance (Authorize and StartTransaction),
    Accepted once topped up, Blocked again when an adjustment takes it to zero; a group that
    allows an empty balance lets its members charge; a user not on prepaid is never refused."""
    user = await _user(api, prepaid=True)
    postpaid = await _user(api, email="bob@example.com")
    await api.post("/api/v1/id-tags", json={"idTag": "PRE-1", "userId": user["id"]})
    await api.post("/api/v1/id-tags", json={"idTag": "POST-1", "userId": postpaid["id"]})
    secret = await register_charger(evgate, api, "CP-P")
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-P?auth={secret}"
    balance = f"/api/v1/users/{user['id']}/balance"
    async with ocpp_charger(url, "CP-P") as cp:
        assert await decision(evgate, "PRE-1", "Blocked") == "Blocked"
        assert (await cp.call(call.Authorize(id_tag="PRE-1"))).id_tag_info["status"] == "Blocked"
        start = await cp.call(
            call.StartTransaction(connector_id=1, id_tag="PRE-1", meter_start=0, timestamp=_now())
        )
        assert start.id_tag_info["status"] == "Blocked"
        assert (await cp.call(call.Authorize(id_tag="POST-1"))).id_tag_info["status"] == "Accepted"

        await api.post(balance, json={"amount": "10.00", "type": "topUp"})
        assert await decision(evgate, "PRE-1", "Accepted") == "Accepted"
        assert (await cp.call(call.Authorize(id_tag="PRE-1"))).id_tag_info["status"] == "Accepted"
        await api.post(balance, json={"amount": "-10.00", "type": "adjustment"})
        assert await decision(evgate, "PRE-1", "Blocked") == "Blocked"

        group = (await api.post("/api/v1/user-groups", json={"name": "Trusted"})).json()
        await api.patch(f"/api/v1/users/{user['id']}", json={"userGroupIds": [group["id"]]})
        assert await decision(evgate, "PRE-1", "Accepted") == "Blocked"  # the group forbids
        await api.patch(f"/api/v1/user-groups/{group['id']}", json={"allowEmptyBalance": True})
        assert await decision(evgate, "PRE-1", "Accepted") == "Accepted"
        assert (await cp.call(call.Authorize(id_tag="PRE-1"))).id_tag_info["status"] == "Accepted"


async def test_a_restarted_authorizer_loads_users_and_groups(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """What NOTIFY brought is also what a full load gives (after a reconnection)."""
    user = await _user(api, prepaid=True)
    await api.post("/api/v1/id-tags", json={"idTag": "PRE-2", "userId": user["id"]})
    assert await decision(evgate, "PRE-2", "Blocked") == "Blocked"
    native = evgate.native
    assert native is not None
    native._users.clear()  # as if the notifications were lost
    assert await decision(evgate, "PRE-2", "Accepted") == "Accepted"
    await native.load()
    assert await decision(evgate, "PRE-2", "Blocked") == "Blocked"


async def test_a_transactions_charge_is_booked_once_in_the_callers_transaction(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """book_transaction_charge debits a priced transaction inside the caller's transaction
    (rolled back with it), once per transaction, rounded to the currency's minor unit, and may
    take the balance below zero (the energy was delivered)."""
    user = await _user(api, prepaid=True)
    await api.post(f"/api/v1/users/{user['id']}/balance", json={"amount": "5.00", "type": "topUp"})
    assert evgate.db is not None
    async with evgate.db.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        assert await book_transaction_charge(conn, user["id"], Decimal("1.00"), 41) is not None
        await tx.rollback()
        async with conn.transaction():
            entry = await book_transaction_charge(conn, user["id"], Decimal("5.504"), 42)
        assert entry is not None
        assert (entry.type, entry.amount, entry.balance, entry.transaction_id) == (
            "transaction",
            "-5.50",
            "-0.50",
            42,
        )
        async with conn.transaction():
            assert await book_transaction_charge(conn, user["id"], Decimal("5.50"), 42) is None
            assert await book_transaction_charge(conn, user["id"], Decimal("0.001"), 43) is None
        with pytest.raises(ValueError, match="not negative"):
            await book_transaction_charge(conn, user["id"], Decimal("-1"), 44)
    entries = (await api.get(f"/api/v1/users/{user['id']}/balance/entries")).json()["data"]
    assert [(e["type"], e["amount"], e["transactionId"]) for e in entries] == [
        ("topUp", "5.00", None),
        ("transaction", "-5.50", 42),
    ]
    assert (await api.get(f"/api/v1/users/{user['id']}/balance")).json()["amount"] == "-0.50"


async def test_a_stops_charge_through_the_writer_leaves_the_rest_and_two_events(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """The issue's acceptance without the tariffs: a user's id tag, a top-up of 10.00, a
    transaction closed with a charge of 5.50 as a follow-up of its Emission (as a priced stop
    submits it) leaves 4.50; the resubmitted stop books nothing again; an id tag of no user is
    charged to no one."""
    user = await _user(api, prepaid=True)
    await api.post("/api/v1/id-tags", json={"idTag": "ADA-1", "userId": user["id"]})
    await api.post("/api/v1/id-tags", json={"idTag": "NOBODY"})
    url = f"/api/v1/users/{user['id']}/balance"
    await api.post(url, json={"amount": "10.00", "type": "topUp"})
    assert evgate.writer is not None
    charged = balances.charge(
        TransactionCharge(transaction_id=7, id_tag="ada-1", amount=Decimal("5.5"), currency="EUR")
    )
    nobody = balances.charge(
        TransactionCharge(transaction_id=8, id_tag="NOBODY", amount=Decimal("1"), currency="EUR")
    )
    for _ in range(2):
        await evgate.writer.submit([outbox.emit([], [charged, nobody])], key="CP-1")
    assert (await api.get(url)).json()["amount"] == "4.50"
    entries = (await api.get(f"{url}/entries")).json()["data"]
    assert [(e["type"], e["amount"], e["balance"], e["transactionId"]) for e in entries] == [
        ("topUp", "10.00", "10.00", None),
        ("transaction", "-5.50", "4.50", 7),
    ]
    assert evgate.db is not None
    events = await evgate.db.fetch(
        "SELECT payload FROM outbox WHERE event = 'userBalance.changed' ORDER BY id"
    )
    assert len(events) == 2
