"""storage room: reads of ``signed_certificates`` — the certificates signed for a charger and
whether they reached it (written by the writer's ``ops/certificates.py``), for the API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import NotFound

__all__ = ["SHOWN", "CertificateStore", "SignedCertificateInfo"]

#: The newest certificates shown per charger.
SHOWN = 50


class SignedCertificateInfo(msgspec.Struct, kw_only=True, rename="camel"):
    """A certificate signed for a charger and its delivery: ``pending`` (not delivered yet:
    sent after the charger's next accepted BootNotification), ``accepted`` / ``rejected`` (the
    charger's CertificateSigned answer), ``error`` (it answered a CALLERROR), ``superseded`` (a
    newer one replaced it before delivery). The chain itself is not shown."""

    id: int
    signed_at: datetime
    state: Literal["pending", "accepted", "rejected", "error", "superseded"]
    attempts: int
    last_attempt_at: datetime | None
    last_error: str | None
    answered_at: datetime | None


class CertificateStore:
    """The certificates signed for chargers (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def of_charger(self, charger_id: str) -> list[SignedCertificateInfo]:
        """The charger's newest :data:`SHOWN` certificates, newest first.

        Raises:
            NotFound: no such charger.
        """
        rows = await self.db.fetch(
            "SELECT c.id AS charger, s.id, s.signed_at, s.state, s.attempts, s.last_attempt_at,"
            " s.last_error, s.answered_at FROM chargers c LEFT JOIN LATERAL ("
            " SELECT * FROM signed_certificates WHERE charger_id = c.id ORDER BY id DESC"
            " LIMIT $2) s ON true WHERE c.id = $1 ORDER BY s.id DESC",
            charger_id,
            SHOWN,
        )
        if not rows:
            raise NotFound(f"charger {charger_id!r} not found")
        return [
            SignedCertificateInfo(
                id=r["id"],
                signed_at=r["signed_at"],
                state=r["state"],
                attempts=r["attempts"],
                last_attempt_at=r["last_attempt_at"],
                last_error=r["last_error"],
                answered_at=r["answered_at"],
            )
            for r in rows
            if r["id"] is not None
        ]
