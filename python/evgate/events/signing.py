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

hashlib cannot resume SHA-256 from a given state, so that continuation is a pure-Python SHA-256
here (about 0.1 ms per 64-byte block); the Standard Webhooks signature uses hashlib.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct

__all__ = [
    "WEBHOOK_SECRET_PREFIX",
    "hmac_state",
    "hmac_with_state",
    "new_webhook_secret",
    "standard_webhook_signature",
    "webhook_secret_text",
]

WEBHOOK_SECRET_PREFIX = "whsec_"

_K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)  # fmt: skip
_H0 = (
    0x6A09E667,
    0xBB67AE85,
    0x3C6EF372,
    0xA54FF53A,
    0x510E527F,
    0x9B05688C,
    0x1F83D9AB,
    0x5BE0CD19,
)
_M = 0xFFFFFFFF
_BLOCK = 64


def _compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """One SHA-256 compression (FIPS 180-4 section 6.2.2) of a 64-byte block."""
    w = list(struct.unpack(">16I", block))
    for i in range(16, 64):
        x, y = w[i - 15], w[i - 2]
        s0 = ((x >> 7 | x << 25) ^ (x >> 18 | x << 14) ^ (x >> 3)) & _M
        s1 = ((y >> 17 | y << 15) ^ (y >> 19 | y << 13) ^ (y >> 10)) & _M
        w.append((w[i - 16] + s0 + w[i - 7] + s1) & _M)
    a, b, c, d, e, f, g, h = state
    for i in range(64):
        s1 = ((e >> 6 | e << 26) ^ (e >> 11 | e << 21) ^ (e >> 25 | e << 7)) & _M
        t1 = (h + s1 + ((e & f) ^ (~e & g)) + _K[i] + w[i]) & _M
        s0 = ((a >> 2 | a << 30) ^ (a >> 13 | a << 19) ^ (a >> 22 | a << 10)) & _M
        t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) & _M
        h, g, f, e, d, c, b, a = g, f, e, (d + t1) & _M, c, b, a, (t1 + t2) & _M
    return tuple((x + y) & _M for x, y in zip(state, (a, b, c, d, e, f, g, h), strict=True))


def _sha256_from(state: tuple[int, ...], done: int, data: bytes) -> bytes:
    """SHA-256 of (``done`` bytes already compressed into ``state``) + ``data``."""
    total = done + len(data)
    data += b"\x80" + b"\x00" * ((55 - total) % _BLOCK) + struct.pack(">Q", total * 8)
    for i in range(0, len(data), _BLOCK):
        state = _compress(state, data[i : i + _BLOCK])
    return struct.pack(">8I", *state)


def hmac_state(key: bytes) -> bytes:
    """The HMAC-SHA256 key schedule of ``key``: 64 bytes, the SHA-256 states after the ipad
    block and after the opad block. :func:`hmac_with_state` signs with it."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\x00")
    inner = _compress(_H0, bytes(k ^ 0x36 for k in key))
    outer = _compress(_H0, bytes(k ^ 0x5C for k in key))
    return struct.pack(">16I", *inner, *outer)


def hmac_with_state(state: bytes, message: bytes) -> bytes:
    """HMAC-SHA256(key, message) from the key's :func:`hmac_state`, equal to
    ``hmac.new(key, message, "sha256").digest()``."""
    words = struct.unpack(">16I", state)
    inner = _sha256_from(words[:8], _BLOCK, message)
    return _sha256_from(words[8:], _BLOCK, inner)


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
