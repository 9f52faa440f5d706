"""A certificate signed for a charger is sent once and its outcome recorded; one that did not
reach the charger is sent after its next accepted BootNotification; one the charger answered
(Accepted, Rejected or a CALLERROR) is never sent again (issue 21.6). Real OCPP clients: the
``ocpp`` library's ChargePoint (tests/support's TestCharger) against an in-process evgate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from support import Running, TestCharger, ocpp_charger, quiet_for, running_handle, until

from .test_messages import make_ca, make_csr


class CertificateCharger(TestCharger):
    """Answers CertificateSigned with ``status`` and keeps every chain it was sent."""

    status = "Accepted"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.chains: list[str] = []

    @on(Action.certificate_signed)
    def on_certificate_signed(self, certificate_chain: str) -> Any:
        self.chains.append(certificate_chain)
        return call_result.CertificateSigned(status=self.status)


async def _state(run: Running) -> list[tuple[Any, ...]]:
    assert run.app.db is not None
    rows = await run.app.db.fetch(
        "SELECT state, attempts, last_error IS NOT NULL FROM signed_certificates ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def _answered(run: Running) -> bool:
    """The newest certificate is no longer pending."""
    rows = await _state(run)
    return bool(rows) and rows[-1][0] != "pending"


async def _in_state(run: Running, expected: list[tuple[Any, ...]]) -> bool:
    return await _state(run) == expected


async def _sign_and_go_away(run: Running, secret: str, answer: Any = None) -> list[list[Any]]:
    """Send SignCertificate as CP-1 and answer evgate's CertificateSigned with ``answer``
    (None: silence, then the charger disconnects); the frames evgate sent."""
    seen: list[list[Any]] = []

    def script(frame: list[Any]) -> Any:
        seen.append(frame)
        if frame[0] == 2 and answer is not None:
            return [*answer[:1], frame[1], *answer[1:]]
        return None

    async with ocpp_charger(run.url("CP-1", secret), "CP-1", script=script) as charger:
        await charger.ws.send(json.dumps([2, "s1", "SignCertificate", {"csr": make_csr("CP-1")}]))
        await until(lambda: any(f[0] == 2 for f in seen))
        if answer is not None:
            await until(lambda: _answered(run))
    return seen


async def test_an_undelivered_certificate_is_sent_after_the_next_boot_and_then_never(
    database_url: str, tmp_path: Path
) -> None:
    """The charger goes away without answering: the certificate stays pending (one attempt,
    its reason recorded); after the next accepted boot it is delivered (accepted); after a
    later boot nothing is sent again."""
    ca_cert, ca_key = make_ca(tmp_path)
    async with running_handle(database_url, tmp_path, ca_cert=ca_cert, ca_key=ca_key) as run:
        secret = await run.charger("CP-1")
        seen = await _sign_and_go_away(run, secret)
        assert seen[0] == [3, "s1", {"status": "Accepted"}]
        assert seen[1][2] == "CertificateSigned"
        chain = seen[1][3]["certificateChain"]
        await until(lambda: _in_state(run, [("pending", 1, True)]))

        url = run.url("CP-1", secret)
        async with ocpp_charger(url, "CP-1", CertificateCharger) as charger:
            assert await charger.boot() == "Accepted"
            await until(lambda: _in_state(run, [("accepted", 2, False)]))
            assert charger.chains == [chain]
        async with ocpp_charger(url, "CP-1", CertificateCharger) as charger:
            assert await charger.boot() == "Accepted"
            await quiet_for(2)
            assert charger.chains == []
        assert await _state(run) == [("accepted", 2, False)]
        [shown] = (await run.api.get("/api/v1/chargers/CP-1/certificates")).json()
        assert (shown["state"], shown["attempts"], shown["lastError"]) == ("accepted", 2, None)
        assert shown["answeredAt"] >= shown["signedAt"]
        r = await run.api.get("/api/v1/chargers/NOPE/certificates")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


async def test_a_certificate_the_charger_refused_is_never_sent_again(
    database_url: str, tmp_path: Path
) -> None:
    """A CALLERROR answer is recorded as ``error`` and a Rejected one as ``rejected``; neither
    is sent again after the next boot."""
    ca_cert, ca_key = make_ca(tmp_path)
    async with running_handle(database_url, tmp_path, ca_cert=ca_cert, ca_key=ca_key) as run:
        secret = await run.charger("CP-1")
        await _sign_and_go_away(run, secret, [4, "NotSupported", "no", {}])
        assert await _state(run) == [("error", 1, True)]
        await _sign_and_go_away(run, secret, [3, {"status": "Rejected"}])
        assert await _state(run) == [("error", 1, True), ("rejected", 1, False)]
        shown = (await run.api.get("/api/v1/chargers/CP-1/certificates")).json()
        assert [c["state"] for c in shown] == ["rejected", "error"]  # newest first
        assert shown[1]["lastError"] == "CALLERROR NotSupported: no"
        async with ocpp_charger(run.url("CP-1", secret), "CP-1", CertificateCharger) as charger:
            assert await charger.boot() == "Accepted"
            await quiet_for(2)
            assert charger.chains == []
