"""gateway room: the upgrade decision — who may open a charger connection, and how.

Pure and synchronous (picows's listener factory is synchronous): the decision reads only the
request line, its headers, what the TLS layer proved, and the in-memory credential index that
:class:`evgate.gateway.server.Gateway` keeps in sync with the database. The HTTP answers:

=====================================================  ======  =====================
case                                                   status  reason (metric label)
=====================================================  ======  =====================
source address over its failed-upgrade budget          429     rate_limited
path is not ``/cp/{id}`` or ``/ocpp/{id}``             404     bad_path
no such charger                                        404     unknown_charger
client certificate for another charger                 401     certificate
no secret (neither ``?auth=`` nor Basic)               401     missing_secret
wrong secret (or Basic user is not the charger id)     401     bad_secret
secret right, transport below the charger's profile    403     security_profile
all right                                              101     (``ocpp1.6`` chosen)
=====================================================  ======  =====================

The 404s and 401s count against the source address's budget (``failed_upgrades_per_minute``);
a 403 needs the right secret, so it does not. Both paths take either credential form: a
charger configured with a base URL ending in ``/cp/`` that sends Basic auth still connects.
A client certificate whose CN is the charger id authenticates on its own (profile 3).

A charger that sends both a query secret and Basic auth is admitted when either is its
secret, and refused (``bad_secret``) only when neither is. Neither form is trusted over the
other, and each alone would be accepted, so this admits no one a single form would not; it
keeps two real chargers connected: one whose Basic password is the AuthorizationKey evgate
rotated while its configured URL still holds the secret it was installed with, and one that
sends Basic with an empty password beside the right ``?auth=``.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from evgate.credentials import is_valid_charger_id, verify
from evgate.storage.chargers import ChargerCredentials

__all__ = [
    "SUBPROTOCOL",
    "Admit",
    "FailureLimiter",
    "Refuse",
    "decide",
    "offers_ocpp16",
    "parse_target",
]

SUBPROTOCOL = "ocpp1.6"
_PREFIXES = ("/cp/", "/ocpp/")
_WINDOW = 60.0


class Admit(NamedTuple):
    """The upgrade may proceed.

    Attributes:
        credentials: the charger's credentials as the index held them.
        security_profile: the profile this connection meets (1, 2 or 3).
        auth_digest: the digest of the secret it presented; ``None`` when a client
            certificate authenticated it (a secret rotation then does not concern it).
    """

    credentials: ChargerCredentials
    security_profile: int
    auth_digest: bytes | None


class Refuse(NamedTuple):
    """The upgrade is answered with an HTTP error and the connection closed."""

    status: int
    reason: str
    message: str
    counts_as_failure: bool = True
    retry_after: int | None = None


class FailureLimiter:
    """Failed upgrades per source address in fixed one-minute windows.

    Memory is bounded twice: the table is dropped whole when the window rolls over, and it
    holds at most ``max_addresses`` addresses (an attacker with many source addresses cannot
    grow it): past that, the address that failed least recently is forgotten, so one that
    keeps failing keeps its count.
    """

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 65_536,
    ) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._clock = clock
        self._window_start = clock()
        self._failures: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def _roll(self) -> float:
        now = self._clock()
        if now - self._window_start >= _WINDOW:
            self._window_start = now
            self._failures.clear()
        return now

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or ``None`` if it may try now."""
        now = self._roll()
        if self._failures.get(address, 0) < self.per_minute:
            return None
        return max(1, int(self._window_start + _WINDOW - now + 0.999))

    def failed(self, address: str) -> None:
        self._roll()
        self._failures[address] = self._failures.pop(address, 0) + 1  # now the most recent
        if len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)


def parse_target(path: str) -> tuple[str, str | None] | None:
    """The charger id and the ``auth`` query secret of an upgrade path, or ``None`` when the
    path is not a charger endpoint."""
    if path.startswith("/"):  # origin-form, which urlsplit would misread from "//" on
        target, _, query = path.partition("#")[0].partition("?")
    else:  # absolute-form (RFC 9112 3.2.2)
        try:
            parts = urlsplit(path)
        except ValueError:  # "http://[x": a 404 like any other bad path, not a 500
            return None
        target, query = parts.path, parts.query
    for prefix in _PREFIXES:
        if target.startswith(prefix):
            charger_id = unquote(target[len(prefix) :].rstrip("/"))
            break
    else:
        return None
    if not is_valid_charger_id(charger_id):
        return None
    secrets = parse_qs(query).get("auth")
    return charger_id, (secrets[0] if secrets else None)


def _basic_password(header: str, charger_id: str) -> str | None:
    """The password of a Basic ``Authorization`` header whose user is ``charger_id``.

    The user is matched as a prefix rather than split at the first colon, because charger ids
    may themselves contain ':'.
    """
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""  # present but unreadable: a wrong secret, not a missing one
    user_prefix = charger_id + ":"
    return decoded[len(user_prefix) :] if decoded.startswith(user_prefix) else ""


def offers_ocpp16(protocol_headers: list[str]) -> bool:
    """Whether any ``Sec-WebSocket-Protocol`` header offers ``ocpp1.6``."""
    return any(p.strip() == SUBPROTOCOL for h in protocol_headers for p in h.split(","))


def decide(
    path: str,
    authorization: str | None,
    *,
    address: str,
    tls: bool,
    certificate_cn: str | None,
    index: Mapping[str, ChargerCredentials],
    limiter: FailureLimiter,
) -> Admit | Refuse:
    """Decide an upgrade (see the module docstring for the table).

    Args:
        path: the request target (path and query).
        authorization: the ``Authorization`` header, if any.
        address: the source IP address (rate-limiting key).
        tls: the connection is TLS.
        certificate_cn: the CN of a client certificate the TLS layer verified, if any.
        index: charger id → credentials.
        limiter: the failed-upgrade budget; a refusal that counts is recorded by the caller
            (``limiter.failed``) so that the decision itself stays a pure read.
    """
    retry = limiter.retry_after(address)
    if retry is not None:
        return Refuse(429, "rate_limited", "too many failed attempts", False, retry)
    target = parse_target(path)
    if target is None:
        return Refuse(404, "bad_path", "use /cp/{chargerId}?auth={secret} or /ocpp/{chargerId}")
    charger_id, query_secret = target
    credentials = index.get(charger_id)
    if credentials is None:
        return Refuse(404, "unknown_charger", "unknown charger")
    if certificate_cn is not None:
        if certificate_cn != charger_id:
            return Refuse(401, "certificate", "the client certificate names another charger")
        return Admit(credentials, 3, None)
    basic = None if authorization is None else _basic_password(authorization, charger_id)
    if query_secret is None and basic is None:
        return Refuse(401, "missing_secret", "credentials required")
    # Both sent: either may prove it (see the module docstring).
    proved = query_secret is not None and verify(query_secret, credentials.secret_digest)
    if not proved and not (basic is not None and verify(basic, credentials.secret_digest)):
        return Refuse(401, "bad_secret", "wrong credentials")
    profile = 2 if tls else 1
    if profile < credentials.security_profile:
        return Refuse(
            403,
            "security_profile",
            f"this charger needs security profile {credentials.security_profile}",
            False,
        )
    return Admit(credentials, profile, credentials.secret_digest)
