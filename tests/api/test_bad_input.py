"""What the internet sends the API (issue 15): integers beyond the database's range in paths,
queries and bodies, bodies that are not UTF-8 or nest 10,000 deep. Each is a 4xx problem
document, never a 500 with a traceback."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

from evgate.protocol.validation import MAX_NESTING

DEEP_ARRAY = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
JSON = "application/json"


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status"),
    [
        # Paths: an id no resource can have is not found.
        ("GET", "/api/v1/transactions/32229461838751388", None, None, 404),
        ("GET", "/api/v1/transactions/0", None, None, 404),
        ("GET", "/public-api/notifications/v2.0/9223372036854775808", None, None, 404),
        ("DELETE", "/public-api/notifications/v2.0/9223372036854775808", None, None, 404),
        ("GET", "/api/v1/installations/87852788378703478784", None, None, 404),
        ("GET", "/api/v1/installations/141162754238679777280/chargers", None, None, 404),
        ("DELETE", "/api/v1/installations/-1", None, None, 404),
        ("DELETE", "/api/v1/tokens/99999999999999999999", None, None, 404),
        (
            "POST",
            "/public-api/actions/notifications/v1.0/18446744073709551615/resend",
            b"{}",
            JSON,
            404,
        ),
        # Queries and bodies: out of the documented range.
        ("GET", "/api/v1/transactions?after=216248757140161277460480", None, None, 422),
        ("GET", "/api/v1/tokens?after=9223372036854775808", None, None, 422),
        ("GET", "/api/v1/installations?after=-1110489116620967650768453632", None, None, 422),
        ("GET", "/public-api/notifications/v2.0?page=922337203685477580", None, None, 422),
        ("GET", "/api/v1/chargers/CP-1/meter-values?connectorId=2147483648", None, None, 422),
        ("PATCH", "/api/v1/chargers/CP-1", b'{"installationId": 9223372036854775808}', JSON, 422),
        # Read as documented, not leniently (a number is no date-time, 1 is no boolean).
        ("GET", "/api/v1/transactions?active=1", None, None, 422),
        ("GET", "/api/v1/transactions?from=0.5", None, None, 422),
        ("GET", "/api/v1/transactions?limit=5&limit=6", None, None, 422),
        ("PATCH", "/api/v1/chargers/CP-1", b'{"lenient": 0}', JSON, 422),
        ("POST", "/api/v1/id-tags", b'{"idTag": "A", "expiryDate": 0}', JSON, 422),
        # Bodies that are not UTF-8 JSON.
        ("POST", "/api/v1/id-tags", b'{"idTag":"\xff\xfe"}', JSON, 400),
        ("POST", "/api/v1/id-tags", b'{"idTag":"caf\xe9"}', JSON + "; charset=iso-8859-1", 400),
        ("POST", "/api/v1/id-tags", b'{"idTag":"abc"}', JSON + "; charset=latin-1", 400),
        ("POST", "/api/v1/id-tags", DEEP_ARRAY, JSON, 400),
        ("PATCH", "/api/v1/chargers/CP-1", DEEP_OBJECT, JSON, 400),
        ("POST", "/api/v1/chargers/CP-1/commands/Reset", DEEP_ARRAY, JSON, 400),
        ("POST", "/api/v1/chargers/CP-1/commands/Reset", b'{"type":"\xc3"}', JSON, 400),
        ("PUT", "/public-api/notifications/v2.0/1", DEEP_OBJECT, JSON, 400),
    ],
)
async def test_hostile_input_is_a_problem_not_a_500(
    api: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    status: int,
) -> None:
    """Each request is answered with its 4xx problem document and logs no error."""
    headers = {"Content-Type": content_type} if content_type else {}
    with caplog.at_level(logging.WARNING):
        r = await api.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == status
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


async def test_bodies_within_the_depth_limit_and_utf8_charsets_are_read(
    api: httpx.AsyncClient,
) -> None:
    """The checks refuse only what they must: ``charset=utf-8`` and non-ASCII UTF-8 text pass."""
    r = await api.post(
        "/api/v1/id-tags",
        content='{"idTag":"café"}'.encode(),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["idTag"] == "café"


async def test_the_depth_limit_is_the_frames_own(api: httpx.AsyncClient) -> None:
    """A body nested MAX_NESTING deep is read (and refused for its type, 422); one level more
    is refused for its depth (400), as a charger's frame would be."""
    for depth, status in ((MAX_NESTING, 422), (MAX_NESTING + 1, 400)):
        r = await api.post(
            "/api/v1/id-tags", content=b"[" * depth + b"]" * depth, headers={"Content-Type": JSON}
        )
        assert r.status_code == status, r.text
        assert ("nests deeper" in r.json()["detail"]) is (status == 400)


