"""handlers room: SecurityEventNotification and SignCertificate (OCPP 1.6 security extension).

SecurityEventNotification is stored (a resend with the same type and timestamp once) and
answered after it commits; a stored one emits SecurityEventNotification (a resend, which
changes nothing, emits nothing).

SignCertificate is answered per configuration: without a CA (``Settings.ca_cert`` and
``ca_key``) it is ``Rejected``; with one, a CSR that is well-formed, self-consistent (its
signature verifies) and names the charger as its subject's commonName is ``Accepted``, then
signed by the CA and sent to the charger as CertificateSigned (the leaf and the CA
certificate, PEM) through the gateway; any other CSR is ``Rejected``. Each request is stored
with the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evgate.events.builders import security_event
from evgate.gateway.interface import ChargerLink, CommandError
from evgate.handlers import ChargerContext, Routes
from evgate.handlers.firmware import charger_message, record_message
from evgate.handlers.services import HandlerServices
from evgate.protocol.v16 import (
    CertificateSignedRequest,
    GenericStatus,
    SecurityEventNotificationRequest,
    SecurityEventNotificationResponse,
    SignCertificateRequest,
    SignCertificateResponse,
)
from evgate.storage.ops import charger_messages, outbox
from evgate.storage.ops.base import Results, Write

__all__ = ["CertificateService", "csr_for_charger", "routes"]

log = logging.getLogger(__name__)


def csr_for_charger(csr_pem: str, charger_id: str) -> x509.CertificateSigningRequest | None:
    """The CSR if it is PEM, its signature verifies and its commonName is ``charger_id``."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not csr.is_signature_valid or [n.value for n in names] != [charger_id]:
            return None
    except (ValueError, TypeError):
        return None
    return csr


class CertificateService:
    """Signs chargers' CSRs with the configured CA and sends the certificates.

    Owns its tasks: ``await close()`` cancels those still running.

    Args:
        ca_cert: path of the CA certificate (PEM).
        ca_key: path of the CA's private key (PEM, unencrypted).
        link: the gateway (``call`` sends CertificateSigned); may be set after construction
            (the gateway is made after the routes), before chargers connect.
        validity: how long a signed certificate is valid.
    """

    def __init__(
        self,
        ca_cert: str,
        ca_key: str,
        link: ChargerLink | None = None,
        validity: timedelta = timedelta(days=365),
    ) -> None:
        self.ca_cert = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
        key = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
        self.ca_key: CertificateIssuerPrivateKeyTypes = key  # type: ignore[assignment]
        self.link = link
        self.validity = validity
        self._tasks: set[asyncio.Task[None]] = set()

    def sign(self, csr: x509.CertificateSigningRequest) -> str:
        """The PEM chain (leaf, then CA) for ``csr``: a client certificate for TLS."""
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))  # chargers' clocks drift
            .not_valid_after(now + self.validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (cert, self.ca_cert)
        ).decode()

    def submit(self, charger_id: str, csr: x509.CertificateSigningRequest) -> None:
        """Sign and send on a task of this service (after the SignCertificate answer)."""
        task = asyncio.get_running_loop().create_task(self._sign_and_send(charger_id, csr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sign_and_send(self, charger_id: str, csr: x509.CertificateSigningRequest) -> None:
        # Signing in a thread also lets the SignCertificate answer go out first.
        chain = await asyncio.to_thread(self.sign, csr)
        if self.link is None:
            log.error("CertificateSigned to %s not sent: no gateway", charger_id)
            return
        try:
            response = await self.link.call(
                charger_id, CertificateSignedRequest(certificate_chain=chain)
            )
        except CommandError as exc:
            log.warning("CertificateSigned to %s failed: %s", charger_id, exc)
            return
        log.info("CertificateSigned to %s: %s", charger_id, getattr(response, "status", "?"))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def routes(services: HandlerServices, certificates: CertificateService | None = None) -> Routes:
    """The handlers of this module, by action."""

    async def security_event_notification(
        ctx: ChargerContext, request: SecurityEventNotificationRequest
    ) -> SecurityEventNotificationResponse:
        message = charger_message(
            services,
            ctx,
            "SecurityEventNotification",
            event_type=request.type,
            tech_info=request.tech_info,
            sent_at=request.timestamp,
        )
        stored = charger_messages.security_event(message)
        charger = ctx.charger

        def described(results: Results) -> list[Write[None]]:
            if results[stored] is None:
                return []
            return outbox.append([security_event(charger, request)])

        await services.emit(ctx.charger_id, [stored], described)
        return SecurityEventNotificationResponse()

    async def sign_certificate(
        ctx: ChargerContext, request: SignCertificateRequest
    ) -> SignCertificateResponse:
        csr = None if certificates is None else csr_for_charger(request.csr, ctx.charger_id)
        status = GenericStatus.rejected if csr is None else GenericStatus.accepted
        await record_message(services, ctx, "SignCertificate", status=status.value)
        if certificates is not None and csr is not None:
            certificates.submit(ctx.charger_id, csr)
        return SignCertificateResponse(status=status)

    return {
        "SecurityEventNotification": security_event_notification,
        "SignCertificate": sign_certificate,
    }
