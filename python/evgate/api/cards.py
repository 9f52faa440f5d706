"""api room: evgate never stores a card number — finding values that look like one.

A value looks like a card number (a PAN) when it holds a run of 12 to 19 digits, single spaces
or dashes allowed between them, that passes the Luhn check (ISO/IEC 7812). Routes that take
payment data say ``opt={"refuse_card_numbers": True}``; ``inputs.check_request`` then refuses
a body with such a string anywhere (a member name included) with a 422 that names no number,
before anything reads it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REFUSE_CARD_NUMBERS", "holds_card_number", "luhn_valid"]

#: The route option that turns the check on.
REFUSE_CARD_NUMBERS = "refuse_card_numbers"

# A maximal run of digits with single spaces or dashes between them.
_RUN = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9])*(?![0-9])")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _text_holds(text: str) -> bool:
    for match in _RUN.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 12 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False


def holds_card_number(value: Any) -> bool:
    """Whether a JSON value has a string (or a member name) that looks like a card number."""
    if isinstance(value, str):
        return _text_holds(value)
    if isinstance(value, dict):
        return any(_text_holds(k) or holds_card_number(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_card_number(v) for v in value)
    return False
