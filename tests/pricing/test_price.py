"""The price of a transaction against hand-computed examples: each component alone, their
combinations, time-of-day energy prices crossing boundaries, minimum and maximum, tax, idle
fees with grace, and the issue's edge cases (no samples, clock skew, meter reset, days-long)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from evgate.pricing import (
    EnergyPeriod,
    IdlePeriod,
    PricingInput,
    Reading,
    Snapshot,
    Tariff,
    price,
)

T0 = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)  # winter: Europe/Amsterdam is UTC+1


def tariff(**terms: object) -> Snapshot:
    fields: dict[str, object] = {"name": "t", "currency": "EUR", **terms}
    timezone = str(fields.pop("timezone", "UTC"))
    return Snapshot(tariff_id=7, tariff=Tariff(**fields), timezone=timezone)  # type: ignore[arg-type]


def session(
    wh: int, minutes: float, *, start: datetime = T0, meter_start: int = 1000, **more: object
) -> PricingInput:
    return PricingInput(
        started_at=start,
        stopped_at=start + timedelta(minutes=minutes),
        meter_start=meter_start,
        meter_stop=meter_start + wh,
        **more,  # type: ignore[arg-type]
    )


def amounts(p: object) -> dict[str, D]:
    return {line.component: line.amount for line in p.breakdown}  # type: ignore[attr-defined]


def test_the_issue_example_start_fee_energy_and_time_with_tax() -> None:
    """1.00 + 10 kWh x 0.30 + 30 min x 0.05 = 5.50; 21 % tax: 6.655 → 6.66 (half-up)."""
    snapshot = tariff(
        connection_fee=D("1.00"),
        price_per_kwh=D("0.30"),
        price_per_minute=D("0.05"),
        tax_percent=D("21"),
    )
    p = price(snapshot, session(10_000, 30))
    assert (p.total_excl_tax, p.total_incl_tax, p.tax) == (D("5.50"), D("6.66"), D("1.16"))
    assert str(p.total_excl_tax) == "5.50" and p.currency == "EUR" and p.tariff_id == 7
    assert amounts(p) == {"connectionFee": D("1.00"), "energy": D("3.00"), "time": D("1.50")}
    energy = next(line for line in p.breakdown if line.component == "energy")
    assert (energy.quantity, energy.unit, energy.unit_price) == (D("10.000"), "kWh", D("0.30"))
    assert p.flags == () and p.energy_wh == 10_000 and p.charging_minutes == 30


def test_connection_fee_alone() -> None:
    p = price(tariff(connection_fee=D("1.25")), session(0, 5))
    assert p.total_excl_tax == D("1.25") and amounts(p) == {"connectionFee": D("1.25")}


def test_energy_alone() -> None:
    """12,345 Wh x 0.29 = 3.58005 → 3.58."""
    p = price(tariff(price_per_kwh=D("0.29")), session(12_345, 60))
    assert p.total_excl_tax == D("3.58") and list(amounts(p)) == ["energy"]


def test_time_counts_fractions_of_a_minute_and_rounds_half_up() -> None:
    """150 s x 0.05/min = 0.125 → 0.13 (half-up; half-even would give 0.12)."""
    p = price(tariff(price_per_minute=D("0.05")), session(0, 2.5))
    assert p.total_excl_tax == D("0.13") and amounts(p) == {"time": D("0.13")}


def test_rounding_happens_once_at_the_end() -> None:
    """10 Wh x 0.40 = 0.004 and 4.8 s x 0.05/min = 0.004: each line shows 0.00, but the total
    of the exact amounts, 0.008, is 0.01."""
    p = price(tariff(price_per_kwh=D("0.40"), price_per_minute=D("0.05")), session(10, 0.08))
    assert amounts(p) == {"energy": D("0.00"), "time": D("0.00")}
    assert p.total_excl_tax == D("0.01")


def test_tax_is_rounded_on_the_total_with_tax() -> None:
    """0.05 + 10 % = 0.055 → 0.06; tax 0.01."""
    p = price(tariff(connection_fee=D("0.05"), tax_percent=D("10")), session(0, 1))
    assert (p.total_excl_tax, p.total_incl_tax, p.tax, p.tax_percent) == (
        D("0.05"),
        D("0.06"),
        D("0.01"),
        D("10"),
    )


def test_minimum_price_raises_the_total() -> None:
    """0.50 of energy, minimum 2.00: +1.50; with 21 % tax 2.42."""
    snapshot = tariff(price_per_kwh=D("0.25"), min_price=D("2.00"), tax_percent=D("21"))
    p = price(snapshot, session(2_000, 10))
    assert amounts(p) == {"energy": D("0.50"), "minimumPrice": D("1.50")}
    assert (p.total_excl_tax, p.total_incl_tax) == (D("2.00"), D("2.42"))


def test_maximum_price_caps_the_total() -> None:
    """50 kWh x 0.30 = 15.00, maximum 10.00: -5.00."""
    p = price(tariff(price_per_kwh=D("0.30"), max_price=D("10.00")), session(50_000, 120))
    assert amounts(p) == {"energy": D("15.00"), "maximumPrice": D("-5.00")}
    assert p.total_excl_tax == D("10.00")


def test_a_total_between_minimum_and_maximum_is_left_alone() -> None:
    snapshot = tariff(price_per_kwh=D("0.30"), min_price=D("1"), max_price=D("10"))
    p = price(snapshot, session(10_000, 60))
    assert p.total_excl_tax == D("3.00") and list(amounts(p)) == ["energy"]


NIGHT_AND_DAY = (
    EnergyPeriod(start="07:00", price_per_kwh=D("0.40")),
    EnergyPeriod(start="23:00", price_per_kwh=D("0.20")),
)


def test_time_of_day_energy_crossing_a_boundary_is_split_evenly_without_samples() -> None:
    """22:00-24:00 Amsterdam (21:00-23:00 UTC), 20 kWh, no samples: 10 kWh before 23:00 at
    0.40 and 10 after at 0.20 = 6.00."""
    snapshot = tariff(energy_periods=NIGHT_AND_DAY, timezone="Europe/Amsterdam")
    start = datetime(2026, 1, 15, 21, 0, tzinfo=UTC)
    p = price(snapshot, session(20_000, 120, start=start))
    lines = {line.unit_price: line for line in p.breakdown}
    assert lines[D("0.40")].quantity == D("10.000") and lines[D("0.20")].quantity == D("10.000")
    assert p.total_excl_tax == D("6.00")


def test_time_of_day_energy_follows_the_samples() -> None:
    """The same session with a sample at 23:00 local showing 15 kWh: 15 x 0.40 + 5 x 0.20 =
    7.00."""
    snapshot = tariff(energy_periods=NIGHT_AND_DAY, timezone="Europe/Amsterdam")
    start = datetime(2026, 1, 15, 21, 0, tzinfo=UTC)
    sample = Reading(start + timedelta(hours=1), D(1000 + 15_000))
    p = price(snapshot, session(20_000, 120, start=start, readings=[sample]))
    assert p.total_excl_tax == D("7.00")


def test_time_of_day_before_the_first_start_is_the_last_period() -> None:
    """06:00-08:00 UTC, 10 kWh: 06-07 is still last night's 0.20, 07-08 is 0.40: 3.00."""
    snapshot = tariff(energy_periods=NIGHT_AND_DAY)
    p = price(snapshot, session(10_000, 120, start=datetime(2026, 1, 15, 6, tzinfo=UTC)))
    assert p.total_excl_tax == D("3.00")


