"""The catalog table and payload Structs follow the AMPECO reference files exactly."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from evgate.events.catalog import (
    CATALOG,
    EMITTED,
    EVGATE_EVENTS,
    EVGATE_PAYLOAD_TYPES,
    NOT_EMITTED,
    PAYLOAD_TYPES,
    SUBSCRIBABLE,
)

_SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference"
_COPY = Path(__file__).resolve().parent / "reference"
REFERENCE = _SHARED if (_SHARED / "ampeco-notification-fields.txt").is_file() else _COPY

# evgate's additions (README "Notifications"): the OCPP identity next to every chargePointId,
# and evse.changed's charger (its catalog evseId is the connector id, unique per charger only).
EXTRA_FIELDS = {"networkId"}
# cdr.received carries the CDR's price (issue 19), so a consumer needs no GET for it; the
# catalog leaves the items of SessionUpdateNotification's priceBreakdown open: evgate's lines.
_LINE = {"component", "quantity", "unit", "unitPrice", "amount"}
EXTRA_BY_EVENT = {
    "evse.changed": {"chargePointId", "networkId"},
    "SessionUpdateNotification": _LINE,
    "cdr.received": {"price", "currency", "totalExclTax", "totalInclTax", "tax", "taxPercent",
                     "breakdown", "flags", *_LINE},
    # The charger's answer to the schedule (accepted, rejected, unanswered).
    "chargingProfile.applied": {"status"},
}  # fmt: skip
# The reference's partner.changed block ends with two required fields of reservation.changed
# (its description lists the fields by action, and they are not among them): a slip of the
# AMPECO document, not sent.
REFERENCE_SLIPS = {"partner.changed": {"reservationId", "status"}}
# Events the reference names (the subscribe API accepts them) but gives no fields: evgate's
# payload, the *.changed family's shape (the resource's id, action, lastUpdatedAt).
EVGATE_DEFINED = {
    "subscriptionPlan.changed": {
        "notification": True,
        "subscriptionPlanId": True,
        "action": True,
        "lastUpdatedAt": True,
    },
}


def _subscribable() -> list[str]:
    text = (REFERENCE / "ampeco-subscribe-api.md").read_text()
    block = text.split("Event names accepted in")[1].split("Delivery (webhook)")[0]
    return [line.strip() for line in block.splitlines()[1:] if line.strip()]


def _fields() -> dict[str, dict[str, bool]]:
    """Event → {dotted field path: required}, from the fields reference."""
    events: dict[str, dict[str, bool]] = {}
    current: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    for line in (REFERENCE / "ampeco-notification-fields.txt").read_text().splitlines():
        if line.startswith("===== "):
            current = events.setdefault(line[6:].strip(), {})
            stack = []
            continue
        match = re.match(r"^( +)([A-Za-z_][\w]*)(\*?):", line)
        if not match or "header " in line:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [match.group(2)])
        current[path] = bool(match.group(3))
        stack.append((indent, match.group(2)))
    return events


def _struct_paths(cls: type, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        path = prefix + f.encode_name
        paths.add(path)
        types = getattr(f.type, "types", (f.type,))
        for t in types:
            if isinstance(t, msgspec.inspect.ListType):
                t = t.item_type
            if isinstance(t, msgspec.inspect.StructType):
                paths |= _struct_paths(t.cls, path + ".")
    return paths


def test_catalog_lists_every_subscribable_name_and_every_reference_event() -> None:
    """Every name the subscribe API accepts and every event block of the field reference is
    in CATALOG, and CATALOG names nothing else."""
    names = set(_subscribable()) | set(_fields())
    assert len(_subscribable()) >= 40
    assert set(CATALOG) == names


def test_every_name_is_either_emitted_or_listed_as_not_emitted() -> None:
    """EMITTED and NOT_EMITTED split the catalog; the issue's events are all emitted."""
    assert set(CATALOG) == EMITTED | NOT_EMITTED and not EMITTED & NOT_EMITTED
    issue = {
        "BootNotification", "NetworkStatusNotification", "HardwareStatusNotification",
        "SessionStartStopNotification", "session.start.stop.notification",
        "SessionMeterValuesNotification", "SessionUpdateNotification", "transaction.changed",
        "chargePoint.dataTransferReceived", "DiagnosticsStatusNotification",
        "SecurityEventNotification", "ChargePointSyncConfigurationNotification",
        "authorization.changed", "idTag.changed", "chargePoint.changed", "evse.changed",
        "ChargePointChangedNotification", "reservation.changed", "cdr.received",
    }  # fmt: skip
    assert issue <= EMITTED
    assert set(PAYLOAD_TYPES) == EMITTED


@pytest.mark.parametrize("name", sorted(EMITTED))
def test_payload_fields_are_the_catalogs(name: str) -> None:
    """A payload Struct has every required field of its catalog event, and no field the
    catalog does not name (but for networkId, and evse.changed's charger)."""
    reference = _fields().get(name) or EVGATE_DEFINED[name]
    ours = _struct_paths(PAYLOAD_TYPES[name]) | {"notification"}
    extra = EXTRA_FIELDS | EXTRA_BY_EVENT.get(name, set())
    unknown = {p for p in ours if p not in reference and p.rsplit(".", 1)[-1] not in extra}
    assert not unknown, f"{name}: fields not in the catalog: {sorted(unknown)}"
    # A required field whose parent object we send (or a top-level one) must be sent.
    missing = {
        p
        for p, required in reference.items()
        if required and ("." not in p or p.rsplit(".", 1)[0] in ours) and p not in ours
    } - REFERENCE_SLIPS.get(name, set())
    assert not missing, f"{name}: required fields missing: {sorted(missing)}"


def test_evgate_events_are_apart_from_the_catalog() -> None:
    """evgate's own events (command.completed) are not AMPECO's: not in CATALOG, not in the
    reference files, each with its payload type, and subscribable beside the catalog's."""
    reference = set(_subscribable()) | set(_fields())
    assert set(EVGATE_EVENTS) == {"command.completed"} == set(EVGATE_PAYLOAD_TYPES)
    assert not set(EVGATE_EVENTS) & (set(CATALOG) | reference)
    assert set(CATALOG) | set(EVGATE_EVENTS) == SUBSCRIBABLE
    assert all("not AMPECO's" in by for by in EVGATE_EVENTS.values())


def test_the_readmes_not_emitted_list_is_the_catalogs() -> None:
    """README's "Not emitted (accepted in subscriptions)" names exactly NOT_EMITTED."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("Not emitted (accepted in subscriptions):")[1].split("The table in")[0]
    assert set(re.findall(r"`([^`]+)`", block)) == NOT_EMITTED
