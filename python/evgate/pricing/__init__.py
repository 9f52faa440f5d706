"""pricing room: tariffs and the price of a transaction — pure, decimal, unit-tested.

``tariffs.py`` holds what a CPO prices with (:class:`Tariff`, the snapshot a transaction keeps)
and which tariff applies (:func:`choose`); ``price.py`` computes a transaction's price
(:func:`price`) into a breakdown and totals. No I/O, no clock, no float: every amount is a
:class:`decimal.Decimal`, rounded to the currency's minor unit once, at the end, half-up.
"""

from evgate.pricing.price import (
    IDLE_STATUSES,
    Flag,
    IdlePeriod,
    Price,
    PriceLine,
    PricingInput,
    Reading,
    price,
)
from evgate.pricing.tariffs import (
    CURRENCY_MINOR_UNITS,
    Driver,
    EnergyPeriod,
    GroupEntry,
    Snapshot,
    Tariff,
    TariffInvalid,
    check_group,
    check_tariff,
    check_timezone,
    choose,
)

__all__ = [
    "CURRENCY_MINOR_UNITS",
    "IDLE_STATUSES",
    "Driver",
    "EnergyPeriod",
    "Flag",
    "GroupEntry",
    "IdlePeriod",
    "Price",
    "PriceLine",
    "PricingInput",
    "Reading",
    "Snapshot",
    "Tariff",
    "TariffInvalid",
    "check_group",
    "check_tariff",
    "check_timezone",
    "choose",
    "price",
]
