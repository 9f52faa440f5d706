"""wss on the charger port: security profile 2 (TLS + secret) and 3 (client certificate whose
CN is the charger id), with certificates made by the tests."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from evgate.config import ConfigError, load_settings
from evgate.gateway.server import server_ssl_context
from gateway.helpers import Pki, StartEvgate, connect
from support import Running


@pytest.fixture
async def tls(start_evgate: StartEvgate, pki: Pki) -> AsyncIterator[Running]:
    """evgate serving wss, verifying client certificates against the test CA."""
    async with start_evgate(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_client_ca=str(pki.ca)
    ) as running:
        yield running


async def _status(url: str, **kw: Any) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url, **kw):
            pass
    return refused.value.response.status_code


async def test_profile_2_over_wss_with_secret(tls: Running, pki: Pki) -> None:
    """A profile-2 charger connects over wss with its secret; the connection shows profile 2."""
    secret = await tls.add("CP-2", security_profile=2)
    async with connect(tls.url("CP-2", secret), ssl=pki.client_context()) as ws:
        assert ws.subprotocol == "ocpp1.6"
        info = tls.gateway.connection("CP-2")
        assert info is not None and info.security_profile == 2


async def test_profile_3_by_client_certificate(tls: Running, pki: Pki) -> None:
    """A client certificate whose CN is the charger id authenticates it (no secret): profile
    3, enough for a charger whose least profile is 3."""
    await tls.add("CP-3", security_profile=3)
    async with connect(tls.url("CP-3"), ssl=pki.client_context("CP-3")) as ws:
        assert ws.subprotocol == "ocpp1.6"
        assert tls.gateway.connection("CP-3").security_profile == 3


async def test_profile_3_charger_with_only_a_secret_is_403(tls: Running, pki: Pki) -> None:
    """A profile-3 charger presenting only its secret over wss is refused 403."""
    secret = await tls.add("CP-3", security_profile=3)
    assert await _status(tls.url("CP-3", secret), ssl=pki.client_context()) == 403


async def test_certificate_for_another_charger_is_401(tls: Running, pki: Pki) -> None:
    """A valid certificate whose CN names another charger is refused 401, secret or not."""
    secret = await tls.add("CP-3", security_profile=1)
    assert await _status(tls.url("CP-3", secret), ssl=pki.client_context("CP-OTHER")) == 401


async def test_certificate_from_another_ca_fails_the_handshake(tls: Running, pki: Pki) -> None:
    """A client certificate the configured CA did not sign fails TLS: no HTTP at all."""
    await tls.add("CP-3", security_profile=3)
    with pytest.raises((ssl.SSLError, ConnectionError, websockets.InvalidMessage)):
        async with connect(tls.url("CP-3"), ssl=pki.client_context(stranger=True)):
            pass


async def test_plain_ws_is_not_served_on_a_tls_port(tls: Running) -> None:
    """With TLS configured the port speaks only TLS: a plain ws client gets no upgrade."""
    secret = await tls.add("CP-1")
    url = tls.url("CP-1", secret).replace("wss://", "ws://")
    with pytest.raises((ConnectionError, websockets.InvalidMessage, TimeoutError)):
        async with connect(url, open_timeout=2):
            pass


@pytest.mark.parametrize(
    "files",
    [
        {"tls_key": "k"},
        {"tls_cert": "c"},
        {"tls_client_ca": "ca"},
        {"tls_cert": "/nope", "tls_key": "/nope"},
    ],
)
def test_incomplete_tls_settings_are_refused(files: dict[str, str]) -> None:
    """A key without a certificate, a CA without TLS, or unreadable files stop start-up."""
    with pytest.raises(ConfigError):
        server_ssl_context(load_settings(environ={}, **files))
