"""pricing room: what a CPO prices with — a :class:`Tariff` (currency, connection fee, energy
price, optionally by time of day, time and idle fees, minimum and maximum, tax, validity) — and
which tariff of a group applies to a transaction (:func:`choose`).

A tariff is also the snapshot a transaction keeps from its StartTransaction on (so a later change
of the tariff does not reprice a running transaction): the same Struct, stored as JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

__all__ = [
    "CURRENCY_MINOR_UNITS",
    "Driver",
    "EnergyPeriod",
    "GroupEntry",
    "Snapshot",
    "Tariff",
    "TariffInvalid",
    "check_group",
    "check_tariff",
    "check_timezone",
    "choose",
]

# ISO 4217 active codes → digits of the minor unit (most are 2; the exceptions are listed).
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN"
    " BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP"
    " GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP"
    " LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR"
    " NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN"
    " SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR"
    " ZMW ZWG"
)
CURRENCY_MINOR_UNITS: Mapping[str, int] = {
    **dict.fromkeys(_TWO.split(), 2),
    **dict.fromkeys(_ZERO.split(), 0),
    **dict.fromkeys(_THREE.split(), 3),
    **dict.fromkeys(_FOUR.split(), 4),
}

_TIME_OF_DAY = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
# The catalog: "up to 5 digits after the decimal point"; and no amount beyond a billion.
_MAX_DECIMALS = 5
_MAX_AMOUNT = Decimal(10) ** 9

TimeOfDay = Annotated[
    str, msgspec.Meta(pattern=_TIME_OF_DAY.pattern, description="local time HH:MM (24 h)")
]


class TariffInvalid(ValueError):
    """A tariff (or a group) that cannot price: the API answers 422 with its message."""


class EnergyPeriod(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A price per kWh from a local time of day on, until the next period's start (the last
    period runs on past midnight into the first)."""

    start: TimeOfDay
    price_per_kwh: Decimal


class Tariff(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A tariff's terms (amounts in its currency, excluding tax; None: not priced with)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
    connection_fee: Decimal = Decimal(0)
    price_per_kwh: Decimal = Decimal(0)
    # Time-of-day energy prices, in the location's timezone; when given, they replace
    # pricePerKwh.
    energy_periods: tuple[EnergyPeriod, ...] = ()
    price_per_minute: Decimal = Decimal(0)
    idle_fee_per_minute: Decimal = Decimal(0)
    idle_grace_minutes: Annotated[int, msgspec.Meta(ge=0, le=10080)] = 0
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    tax_percent: Decimal = Decimal(0)
    valid_from: datetime | None = None
    valid_to: datetime | None = None

    def valid_at(self, at: datetime) -> bool:
        """Whether ``at`` is inside the validity window (from inclusive, to exclusive)."""
        return (self.valid_from is None or self.valid_from <= at) and (
            self.valid_to is None or at < self.valid_to
        )


class Snapshot(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """The tariff a transaction is priced with, as it was at its StartTransaction, and the
    timezone its time-of-day prices are read in (the charger's location's, else UTC)."""

    tariff_id: int
    tariff: Tariff
    timezone: str = "UTC"


class Driver(msgspec.Struct, frozen=True, kw_only=True):
    """Who charges, as a group's restrictions read it: the id-tag's group (its parentIdTag)
    and the id-tag's owner (a sub-operator's id; None: the operator's)."""

    parent_id_tag: str | None = None
    owner: int | None = None


class GroupEntry(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A tariff of a tariff group and its restrictions (none: it applies to every
    transaction). ``id_tag_groups``: OCPP group ids (an id-tag's parentIdTag)."""

    tariff_id: Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1)]
    id_tag_groups: tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=20)], ...] = ()

    def matches(self, driver: Driver, owner: int | None) -> bool:
        """Whether the restrictions let ``driver`` have this tariff of a group of ``owner``.

        A restriction on who charges (``id_tag_groups``) names the group owner's own id-tags
        only: a parentIdTag is free text, so a sub-operator's id-tag may name any group, and
        must not get another owner's restricted price with it.
        """
        if not self.id_tag_groups:
            return True
        if driver.owner != owner or driver.parent_id_tag is None:
            return False
        wanted = {g.upper() for g in self.id_tag_groups}  # CiString, as OCPP compares
        return driver.parent_id_tag.upper() in wanted