def test_a_session_of_days() -> None:
    """72 h from midnight UTC, 72 kWh evenly, night/day prices: 8 night hours a day (24 kWh
    at 0.20 = 4.80) and 16 day hours (48 kWh at 0.40 = 19.20), plus 4320 min x 0.01 = 43.20:
    67.20."""
    snapshot = tariff(energy_periods=NIGHT_AND_DAY, price_per_minute=D("0.01"))
    start = datetime(2026, 1, 15, tzinfo=UTC)
    p = price(snapshot, session(72_000, 72 * 60, start=start))
    energy = {line.unit_price: line.amount for line in p.breakdown if line.component == "energy"}
    assert energy == {D("0.20"): D("4.80"), D("0.40"): D("19.20")}
    assert p.total_excl_tax == D("67.20")


def test_a_daylight_saving_change_moves_the_boundary_in_utc() -> None:
    """29 March 2026 Amsterdam goes to UTC+2: 23:00 local is 21:00 UTC. 20:00-22:00 UTC,
    20 kWh: 10 kWh at 0.40, 10 at 0.20."""
    snapshot = tariff(energy_periods=NIGHT_AND_DAY, timezone="Europe/Amsterdam")
    start = datetime(2026, 3, 29, 20, 0, tzinfo=UTC)
    p = price(snapshot, session(20_000, 120, start=start))
    assert p.total_excl_tax == D("6.00")


def test_idle_fee_after_grace() -> None:
    """SuspendedEV from minute 30 to the stop at 60: 30 idle minutes, 10 of grace, 20 x 0.10 =
    2.00."""
    snapshot = tariff(idle_fee_per_minute=D("0.10"), idle_grace_minutes=10)
    idle = [IdlePeriod(T0 + timedelta(minutes=30))]
    p = price(snapshot, session(5_000, 60, idle_periods=idle))
    assert amounts(p) == {"idle": D("2.00")} and p.idle_minutes == 30


def test_idle_counts_only_after_the_last_energy_increase() -> None:
    """Idle reported from minute 30, but the register still rose until minute 40: 20 idle
    minutes, 10 billable: 1.00."""
    snapshot = tariff(idle_fee_per_minute=D("0.10"), idle_grace_minutes=10)
    idle = [IdlePeriod(T0 + timedelta(minutes=30))]
    readings = [Reading(T0 + timedelta(minutes=m), D(1000 + wh)) for m, wh in
                ((10, 2_000), (40, 5_000), (50, 5_000))]  # fmt: skip
    p = price(snapshot, session(5_000, 60, idle_periods=idle, readings=readings))
    assert amounts(p) == {"idle": D("1.00")} and p.idle_minutes == 20


