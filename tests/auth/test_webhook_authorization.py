"""Webhook mode end to end: a real provider on loopback decides at a running evgate; approve,
refuse, every failure under each onFailure policy, OAuth tokens and HTTP Basic auth."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from evgate.auth.installations import AcceptAll

from .auth_helpers import PASSWORD, USERNAME, Answer, Provider, Site, webhook


def _metric(site: Site, installation_id: int, outcome: str, hook: str = "start") -> float:
    counter = site.app.metrics.counter(
        "evgate_auth_webhook_calls_total",
        "Calls to installations' authorization providers, by outcome",
        ("hook", "installation", "outcome"),
    )
    return counter.value(hook, str(installation_id), outcome)


async def _webhook_site(site: Site, provider: Provider, **settings: Any) -> int:
    installation = await site.installation(
        authorizationMode="webhook", webhook=webhook(provider, **settings)
    )
    await site.charger("CP-1", installation["id"])
    return int(installation["id"])


def _answer(body: dict[str, Any], status: int = 200) -> Callable[[dict[str, Any]], Answer]:
    return lambda _request: (status, json.dumps(body).encode())


async def test_approved_session_is_accepted_with_the_providers_session_id(
    site: Site, provider: Provider
) -> None:
    """The provider's yes is Accepted, its sessionId is kept, and the request carried the
    documented body with a bearer token from the token endpoint."""
    installation_id = await _webhook_site(site, provider)
    decision = await site.authorize("CP-1", "TAG-1")
    assert decision.status == "Accepted" and decision.external_session_id == "S-1"
    [request] = provider.requests("/start")
    body = request.json()
    assert set(body) == {"chargerId", "connectorId", "idTag", "installationId", "timestamp"}
    assert body["chargerId"] == "CP-1" and body["idTag"] == "TAG-1"
    assert body["connectorId"] is None and body["installationId"] == installation_id
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert request.headers["authorization"] == "Bearer tok-1"
    assert request.headers["content-type"] == "application/json"
    [token] = provider.requests("/token")
    assert token.headers["content-type"] == "application/x-www-form-urlencoded"
    assert _metric(site, installation_id, "approved") == 1


async def test_start_transaction_reuses_the_authorize_decision_once(
    site: Site, provider: Provider
) -> None:
    """StartTransaction right after an Authorize of the same tag at the same charger uses
    that decision (and its sessionId) without asking again; a second start asks again."""
    await _webhook_site(site, provider)
    await site.authorize("CP-1", "TAG-1")
    provider.start_answer = _answer({"authorized": True, "sessionId": "S-2"})
    start = await site.authorize("CP-1", "tag-1", connector_id=1, purpose="start")
    assert start.external_session_id == "S-1"  # id-tags are case-insensitive (CiString)
    assert len(provider.requests("/start")) == 1
    again = await site.authorize("CP-1", "TAG-1", connector_id=1, purpose="start")
    assert again.external_session_id == "S-2"
    assert provider.requests("/start")[-1].json()["connectorId"] == 1


async def test_start_transaction_without_authorize_asks_with_its_timestamp(
    site: Site, provider: Provider
) -> None:
    """A StartTransaction with no recent Authorize asks the provider with the charger's
    connector and timestamp."""
    await _webhook_site(site, provider)
    at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    decision = await site.authorize("CP-1", "T", connector_id=2, timestamp=at, purpose="start")
    assert decision.status == "Accepted"
    body = provider.requests("/start")[0].json()
    assert body["connectorId"] == 2 and datetime.fromisoformat(body["timestamp"]) == at


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (None, "Invalid"),
        ("unknown card", "Invalid"),
        ("Card blocked by issuer", "Blocked"),
        ("BLOCKED", "Blocked"),
        ("unblockedness", "Invalid"),
        ("Expired", "Expired"),
        ("concurrentTx", "ConcurrentTx"),
    ],
)
async def test_refusal_status_follows_the_reason(
    site: Site, provider: Provider, reason: str | None, status: str
) -> None:
    """A refusal is Invalid; Blocked when the reason has the word "blocked"; the OCPP status
    itself when the reason is one (Expired, ConcurrentTx)."""
    installation_id = await _webhook_site(site, provider)
    provider.start_answer = _answer({"authorized": False, "reason": reason})
    decision = await site.authorize("CP-1", "TAG-1")
    assert decision.status == status and decision.external_session_id is None
    assert _metric(site, installation_id, "refused") == 1


# -- failures and the onFailure policies ---------------------------------------------------------

NONSENSE: dict[str, tuple[str, Callable[[dict[str, Any]], Answer]]] = {
    "server error": ("http_status", lambda _: (500, b"{}")),
    "not json": ("bad_answer", lambda _: (200, b"<html>ok</html>")),
    "no authorized member": ("bad_answer", _answer({"sessionId": "S"})),
    "authorized as a string": ("bad_answer", _answer({"authorized": "yes"})),
    "session id as a number": ("bad_answer", _answer({"authorized": True, "sessionId": 7})),
    "a list": ("bad_answer", lambda _: (200, b"[true]")),
}


@pytest.mark.parametrize("case", sorted(NONSENSE))
async def test_nonsense_answers_are_failures_denied_by_default(
    site: Site, provider: Provider, case: str
) -> None:
    """A non-2xx or an answer of the wrong shape is a failure: counted by kind, and the
    default policy (deny) answers Invalid."""
    kind, answer = NONSENSE[case]
    installation_id = await _webhook_site(site, provider)
    provider.start_answer = answer
    assert (await site.authorize("CP-1", "TAG-1")).status == "Invalid"
    assert _metric(site, installation_id, kind) == 1


async def test_unreachable_provider_is_a_failure(site: Site, provider: Provider) -> None:
    """A start URL where nothing listens is counted as unreachable; policy allow answers
    Accepted, without a sessionId."""
    installation_id = await _webhook_site(
        site, provider, sessionStartUrl="http://127.0.0.1:1/start", onFailure="allow"
    )
    decision = await site.authorize("CP-1", "TAG-1")
    assert decision.status == "Accepted" and decision.external_session_id is None
    assert _metric(site, installation_id, "unreachable") == 1


@pytest.mark.parametrize(
    ("policy", "earlier", "expected"),
    [
        ("deny", None, "Invalid"),
        ("allow", None, "Accepted"),
        ("cache", None, "Invalid"),  # nothing cached for this tag
        ("cache", True, "Accepted"),
        ("cache", False, "Invalid"),
    ],
)
async def test_timeout_under_each_policy(
    site: Site, provider: Provider, policy: str, earlier: bool | None, expected: str
) -> None:
    """A provider slower than timeoutMs: deny → Invalid, allow → Accepted, cache → the
    provider's last decision for the tag (else Invalid); the answer comes at the timeout."""
    installation_id = await _webhook_site(site, provider, timeoutMs=200, onFailure=policy)
    if earlier is not None:
        await site.charger("CP-2", installation_id)
        provider.start_answer = _answer({"authorized": earlier, "sessionId": "OLD"})
        await site.authorize("CP-2", "TAG-1")  # another charger: the cache is per tag
    provider.delay = 2.0
    began = time.monotonic()
    decision = await site.authorize("CP-1", "TAG-1")
    assert time.monotonic() - began < 1.0
    assert decision.status == expected
    assert decision.external_session_id is None  # an old session's id is never reused
    assert _metric(site, installation_id, "timeout") == 1


