"""Builders turn domain facts into the catalog's payloads, with evgate's mappings."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from evgate.events.builders import (
    OutboxEntry,
    hardware_status,
    security_event,
    transaction_meter_values,
    transaction_stopped,
)
from evgate.events.catalog import EMITTED
from evgate.protocol.v16.enums import ChargePointErrorCode, ChargePointStatus, Measurand, Phase
from evgate.protocol.v16.messages import (
    MeterValue,
    SampledValue,
    SecurityEventNotificationRequest,
    StatusNotificationRequest,
)
from evgate.storage.ops.transactions import TransactionFacts

from .events_helpers import AT, CP, every_event

TX = TransactionFacts(transaction_id=41, connector_id=2, id_tag="T", started_at=AT, meter_start=100)


def _body(entry: OutboxEntry) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.json.decode(entry.payload)
    assert body["notification"] == entry.event
    return body


def test_every_emitted_event_has_a_builder_and_names_itself() -> None:
    """Each payload's ``notification`` is its event name; charger events carry both ids."""
    entries = every_event()
    assert {e.event for e in entries} == EMITTED
    for entry in entries:
        body = _body(entry)
        if "chargePointId" in body:
            assert (body["chargePointId"], body["networkId"]) == (7, "CP-1")
        assert entry.charger_id in ("CP-1", "")


@pytest.mark.parametrize(
    ("ocpp", "catalog"),
    [("Available", "available"), ("SuspendedEV", "suspendedEV"), ("Faulted", "faulted")],
)
def test_status_notification_maps_to_hardware_status(ocpp: str, catalog: str) -> None:
    """OCPP statuses map to the catalog's spelling; NoError is a null errorCode; connector 0
    (the charger itself) has no evseId; the charger's timestamp wins over the receive time."""
    request = StatusNotificationRequest(
        connector_id=0,
        error_code=ChargePointErrorCode("NoError"),
        status=ChargePointStatus(ocpp),
        timestamp=AT.replace(year=2024),
    )
    body = _body(hardware_status(CP, request, AT))
    assert body["hardwareStatus"] == catalog and body["errorCode"] is None
    assert "evseId" not in body and body["timestamp"].startswith("2024")


def test_meter_values_are_scaled_and_filtered() -> None:
    """kWh becomes Wh; per-phase and unknown measurands and non-numbers are left out; with
    nothing left only the SessionUpdateNotification is made."""
    meter = MeterValue(
        timestamp=AT,
        sampled_value=[
            SampledValue(value="2.5", unit="kWh"),  # type: ignore[arg-type]
            SampledValue(value="230", measurand=Measurand("Voltage"), phase=Phase("L1")),
            SampledValue(value="x", measurand=Measurand("SoC")),
            SampledValue(value="1", measurand=Measurand("Frequency")),
        ],
    )
    entries = transaction_meter_values(CP, TX, [meter], AT)
    assert [e.event for e in entries] == [
        "SessionMeterValuesNotification",
        "SessionUpdateNotification",
    ]
    values = _body(entries[0])["meterValues"]
    assert values == [
        {
            "timestamp": "2025-01-02T03:04:05Z",
            "measurand": "Energy Active Import Register",
            "value": 2500.0,
            "unit": "Wh",
        }
    ]
    only_phase = MeterValue(timestamp=AT, sampled_value=[meter.sampled_value[1]])
    assert [e.event for e in transaction_meter_values(CP, TX, [only_phase], AT)] == [
        "SessionUpdateNotification"
    ]


def test_stop_makes_a_cdr_and_its_events() -> None:
    """The CDR's id is stable per transaction; energy is meterStop - meterStart; a Local stop
    is a standard_stop; an unmappable OCPP reason is left out."""
    stopped = msgspec.structs.replace(TX, stopped_at=AT, meter_stop=2600, stop_reason="Local")
    cdr, entries = transaction_stopped(CP, stopped, AT)
    assert (cdr.id, cdr.energy_wh, cdr.charge_point_id) == ("7-41", 2500, 7)
    by_name = {e.event: _body(e) for e in entries}
    start_stop = by_name["SessionStartStopNotification"]
    assert start_stop["action"] == "stop" and start_stop["energyConsumed"] == 2500.0
    assert start_stop["reason"] == "standard_stop" and start_stop["meterStop"] == 2600
    assert by_name["cdr.received"]["id"] == "7-41"
    assert by_name["transaction.changed"]["action"] == "updated"
    assert by_name["SessionUpdateNotification"]["session"]["status"] == "finished"
    power_loss = msgspec.structs.replace(stopped, stop_reason="PowerLoss")
    assert "reason" not in _body(transaction_stopped(CP, power_loss, AT)[1][0])


def test_stop_without_a_stop_is_refused() -> None:
    with pytest.raises(ValueError, match="stopped_at"):
        transaction_stopped(CP, TX, AT)


@pytest.mark.parametrize(("kind", "critical"), [("ResetOrReboot", True), ("Vendor.X", False)])
def test_security_events_are_critical_per_the_whitepaper(kind: str, critical: bool) -> None:
    request = SecurityEventNotificationRequest(type=kind, timestamp=AT)
    assert _body(security_event(CP, request))["critical"] is critical
