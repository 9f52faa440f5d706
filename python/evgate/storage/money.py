"""storage room: amounts of money — a currency's minor unit, and amounts as decimal strings.

Balances are ``numeric(20, 4)`` columns; the API reads and writes amounts as strings with
exactly the currency's minor unit of decimals (``"10.00"`` EUR, ``"500"`` JPY, ``"1.250"``
BHD), never through a float.
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = ["AMOUNT_DIGITS", "AmountError", "format_amount", "minor_unit", "parse_amount"]

# ISO 4217 currencies whose minor unit is not 2 decimals (the rest have 2).
_MINOR_UNITS = {
    **{c: 0 for c in ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                      "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF")},
    **{c: 3 for c in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")},
    **{c: 4 for c in ("CLF", "UYW")},
}  # fmt: skip

#: Integer digits an amount may have (the columns are numeric(20, 4)).
AMOUNT_DIGITS = 15

_AMOUNT = re.compile(rf"-?[0-9]{{1,{AMOUNT_DIGITS}}}(\.[0-9]{{1,4}})?")


class AmountError(ValueError):
    """A string that is not an amount of its currency."""


def minor_unit(currency: str) -> int:
    """The decimals of ``currency``'s minor unit (ISO 4217; 2 unless known otherwise)."""
    return _MINOR_UNITS.get(currency, 2)


def format_amount(amount: Decimal, currency: str) -> str:
    """``amount`` with exactly ``currency``'s decimals (``Decimal("10")`` EUR → ``"10.00"``)."""
    return str(amount.quantize(Decimal(1).scaleb(-minor_unit(currency))))


def parse_amount(text: str, currency: str) -> Decimal:
    """The amount a string states, in ``currency``.

    Raises:
        AmountError: not a plain decimal (``"10"``, ``"-2.5"``), more decimals than the
            currency's minor unit, or more than AMOUNT_DIGITS integer digits.
    """
    if not _AMOUNT.fullmatch(text):
        raise AmountError(f'{text!r} is not an amount (a decimal string such as "10.00")')
    amount = Decimal(text)
    decimals = minor_unit(currency)
    if amount != amount.quantize(Decimal(1).scaleb(-decimals)):
        raise AmountError(f"{currency} amounts have at most {decimals} decimals, got {text!r}")
    return amount
