"""Which tariff applies (first match of a group, restrictions, validity) and what makes a
tariff or a group invalid (the API's 422)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from evgate.pricing import (
    Driver,
    EnergyPeriod,
    GroupEntry,
    Tariff,
    TariffInvalid,
    check_group,
    check_tariff,
    check_timezone,
    choose,
)

AT = datetime(2026, 6, 1, 12, tzinfo=UTC)
PUBLIC = Tariff(name="public", currency="EUR", price_per_kwh=D("0.40"))
FLEET = Tariff(name="fleet", currency="EUR", price_per_kwh=D("0.20"))
LATER = Tariff(name="later", currency="EUR", valid_from=datetime(2027, 1, 1, tzinfo=UTC))
TARIFFS = {1: PUBLIC, 2: FLEET, 3: LATER}


def _in(group: str | None, owner: int | None = None) -> Driver:
    return Driver(parent_id_tag=group, owner=owner)


def test_the_first_entry_whose_restrictions_match_applies() -> None:
    entries = [GroupEntry(tariff_id=2, id_tag_groups=("FLEET-A",)), GroupEntry(tariff_id=1)]
    assert choose(entries, TARIFFS, _in("fleet-a"), AT, owner=None) == (2, FLEET)  # CiString
    assert choose(entries, TARIFFS, _in("OTHER"), AT, owner=None) == (1, PUBLIC)
    assert choose(entries, TARIFFS, _in(None), AT, owner=None) == (1, PUBLIC)


def test_who_charges_counts_only_for_the_groups_owner() -> None:
    """A parentIdTag is free text: a sub-operator's id-tag naming the operator's group (or
    another sub-operator's) does not get its restricted tariff, nor the operator's id-tag a
    sub-operator's; an unrestricted entry (and validity) applies to every owner alike."""
    entries = [GroupEntry(tariff_id=2, id_tag_groups=("STAFF",)), GroupEntry(tariff_id=1)]
    assert choose(entries, TARIFFS, _in("STAFF"), AT, owner=None) == (2, FLEET)
    assert choose(entries, TARIFFS, _in("STAFF", 7), AT, owner=None) == (1, PUBLIC)
    assert choose(entries, TARIFFS, _in("STAFF", 7), AT, owner=7) == (2, FLEET)
    assert choose(entries, TARIFFS, _in("STAFF", 8), AT, owner=7) == (1, PUBLIC)
    assert choose(entries, TARIFFS, _in("STAFF"), AT, owner=7) == (1, PUBLIC)


def test_a_tariff_outside_its_validity_window_is_passed_over() -> None:
    entries = [GroupEntry(tariff_id=3), GroupEntry(tariff_id=1)]
    assert choose(entries, TARIFFS, _in(None), AT, owner=None) == (1, PUBLIC)
    later = datetime(2027, 2, 1, tzinfo=UTC)
    assert choose(entries, TARIFFS, _in(None, 7), later, owner=None) == (3, LATER)


def test_no_match_is_no_tariff() -> None:
    restricted = [GroupEntry(tariff_id=2, id_tag_groups=("X",))]
    assert choose(restricted, TARIFFS, _in(None), AT, owner=None) is None
    assert choose([], TARIFFS, _in(None), AT, owner=None) is None


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"currency": "XYZ"}, "ISO 4217"),
        ({"price_per_kwh": D("-0.01")}, "pricePerKwh"),
        ({"connection_fee": D("0.000001")}, "decimals"),
        ({"price_per_minute": D("NaN")}, "pricePerMinute"),
        ({"tax_percent": D("101")}, "taxPercent"),
        ({"min_price": D("5"), "max_price": D("4")}, "minPrice"),
        (
            {"energy_periods": (EnergyPeriod(start="07:00", price_per_kwh=D(1)),) * 2},
            "same time",
        ),
        ({"valid_from": AT, "valid_to": AT}, "validFrom"),
    ],
)
def test_invalid_tariffs(terms: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "t", "currency": "EUR", **terms}
    with pytest.raises(TariffInvalid, match=message):
        check_tariff(Tariff(**fields))  # type: ignore[arg-type]


def test_a_valid_tariff_passes() -> None:
    check_tariff(Tariff(name="t", currency="JPY", price_per_kwh=D("35.5"), tax_percent=D("10")))


def test_a_group_has_one_currency() -> None:
    currencies = {1: "EUR", 2: "EUR", 3: "USD"}
    assert check_group(currencies, [GroupEntry(tariff_id=1), GroupEntry(tariff_id=2)]) == "EUR"
    assert check_group(currencies, []) is None
    with pytest.raises(TariffInvalid, match="one currency"):
        check_group(currencies, [GroupEntry(tariff_id=1), GroupEntry(tariff_id=3)])
    with pytest.raises(KeyError):
        check_group(currencies, [GroupEntry(tariff_id=9)])


def test_timezones_are_iana_names() -> None:
    check_timezone("Europe/Amsterdam")
    for bad in ("Mars/Olympus", "../etc/passwd", "", "Europe/"):
        with pytest.raises(TariffInvalid):
            check_timezone(bad)
