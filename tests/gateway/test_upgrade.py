"""Upgrade decisions on the charger port: endpoints, HTTP answers, subprotocol, rate limit."""

from __future__ import annotations

import asyncio
import base64

import pytest
import websockets
from ocpp.v16 import call

from evgate.credentials import digest
from evgate.gateway.upgrade import Admit, FailureLimiter, Refuse, decide, parse_target
from evgate.storage.chargers import ChargerCredentials
from gateway.helpers import SECRET, StartGateway, close_code_of, connect
from support import Running, ocpp_charger


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def _status_of(url: str, **kw: object) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url, **kw):
            pass
    return refused.value.response.status_code


async def test_query_secret_connects_and_boots(running: Running) -> None:
    """/cp/{id}?auth={secret}: 101 with ocpp1.6; a BootNotification is answered Accepted."""
    secret = await running.add("CP-1")
    async with ocpp_charger(running.url("CP-1", secret), "CP-1") as charger:
        assert charger._connection.subprotocol == "ocpp1.6"
        answer = await charger.call(call.BootNotification("Model", "Vendor"))
        assert answer.status == "Accepted" and answer.interval == 60


async def test_basic_auth_connects(running: Running) -> None:
    """/ocpp/{id} with Authorization: Basic base64(id:secret) (security profile 1)."""
    secret = await running.add("CP-1")
    url = running.url("CP-1", path="ocpp")
    async with ocpp_charger(url, "CP-1", additional_headers=_basic("CP-1", secret)) as charger:
        assert (await charger.call(call.Heartbeat())).current_time


async def test_basic_auth_with_colon_in_the_charger_id(running: Running) -> None:
    """A charger id may contain ':'; the Basic user is matched as the id, not split there."""
    secret = await running.add("site:7")
    url = running.url("site:7", path="ocpp")
    async with connect(url, additional_headers=_basic("site:7", secret)) as ws:
        assert ws.subprotocol == "ocpp1.6"


async def test_unknown_charger_is_404(running: Running) -> None:
    """An id the registry does not hold is answered 404 before any secret is looked at."""
    assert await _status_of(running.url("NOPE", SECRET)) == 404


@pytest.mark.parametrize("path", ["/", "/cp/", "/other/CP-1", "/cp/bad%20id"])
async def test_not_a_charger_path_is_404(running: Running, path: str) -> None:
    """Paths that are not /cp/{id} or /ocpp/{id} with a well-formed id: 404."""
    url = f"ws://127.0.0.1:{running.app.ws_port}{path}"
    assert await _status_of(url) == 404


async def test_wrong_or_missing_secret_is_401(running: Running) -> None:
    """Wrong query secret, no secret at all, Basic with a wrong password or another user: 401
    (with a Basic challenge)."""
    secret = await running.add("CP-1")
    assert await _status_of(running.url("CP-1", "000000000000000000000000")) == 401
    assert await _status_of(running.url("CP-1")) == 401
    ocpp = running.url("CP-1", path="ocpp")
    assert await _status_of(ocpp, additional_headers=_basic("CP-1", "wrong")) == 401
    assert await _status_of(ocpp, additional_headers=_basic("CP-2", secret)) == 401
    assert await _status_of(ocpp, additional_headers={"Authorization": "Basic !!!"}) == 401
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(running.url("CP-1")):
            pass
    assert refused.value.response.headers["WWW-Authenticate"].startswith("Basic")


async def test_profile_2_charger_cannot_use_plain_ws(running: Running) -> None:
    """A charger whose least profile is 2 is refused 403 over ws, even with the right secret."""
    secret = await running.add("CP-1", security_profile=2)
    assert await _status_of(running.url("CP-1", secret)) == 403


