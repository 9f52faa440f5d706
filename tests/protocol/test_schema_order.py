"""Every message evgate encodes has its members in the official schema's ``properties`` order.

JSON member order carries no meaning, but charger firmware with naive parsers exists (and one
conformance suite checks it), so evgate writes each object's members in the order its schema
lists them, nested objects included (issue 21.4). Each payload here has every optional member
present and is given to the decoder in *reversed* order, so the order that comes out is the
encoder's own, never the input's.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from evgate.protocol import frames
from evgate.protocol.v16 import ACTIONS

from .oracle import load_schema
from .strategies import _resolve, example


def _reversed(value: Any) -> Any:
    """``value`` with the members of every object in reverse order."""
    if isinstance(value, dict):
        return {name: _reversed(value[name]) for name in reversed(value)}
    if isinstance(value, list):
        return [_reversed(item) for item in value]
    return value


def _order_errors(value: Any, node: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    """Where ``value``'s members are not in the order of schema ``node``'s properties."""
    node = _resolve(node, root)
    if node.get("type") == "array":
        return [
            error
            for index, item in enumerate(value)
            for error in _order_errors(item, node["items"], root, f"{path}[{index}]")
        ]
    if node.get("type") != "object":
        return []
    properties = node.get("properties", {})
    expected = [name for name in properties if name in value]
    errors = (
        [] if list(value) == expected else [f"{path or 'payload'}: {list(value)} != {expected}"]
    )
    for name, sub in properties.items():
        if name in value:
            errors += _order_errors(value[name], sub, root, f"{path}.{name}" if path else name)
    return errors


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("kind", ["request", "response"])
def test_encoded_members_follow_the_schema_order(action: str, kind: str) -> None:
    """The CALL (request) or CALLRESULT (response) bytes list members as the schema does."""
    spec = ACTIONS[action]
    schema = load_schema(action, kind)
    full = example(schema, schema)
    message = msgspec.json.decode(
        json.dumps(_reversed(full)), type=spec.request if kind == "request" else spec.response
    )
    if kind == "request":
        sent = frames.encode_call("1", action, message)
    else:
        sent = frames.encode_result("1", message)
    payload = json.loads(sent)[-1]
    assert list(payload) == [name for name in schema.get("properties", {}) if name in full]
    assert _order_errors(payload, schema, schema, "") == []


def test_the_order_check_sees_a_nested_swap() -> None:
    """The check is not vacuous: SendLocalList with idTagInfo's members swapped is caught."""
    schema = load_schema("SendLocalList", "request")
    payload = {
        "listVersion": 1,
        "localAuthorizationList": [
            {"idTag": "a", "idTagInfo": {"status": "Accepted", "expiryDate": "x"}}
        ],
        "updateType": "Full",
    }
    assert _order_errors(payload, schema, schema, "") == [
        "localAuthorizationList[0].idTagInfo: ['status', 'expiryDate'] != ['expiryDate', 'status']"
    ]
