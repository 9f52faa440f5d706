"""DataTransfer, the status notifications, SecurityEventNotification and SignCertificate:
stored, and answered per configuration."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from evgate.handlers import ChargerContext
from evgate.handlers.routes import build_routes
from evgate.handlers.security import CertificateService
from evgate.protocol.errors import PropertyConstraintViolationError
from evgate.protocol.v16 import (
    CertificateSignedResponse,
    DataTransferRequest,
    DataTransferResponse,
    DataTransferStatus,
    DiagnosticsStatus,
    DiagnosticsStatusNotificationRequest,
    FirmwareStatus,
    FirmwareStatusNotificationRequest,
    LogStatusNotificationRequest,
    Message,
    SecurityEventNotificationRequest,
    SignCertificateRequest,
    SignedFirmwareStatus,
    SignedFirmwareStatusNotificationRequest,
    UploadLogStatus,
)

from .handler_bench import Bench

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


async def test_data_transfer_unknown_vendor_is_stored_and_answered(bench: Bench) -> None:
    """No vendor handler: UnknownVendorId, and the request is stored with that status."""
    request = DataTransferRequest(vendor_id="acme", message_id="m1", data="{}")
    response = await bench.call("DataTransfer", request)
    assert response.status == "UnknownVendorId"
    rows = await bench.rows("SELECT vendor_id, message_id, data, status FROM data_transfers")
    assert [tuple(r) for r in rows] == [("acme", "m1", "{}", "UnknownVendorId")]


async def test_data_transfer_goes_to_a_registered_vendor_handler(make_bench: Any) -> None:
    """A registered vendorId gets its handler's answer."""

    async def acme(ctx: ChargerContext, request: DataTransferRequest) -> DataTransferResponse:
        return DataTransferResponse(status=DataTransferStatus.accepted, data=ctx.charger_id)

    bench = make_bench(vendors={"acme": acme})
    response = await bench.call("DataTransfer", DataTransferRequest(vendor_id="acme"))
    assert msgspec.to_builtins(response) == {"status": "Accepted", "data": "CP-1"}


async def test_status_notifications_are_stored_by_kind(bench: Bench) -> None:
    """Diagnostics, firmware, log and signed-firmware statuses: one row each, answered {}."""
    requests = {
        "DiagnosticsStatusNotification": DiagnosticsStatusNotificationRequest(
            status=DiagnosticsStatus.uploaded
        ),
        "FirmwareStatusNotification": FirmwareStatusNotificationRequest(
            status=FirmwareStatus.installed
        ),
        "LogStatusNotification": LogStatusNotificationRequest(
            status=UploadLogStatus.uploaded, request_id=4
        ),
        "SignedFirmwareStatusNotification": SignedFirmwareStatusNotificationRequest(
            status=SignedFirmwareStatus.signature_verified, request_id=5
        ),
    }
    for action, request in requests.items():
        assert msgspec.json.encode(await bench.call(action, request)) == b"{}"
    rows = await bench.rows("SELECT kind, status, request_id FROM charger_messages ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("DiagnosticsStatusNotification", "Uploaded", None),
        ("FirmwareStatusNotification", "Installed", None),
        ("LogStatusNotification", "Uploaded", 4),
        ("SignedFirmwareStatusNotification", "SignatureVerified", 5),
    ]


async def test_request_ids_are_stored_as_sent_or_refused_beyond_bigint(bench: Bench) -> None:
    """The schemas allow any integer requestId: within bigint it is stored as sent (it was an
    integer column: 2^31 failed as InternalError); beyond, PropertyConstraintViolation naming
    the field (issue 15 item 3)."""
    kept = [2**31, 2**63 - 1, -(2**63), 0]
    for request_id in kept:
        await bench.call(
            "LogStatusNotification",
            LogStatusNotificationRequest(status=UploadLogStatus.uploaded, request_id=request_id),
        )
        await bench.call(
            "SignedFirmwareStatusNotification",
            SignedFirmwareStatusNotificationRequest(
                status=SignedFirmwareStatus.signature_verified, request_id=request_id
            ),
        )
    rows = await bench.rows("SELECT request_id FROM charger_messages ORDER BY id")
    assert [r[0] for r in rows] == [i for i in kept for _ in range(2)]
    for request_id in (2**63, -(2**63) - 1, 10**30):
        log = LogStatusNotificationRequest(status=UploadLogStatus.uploaded, request_id=request_id)
        with pytest.raises(PropertyConstraintViolationError, match=r"^requestId: "):
            await bench.call("LogStatusNotification", log)


async def test_a_resent_security_event_is_stored_once(bench: Bench) -> None:
    """Same type and timestamp twice: one row, both answered."""
    event = SecurityEventNotificationRequest(type="TamperDetected", timestamp=T0, tech_info="lid")
    await bench.call("SecurityEventNotification", event)
    await bench.call("SecurityEventNotification", event)
    rows = await bench.rows("SELECT event_type, tech_info, sent_at FROM charger_messages")
    assert [tuple(r) for r in rows] == [("TamperDetected", "lid", T0)]


def make_csr(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(folder: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evgate test CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "ca.pem", folder / "ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


class RecordingLink:
    """A ChargerLink that records the CALLs sent and answers Accepted (no gateway here)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.arrived = asyncio.Event()

    def connection(self, charger_id: str) -> None:
        return None

    async def call(self, charger_id: str, request: Message) -> Message:
        self.sent.append((charger_id, request))
        self.arrived.set()
        return CertificateSignedResponse(status="Accepted")  # type: ignore[arg-type]


async def test_sign_certificate_without_a_ca_is_rejected(bench: Bench) -> None:
    """No CA configured: Rejected, and the request is stored."""
    response = await bench.call("SignCertificate", SignCertificateRequest(csr=make_csr("CP-1")))
    assert response.status == "Rejected"
    rows = await bench.rows("SELECT kind, status FROM charger_messages")
    assert [tuple(r) for r in rows] == [("SignCertificate", "Rejected")]


async def test_sign_certificate_with_a_ca_signs_and_sends_the_chain(
    bench: Bench, tmp_path: Path
) -> None:
    """With a CA: a CSR naming the charger is Accepted and CertificateSigned carries a leaf
    issued by the CA; a CSR naming another charger, or garbage, is Rejected."""
    link = RecordingLink()
    ca_cert, ca_key = make_ca(tmp_path)
    service = CertificateService(ca_cert, ca_key, bench.writer, link)  # type: ignore[arg-type]
    routes = build_routes(bench.services, service)
    ctx = ChargerContext("CP-1")
    try:
        other = await routes["SignCertificate"](ctx, SignCertificateRequest(csr=make_csr("CP-9")))
        garbage = await routes["SignCertificate"](ctx, SignCertificateRequest(csr="nope"))
        assert other.status == garbage.status == "Rejected"
        ok = await routes["SignCertificate"](ctx, SignCertificateRequest(csr=make_csr("CP-1")))
        assert ok.status == "Accepted"
        await asyncio.wait_for(link.arrived.wait(), 10)
    finally:
        await service.close()
    [(charger_id, request)] = link.sent
    chain = x509.load_pem_x509_certificates(request.certificate_chain.encode())  # type: ignore[attr-defined]
    assert charger_id == "CP-1" and len(chain) == 2
    assert chain[0].issuer == chain[1].subject
    assert chain[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CP-1"