@pytest.mark.parametrize(
    "offered", [["ocpp1.6"], ["ocpp0.1", "ocpp1.6"], ["ocpp2.0.1", "ocpp1.6", "ocpp1.5"]]
)
async def test_ocpp16_is_chosen_among_offers(start_gateway: StartGateway, offered: list) -> None:
    """The 101 names ocpp1.6 whenever the client offers it, among others or alone."""
    async with start_gateway() as g, connect(g.url(), subprotocols=offered) as ws:
        assert ws.subprotocol == "ocpp1.6"


async def test_no_ocpp16_completes_handshake_then_closes(start_gateway: StartGateway) -> None:
    """OCPP-J: without ocpp1.6 offered, the handshake completes with no subprotocol and the
    server closes (1002); the charger is not registered."""
    async with start_gateway() as g:
        for offered in (None, ["ocpp2.0.1"]):
            async with connect(g.url(), subprotocols=offered) as ws:
                assert ws.subprotocol is None
                assert await close_code_of(ws) == 1002
            assert g.gateway.connection("CP-1") is None
        assert (
            g.metrics.counter("evgate_upgrade_failures_total", "", ("reason",)).value(
                "no_subprotocol"
            )
            == 2
        )


async def test_failed_upgrades_are_rate_limited_per_address(start_gateway: StartGateway) -> None:
    """After N failures in a minute an address gets 429 with Retry-After, even with the right
    secret; other source addresses are not affected; failures are counted by reason."""
    async with start_gateway(failed_upgrades_per_minute=3) as g:
        for _ in range(3):
            assert await _status_of(g.url(secret="0" * 24)) == 401
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(g.url()):
                pass
        assert refused.value.response.status_code == 429
        assert int(refused.value.response.headers["Retry-After"]) >= 1
        async with connect(g.url(), local_addr=("127.0.0.2", 0)) as ws:
            assert ws.subprotocol == "ocpp1.6"
        failures = g.metrics.counter("evgate_upgrade_failures_total", "", ("reason",))
        assert failures.value("bad_secret") == 3 and failures.value("rate_limited") == 1


def test_failure_window_rolls_over() -> None:
    """The failed-upgrade budget is per minute: a new window forgets old failures."""
    now = [0.0]
    limiter = FailureLimiter(2, clock=lambda: now[0])
    limiter.failed("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60
    assert limiter.retry_after("10.0.0.2") is None
    now[0] = 59.5
    assert limiter.retry_after("10.0.0.1") == 1
    now[0] = 60.0
    assert limiter.retry_after("10.0.0.1") is None


def test_failure_table_is_bounded_and_keeps_the_persistent_failers() -> None:
    """100,000 source addresses failing once each hold at most max_addresses entries; an
    address that keeps failing is not pushed out by them and stays limited."""
    limiter = FailureLimiter(3, clock=lambda: 0.0, max_addresses=1000)
    for i in range(100_000):
        if i % 100 == 0:
            limiter.failed("192.0.2.1")
        limiter.failed(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert len(limiter) == 1000
    assert limiter.retry_after("192.0.2.1") == 60
    assert limiter.retry_after("10.0.0.0") is None  # forgotten: it failed once, long ago


def test_ipv6_sources_are_limited_by_their_64() -> None:
    """Cycling through addresses of one IPv6 /64 shares one budget, and does not push other
    sources' counts out of the table; the next /64 has its own budget."""
    limiter = FailureLimiter(3, clock=lambda: 0.0, max_addresses=1000)
    limiter.failed("192.0.2.1")
    for i in range(5000):
        limiter.failed(f"2001:db8:0:1::{i:x}")
    assert len(limiter) == 2
    assert limiter.retry_after("2001:db8:0:1:ffff:ffff:ffff:ffff") == 60
    assert limiter.retry_after("2001:db8:0:2::1") is None
    limiter.failed("192.0.2.1")
    limiter.failed("::ffff:192.0.2.1")  # the same IPv4 source seen by a dual-stack listener
    assert limiter.retry_after("192.0.2.1") == 60
    limiter.failed("fe80::1%eth0")  # a zone index does not make a source of its own
    assert limiter.retry_after("fe80::2") is None
    limiter.failed("fe80::3%eth1")
    limiter.failed("fe80::4")
    assert limiter.retry_after("fe80::5%eth0") == 60


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/cp/CP-1?auth=42", ("CP-1", "42")),
        ("/cp/CP-1/", ("CP-1", None)),
        ("/ocpp/CP%3A1", ("CP:1", None)),
        ("/cp/CP-1?x=1&auth=7", ("CP-1", "7")),
        ("/cp/a/b", None),
        ("/cp/" + "x" * 65, None),
        ("/ws/CP-1", None),
        ("/cp/.", None),  # dot-segments: no URL can name such a charger
        ("/cp/..", None),
        ("/ocpp/%2E%2E", None),
        ("/cp/...", ("...", None)),
        ("/cp/CP-1%0A", None),  # a newline
        ("//[", None),  # urlsplit raised ValueError: picows answered 500 with its text
        ("http://[::1/cp/CP-1", None),
        ("//x/cp/CP-1", None),  # a path, not a host
        ("http://evgate:9000/cp/CP-1?auth=42", ("CP-1", "42")),  # absolute-form
        ("/cp/CP-1?auth=42#x", ("CP-1", "42")),
    ],
)
def test_parse_target(path: str, expected: tuple[str, str | None] | None) -> None:
    """Charger id and query secret from an upgrade path; None when it is not an endpoint."""
    assert parse_target(path) == expected