def _integers(node: object) -> list[dict[str, object]]:
    """Every integer schema in a JSON document, with its bounds (Litestar puts them beside a
    oneOf as often as inside it)."""
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        arms = node.get("oneOf") or node.get("anyOf") or []
        for arm in arms:
            if isinstance(arm, dict) and arm.get("type") == "integer":
                found.append({**arm, **{k: v for k, v in node.items() if k != "oneOf"}})
        if node.get("type") == "integer":
            found.append(node)
        for key, value in node.items():
            if key not in ("oneOf", "anyOf"):
                found += _integers(value)
    elif isinstance(node, list):
        for item in node:
            found += _integers(item)
    return found


def _inputs(document: dict[str, Any]) -> list[object]:
    """The parameters and request bodies of every operation, with the components they use."""
    found: list[object] = []
    for item in document["paths"].values():
        for operation in item.values():
            found += operation.get("parameters", [])
            found.append(operation.get("requestBody", {}))
    components = document["components"]["schemas"]
    seen: set[str] = set()
    todo = list(found)
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref not in seen:
                seen.add(ref)
                component = components[ref.rsplit("/", 1)[1]]
                found.append(component)
                todo.append(component)
            todo += node.values()
        elif isinstance(node, list):
            todo += node
    return found


#: The routes of what no sub-operator owns (api/security.py operator_guard).
OPERATOR_ONLY = re.compile(
    r"^/api/v1/(users|user-groups|subscription-plans|partners|partner-invites)\b"
)


async def test_the_document_lists_every_error_answer_as_a_problem(api: httpx.AsyncClient) -> None:
    """Each operation documents 401 and 503, each error as application/problem+json, no query
    parameter as nullable, and every integer a client sends (parameters, bodies) has both
    bounds."""
    document = (await api.get("/api/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert {"401", "503"} <= responses.keys(), (method, path)
            admin_only = path.startswith("/api/v1/tokens")  # a read token may not even list
            # A sub-operator's token may not even read what is the operator's alone.
            operator_only = OPERATOR_ONLY.match(path) is not None
            assert ("403" in responses) == (method != "get" or admin_only or operator_only), (
                method,
                path,
            )
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":  # absent is the default; a query has no null
                    assert "null" not in str(parameter["schema"]), parameter
            for code, response in responses.items():
                if code[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], code
    for integer in _integers(_inputs(document)):
        # An enum of integers (a circuit's phases: 1 or 3) is bounded by its members.
        bounded = "minimum" in integer and "maximum" in integer
        assert bounded or "enum" in integer, integer
    (transaction_id,) = document["paths"]["/api/v1/transactions/{transaction_id}"]["get"][
        "parameters"
    ]
    assert (transaction_id["schema"]["minimum"], transaction_id["schema"]["maximum"]) == (
        1,
        2**31 - 1,
    )


async def test_a_method_not_allowed_names_the_allowed_ones(api: httpx.AsyncClient) -> None:
    """405 keeps its Allow header (RFC 9110) in the problem answer."""
    r = await api.put("/api/v1/transactions")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert "GET" in r.headers["allow"]
