"""Payment methods and invoice details (issue 20): one default per user, and no card number
ever stored — a body with anything that looks like one is refused without echoing it."""

from __future__ import annotations

import httpx
import pytest

from evgate.api.cards import holds_card_number, luhn_valid

PAN = "4111111111111111"  # the Visa test number: Luhn-valid


@pytest.mark.parametrize(
    ("value", "holds"),
    [
        (PAN, True),
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1111", True),
        (f"tok_{PAN}_x", True),
        ({"nested": [{"deep": f"card {PAN}"}]}, True),
        ({PAN: "as a member name"}, True),
        ("378282246310005", True),  # Amex, 15 digits
        ("4111111111111112", False),  # not Luhn-valid
        ("41111111111", False),  # 11 digits
        ("41111111111111111111", False),  # 20 digits: no PAN's length
        ("4111  1111 1111 1111", False),  # two spaces end a run
        ("tok_3f9a", False),
        (1234567812345670, False),  # a number is no string
    ],
)
def test_what_looks_like_a_card_number(value: object, holds: bool) -> None:
    """Runs of 12-19 digits (single spaces or dashes between them) that pass Luhn."""
    assert holds_card_number(value) is holds


def test_luhn() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


async def _user(api: httpx.AsyncClient) -> int:
    r = await api.post("/api/v1/users", json={"email": "ada@example.com"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def test_payment_methods_keep_one_default(api: httpx.AsyncClient) -> None:
    """The first method is the default; a new default takes it from the old one; the token is
    kept as given; delete and 404s."""
    user = await _user(api)
    url = f"/api/v1/users/{user}/payment-methods"
    r = await api.post(
        url,
        json={"type": "card", "issuer": "visa", "lastFour": "1111", "expiryMonth": 12,
              "expiryYear": 2030, "providerToken": "pm_1Abc"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["default"] is True
    assert (first["lastFour"], first["providerToken"]) == ("1111", "pm_1Abc")
    second = (await api.post(url, json={"type": "sepaDirectDebit"})).json()
    assert second["default"] is False
    third = (await api.post(url, json={"type": "card", "default": True})).json()
    assert third["default"] is True
    methods = (await api.get(url)).json()["data"]
    assert [(m["id"], m["default"]) for m in methods] == [
        (first["id"], False),
        (second["id"], False),
        (third["id"], True),
    ]
    r = await api.patch(f"{url}/{second['id']}", json={"default": True, "issuer": None})
    assert r.status_code == 200 and r.json()["default"] is True
    assert (await api.get(f"{url}/{third['id']}")).json()["default"] is False
    assert (await api.delete(f"{url}/{second['id']}")).status_code == 204
    assert [m["default"] for m in (await api.get(url)).json()["data"]] == [False, False]
    assert (await api.get(f"{url}/{second['id']}")).status_code == 404
    other = f"/api/v1/users/{user + 1}/payment-methods/{first['id']}"
    assert (await api.get(other)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"type": "card", "providerToken": PAN},
        {"type": "card", "issuer": "4111 1111 1111 1111"},
        {"type": "card", "cardNumber": "4111-1111-1111-1111"},  # an unknown member too
        {"type": "card", "lastFour": PAN},  # wrong pattern too: the card is said first
    ],
)
async def test_a_card_number_anywhere_is_refused_without_echo(
    api: httpx.AsyncClient, body: dict[str, object]
) -> None:
    """422 problem+json whose text names no digits of it, and nothing stored."""
    user = await _user(api)
    url = f"/api/v1/users/{user}/payment-methods"
    r = await api.post(url, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "card number" in r.json()["detail"]
    assert "1111" not in r.text and "4111" not in r.text
    assert (await api.get(url)).json()["data"] == []
    r = await api.put(
        f"/api/v1/users/{user}/invoice-details",
        json={"kind": "individual", "name": "Ada", "taxId": PAN},
    )
    assert r.status_code == 422 and "4111" not in r.text


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/payment-methods", {"type": "cash"}, 422),
        ("post", "/payment-methods", {"type": "card", "expiryMonth": 13}, 422),
        ("post", "/payment-methods", {"type": "card", "lastFour": "12a4"}, 422),
        ("patch", "/payment-methods/999", {"issuer": "visa"}, 404),
        ("delete", "/payment-methods/999", None, 404),
        ("put", "/invoice-details", {"kind": "company"}, 422),
        ("put", "/invoice-details", {"kind": "firm", "name": "Acme"}, 422),
        ("put", "/invoice-details", {"kind": "company", "name": "A", "country": "AUT"}, 422),
    ],
)
async def test_bad_requests_are_problems(
    api: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    user = await _user(api)
    r = await api.request(method.upper(), f"/api/v1/users/{user}{path}", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"


async def test_invoice_details_are_set_whole(api: httpx.AsyncClient) -> None:
    """PUT sets every field (one left out is cleared); GET reads them (null before the first
    PUT); an unknown user 404."""
    user = await _user(api)
    url = f"/api/v1/users/{user}/invoice-details"
    # None yet: null, not a 404 (which would say the user is not there).
    none_yet = await api.get(url)
    assert (none_yet.status_code, none_yet.json()) == (200, None)
    assert (await api.get("/api/v1/users/999/invoice-details")).status_code == 404
    body = {"kind": "company", "name": "Acme GmbH", "taxId": "ATU12345678",
            "street": "Ring 1", "postCode": "1010", "city": "Wien", "country": "AT"}  # fmt: skip
    r = await api.put(url, json=body)
    assert r.status_code == 200, r.text
    assert (await api.get(url)).json()["taxId"] == "ATU12345678"
    r = await api.put(url, json={"kind": "individual", "name": "Ada L"})
    assert (r.json()["kind"], r.json()["taxId"], r.json()["city"]) == ("individual", None, None)
    assert (await api.put("/api/v1/users/999/invoice-details", json=body)).status_code == 404