WRONG = "000000000000000000000000"


@pytest.mark.parametrize(
    ("query", "basic", "admitted"),
    [
        (SECRET, None, True),
        (None, SECRET, True),
        (SECRET, SECRET, True),
        (WRONG, SECRET, True),  # its URL still holds the secret it was installed with
        (SECRET, "", True),  # Basic with an empty password beside the right ?auth=
        (SECRET, WRONG, True),
        (WRONG, WRONG, False),
        (WRONG, None, False),
        (None, WRONG, False),
    ],
)
def test_either_credential_form_may_prove_the_secret(
    query: str | None, basic: str | None, admitted: bool
) -> None:
    """A query secret and Basic auth sent together: admitted when either is the charger's
    secret, 401 bad_secret only when neither is (README, "Endpoints")."""
    index = {"CP-1": ChargerCredentials("CP-1", digest(SECRET), 1, False)}
    path = "/cp/CP-1" if query is None else f"/cp/CP-1?auth={query}"
    authorization = None if basic is None else _basic("CP-1", basic)["Authorization"]
    decision = decide(
        path,
        authorization,
        address="10.0.0.1",
        tls=False,
        certificate_cn=None,
        index=index,
        limiter=FailureLimiter(30),
    )
    if admitted:
        assert isinstance(decision, Admit) and decision.auth_digest == digest(SECRET)
    else:
        assert isinstance(decision, Refuse) and (decision.status, decision.reason) == (
            401,
            "bad_secret",
        )


async def test_right_basic_password_beside_a_stale_query_secret_connects(
    start_gateway: StartGateway,
) -> None:
    """Over a real connection: a wrong ?auth= beside the right Basic password connects."""
    async with (
        start_gateway() as g,
        connect(g.url(secret=WRONG), additional_headers=_basic("CP-1", SECRET)) as ws,
    ):
        assert ws.subprotocol == "ocpp1.6"


@pytest.mark.parametrize("target", ["//[", "http://[::1/cp/CP-1"])
async def test_unparsable_target_is_404_not_500(start_gateway: StartGateway, target: str) -> None:
    """A request target urlsplit cannot read is a bad path (404), not a 500 carrying the
    exception's text."""
    async with start_gateway() as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gateway.port)
        try:
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            status = await asyncio.wait_for(reader.readline(), 5)
        finally:
            writer.close()
        assert status.startswith(b"HTTP/1.1 404"), status
