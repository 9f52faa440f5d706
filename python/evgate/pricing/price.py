"""pricing room: the price of a transaction under its tariff snapshot.

How a price is made (the README's "Tariffs and prices" says the same to operators):

* **energy** = meterStop - meterStart (Wh), priced per kWh; with time-of-day prices, the energy
  between two consecutive register readings (start, the transaction's samples, stop) is spread
  evenly over that interval and split at the periods' boundaries (local time of the snapshot's
  timezone). meterStop < meterStart (a meter reset or rollover): energy 0, flag ``meterReset``.
* **time** = stop - start, priced per minute (fractions of a minute count). A charger clock that
  says stop < start: time 0, flag ``clockSkew`` (the energy is still priced, at the start's
  price).
* **idle** = the time the connector reported SuspendedEV, SuspendedEVSE or Finishing after the
  last energy increase seen in the readings (until the stop), less the grace period, per minute.
* **connection fee** once; then the **minimum** / **maximum** price adjust the sum; then **tax**.

Everything is exact :class:`~decimal.Decimal` arithmetic; the totals are rounded to the
currency's minor unit once, at the end, half-up: ``totalExclTax`` from the exact sum,
``totalInclTax`` from the exact sum with tax, and ``tax`` is their difference. Each breakdown
line's amount is its exact amount rounded the same way, for display: lines may differ from the
totals by a minor unit where rounding falls so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

import msgspec

from evgate.pricing.tariffs import CURRENCY_MINOR_UNITS, Snapshot, Tariff

__all__ = [
    "IDLE_STATUSES",
    "Flag",
    "IdlePeriod",
    "Price",
    "PriceLine",
    "PricingInput",
    "Reading",
    "price",
]

Flag = Literal["clockSkew", "meterReset"]
Component = Literal["connectionFee", "energy", "time", "idle", "minimumPrice", "maximumPrice"]
IDLE_STATUSES = frozenset({"SuspendedEV", "SuspendedEVSE", "Finishing"})

_MICROS_PER_MINUTE = Decimal(60_000_000)
_WH_PER_KWH = Decimal(1000)
_HUNDRED = Decimal(100)


class Reading(msgspec.Struct, frozen=True, array_like=True):
    """An energy register reading (Wh) of the transaction at a time."""

    at: datetime
    wh: Decimal


class IdlePeriod(msgspec.Struct, frozen=True, array_like=True):
    """A time the connector reported an idle status (SuspendedEV, SuspendedEVSE, Finishing);
    ``end`` None: still idle (at the stop)."""

    start: datetime
    end: datetime | None = None


class PricingInput(msgspec.Struct, frozen=True, kw_only=True):
    """What a transaction's price depends on, besides its tariff."""

    started_at: datetime
    stopped_at: datetime
    meter_start: int
    meter_stop: int
    # The transaction's energy register samples (any order; those outside start-stop and
    # those that would run the register backwards are not used).
    readings: Sequence[Reading] = ()
    idle_periods: Sequence[IdlePeriod] = ()


