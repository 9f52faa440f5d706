"""auth room: the webhook authorizer — an outside provider approves each session by HTTP.

One :class:`WebhookAuthorizer` per installation in ``webhook`` mode, built from its
:class:`WebhookSettings`. It asks the provider's ``sessionStartUrl`` on Authorize (and on
StartTransaction when no recent decision exists) — never on StopTransaction, which starts no
session: a stop's idTagInfo is answered here (:meth:`WebhookAuthorizer.authorize`), and leaves
no decision behind for a later StartTransaction —, applies the installation's failure policy
when the provider times out, fails or answers nonsense, and delivers session ends
(``report_end``) for the durable sender in ``evgate.auth.session_ends``.

The hook bodies are documented in README.md ("External authorization"); the structs below
are their single source of truth.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import msgspec

from evgate.auth.authorizer import AuthorizationQuestion, AuthorizationStatus, Authorizer, Decision
from evgate.metrics import Counter, Registry

__all__ = [
    "MASK",
    "OnFailure",
    "ProviderError",
    "SessionStartAnswer",
    "SessionStartBody",
    "Url",
    "WebhookAuthorizer",
    "WebhookSettings",
    "check_webhook",
    "masked_payload",
    "refusal_status",
    "webhook_counter",
]

log = logging.getLogger(__name__)

OnFailure = Literal["deny", "allow", "cache"]

# What the API shows instead of a secret, and refuses to be given back as one.
MASK = "***"
# Payload keys whose values are not secret and are shown as they are; every other value is
# masked, so an unforeseen key (client_secret, api_key, ...) is never shown.
_PUBLIC_PAYLOAD_KEYS = frozenset({"grant_type", "username", "client_id", "scope", "audience"})

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class WebhookSettings(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """An installation's ``webhook`` object. :func:`check_webhook` checks what types cannot."""

    authentication_url: Url | None = None
    # A form string such as ``grant_type=password&username=U&password=P``: POSTed to
    # authenticationUrl, or (without one) the source of the HTTP Basic username and password.
    authentication_payload: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    session_start_url: Url | None = None
    session_end_url: Url | None = None
    # Chargers commonly give up on a CALL after 10-30 s; the provider's whole answer (token
    # included) must come well within that.
    timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=20_000)] = 3000
    on_failure: OnFailure = "deny"
    # How old a provider's decision may be for the ``cache`` policy to use it.
    cache_ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=30 * 86400)] = 86400