def _check_amount(name: str, value: Decimal) -> None:
    if not value.is_finite() or value < 0 or value >= _MAX_AMOUNT:
        raise TariffInvalid(f"{name} must be a decimal from 0 to below {_MAX_AMOUNT}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -_MAX_DECIMALS:
        raise TariffInvalid(f"{name} has more than {_MAX_DECIMALS} decimals")


def check_tariff(tariff: Tariff) -> None:
    """Raises: TariffInvalid: an unknown currency, a negative or malformed amount, a tax
    outside 0-100 %, a minimum above the maximum, repeated period starts or an empty window."""
    if tariff.currency not in CURRENCY_MINOR_UNITS:
        raise TariffInvalid(f"{tariff.currency!r} is not an ISO 4217 currency")
    amounts = {
        "connectionFee": tariff.connection_fee,
        "pricePerKwh": tariff.price_per_kwh,
        "pricePerMinute": tariff.price_per_minute,
        "idleFeePerMinute": tariff.idle_fee_per_minute,
        "taxPercent": tariff.tax_percent,
    }
    if tariff.min_price is not None:
        amounts["minPrice"] = tariff.min_price
    if tariff.max_price is not None:
        amounts["maxPrice"] = tariff.max_price
    for index, period in enumerate(tariff.energy_periods):
        amounts[f"energyPeriods[{index}].pricePerKwh"] = period.price_per_kwh
    for name, value in amounts.items():
        _check_amount(name, value)
    if tariff.tax_percent > 100:
        raise TariffInvalid("taxPercent must be from 0 to 100")
    if (
        tariff.min_price is not None
        and tariff.max_price is not None
        and tariff.min_price > tariff.max_price
    ):
        raise TariffInvalid("minPrice is above maxPrice")
    starts = [p.start for p in tariff.energy_periods]
    if len(set(starts)) != len(starts):
        raise TariffInvalid("energyPeriods start at the same time twice")
    if tariff.valid_from and tariff.valid_to and tariff.valid_from >= tariff.valid_to:
        raise TariffInvalid("validFrom is not before validTo")


def check_timezone(name: str) -> None:
    """Raises: TariffInvalid: ``name`` is not an IANA timezone."""
    try:
        if not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name):
            raise ValueError(name)
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TariffInvalid(f"{name!r} is not an IANA timezone") from None


def check_group(currency_of: Mapping[int, str], entries: Iterable[GroupEntry]) -> str | None:
    """The one currency of a group's tariffs (None for an empty group).

    Args:
        currency_of: the currency of each existing tariff, by id.
        entries: the group's entries.

    Raises:
        KeyError: an entry names no existing tariff (its id is the error's argument).
        TariffInvalid: the tariffs' currencies differ.
    """
    currencies = {currency_of[e.tariff_id] for e in entries}
    if len(currencies) > 1:
        raise TariffInvalid(f"a group's tariffs have one currency, not {sorted(currencies)}")
    return currencies.pop() if currencies else None


def choose(
    entries: Iterable[GroupEntry],
    tariffs: Mapping[int, Tariff],
    driver: Driver,
    at: datetime,
    *,
    owner: int | None,
) -> tuple[int, Tariff] | None:
    """The first tariff of a group (of ``owner``: a sub-operator's id, None: the operator's)
    whose restrictions match ``driver`` and whose validity window holds ``at`` (the
    transaction's start), with its id; None when none applies."""
    for entry in entries:
        tariff = tariffs.get(entry.tariff_id)
        if tariff is not None and entry.matches(driver, owner) and tariff.valid_at(at):
            return entry.tariff_id, tariff
    return None
