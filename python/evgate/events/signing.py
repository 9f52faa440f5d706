"""events room: signing webhook deliveries.

Two signatures go with every webhook delivery:

* ``webhook-signature`` (Standard Webhooks): ``v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>``
  with a per-subscription secret made here and shown once, as ``whsec_<base64>``.
* ``X-Signature`` (the AMPECO catalog): hex HMAC-SHA256 of the body keyed with the API token that
  created the subscription. evgate keeps API tokens only as digests, so it cannot key with the
  token later. What it keeps instead is the token's HMAC *key schedule*: the two SHA-256 chaining
  states after compressing ``token XOR ipad`` and ``token XOR opad`` (RFC 2104 section 4 names
  exactly this precomputation). Continuing SHA-256 from those states gives HMAC(token, body) bit
  for bit, so a receiver written for AMPECO verifies it unchanged; yet the states are one-way
  (recovering the token would invert SHA-256's compression function) and the token's digest
  that authenticates API calls is a different value, so what is stored cannot call the API.

hashlib cannot resume SHA-256 from a given state, so that continuation (``hmac_with_state``,
for every delivery) is evgate's native module's (Rust, sha2's compression function, a few µs),
or with ``EVGATE_NO_NATIVE=1`` its pure-Python twin (about 0.2 ms per 64-byte block: too slow
for thousands of deliveries a second). The Standard Webhooks signature uses hashlib.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct

from evgate.native import SHA256_BLOCK, SHA256_INITIAL, hmac_with_state, sha256_compress

__all__ = [
    "WEBHOOK_SECRET_PREFIX",
    "hmac_state",
    "hmac_with_state",
    "new_webhook_secret",
    "standard_webhook_signature",
    "webhook_secret_text",
]

WEBHOOK_SECRET_PREFIX = "whsec_"


def hmac_state(key: bytes) -> bytes:
    """The HMAC-SHA256 key schedule of ``key``: 64 bytes, the SHA-256 states after the ipad
    block and after the opad block. :func:`hmac_with_state` signs with it."""
    if len(key) > SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(SHA256_BLOCK, b"\x00")
    inner = sha256_compress(SHA256_INITIAL, bytes(k ^ 0x36 for k in key))
    outer = sha256_compress(SHA256_INITIAL, bytes(k ^ 0x5C for k in key))
    return struct.pack(">16I", *inner, *outer)


def new_webhook_secret() -> bytes:
    """A fresh Standard Webhooks signing key (32 bytes from the OS CSPRNG)."""
    return secrets.token_bytes(32)


def webhook_secret_text(secret: bytes) -> str:
    """The secret as receivers configure it: ``whsec_`` + base64."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secret).decode()


def standard_webhook_signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>`` over
    ``{msg_id}.{timestamp}.{body}``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