def _check_url(name: str, url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook.{name}: must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        # A password in a URL would be shown by the API and end up in logs.
        raise ValueError(
            f"webhook.{name}: must not hold credentials; put them in authenticationPayload"
        )
    if parts.fragment:
        raise ValueError(f"webhook.{name}: must not have a #fragment")


def _form(payload: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(payload, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError(
            "webhook.authenticationPayload: must be a form string such as"
            " grant_type=password&username=U&password=P"
        ) from None
    return dict(pairs)


def check_webhook(settings: WebhookSettings) -> None:
    """Check what the types cannot: URL shapes, the payload's form, and the combination.

    Raises:
        ValueError: naming the field and what is wrong with it.
    """
    _check_url("authenticationUrl", settings.authentication_url)
    _check_url("sessionStartUrl", settings.session_start_url)
    _check_url("sessionEndUrl", settings.session_end_url)
    if settings.session_start_url is None and settings.session_end_url is None:
        raise ValueError("webhook: needs sessionStartUrl, sessionEndUrl or both")
    form = {} if settings.authentication_payload is None else _form(settings.authentication_payload)
    if MASK in form.values():
        raise ValueError(
            f"webhook.authenticationPayload: holds the mask {MASK!r} that the API shows instead"
            " of secrets; send the real values, or leave the payload out to keep it"
        )
    if settings.authentication_url is not None and settings.authentication_payload is None:
        raise ValueError("webhook.authenticationPayload: required with authenticationUrl")
    if settings.authentication_url is None and form and not {"username", "password"} <= set(form):
        raise ValueError(
            "webhook.authenticationPayload: without authenticationUrl it gives the HTTP Basic"
            " credentials, so it needs username and password"
        )


def masked_payload(payload: str | None) -> str | None:
    """The payload with every value but the public ones (grant_type, username, ...) masked."""
    if payload is None:
        return None
    pairs = parse_qsl(payload, keep_blank_values=True)
    return "&".join(f"{k}={v if k in _PUBLIC_PAYLOAD_KEYS else MASK}" for k, v in pairs)


# -- the hooks' bodies ---------------------------------------------------------------------------


class SessionStartBody(msgspec.Struct, rename="camel", kw_only=True):
    """What evgate POSTs to ``sessionStartUrl``. ``connectorId`` is null on Authorize."""

    charger_id: str
    connector_id: int | None
    id_tag: str
    installation_id: int
    timestamp: datetime


class SessionStartAnswer(msgspec.Struct, rename="camel", kw_only=True):
    """What the provider answers. Unknown members are ignored; anything else is nonsense."""

    authorized: bool
    session_id: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class _TokenAnswer(msgspec.Struct):
    access_token: Annotated[str, msgspec.Meta(min_length=1, max_length=8000)]
    expires_in: Annotated[float, msgspec.Meta(gt=0)] | None = None


_start_answer = msgspec.json.Decoder(SessionStartAnswer)
_token_answer = msgspec.json.Decoder(_TokenAnswer)
_encoder = msgspec.json.Encoder()

_REFUSALS: dict[str, AuthorizationStatus] = {
    "blocked": "Blocked",
    "expired": "Expired",
    "invalid": "Invalid",
    "concurrenttx": "ConcurrentTx",
}
_BLOCKED_WORD = re.compile(r"\bblocked\b", re.IGNORECASE)


def refusal_status(reason: str | None) -> AuthorizationStatus:
    """idTagInfo status for a refusal: the reason, when it is an OCPP status name (Blocked,
    Expired, Invalid, ConcurrentTx, any case); else Blocked when it has the word "blocked"
    ("Card blocked by issuer"); else Invalid."""
    if reason is None:
        return "Invalid"
    exact = _REFUSALS.get(reason.strip().lower())
    if exact is not None:
        return exact
    return "Blocked" if _BLOCKED_WORD.search(reason) else "Invalid"


# -- failures and metrics ----------------------------------------------------------------------


FailureKind = Literal["timeout", "unreachable", "http_status", "bad_answer", "token"]


class ProviderError(Exception):
    """The provider did not give a usable answer; ``kind`` classifies it for the counters."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def webhook_counter(registry: Registry) -> Counter:
    """The counter of every hook call's outcome, labelled hook (``start``/``end``),
    installation (its id) and outcome: ``approved``, ``refused``, ``delivered``, or a failure
    kind (``timeout``, ``unreachable``, ``http_status``, ``bad_answer``, ``token``)."""
    return registry.counter(
        "evgate_auth_webhook_calls_total",
        "Calls to installations' authorization providers, by outcome",
        ("hook", "installation", "outcome"),
    )


# -- authentication towards the provider --------------------------------------------------------


class _BearerTokens:
    """An OAuth-style access token from ``authenticationUrl``, fetched once for all concurrent
    callers and kept until shortly before it expires."""

    # Renew this long before expiry (capped at a tenth of the lifetime for short-lived tokens),
    # so a token never expires between being read here and reaching the provider.
    MARGIN_SECONDS = 30.0

    def __init__(self, http: httpx.AsyncClient, url: str, payload: str) -> None:
        self._http = http
        self._url = url
        self._payload = payload
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    def _current(self) -> str | None:
        if self._token is not None and time.monotonic() < self._renew_at:
            return self._token
        return None

    async def get(self) -> str:
        """A valid token. Raises: ProviderError (kind ``token``)."""
        token = self._current()
        if token is not None:
            return token
        async with self._lock:
            token = self._current()  # another caller may have fetched it meanwhile
            if token is not None:
                return token
            return await self._fetch()

    def invalidate(self, token: str) -> None:
        """The provider refused ``token`` (401): forget it unless a newer one replaced it."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> str:
        try:
            response = await self._http.post(
                self._url,
                content=self._payload.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except httpx.HTTPError as exc:
            raise ProviderError("token", f"token request failed: {exc!r}") from None
        if not response.is_success:
            raise ProviderError("token", f"token endpoint answered HTTP {response.status_code}")
        try:
            answer = _token_answer.decode(response.content)
        except msgspec.DecodeError as exc:
            raise ProviderError("token", f"token endpoint answered nonsense: {exc}") from None
        now = time.monotonic()
        if answer.expires_in is None:
            self._renew_at = float("inf")  # kept until the provider answers 401
        else:
            margin = min(self.MARGIN_SECONDS, answer.expires_in / 10)
            self._renew_at = now + answer.expires_in - margin
        self._token = answer.access_token
        return answer.access_token


# -- the authorizer ------------------------------------------------------------------------------


_K = TypeVar("_K")


class _Remembered(msgspec.Struct):
    decision: Decision
    at: float


class WebhookAuthorizer:
    """Authorizes through an installation's provider; see the module docstring.

    Args:
        installation_id: the installation it serves (sent to the provider).
        settings: the installation's checked webhook settings.
        http: the shared HTTP client (owned by the caller).
        fallback: the native authorizer, which decides when there is no sessionStartUrl.
        calls: where outcomes are counted (:func:`webhook_counter`).
    """

    # An Authorize's decision answers the StartTransaction that follows it on the same charger
    # with the same id-tag within this time, once (the provider's sessionId then belongs to
    # that transaction). Chargers give the driver well under this to plug in.
    RECENT_SECONDS = 300.0
    # Bounds of the in-memory decision stores (per installation, least recently used out).
    MAX_RECENT = 10_000
    MAX_CACHED = 100_000
    # Session ends are not on a charger's clock: give the provider longer.
    END_TIMEOUT_SECONDS = 10.0

    def __init__(
        self,
        installation_id: int,
        settings: WebhookSettings,
        http: httpx.AsyncClient,
        fallback: Authorizer,
        calls: Counter,
    ) -> None:
        self.installation_id = installation_id
        self.settings = settings
        self._http = http
        self._fallback = fallback
        self._calls = calls
        self._label = str(installation_id)
        self._recent: OrderedDict[tuple[str, str], _Remembered] = OrderedDict()
        self._cached: OrderedDict[str, _Remembered] = OrderedDict()
        self._tokens: _BearerTokens | None = None
        self._basic: httpx.BasicAuth | None = None
        if settings.authentication_url is not None and settings.authentication_payload:
            self._tokens = _BearerTokens(
                http, settings.authentication_url, settings.authentication_payload
            )
        elif settings.authentication_payload:
            form = _form(settings.authentication_payload)
            self._basic = httpx.BasicAuth(form["username"], form["password"])

    @property
    def reports_ends(self) -> bool:
        """Whether session ends at this installation's chargers go to the provider."""
        return self.settings.session_end_url is not None

    async def authorize(self, question: AuthorizationQuestion) -> Decision:
        """Ask the provider (or reuse the Authorize decision on StartTransaction); never
        raises for the provider's failures: the failure policy answers then.

        A StopTransaction's id-tag (purpose ``stop``) is answered without the provider: the
        transaction's own id-tag is ``Accepted`` (the provider approved this session when it
        started, and the charger only learns whether the id-tag that ended it is valid);
        another id-tag (a fleet card stopping someone else's session) is decided by the
        native id-tag list. Nothing is remembered, so no StartTransaction reuses it.
        """
        if question.purpose == "stop":
            own = question.transaction_id_tag
            if own is not None and own.casefold() == question.id_tag.casefold():
                return Decision(status="Accepted")
            return await self._fallback.authorize(question)
        url = self.settings.session_start_url
        if url is None:
            return await self._fallback.authorize(question)
        key = (question.charger_id, question.id_tag.casefold())
        if question.starting:
            recent = self._recent.pop(key, None)
            if recent is not None and time.monotonic() - recent.at < self.RECENT_SECONDS:
                return recent.decision
        try:
            async with asyncio.timeout(self.settings.timeout_ms / 1000):
                decision = await self._ask(url, question)
        except (ProviderError, TimeoutError) as exc:
            failure = exc if isinstance(exc, ProviderError) else ProviderError("timeout", "")
            return self._on_failure(question, failure)
        outcome = "approved" if decision.status == "Accepted" else "refused"
        self._calls.inc("start", self._label, outcome)
        now = time.monotonic()
        self._remember(self._cached, question.id_tag.casefold(), decision, now, self.MAX_CACHED)
        if not question.starting:
            self._remember(self._recent, key, decision, now, self.MAX_RECENT)
        return decision

    @staticmethod
    def _remember(
        store: OrderedDict[_K, _Remembered], key: _K, decision: Decision, now: float, limit: int
    ) -> None:
        store[key] = _Remembered(decision, now)
        store.move_to_end(key)
        if len(store) > limit:
            store.popitem(last=False)

    def _on_failure(self, question: AuthorizationQuestion, failure: ProviderError) -> Decision:
        self._calls.inc("start", self._label, failure.kind)
        policy = self.settings.on_failure
        decision = Decision(status="Invalid")
        if policy == "allow":
            decision = Decision(status="Accepted")
        elif policy == "cache":
            cached = self._cached.get(question.id_tag.casefold())
            if (
                cached is not None
                and time.monotonic() - cached.at < self.settings.cache_ttl_seconds
            ):
                # The old decision's sessionId belongs to an old session: not reused.
                decision = msgspec.structs.replace(cached.decision, external_session_id=None)
        log.warning(
            "installation %d: session-start provider failed for charger %s (%s); policy %s"
            " answers %s",
            self.installation_id,
            question.charger_id,
            failure,
            policy,
            decision.status,
        )
        return decision

    async def _ask(self, url: str, question: AuthorizationQuestion) -> Decision:
        body = SessionStartBody(
            charger_id=question.charger_id,
            connector_id=question.connector_id,
            id_tag=question.id_tag,
            installation_id=self.installation_id,
            timestamp=question.timestamp or datetime.now(UTC),
        )
        response = await self._post(url, _encoder.encode(body))
        if not response.is_success:
            raise ProviderError("http_status", f"HTTP {response.status_code}")
        try:
            answer = _start_answer.decode(response.content)
        except msgspec.DecodeError as exc:
            raise ProviderError("bad_answer", str(exc)) from None
        if answer.authorized:
            return Decision(status="Accepted", external_session_id=answer.session_id)
        return Decision(status=refusal_status(answer.reason))

    async def report_end(self, body: bytes) -> None:
        """POST one session end's JSON body to ``sessionEndUrl``.

        Raises:
            ProviderError: anything but a 2xx within END_TIMEOUT_SECONDS (counted; the caller
                retries later).
        """
        url = self.settings.session_end_url
        if url is None:
            raise ProviderError("http_status", "the installation has no sessionEndUrl")
        try:
            async with asyncio.timeout(self.END_TIMEOUT_SECONDS):
                response = await self._post(url, body)
            if not response.is_success:
                raise ProviderError("http_status", f"HTTP {response.status_code}")
        except (ProviderError, TimeoutError) as exc:
            failure = exc if isinstance(exc, ProviderError) else ProviderError("timeout", "")
            self._calls.inc("end", self._label, failure.kind)
            raise failure from None
        self._calls.inc("end", self._label, "delivered")

    async def _post(self, url: str, body: bytes) -> httpx.Response:
        """POST JSON with the installation's credentials; with a bearer token, a 401 gets one
        fresh token and one retry (the provider may have revoked or expired it early)."""
        headers = {"Content-Type": "application/json"}
        if self._tokens is None:
            return await self._send(url, body, headers)
        token = await self._tokens.get()
        response = await self._send(url, body, {**headers, "Authorization": f"Bearer {token}"})
        if response.status_code != 401:
            return response
        self._tokens.invalidate(token)
        token = await self._tokens.get()
        return await self._send(url, body, {**headers, "Authorization": f"Bearer {token}"})

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        try:
            if self._basic is None:
                return await self._http.post(url, content=body, headers=headers)
            return await self._http.post(url, content=body, headers=headers, auth=self._basic)
        except httpx.TimeoutException as exc:
            raise ProviderError("timeout", repr(exc)) from None
        except httpx.HTTPError as exc:
            raise ProviderError("unreachable", repr(exc)) from None
