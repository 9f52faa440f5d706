"""Every official schema file has its Struct, and the Struct says what the schema says.

Walks each of the 78 schema files beside the msgspec description of evgate's Struct
(``msgspec.inspect``): same wire names, same required fields, unknown fields refused, and
each property of the same kind and constraint (maxLength, enum values, date-time with zone,
minItems). The two places where one shared Struct is looser than one schema are listed in
``CHECKED_AFTER_DECODING`` and are covered by ``evgate.protocol.validation``.
"""

from __future__ import annotations

from typing import Any

import msgspec.inspect as mi
import pytest

from evgate.protocol.v16 import ACTIONS

from .oracle import SCHEMA_DIR, load_schema, schema_actions

# (schema file, property path): the shared type is looser; a post-decode check makes it exact.
CHECKED_AFTER_DECODING = {
    ("MeterValues", "meterValue[].sampledValue"),  # minItems 1 here, not in StopTransaction
    ("StopTransaction", "transactionData[].sampledValue[].unit"),  # no "Hertz" in its list
}


def _check(file: str, node: dict[str, Any], root: dict[str, Any], info: mi.Type, path: str) -> None:
    if "$ref" in node:
        node = root["definitions"][node["$ref"].split("/")[-1]]
    kind = node.get("type")
    where = f"{file}: {path or 'payload'}"
    if "enum" in node:
        assert isinstance(info, mi.EnumType), where
        values = {member.value for member in info.cls}
        if (file, path) in CHECKED_AFTER_DECODING:
            assert set(node["enum"]) < values, where
        else:
            assert set(node["enum"]) == values, where
    elif kind == "string" and node.get("format") == "date-time":
        assert isinstance(info, mi.DateTimeType) and info.tz is True, where
    elif kind == "string":
        assert isinstance(info, mi.StrType), where
        assert info.max_length == node.get("maxLength"), where
    elif kind == "integer":
        assert isinstance(info, mi.IntType), where
    elif kind == "number":
        assert isinstance(info, mi.FloatType), where
    elif kind == "boolean":
        assert isinstance(info, mi.BoolType), where
    elif kind == "array":
        assert isinstance(info, mi.ListType), where
        if (file, path) not in CHECKED_AFTER_DECODING:
            assert (info.min_length or 0) == node.get("minItems", 0), where
        _check(file, node["items"], root, info.item_type, path + "[]")
    elif kind == "object":
        assert isinstance(info, mi.StructType), where
        assert info.forbid_unknown_fields is (node.get("additionalProperties") is False), where
        fields = {field.encode_name: field for field in info.fields}
        properties = node.get("properties", {})
        assert set(fields) == set(properties), where
        required = {name for name, field in fields.items() if field.required}
        assert required == set(node.get("required", ())), where
        for name, sub in properties.items():
            _check(file, sub, root, fields[name].type, f"{path}.{name}" if path else name)
    else:
        raise AssertionError(f"{where}: schema node not understood: {node}")


def test_every_schema_file_is_an_action_request_or_response() -> None:
    """78 files: a request and a response for each of the 39 actions, nothing else."""
    files = sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))
    expected = sorted([*ACTIONS, *(f"{name}Response" for name in ACTIONS)])
    assert files == expected
    assert schema_actions() == sorted(ACTIONS)


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("kind", ["request", "response"])
def test_struct_matches_schema(action: str, kind: str) -> None:
    """The Struct has the schema's wire names, required fields, kinds and constraints."""
    spec = ACTIONS[action]
    message_type = spec.request if kind == "request" else spec.response
    assert message_type.__name__ == f"{action}{kind.title()}"
    schema = load_schema(action, kind)
    _check(
        action if kind == "request" else f"{action}Response",
        schema,
        schema,
        mi.type_info(message_type),
        "",
    )
