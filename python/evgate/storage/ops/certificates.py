"""storage room: the writer's ops of ``signed_certificates`` — certificates signed for chargers
(SignCertificate) and whether CertificateSigned reached them (issue 21.6).

* :func:`signed`: a certificate signed for a charger, stored with the SignCertificate answer
  that promised it, claimed for sending at once; an older one still pending for the charger
  is ``superseded`` (never sent: the charger asked again). Its result is the row's id.
* :func:`claim`: after an accepted BootNotification, the charger's pending certificate (if
  any) that no other process is sending, claimed until ``until``.
* :func:`outcome`: what the attempt gave: the charger's answer (``accepted``, ``rejected``,
  ``error`` for a CALLERROR or an unreadable answer: final, never sent again), or
  ``pending`` (not connected, no answer: sent again after its next accepted boot).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from evgate.storage.ops.base import FetchEach, Statement, Write, WriteOp

__all__ = [
    "CLAIMS",
    "OUTCOMES",
    "SIGNED",
    "CertificateClaim",
    "CertificateOutcome",
    "CertificateState",
    "ClaimedCertificate",
    "SignedCertificate",
    "claim",
    "outcome",
    "signed",
]

#: What became of one attempt to send a certificate (``pending``: not delivered).
CertificateState = Literal["pending", "accepted", "rejected", "error"]


class SignedCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """A certificate chain signed for a charger, to be sent now by the process signing it
    (claimed until ``sending_until``)."""

    charger_id: str
    certificate_chain: str
    signed_at: datetime
    sending_until: datetime


class CertificateClaim(msgspec.Struct, frozen=True, kw_only=True):
    """Claim the charger's pending certificate, unless another claim runs past ``now``."""

    charger_id: str
    now: datetime
    until: datetime


class ClaimedCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """A pending certificate this process now sends."""

    id: int
    charger_id: str
    certificate_chain: str


class CertificateOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """The end of one attempt to send certificate ``id``; ``error`` says why it was not
    delivered, or the charger's CALLERROR."""

    id: int
    state: CertificateState
    at: datetime
    error: str | None = None


SIGNED: FetchEach[SignedCertificate, int] = FetchEach(
    "WITH superseded AS (UPDATE signed_certificates SET state = 'superseded', sending_until = NULL"
    " WHERE charger_id = $1 AND state = 'pending')"
    " INSERT INTO signed_certificates (charger_id, certificate_chain, signed_at, sending_until)"
    " VALUES ($1, $2, $3, $4) RETURNING id",
    name="signed_certificates",
    args=lambda c: (c.charger_id, c.certificate_chain, c.signed_at, c.sending_until),
)


class Claims(WriteOp[CertificateClaim, ClaimedCertificate | None]):
    """Claims each charger's pending certificate (the newest: older ones are superseded)."""

    name = "claim:signed_certificates"
    _SQL = (
        "UPDATE signed_certificates SET sending_until = $3 WHERE id = ("
        " SELECT id FROM signed_certificates WHERE charger_id = $1 AND state = 'pending'"
        " AND (sending_until IS NULL OR sending_until < $2) ORDER BY id DESC LIMIT 1"
        " FOR UPDATE SKIP LOCKED) RETURNING id, certificate_chain"
    )

    async def write(
        self, conn: asyncpg.Connection, items: list[CertificateClaim]
    ) -> list[ClaimedCertificate | None]:
        claimed: list[ClaimedCertificate | None] = []
        for item in items:
            row = await conn.fetchrow(self._SQL, item.charger_id, item.now, item.until)
            claimed.append(
                None
                if row is None
                else ClaimedCertificate(
                    id=row["id"],
                    charger_id=item.charger_id,
                    certificate_chain=row["certificate_chain"],
                )
            )
        return claimed


CLAIMS = Claims()

OUTCOMES: Statement[CertificateOutcome] = Statement(
    "UPDATE signed_certificates SET state = $2, attempts = attempts + 1, sending_until = NULL,"
    " last_attempt_at = $3, last_error = $4,"
    " answered_at = CASE WHEN $2::text = 'pending' THEN NULL ELSE $3::timestamptz END"
    " WHERE id = $1 AND state = 'pending'",
    name="signed_certificate_outcomes",
    args=lambda o: (o.id, o.state, o.at, o.error),
)


def signed(item: SignedCertificate) -> Write[int]:
    """Store a signed certificate (superseding the charger's pending one); result: its id."""
    return SIGNED(item)


def claim(item: CertificateClaim) -> Write[ClaimedCertificate | None]:
    """Claim the charger's pending certificate; result: it, or None (none, or being sent)."""
    return CLAIMS(item)


def outcome(item: CertificateOutcome) -> Write[None]:
    """Record how an attempt ended (only a pending certificate changes)."""
    return OUTCOMES(item)
