"""Webhook signatures: X-Signature from the stored key schedule equals HMAC(token, body);
the Standard Webhooks signature verifies as the specification says."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from evgate import _native, native
from evgate.events.signing import (
    hmac_state,
    hmac_with_state,
    new_webhook_secret,
    standard_webhook_signature,
    webhook_secret_text,
)

from .events_helpers import verify_standard_webhook


@pytest.mark.parametrize("key_length", [0, 1, 32, 47, 64, 65, 200])
@pytest.mark.parametrize("message_length", [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000])
def test_hmac_from_key_schedule_equals_hmac_with_the_key(
    key_length: int, message_length: int
) -> None:
    """Every padding boundary of SHA-256 and keys shorter and longer than a block, through
    the one chosen (``hmac_with_state``), the Rust one and the pure-Python twin."""
    key = bytes(range(256))[:key_length]
    message = (b"evgate" * 200)[:message_length]
    expected = hmac.new(key, message, hashlib.sha256).digest()
    state = hmac_state(key)
    assert hmac_with_state(state, message) == expected
    assert _native.hmac_with_state(state, message) == expected
    assert native.pure_hmac_with_state(state, message) == expected


def test_key_schedule_is_neither_the_token_nor_its_digest() -> None:
    """What is stored for X-Signature reveals neither the token nor the digest that
    authenticates API calls."""
    token = b"evg_" + b"x" * 43
    state = hmac_state(token)
    assert len(state) == 64
    assert token not in state and hashlib.sha256(token).digest() not in state


def test_standard_webhook_signature_verifies() -> None:
    secret = new_webhook_secret()
    body = b'{"notification":"BootNotification"}'
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": standard_webhook_signature(secret, "evt_1", 1700000000, body),
    }
    assert verify_standard_webhook(secret, headers, body)
    assert not verify_standard_webhook(secret, headers, body + b" ")
    text = webhook_secret_text(secret)
    assert text.startswith("whsec_") and base64.b64decode(text[6:]) == secret