class PriceLine(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One line of a price's breakdown: ``quantity`` of ``unit`` at ``unitPrice``."""

    component: Component
    quantity: Decimal
    unit: Literal["session", "kWh", "min"]
    unit_price: Decimal
    amount: Decimal


class Price(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A transaction's price: the totals in the currency's minor unit, and how they came."""

    currency: str
    tariff_id: int
    total_excl_tax: Decimal
    total_incl_tax: Decimal
    tax: Decimal
    tax_percent: Decimal
    breakdown: tuple[PriceLine, ...]
    energy_wh: Decimal
    charging_minutes: Decimal
    idle_minutes: Decimal
    flags: tuple[Flag, ...] = ()


def _minutes(span: timedelta) -> Decimal:
    return Decimal(span // timedelta(microseconds=1)) / _MICROS_PER_MINUTE


class _Clock:
    """The local time of day of instants in a timezone, and the boundaries of energy periods."""

    def __init__(self, tariff: Tariff, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)
        self.periods = sorted(tariff.energy_periods, key=lambda p: p.start)
        self.starts = [time.fromisoformat(p.start) for p in self.periods]

    def unit_price_at(self, at: datetime) -> Decimal:
        local = at.astimezone(self.zone).time().replace(tzinfo=None)
        current = self.periods[-1]  # before the first start: the last period, from yesterday
        for start, period in zip(self.starts, self.periods, strict=True):
            if start <= local:
                current = period
        return current.price_per_kwh

    def next_boundary(self, at: datetime) -> datetime:
        """The first instant after ``at`` at which a period starts."""
        day: date = at.astimezone(self.zone).date()
        for offset in range(3):  # a boundary is at most a day (and a DST hour) away
            for start in self.starts:
                local = datetime.combine(day + timedelta(days=offset), start, self.zone)
                candidate = local.astimezone(UTC)
                if candidate > at:
                    return candidate
        raise AssertionError("an energy period starts every day")  # pragma: no cover


def _energy_by_price(
    tariff: Tariff, timezone: str, points: list[Reading]
) -> dict[Decimal, Decimal]:
    """Wh at each unit price (per kWh)."""
    if not tariff.energy_periods:
        total = points[-1].wh - points[0].wh
        return {tariff.price_per_kwh: total} if total and tariff.price_per_kwh else {}
    clock = _Clock(tariff, timezone)
    split: dict[Decimal, Decimal] = {}
    for first, last in pairwise(points):
        delta = last.wh - first.wh
        if not delta:
            continue
        if last.at <= first.at:
            pieces = [(first.at, last.at)]
        else:
            pieces = []
            cursor = first.at
            while cursor < last.at:
                end = min(clock.next_boundary(cursor), last.at)
                pieces.append((cursor, end))
                cursor = end
        whole = last.at - first.at
        given = Decimal(0)
        for index, (a, b) in enumerate(pieces):
            if index == len(pieces) - 1:
                wh = delta - given  # the remainder: the pieces add up to delta exactly
            else:
                wh = (
                    delta
                    * Decimal((b - a) // timedelta(microseconds=1))
                    / Decimal(whole // timedelta(microseconds=1))
                )
            given += wh
            unit_price = clock.unit_price_at(a)
            split[unit_price] = split.get(unit_price, Decimal(0)) + wh
    return split


def _points(facts: PricingInput, energy_wh: Decimal) -> list[Reading]:
    """Start, the usable samples in time order (inside the transaction, the register never
    running backwards nor past meterStop), and stop."""
    start = Reading(facts.started_at, Decimal(facts.meter_start))
    if energy_wh == 0 or facts.stopped_at < facts.started_at:
        return [start, Reading(facts.started_at, start.wh + energy_wh)]
    stop = Reading(facts.stopped_at, Decimal(facts.meter_stop))
    points = [start]
    for reading in sorted(facts.readings, key=lambda r: r.at):
        if start.at < reading.at < stop.at and points[-1].wh <= reading.wh <= stop.wh:
            points.append(reading)
    points.append(stop)
    return points


def _last_increase(facts: PricingInput) -> datetime:
    """When the samples last showed the register rise (the start, if they never did)."""
    last, highest = facts.started_at, Decimal(facts.meter_start)
    for reading in sorted(facts.readings, key=lambda r: r.at):
        if facts.started_at <= reading.at <= facts.stopped_at and reading.wh > highest:
            last, highest = reading.at, reading.wh
    return last


def _idle(facts: PricingInput) -> timedelta:
    since = _last_increase(facts)
    total = timedelta(0)
    for period in facts.idle_periods:
        start = max(period.start, since)
        end = facts.stopped_at if period.end is None else min(period.end, facts.stopped_at)
        if end > start:
            total += end - start
    return total


def price(snapshot: Snapshot, facts: PricingInput) -> Price:
    """The price of a transaction under ``snapshot`` (see the module's docstring).

    Raises:
        KeyError: the snapshot's currency is not ISO 4217 (a tariff that passed
            ``check_tariff`` never is).
    """
    tariff = snapshot.tariff
    quantum = Decimal(1).scaleb(-CURRENCY_MINOR_UNITS[tariff.currency])
    flags: list[Flag] = []
    with localcontext() as context:
        context.prec = 40  # far beyond any amount's digits: the only rounding is at the end
        energy_wh = Decimal(facts.meter_stop - facts.meter_start)
        if energy_wh < 0:
            energy_wh = Decimal(0)
            flags.append("meterReset")
        charging = facts.stopped_at - facts.started_at
        if charging < timedelta(0):
            charging = timedelta(0)
            flags.append("clockSkew")
        exact: list[tuple[Component, Decimal, Literal["session", "kWh", "min"], Decimal]] = []
        if tariff.connection_fee:
            exact.append(("connectionFee", Decimal(1), "session", tariff.connection_fee))
        energy = _energy_by_price(tariff, snapshot.timezone, _points(facts, energy_wh))
        for unit_price in sorted(energy):
            exact.append(("energy", energy[unit_price] / _WH_PER_KWH, "kWh", unit_price))
        minutes = _minutes(charging)
        if tariff.price_per_minute:
            exact.append(("time", minutes, "min", tariff.price_per_minute))
        idle_minutes = _minutes(_idle(facts)) if "clockSkew" not in flags else Decimal(0)
        billable_idle = max(Decimal(0), idle_minutes - tariff.idle_grace_minutes)
        if tariff.idle_fee_per_minute and billable_idle:
            exact.append(("idle", billable_idle, "min", tariff.idle_fee_per_minute))
        amounts = [quantity * unit_price for _, quantity, _, unit_price in exact]
        subtotal = sum(amounts, Decimal(0))
        adjustment: tuple[Component, Decimal] | None = None
        if tariff.min_price is not None and subtotal < tariff.min_price:
            adjustment = ("minimumPrice", tariff.min_price - subtotal)
        elif tariff.max_price is not None and subtotal > tariff.max_price:
            adjustment = ("maximumPrice", tariff.max_price - subtotal)
        excl = subtotal + (adjustment[1] if adjustment else 0)
        incl = excl * (1 + tariff.tax_percent / _HUNDRED)

        def rounded(amount: Decimal) -> Decimal:
            return amount.quantize(quantum, rounding=ROUND_HALF_UP)

        lines = [
            PriceLine(
                component=component,
                quantity=quantity.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP),
                unit=unit,
                unit_price=unit_price,
                amount=rounded(amount),
            )
            for (component, quantity, unit, unit_price), amount in zip(exact, amounts, strict=True)
        ]
        if adjustment is not None:
            lines.append(
                PriceLine(
                    component=adjustment[0],
                    quantity=Decimal(1),
                    unit="session",
                    unit_price=rounded(adjustment[1]),
                    amount=rounded(adjustment[1]),
                )
            )
        total_excl, total_incl = rounded(excl), rounded(incl)
        return Price(
            currency=tariff.currency,
            tariff_id=snapshot.tariff_id,
            total_excl_tax=total_excl,
            total_incl_tax=total_incl,
            tax=total_incl - total_excl,
            tax_percent=tariff.tax_percent,
            breakdown=tuple(lines),
            energy_wh=energy_wh,
            charging_minutes=minutes.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP),
            idle_minutes=idle_minutes.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP),
            flags=tuple(flags),
        )
