"""Hypothesis strategies that read an OCPP JSON schema and write valid and near-valid payloads.

``payloads(schema)`` writes a valid payload, then usually makes one mistake in it (sometimes
two or three): it lists the places a mistake can go, groups them by schema node so that a
rare field is as likely a target as a repeated one, picks one, and applies one of the
mistakes that place admits (wrong JSON type, missing required field, extra property,
unknown or mis-cased enum value, string one character too long, bad date-time spelling or
calendar, float for integer, non-tenth number, too-short array). Single mistakes make the
oracle's verdict name one error, so the test can compare codes and paths too. The oracle
decides what is valid; the strategies only need to land on both sides of the line often.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Text for string fields: no U+0000, which evgate refuses where the schemas allow it (a
# deviation pinned in test_frames.py).
TEXT = st.characters(codec="utf-8", exclude_characters="\x00")

# Values of every JSON type, for "wrong type" mistakes.
_WRONG_TYPES: dict[str, list[Any]] = {
    "string": [None, True, 7, 2.5, [], {}],
    "integer": [None, False, 2.5, 7.0, "7", [], {}],
    "number": [None, True, "2.5", [], {}],
    "boolean": [None, 0, 1, "true", [], {}],
    "object": [None, True, 7, "x", []],
    "array": [None, False, 7, "x", {}],
}

# What real chargers send: msgspec parses all of these, RFC 3339 refuses them.
_NEAR_MISS_DATE_TIMES = [
    "2024-05-01T12:00:00",  # no zone
    "2024-05-01T12:00:00.123",
    "2024-05-01 12:00:00Z",  # space for "T"
    "2024-05-01 12:00:00",
    "2024-05-01T12:00:00+0200",  # offset without colon
    "2024-05-01T12:00:00-0500",
    "2024-05-01T12:00:00.5-0000",
]

_BAD_DATE_TIMES = [
    "",
    "2024-05-01",
    "2024-05-01T12:00Z",  # no seconds
    "2024-05-01T24:00:00Z",
    "2024-05-01T12:60:00Z",
    "2024-05-01T12:00:60Z",  # leap second: refused by both
    "2024-02-30T12:00:00Z",
    "2023-02-29T12:00:00Z",
    "2024-13-01T12:00:00Z",
    "0000-01-01T00:00:00Z",
    "2024-05-01T12:00:00.Z",
    "2024-05-01T12:00:00,5Z",
    "2024-05-01T12:00:00+24:00",
    "2024-05-01T12:00:00Z ",
    "2024-05-01T12:00:00ZZ",
    "20240501T120000Z",
    "2024-5-01T12:00:00Z",
    "yesterday",
]


@st.composite
def date_times(draw: st.DrawFn) -> str:
    """Valid RFC 3339 date-times in their many spellings.

    Years stop at 9998: msgspec rounds a fraction beyond microseconds, and on the last second
    of 9999 that rounding overflows (a known, pinned deviation: test_frames).
    """
    year = draw(st.integers(1, 9998))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, 28 if month == 2 else 30))
    if month == 2 and draw(st.booleans()) and year % 4 == 0 and (year % 100 or year % 400 == 0):
        day = 29
    hour, minute, second = (
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 59)),
    )
    fraction = draw(st.sampled_from(["", ".0", ".5", ".123", ".123456", ".1234567", ".000000001"]))
    zone = draw(
        st.one_of(
            st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
            st.builds(
                lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
                st.sampled_from("+-"),
                st.integers(0, 23),
                st.integers(0, 59),
            ),
        )
    )
    t = draw(st.sampled_from("Tt"))
    return (
        f"{year:04d}-{month:02d}-{day:02d}{t}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"
    )


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        definition: dict[str, Any] = root["definitions"][node["$ref"].split("/")[-1]]
        return definition
    return node


def mistakes(node: dict[str, Any]) -> list[list[Any]]:
    """Every mistake tried for schema ``node``, in kinds (a strategy picks a kind, then one)."""
    kind: str = node["type"]
    found: list[list[Any]] = [_WRONG_TYPES[kind]]
    if "enum" in node:
        first = node["enum"][0]
        cased = first.lower() if first != first.lower() else first.upper()
        found.append(["", "Unknown", "accepted ", "Hertz", "x" * 30, cased])
    elif kind == "string" and "maxLength" in node:
        found.append([c * (node["maxLength"] + 1) for c in ("x", "é", "\U0001f50c")])
    if node.get("format") == "date-time":
        found += [_NEAR_MISS_DATE_TIMES, _BAD_DATE_TIMES]
    if kind == "integer":
        found.append([7.0, -3.0, 1e20])
    if kind == "number" and "multipleOf" in node:
        found.append([0.05, 21.45, -0.01, 1e-05])
    if kind == "array" and node.get("minItems"):
        found.append([[]])
    return found


def example(node: dict[str, Any], root: dict[str, Any]) -> Any:
    """A valid value for ``node`` with every optional field present (for exhaustive tests)."""
    node = _resolve(node, root)
    kind = node.get("type")
    if "enum" in node:
        return node["enum"][-1]
    if kind == "object":
        return {name: example(sub, root) for name, sub in node.get("properties", {}).items()}
    if kind == "array":
        return [example(node["items"], root) for _ in range(max(2, node.get("minItems", 0)))]
    if kind == "string":
        return "2024-05-01T12:00:00.5+02:00" if node.get("format") == "date-time" else "x"
    scalars: dict[str, Any] = {"integer": 7, "number": 21.4, "boolean": True}
    return scalars[node["type"]]


def _mistake(draw: st.DrawFn, node: dict[str, Any]) -> Any:
    """One wrong value for ``node``."""
    return draw(st.sampled_from(draw(st.sampled_from(mistakes(node)))))


@st.composite
def values(draw: st.DrawFn, node: dict[str, Any], root: dict[str, Any]) -> Any:
    """A valid value for schema ``node``."""
    node = _resolve(node, root)
    kind = node.get("type")
    if "enum" in node:
        return draw(st.sampled_from(node["enum"]))
    if kind == "object":
        required = set(node.get("required", ()))
        return {
            name: draw(values(sub, root))
            for name, sub in node.get("properties", {}).items()
            if name in required or draw(st.booleans())
        }
    if kind == "array":
        low = node.get("minItems", 0)
        return draw(st.lists(values(node["items"], root), min_size=low, max_size=low + 3))
    if kind == "string":
        if node.get("format") == "date-time":
            return draw(date_times())
        limit = node.get("maxLength")
        if limit is None:
            return draw(st.text(TEXT, max_size=12))
        return draw(
            st.one_of(
                st.text(TEXT, max_size=min(limit, 12)),
                st.sampled_from(["x", "é", "\U0001f50c"]).map(lambda c: c * limit),
            )
        )
    if kind == "integer":
        return draw(st.one_of(st.integers(-(2**31), 2**31), st.integers(-(2**70), 2**70)))
    if kind == "number":
        # multipleOf 0.1: tenths, whose JSON text is the shortest spelling of the float.
        return draw(
            st.one_of(st.integers(-(10**7), 10**7).map(lambda k: k / 10), st.integers(-500, 500))
        )
    if kind == "boolean":
        return draw(st.booleans())
    raise AssertionError(f"schema node not handled: {node}")


Path = tuple[Any, ...]
# A place for a mistake: (group, what, path, schema node). The group is the schema position
# (the path without list indices) and what the mistake is ("value", "missing", "extra").
Site = tuple[str, str, Path, dict[str, Any]]


def sites(instance: Any, node: dict[str, Any], root: dict[str, Any], path: Path) -> list[Site]:
    node = _resolve(node, root)
    group = ".".join(str(p) for p in path if not isinstance(p, int))
    found: list[Site] = [(group, "value", path, node)] if path else []
    if node.get("type") == "object" and isinstance(instance, dict):
        found.append((group + "+", "extra", path, node))
        for name, sub in node.get("properties", {}).items():
            if name in instance:
                if name in node.get("required", ()):
                    found.append((f"{group}.{name}-", "missing", (*path, name), node))
                found += sites(instance[name], sub, root, (*path, name))
    elif node.get("type") == "array" and isinstance(instance, list):
        for i, item in enumerate(instance):
            found += sites(item, node["items"], root, (*path, i))
    return found


def _mutate(draw: st.DrawFn, payload: Any, root: dict[str, Any]) -> Any:
    """``payload`` with one mistake (it is changed in place and returned)."""
    places = sites(payload, root, root, ())
    groups = sorted({site[0] for site in places})
    group = draw(st.sampled_from(groups))
    _, what, path, node = draw(st.sampled_from([site for site in places if site[0] == group]))
    if not path:  # the payload itself: extra property only
        what = "extra"
    parent = payload
    for part in path[:-1] if what != "extra" else path:
        parent = parent[part]
    if what == "extra":
        name = draw(st.sampled_from(["extra", "IdTag", "vendorField", "x-y", "Status"]))
        if name not in parent:
            parent[name] = draw(st.sampled_from([1, "x", None, {}]))
    elif what == "missing":
        del parent[path[-1]]
    else:
        parent[path[-1]] = _mistake(draw, node)
    return payload


@st.composite
def payloads(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    """A payload for ``schema``: valid a third of the time, else with one to three mistakes."""
    payload = draw(values(schema, schema))
    mistakes = draw(st.sampled_from([0, 1, 1, 1, 2, 3]))
    if mistakes and draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([[], None, "x", 1]))  # the payload not an object
    for _ in range(mistakes):
        payload = _mutate(draw, payload, schema)
    return payload
