"""The native module and its pure-Python twins: known SHA-256 vectors, parity with hashlib."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evgate import _native, native

VECTORS = [
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]
IMPLEMENTATIONS = [
    pytest.param(_native.hash_secret, _native.verify_secret, id="native"),
    pytest.param(native.pure_hash_secret, native.pure_verify_secret, id="pure"),
]


def test_native_is_used_by_default() -> None:
    """Without EVGATE_NO_NATIVE the chosen functions are the Rust ones."""
    assert native.USING_NATIVE
    assert native.hash_secret is _native.hash_secret


@pytest.mark.parametrize(("hash_secret", "verify_secret"), IMPLEMENTATIONS)
@pytest.mark.parametrize(("message", "hex_digest"), VECTORS, ids=["empty", "abc", "448bit", "1M"])
def test_known_vectors(hash_secret, verify_secret, message: bytes, hex_digest: str) -> None:
    """Both implementations give the FIPS 180-2 digests and verify them."""
    assert hash_secret(message).hex() == hex_digest
    assert verify_secret(message, bytes.fromhex(hex_digest))


@given(st.binary(max_size=256))
def test_digest_matches_hashlib(data: bytes) -> None:
    """Native and pure digests equal hashlib's for any input."""
    expected = hashlib.sha256(data).digest()
    assert _native.hash_secret(data) == expected
    assert native.pure_hash_secret(data) == expected


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_verify_parity(secret: bytes, other: bytes) -> None:
    """verify accepts exactly the secret, in both implementations."""
    stored = hashlib.sha256(secret).digest()
    for verify in (_native.verify_secret, native.pure_verify_secret):
        assert verify(secret, stored)
        assert verify(other, stored) == (hashlib.sha256(other).digest() == stored)


@pytest.mark.parametrize(("hash_secret", "verify_secret"), IMPLEMENTATIONS)
@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_verify_rejects_digest_of_wrong_length(hash_secret, verify_secret, length: int) -> None:
    """A stored value that is not 32 bytes never matches, even as a prefix."""
    digest = hash_secret(b"secret")
    assert not verify_secret(b"secret", (digest * 2)[:length])
