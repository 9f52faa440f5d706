"""api room: ``GET /api/v1/chargers/{id}/certificates`` — the certificates evgate signed for a
charger (SignCertificate) and whether CertificateSigned reached it (issue 21.6)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.params import FromPath

from evgate.api.context import Ctx
from evgate.storage.certificates import SHOWN, SignedCertificateInfo

__all__ = ["CertificateController"]


class CertificateController(Controller):
    path = "/api/v1/chargers/{charger_id:str}/certificates"
    tags = ["chargers"]

    @get(
        "/",
        summary="The certificates signed for a charger and their delivery",
        description=(
            f"The newest {SHOWN}, newest first. A certificate is sent once; one not delivered"
            " (pending) is sent after the charger's next accepted BootNotification; one the"
            " charger answered (accepted, rejected, error) is never sent again."
        ),
    )
    async def list_certificates(
        self, ctx: Ctx, charger_id: FromPath[str]
    ) -> list[SignedCertificateInfo]:
        return await ctx.certificates.of_charger(charger_id)
