"""BootNotification, Heartbeat and StatusNotification: stored, answered per the operator's
registration status, latest status wins."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from evgate.protocol.errors import PropertyConstraintViolationError
from evgate.protocol.v16 import (
    BootNotificationRequest,
    ChargePointErrorCode,
    ChargePointStatus,
    HeartbeatRequest,
    StatusNotificationRequest,
)

from .handler_bench import Bench

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def boot(**extra: object) -> BootNotificationRequest:
    return BootNotificationRequest(charge_point_vendor="ACME", charge_point_model="X1", **extra)


async def test_boot_stores_the_charger_info_and_answers_accepted(bench: Bench) -> None:
    """Every field of the BootNotification is stored; Accepted with the heartbeat interval."""
    response = await bench.call(
        "BootNotification",
        boot(
            charge_point_serial_number="S1",
            charge_box_serial_number="B1",
            firmware_version="1.2.3",
            iccid="8901",
            imsi="2620",
            meter_type="M",
            meter_serial_number="MS",
        ),
    )
    assert response.status == "Accepted" and response.interval == 60
    [row] = await bench.rows("SELECT * FROM charger_boot_info")
    assert dict(row) | {"booted_at": None} == {
        "charger_id": "CP-1",
        "vendor": "ACME",
        "model": "X1",
        "charge_point_serial_number": "S1",
        "charge_box_serial_number": "B1",
        "firmware_version": "1.2.3",
        "iccid": "8901",
        "imsi": "2620",
        "meter_type": "M",
        "meter_serial_number": "MS",
        "registration_status": "Accepted",
        "booted_at": None,
    }


@pytest.mark.parametrize("status", ["Pending", "Rejected"])
async def test_boot_answers_the_registration_status_the_operator_set(
    bench: Bench, status: str
) -> None:
    """chargers.registration_status decides the answer."""
    await bench.chargers.update("CP-1", registration_status=status)
    assert (await bench.call("BootNotification", boot())).status == status


async def test_boot_of_an_unregistered_charger_is_rejected(bench: Bench) -> None:
    """A charger that is not (or no longer) registered is told Rejected."""
    assert (await bench.call("BootNotification", boot(), "GHOST")).status == "Rejected"


async def test_second_boot_is_accepted_like_the_first_and_updates_the_info(
    make_bench: object,
) -> None:
    """A second BootNotification is Accepted again and its firmware replaces the first's."""
    bench = make_bench(heartbeat_interval=300)  # type: ignore[operator]
    await bench.call("BootNotification", boot(firmware_version="1"))
    response = await bench.call("BootNotification", boot(firmware_version="2"))
    assert response.status == "Accepted" and response.interval == 300
    rows = await bench.rows("SELECT firmware_version FROM charger_boot_info")
    assert [r[0] for r in rows] == ["2"]


@pytest.mark.parametrize(("registration", "hooked"), [("Accepted", ["CP-1"]), ("Pending", [])])
async def test_an_accepted_boot_calls_the_after_accepted_boot_hook(
    make_bench: Callable[..., Bench], registration: str, hooked: list[str]
) -> None:
    """HandlerServices.after_accepted_boot (auth's offline-configuration push) hears of an
    Accepted boot only, before the handler returns its answer."""
    seen: list[str] = []
    bench = make_bench(after_accepted_boot=seen.append)
    await bench.chargers.update("CP-1", registration_status=registration)
    assert (await bench.call("BootNotification", boot())).status == registration
    assert seen == hooked


async def test_heartbeat_answers_the_current_time_and_writes_nothing(bench: Bench) -> None:
    """Heartbeat answers at once with a time-zone-aware current time."""
    response = await bench.call("Heartbeat", HeartbeatRequest())
    assert abs(response.current_time - datetime.now(UTC)) < timedelta(seconds=5)
    assert bench.writer.stats.submissions == 0


def status(connector: int, state: str, at: datetime | None = None, **extra: object) -> object:
    fields: dict[str, object] = {
        "connector_id": connector,
        "error_code": ChargePointErrorCode.no_error,
        "status": ChargePointStatus(state),
        **extra,
    }
    if at is not None:
        fields["timestamp"] = at
    return StatusNotificationRequest(**fields)  # type: ignore[arg-type]


async def test_status_notification_stores_every_field_and_connector_zero(bench: Bench) -> None:
    """Connector 0 (the charger) and a faulted connector with info and vendor codes."""
    await bench.call("StatusNotification", status(0, "Available", T0))
    await bench.call(
        "StatusNotification",
        status(
            1,
            "Faulted",
            T0,
            error_code=ChargePointErrorCode.ground_failure,
            info="rcd",
            vendor_id="acme",
            vendor_error_code="E42",
        ),
    )
    rows = await bench.rows(
        "SELECT connector_id, status, error_code, info, vendor_id, vendor_error_code"
        " FROM connectors ORDER BY connector_id"
    )
    assert [tuple(r) for r in rows] == [
        (0, "Available", "NoError", None, None, None),
        (1, "Faulted", "GroundFailure", "rcd", "acme", "E42"),
    ]


async def test_an_older_status_never_overwrites_a_newer_one(bench: Bench) -> None:
    """A late resend (earlier timestamp) is answered but leaves the newer status."""
    await bench.call("StatusNotification", status(1, "Charging", T0 + timedelta(minutes=1)))
    await bench.call("StatusNotification", status(1, "Preparing", T0))
    rows = await bench.rows("SELECT status FROM connectors")
    assert [r[0] for r in rows] == ["Charging"]


async def test_status_without_timestamp_uses_the_time_received(bench: Bench) -> None:
    """No timestamp: the status counts as of now, so it replaces an older one."""
    await bench.call("StatusNotification", status(1, "Charging", T0))
    await bench.call("StatusNotification", status(1, "Finishing"))
    rows = await bench.rows("SELECT status FROM connectors")
    assert [r[0] for r in rows] == ["Finishing"]


async def test_negative_connector_id_is_a_property_constraint_violation(bench: Bench) -> None:
    """A connector id outside 0..2^31-1 gets a clear CALLERROR, not a database failure."""
    with pytest.raises(PropertyConstraintViolationError, match="connectorId"):
        await bench.call("StatusNotification", status(-1, "Available"))


async def test_replies_encode_compactly_without_nulls(bench: Bench) -> None:
    """Absent optional fields are left out of the reply, never sent as null."""
    response = await bench.call("StatusNotification", status(1, "Available"))
    assert msgspec.json.encode(response) == b"{}"
