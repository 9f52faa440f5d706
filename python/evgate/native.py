"""The one place that chooses between the native module and its pure-Python twins.

Every fast path in ``evgate._native`` has a twin here with the same contract. The native one is
used unless ``EVGATE_NO_NATIVE=1``; the parity tests and the benchmarks run both. A missing
native build is an error, not a silent fallback: a slow evgate that looks healthy is worse than
one that refuses to start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

__all__ = ["USING_NATIVE", "hash_secret", "pure_hash_secret", "pure_verify_secret", "verify_secret"]


def pure_hash_secret(secret: bytes) -> bytes:
    """Pure-Python twin of ``_native.hash_secret``."""
    return hashlib.sha256(secret).digest()


def pure_verify_secret(secret: bytes, digest: bytes) -> bool:
    """Pure-Python twin of ``_native.verify_secret``."""
    if len(digest) != 32:
        return False
    return hmac.compare_digest(hashlib.sha256(secret).digest(), digest)


USING_NATIVE: bool = os.environ.get("EVGATE_NO_NATIVE", "") not in ("1", "true", "yes")

hash_secret: Callable[[bytes], bytes]
verify_secret: Callable[[bytes, bytes], bool]

if USING_NATIVE:
    try:
        from evgate import _native
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ImportError(
            "evgate's native module is not built: run `make install` "
            "(or set EVGATE_NO_NATIVE=1 to run the slower pure-Python twins)"
        ) from exc
    hash_secret = _native.hash_secret
    verify_secret = _native.verify_secret
else:
    hash_secret = pure_hash_secret
    verify_secret = pure_verify_secret
