"""The conformance oracle: the official OCPP 1.6J JSON schemas, read with jsonschema.

The schemas are the 78 files shipped in the ``ocpp`` package (``ocpp/v16/schemas``), checked
with ``Draft4Validator`` as the ``ocpp`` library does, including its one adjustment: the
three schemas with ``multipleOf 0.1`` (SetChargingProfile.req, RemoteStartTransaction.req,
GetCompositeSchedule.conf) are read, schema and payload alike, with ``parse_float=Decimal``
so that 21.4 is a multiple of 0.1.

Unlike the ``ocpp`` library, the oracle checks ``format: date-time``, with jsonschema's own
date-time checker (rfc3339-validator). jsonschema skips a format silently when the library
behind its checker is missing, so ``date_time_checker`` fails loudly instead, and a test
asserts the check is active. One quirk of rfc3339-validator is removed: its pattern ends in
``$``, which lets a single trailing newline through ("...Z\\n"); RFC 3339 does not, and
neither does evgate. ``format: uri`` (two CSMS-to-charger locations) is not checked, by
evgate nor by the oracle: the issue asks for date-times only, and the ``ocpp`` library
checks no format at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import ocpp
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError

SCHEMA_DIR = Path(ocpp.__file__).parent / "v16" / "schemas"

# (action, kind) whose schema and payload ocpp reads with Decimal floats.
DECIMAL_SCHEMAS = {
    ("SetChargingProfile", "request"),
    ("RemoteStartTransaction", "request"),
    ("GetCompositeSchedule", "response"),
}


def date_time_checker() -> FormatChecker:
    """A FormatChecker that checks only ``date-time``, and certainly does."""
    registered = FormatChecker()
    if "date-time" not in registered.checkers:
        raise RuntimeError("jsonschema has no date-time checker: install rfc3339-validator")
    check, raises = registered.checkers["date-time"]
    checker = FormatChecker(formats=())

    def date_time(instance: object) -> bool:
        if isinstance(instance, str) and instance.endswith("\n"):
            return False
        return bool(check(instance))

    checker.checks("date-time", raises=raises)(date_time)
    return checker


FORMAT_CHECKER = date_time_checker()


def schema_path(action: str, kind: str) -> Path:
    return SCHEMA_DIR / (f"{action}Response.json" if kind == "response" else f"{action}.json")


@cache
def load_schema(action: str, kind: str, decimal: bool = False) -> dict[str, Any]:
    text = schema_path(action, kind).read_text(encoding="utf-8-sig")
    schema: dict[str, Any] = json.loads(text, parse_float=Decimal if decimal else float)
    return schema


@cache
def validator(action: str, kind: str) -> Draft4Validator:
    decimal = (action, kind) in DECIMAL_SCHEMAS
    return Draft4Validator(load_schema(action, kind, decimal), format_checker=FORMAT_CHECKER)


def schema_actions() -> list[str]:
    """Every action with a schema file, from the file names."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.json") if not p.stem.endswith("Response"))


@dataclass
class Verdict:
    accepted: bool
    errors: list[ValidationError]


def judge(action: str, kind: str, payload_text: str) -> Verdict:
    """The official schemas' verdict on one payload's JSON text."""
    decimal = (action, kind) in DECIMAL_SCHEMAS
    instance = (
        json.loads(payload_text, parse_float=Decimal) if decimal else json.loads(payload_text)
    )
    errors = list(validator(action, kind).iter_errors(instance))
    return Verdict(not errors, errors)


def path_text(parts: Any) -> str:
    """A jsonschema error path in evgate's notation: ``meterValue[0].timestamp``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
