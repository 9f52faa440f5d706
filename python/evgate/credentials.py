"""Charger secrets, API tokens and charger ids: made, digested and checked here.

A secret is made here, shown once to whoever asked for it, and from then on only its SHA-256
digest exists (ARCHITECTURE rule 5). Nothing in this module logs or stores a secret.

A module of its own beside the rooms, like ``tasks.py``: the gateway checks secrets at upgrade
time, ``auth/`` makes them, the API and the CLI check charger ids; none of them may import the
others for it (tests/test_sourcecode.py, ``ROOM_IMPORTS``). It imports only ``native``.
"""

from __future__ import annotations

import re
import secrets

from evgate.native import hash_secret, verify_secret

__all__ = [
    "CHARGER_ID_PATTERN",
    "KEY_LENGTH",
    "digest",
    "is_valid_charger_id",
    "key_problem",
    "new_api_token",
    "new_charger_secret",
    "verify",
]

# OCPP identity of a charger: what it puts in its URL. Kept to characters that need no escaping
# in a URL path, a Basic-auth user name or a Kafka record key; "." and ".." are dot-segments,
# which clients remove from a URL path (RFC 3986 5.2.4), so no URL could name such a charger.
# The one definition: the gateway's upgrade, the API's ids and the CLI all use it. The end is
# "(?![\s\S])", not "$": msgspec searches with Python's re, whose "$" also matches before a
# final newline ("CP-1\n"); both Python and the OpenAPI document's ECMA regex read it alike.
CHARGER_ID_PATTERN = r"^(?!\.\.?(?![\s\S]))[A-Za-z0-9._:\-]{1,64}(?![\s\S])"
_charger_id = re.compile(CHARGER_ID_PATTERN)

SECRET_DIGITS = 24
#: The security whitepaper's bounds for an AuthorizationKey (characters): a secret an operator
#: sets (``PUT /api/v1/chargers/{id}/secret``, ``chargers import-secrets``) or sends to a
#: charger (ChangeConfiguration of AuthorizationKey) keeps to them.
KEY_LENGTH = (16, 40)
# No control characters: none can be typed into a charger's configuration, and an HTTP header
# (Basic auth) cannot carry CR, LF or NUL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
TOKEN_PREFIX = "evg_"


def is_valid_charger_id(charger_id: str) -> bool:
    """Tell whether ``charger_id`` is a well-formed charger id."""
    return _charger_id.fullmatch(charger_id) is not None


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a charger's secret set by the operator or an AuthorizationKey
    (outside :data:`KEY_LENGTH`, or holding a control character), or None when it can."""
    low, high = KEY_LENGTH
    if not low <= len(key) <= high:
        return f"must be {low}-{high} characters"
    if _CONTROL.search(key):
        return "must hold no control characters"
    return None


def new_charger_secret() -> str:
    """Return a fresh charger secret: 24 decimal digits from the OS CSPRNG.

    24 digits are ~80 bits: chargers' keypads and configuration tools take digits well, and the
    OCPP AuthorizationKey (16-40 characters) fits them.
    """
    return str(secrets.randbelow(10**SECRET_DIGITS)).zfill(SECRET_DIGITS)


def new_api_token() -> str:
    """Return a fresh operator API token (``evg_`` + 43 URL-safe characters, 256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    """The SHA-256 digest of a secret or token, the only form that is stored."""
    return hash_secret(secret.encode())


def verify(secret: str, stored_digest: bytes) -> bool:
    """Compare a presented secret with a stored digest in constant time."""
    return verify_secret(secret.encode(), stored_digest)