async def test_cached_decision_expires_after_its_ttl(site: Site, provider: Provider) -> None:
    """Policy cache uses a decision only within cacheTtlSeconds."""
    await _webhook_site(site, provider, onFailure="cache", cacheTtlSeconds=1)
    assert (await site.authorize("CP-1", "TAG-1")).status == "Accepted"
    provider.start_answer = lambda _: (503, b"")
    assert (await site.authorize("CP-1", "TAG-1")).status == "Accepted"
    await asyncio.sleep(1.05)  # the behaviour under test: the TTL runs out
    assert (await site.authorize("CP-1", "TAG-1")).status == "Invalid"


# -- authentication towards the provider ---------------------------------------------------------


async def test_token_is_cached_and_renewed_before_it_expires(
    site: Site, provider: Provider
) -> None:
    """One token serves many calls; a token about to expire (within its margin) is renewed
    before use, so the provider never sees an expired one."""
    provider.token_lifetime = 1.0
    await _webhook_site(site, provider)
    for _ in range(3):
        await site.authorize("CP-1", "TAG-1")
    assert len(provider.requests("/token")) == 1
    # The behaviour under test: past expiry minus the margin (a tenth of a 1 s lifetime).
    await asyncio.sleep(0.95)
    assert (await site.authorize("CP-1", "TAG-1")).status == "Accepted"
    assert len(provider.requests("/token")) == 2
    assert provider.requests("/start")[-1].headers["authorization"] == "Bearer tok-2"


