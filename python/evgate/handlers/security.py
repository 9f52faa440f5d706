"""handlers room: SecurityEventNotification and SignCertificate (OCPP 1.6 security extension).

SecurityEventNotification is stored (a resend with the same type and timestamp once) and
answered after it commits; a stored one emits SecurityEventNotification (a resend, which
changes nothing, emits nothing).

SignCertificate is answered per configuration: without a CA (``Settings.ca_cert`` and
``ca_key``) it is ``Rejected``; with one, a CSR that is well-formed, self-consistent (its
signature verifies) and names the charger as its subject's commonName is ``Accepted``, then
signed by the CA, stored with the answer, and sent to the charger as CertificateSigned (the
leaf and the CA certificate, PEM) through the gateway, once: see :class:`CertificateService`
for its outcome and its one retry rule (after the next accepted BootNotification, only if it
was not delivered). Any other CSR is ``Rejected``. Each request is stored with the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evgate.events.builders import security_event
from evgate.gateway.interface import CallRejected, ChargerLink, CommandError, InvalidResponse
from evgate.handlers import ChargerContext, Routes
from evgate.handlers.firmware import charger_message
from evgate.handlers.services import HandlerServices, utc_now
from evgate.protocol.v16 import (
    CertificateSignedRequest,
    CertificateSignedResponse,
    CertificateSignedStatus,
    GenericStatus,
    SecurityEventNotificationRequest,
    SecurityEventNotificationResponse,
    SignCertificateRequest,
    SignCertificateResponse,
)
from evgate.storage.ops import certificates, charger_messages, outbox
from evgate.storage.ops.base import Results, Write
from evgate.storage.writer import Writer
from evgate.tasks import service_task

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
    """Signs chargers' CSRs with the configured CA and sends each certificate once.

    A signed certificate is stored (``signed_certificates``) in the same commit as the
    SignCertificate answer that promised it, then sent as CertificateSigned after that answer.
    The outcome is recorded: the charger's answer (Accepted, Rejected, or a CALLERROR: never
    sent again), or not delivered (not connected, no answer in time), in which case it is sent
    after the charger's next accepted BootNotification (:meth:`on_boot_accepted`), unless a
    newer one was signed meanwhile. A process claims a certificate while it sends it
    (``claim_for``), so two processes, or two boots in a row, never send it together.

    Owns its tasks: ``await close()`` cancels those still running (a claimed certificate's
    claim then expires and it is sent after a later boot).

    Args:
        ca_cert: path of the CA certificate (PEM).
        ca_key: path of the CA's private key (PEM, unencrypted).
        writer: the group-commit writer (the certificates and their outcomes).
        link: the gateway (``call`` sends CertificateSigned); may be set after construction
            (the gateway is made after the routes), before chargers connect.
        validity: how long a signed certificate is valid.
        claim_for: how long a send may take before another may send the same certificate
            (more than the call timeout, queueing included).
        clock: the current time (UTC).
    """

    def __init__(
        self,
        ca_cert: str,
        ca_key: str,
        writer: Writer,
        link: ChargerLink | None = None,
        validity: timedelta = timedelta(days=365),
        claim_for: timedelta = timedelta(minutes=2),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.ca_cert = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
        key = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
        self.ca_key: CertificateIssuerPrivateKeyTypes = key  # type: ignore[assignment]
        self.writer = writer
        self.link = link
        self.validity = validity
        self.claim_for = claim_for
        self.clock = clock
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

    async def signed(self, charger_id: str, csr: x509.CertificateSigningRequest) -> Write[int]:
        """Sign ``csr`` (in a thread) and return the write that stores the certificate, to be
        committed with the SignCertificate answer; after the commit, call :meth:`send`."""
        chain = await asyncio.to_thread(self.sign, csr)
        now = self.clock()
        return certificates.signed(
            certificates.SignedCertificate(
                charger_id=charger_id,
                certificate_chain=chain,
                signed_at=now,
                sending_until=now + self.claim_for,
            )
        )

    def send(self, certificate: certificates.ClaimedCertificate) -> None:
        """Send a claimed certificate on a task of this service. Call it after the
        SignCertificate answer is on its way: the task runs after the handler returned."""
        self._spawn(self._send(certificate))

    def on_boot_accepted(self, charger_id: str) -> None:
        """A BootNotification of ``charger_id`` is being answered Accepted: send the
        certificate it has not been delivered yet, if any (on a task, after the answer)."""
        self._spawn(self._send_pending(charger_id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = service_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_pending(self, charger_id: str) -> None:
        now = self.clock()
        claim = certificates.claim(
            certificates.CertificateClaim(
                charger_id=charger_id, now=now, until=now + self.claim_for
            )
        )
        try:
            [claimed] = await self.writer.submit([claim], key=charger_id)
        except Exception as exc:
            log.warning("%s: looking for an undelivered certificate failed: %s", charger_id, exc)
            return
        if claimed is not None:
            await self._send(claimed)

    async def _send(self, certificate: certificates.ClaimedCertificate) -> None:
        charger_id = certificate.charger_id
        if self.link is None:
            log.error("CertificateSigned to %s not sent: no gateway", charger_id)
            return
        request = CertificateSignedRequest(certificate_chain=certificate.certificate_chain)
        state: certificates.CertificateState
        error: str | None = None
        try:
            response = await self.link.call(charger_id, request)
        except CallRejected as exc:
            state, error = "error", f"CALLERROR {exc.code}: {exc.description}"
        except InvalidResponse as exc:
            state, error = "error", f"an invalid answer: {exc.error.description}"
        except CommandError as exc:  # not connected, gone, no answer: sent after a boot
            state, error = "pending", f"{type(exc).__name__}: {exc}"
        else:
            assert isinstance(response, CertificateSignedResponse)
            accepted = response.status == CertificateSignedStatus.accepted
            state = "accepted" if accepted else "rejected"
        log.info("CertificateSigned to %s: %s%s", charger_id, state, f" ({error})" if error else "")
        done = certificates.CertificateOutcome(
            id=certificate.id, state=state, at=self.clock(), error=error
        )
        try:
            await self.writer.submit([certificates.outcome(done)], key=charger_id)
        except Exception as exc:
            # Unrecorded, it stays pending: sent again after a boot once its claim expired.
            log.warning("%s: the CertificateSigned outcome was not recorded: %s", charger_id, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def routes(services: HandlerServices, signer: CertificateService | None = None) -> Routes:
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
        csr = None if signer is None else csr_for_charger(request.csr, ctx.charger_id)
        status = GenericStatus.rejected if csr is None else GenericStatus.accepted
        message = charger_message(services, ctx, "SignCertificate", status=status.value)
        writes: list[Write[Any]] = [charger_messages.charger_message(message)]
        stored = None if signer is None or csr is None else await signer.signed(ctx.charger_id, csr)
        if stored is not None:
            writes.append(stored)
        results = Results(writes, await services.writer.submit(writes, key=ctx.charger_id))
        if signer is not None and stored is not None:
            # Claimed by the write itself until claim_for: this process sends it now.
            signer.send(
                certificates.ClaimedCertificate(
                    id=results[stored],
                    charger_id=ctx.charger_id,
                    certificate_chain=stored.item.certificate_chain,
                )
            )
        return SignCertificateResponse(status=status)

    return {
        "SecurityEventNotification": security_event_notification,
        "SignCertificate": sign_certificate,
    }