def test_idle_periods_add_up_and_within_grace_cost_nothing() -> None:
    """Two idle periods of 4 and 5 minutes: 9 minutes, within a 10-minute grace: no idle line;
    with a grace of 5: 4 x 0.10 = 0.40."""
    idle = [
        IdlePeriod(T0 + timedelta(minutes=10), T0 + timedelta(minutes=14)),
        IdlePeriod(T0 + timedelta(minutes=55)),
    ]
    free = price(tariff(idle_fee_per_minute=D("0.10"), idle_grace_minutes=10),
                 session(0, 60, idle_periods=idle))  # fmt: skip
    assert free.breakdown == () and free.total_excl_tax == D("0.00") and free.idle_minutes == 9
    paid = price(tariff(idle_fee_per_minute=D("0.10"), idle_grace_minutes=5),
                 session(0, 60, idle_periods=idle))  # fmt: skip
    assert paid.total_excl_tax == D("0.40")


def test_every_component_together() -> None:
    """1.00 + 10 kWh x 0.30 + 60 min x 0.05 + (25 - 5) idle min x 0.10 = 9.00, max 8.00: -1.00;
    tax 19 %: 9.52."""
    snapshot = tariff(
        connection_fee=D("1.00"),
        price_per_kwh=D("0.30"),
        price_per_minute=D("0.05"),
        idle_fee_per_minute=D("0.10"),
        idle_grace_minutes=5,
        min_price=D("2.00"),
        max_price=D("8.00"),
        tax_percent=D("19"),
    )
    idle = [IdlePeriod(T0 + timedelta(minutes=35), T0 + timedelta(minutes=60))]
    p = price(snapshot, session(10_000, 60, idle_periods=idle))
    assert amounts(p) == {
        "connectionFee": D("1.00"),
        "energy": D("3.00"),
        "time": D("3.00"),
        "idle": D("2.00"),
        "maximumPrice": D("-1.00"),
    }
    assert (p.total_excl_tax, p.total_incl_tax, p.tax) == (D("8.00"), D("9.52"), D("1.52"))


def test_clock_skew_prices_the_energy_with_no_time_and_flags_it() -> None:
    """stop 10 min before start: time 0, no idle, the energy at the start's price, flagged."""
    snapshot = tariff(price_per_kwh=D("0.30"), price_per_minute=D("0.05"),
                      idle_fee_per_minute=D("1"))  # fmt: skip
    p = price(snapshot, session(10_000, -10, idle_periods=[IdlePeriod(T0)]))
    assert p.flags == ("clockSkew",) and p.charging_minutes == 0 and p.idle_minutes == 0
    assert p.total_excl_tax == D("3.00") and amounts(p) == {"energy": D("3.00"), "time": D("0.00")}


def test_clock_skew_with_time_of_day_prices_uses_the_start_price() -> None:
    snapshot = tariff(energy_periods=NIGHT_AND_DAY)
    start = datetime(2026, 1, 15, 23, 30, tzinfo=UTC)
    assert price(snapshot, session(10_000, -60, start=start)).total_excl_tax == D("2.00")


def test_meter_reset_prices_no_energy_and_flags_it() -> None:
    """meterStop < meterStart: energy 0, flagged; the other components still apply."""
    snapshot = tariff(connection_fee=D("1"), price_per_kwh=D("0.30"), price_per_minute=D("0.05"))
    p = price(snapshot, session(-900, 30, meter_start=999_500))
    assert p.flags == ("meterReset",) and p.energy_wh == 0
    assert amounts(p) == {"connectionFee": D("1.00"), "time": D("1.50")}
    assert p.total_excl_tax == D("2.50")


def test_samples_that_run_backwards_or_outside_the_transaction_are_ignored() -> None:
    snapshot = tariff(energy_periods=NIGHT_AND_DAY)
    start = datetime(2026, 1, 15, 22, 0, tzinfo=UTC)
    readings = [
        Reading(start - timedelta(minutes=5), D(0)),
        Reading(start + timedelta(minutes=60), D(500)),  # below meterStart: ignored
        Reading(start + timedelta(hours=5), D(99_999)),
    ]
    p = price(snapshot, session(20_000, 120, start=start, readings=readings))
    assert p.total_excl_tax == D("6.00")


@pytest.mark.parametrize(
    ("currency", "expected"), [("JPY", D("357")), ("KWD", D("356.500")), ("EUR", D("356.50"))]
)
def test_the_minor_unit_is_the_currencys(currency: str, expected: D) -> None:
    """10 kWh x 35.5 + 1.5 min x 1 = 356.5: JPY has no minor unit (357), KWD three."""
    snapshot = tariff(currency=currency, price_per_kwh=D("35.5"), price_per_minute=D("1"))
    assert price(snapshot, session(10_000, 1.5)).total_excl_tax == expected
