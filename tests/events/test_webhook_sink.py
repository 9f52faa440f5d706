"""What one webhook attempt records of the receiver's answer (``WebhookSink.deliver``, on the
client of events/http.py): success, the error text, Retry-After, Gone, a timeout, a refusal."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import NamedTuple

import pytest

from evgate.events.signing import new_webhook_secret
from evgate.events.sinks import _ERROR_SNIPPET, Attempt, WebhookSink
from evgate.storage.subscriptions import SubscriptionRow
from support import Receiver, Reply

from .events_helpers import AT


class Event(NamedTuple):
    outbox_id: int
    event: str
    payload: bytes


EVENT = Event(7, "circuit.changed", b'{"notification":"circuit.changed"}')


def _subscription(url: str) -> SubscriptionRow:
    return SubscriptionRow(
        id=1,
        via="webhook",
        notifications=["circuit.changed"],
        callback_url=url,
        kafka=None,
        kafka_password=None,
        webhook_secret=new_webhook_secret(),
        token_hmac_state=None,
        enabled=True,
        disabled_reason=None,
        created_at=AT,
        updated_at=AT,
    )


@pytest.fixture
async def sink(receiver: Receiver) -> AsyncIterator[WebhookSink]:
    s = WebhookSink(_subscription(receiver.url), timeout=0.5, max_connections=2)
    yield s
    await s.close()


async def _deliver(sink: WebhookSink, receiver: Receiver, reply: Reply) -> Attempt:
    receiver.reply = lambda _: reply
    return await sink.deliver(EVENT)


@pytest.mark.parametrize("status", [200, 202, 204, 299])
async def test_any_2xx_is_success(sink: WebhookSink, receiver: Receiver, status: int) -> None:
    attempt = await _deliver(sink, receiver, Reply(status, body=b"" if status == 204 else b"ok"))
    assert attempt.ok and attempt.status_code == status and attempt.error is None
    assert receiver.requests[0].headers["webhook-id"] == "evt_7"


async def test_a_redirect_is_not_followed(sink: WebhookSink, receiver: Receiver) -> None:
    attempt = await _deliver(sink, receiver, Reply(302, {"Location": "http://elsewhere/x"}))
    assert not attempt.ok and attempt.status_code == 302
    assert attempt.error == "HTTP 302: redirect to 'http://elsewhere/x' not followed"
    assert len(receiver.requests) == 1


async def test_gone_says_so(sink: WebhookSink, receiver: Receiver) -> None:
    attempt = await _deliver(sink, receiver, Reply(410, body=b"unsubscribed"))
    assert (attempt.ok, attempt.gone, attempt.error) == (False, True, "HTTP 410: unsubscribed")


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_in_seconds_or_as_a_date(
    sink: WebhookSink, receiver: Receiver, status: int
) -> None:
    attempt = await _deliver(sink, receiver, Reply(status, {"Retry-After": "7"}, body=b"busy"))
    assert (attempt.retry_after, attempt.error) == (7.0, f"HTTP {status}: busy")
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    attempt = await _deliver(sink, receiver, Reply(status, {"Retry-After": later}))
    assert attempt.retry_after is not None and 55 < attempt.retry_after <= 60


async def test_retry_after_is_ignored_on_other_statuses(
    sink: WebhookSink, receiver: Receiver
) -> None:
    attempt = await _deliver(sink, receiver, Reply(500, {"Retry-After": "7"}))
    assert attempt.retry_after is None and attempt.status_code == 500


async def test_a_long_error_answer_is_cut_to_the_snippet(
    sink: WebhookSink, receiver: Receiver
) -> None:
    attempt = await _deliver(sink, receiver, Reply(500, body=b"e" * 100_000))
    assert attempt.error == "HTTP 500: " + "e" * _ERROR_SNIPPET


async def test_no_answer_in_time_is_a_timeout(sink: WebhookSink, receiver: Receiver) -> None:
    attempt = await _deliver(sink, receiver, Reply(delay=2.0))
    assert attempt == Attempt(
        False, error="timeout (TimeoutError)", duration_ms=attempt.duration_ms
    )
    assert attempt.duration_ms >= 500


async def test_a_refused_connection_is_a_failed_attempt() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = WebhookSink(_subscription(f"http://127.0.0.1:{port}/"), 1.0, 1)
    try:
        attempt = await sink.deliver(EVENT)
    finally:
        await sink.close()
    assert not attempt.ok and attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith(
        f"ConnectFailed: cannot connect to 127.0.0.1:{port}:"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://receiver.example:99999/hook",  # a port out of range
        "http://" + "ü" * 70 + ".example/hook",  # a name IDNA cannot encode (a label too long)
    ],
)
async def test_a_callback_url_the_client_cannot_use_is_a_failed_attempt(url: str) -> None:
    """The API refuses such a URL now (api/notifications.py), but a subscription stored
    before may hold one: that it cannot be sent to is each attempt's error (as aiohttp's
    InvalidUrlClientError was), not a ValueError out of the sink, which a stream takes for the
    database away and retries for ever, and a lane reports and retries at every claim, no
    attempt ever recorded."""
    sink = WebhookSink(_subscription(url), 1.0, 1)
    try:
        attempt = await sink.deliver(EVENT)
    finally:
        await sink.close()
    assert not attempt.ok and attempt.status_code is None
    assert attempt.error is not None
