"""loadtest: the requests a simulated charger sends, shared by the fleet simulator and the
locust scenario so both send exactly the same messages (evgate's own protocol Structs)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from evgate.protocol.v16 import (
    BootNotificationRequest,
    ChargePointErrorCode,
    ChargePointStatus,
    Measurand,
    MeterValue,
    MeterValuesRequest,
    ReadingContext,
    Reason,
    SampledValue,
    StartTransactionRequest,
    StatusNotificationRequest,
    StopTransactionRequest,
    UnitOfMeasure,
)

__all__ = ["boot", "meter_values", "start_transaction", "status", "stop_transaction"]


def _now() -> datetime:
    return datetime.now(UTC)


def boot(index: int) -> BootNotificationRequest:
    """The BootNotification of simulated charger number ``index``."""
    return BootNotificationRequest(
        charge_point_vendor="evgate-sim",
        charge_point_model="SIM-22",
        charge_point_serial_number=f"S{index:08d}",
        firmware_version="1.0.0",
    )


def status(connector: int, state: ChargePointStatus) -> StatusNotificationRequest:
    """A StatusNotification without error, stamped now."""
    return StatusNotificationRequest(
        connector_id=connector,
        error_code=ChargePointErrorCode.no_error,
        status=state,
        timestamp=_now(),
    )


def start_transaction(connector: int, id_tag: str, meter_wh: int) -> StartTransactionRequest:
    return StartTransactionRequest(
        connector_id=connector, id_tag=id_tag, meter_start=meter_wh, timestamp=_now()
    )


def stop_transaction(
    transaction_id: int, id_tag: str, meter_wh: int, reason: Reason = Reason.local
) -> StopTransactionRequest:
    return StopTransactionRequest(
        meter_stop=meter_wh,
        timestamp=_now(),
        transaction_id=transaction_id,
        id_tag=id_tag,
        reason=reason,
    )


def meter_values(
    connector: int,
    transaction_id: int,
    energy_wh: int,
    power_w: float,
    count: int,
    rng: random.Random,
) -> MeterValuesRequest:
    """MeterValues with ``count`` periodic samples: the energy register first, then power,
    current, voltage, state of charge and temperature (repeating past six)."""
    power = power_w * rng.uniform(0.95, 1.0)
    values = [
        (Measurand.energy_active_import_register, f"{energy_wh}", UnitOfMeasure.wh),
        (Measurand.power_active_import, f"{power:.0f}", UnitOfMeasure.w),
        (Measurand.current_import, f"{power / 690:.1f}", UnitOfMeasure.a),
        (Measurand.voltage, f"{rng.uniform(228, 232):.1f}", UnitOfMeasure.v),
        (Measurand.soc, f"{rng.randint(10, 95)}", UnitOfMeasure.percent),
        (Measurand.temperature, f"{rng.uniform(20, 45):.1f}", UnitOfMeasure.celsius),
    ]
    sampled = [
        SampledValue(
            value=value, context=ReadingContext.sample_periodic, measurand=measurand, unit=unit
        )
        for measurand, value, unit in (values[i % len(values)] for i in range(count))
    ]
    return MeterValuesRequest(
        connector_id=connector,
        transaction_id=transaction_id,
        meter_value=[MeterValue(timestamp=_now(), sampled_value=sampled)],
    )