async def test_a_401_gets_one_fresh_token_and_one_retry(site: Site, provider: Provider) -> None:
    """A token the provider revoked early: evgate takes a new one and asks again, once."""
    await _webhook_site(site, provider)
    await site.authorize("CP-1", "TAG-1")
    provider.revoke()
    decision = await site.authorize("CP-1", "TAG-2")
    assert decision.status == "Accepted"
    starts = provider.requests("/start")
    assert [s.headers["authorization"] for s in starts] == [
        "Bearer tok-1",
        "Bearer tok-1",
        "Bearer tok-2",
    ]


async def test_a_failing_token_endpoint_is_a_failure(site: Site, provider: Provider) -> None:
    """No token, no question: counted as a token failure, the policy answers."""
    provider.token_status = 500
    installation_id = await _webhook_site(site, provider, onFailure="allow")
    assert (await site.authorize("CP-1", "TAG-1")).status == "Accepted"
    assert not provider.requests("/start")
    assert _metric(site, installation_id, "token") == 1


async def test_basic_auth_without_an_authentication_url(site: Site, provider: Provider) -> None:
    """Without authenticationUrl the payload's username and password go as HTTP Basic."""
    await _webhook_site(site, provider, authenticationUrl=None)
    assert (await site.authorize("CP-1", "TAG-1")).status == "Accepted"
    [start] = provider.requests("/start")
    assert start.headers["authorization"].startswith("Basic ")
    assert not provider.requests("/token")


async def test_wrong_basic_credentials_are_a_failure(site: Site, provider: Provider) -> None:
    """A 401 to Basic credentials is not retried: it is a failure (http_status)."""
    installation_id = await _webhook_site(
        site,
        provider,
        authenticationUrl=None,
        authenticationPayload=f"username={USERNAME}&password=wrong-{PASSWORD}",
    )
    assert (await site.authorize("CP-1", "TAG-1")).status == "Invalid"
    assert len(provider.requests("/start")) == 1
    assert _metric(site, installation_id, "http_status") == 1


# -- which authorizer decides ----------------------------------------------------------------------


async def test_without_a_start_url_the_native_list_decides(site: Site, provider: Provider) -> None:
    """Webhook mode with only an end URL: the native list answers; the provider is not
    asked."""
    assert site.app.auth is not None
    site.app.auth.directory.native = AcceptAll()  # a native list that knows every tag
    await _webhook_site(site, provider, sessionStartUrl=None)
    assert (await site.authorize("CP-1", "TAG-1")).status == "Accepted"
    assert not provider.requests("/start")


async def test_modes_choose_the_authorizer(site: Site) -> None:
    """acceptAll accepts any tag; native mode and chargers in no installation use the native
    list (here the fail-closed stand-in, which refuses)."""
    accept_all = await site.installation(authorizationMode="acceptAll")
    native = await site.installation(authorizationMode="native")
    await site.charger("HOME", accept_all["id"])
    await site.charger("NATIVE", native["id"])
    await site.charger("LONE")
    assert (await site.authorize("HOME", "ANY")).status == "Accepted"
    assert (await site.authorize("NATIVE", "ANY")).status == "Invalid"
    assert (await site.authorize("LONE", "ANY")).status == "Invalid"
    await site.join("HOME", None)
    assert (await site.authorize("HOME", "ANY")).status == "Invalid"


async def test_mode_changes_apply_at_once(site: Site, provider: Provider) -> None:
    """PATCHing the mode switches the charger's authorizer before the API answers."""
    installation = await site.installation(authorizationMode="acceptAll")
    await site.charger("CP-1", installation["id"])
    assert (await site.authorize("CP-1", "T")).status == "Accepted"
    r = await site.api.patch(
        f"/api/v1/installations/{installation['id']}",
        json={"authorizationMode": "webhook", "webhook": webhook(provider)},
    )
    assert r.status_code == 200, r.text
    provider.start_answer = _answer({"authorized": False})
    assert (await site.authorize("CP-1", "T")).status == "Invalid"
    assert len(provider.requests("/start")) == 1
