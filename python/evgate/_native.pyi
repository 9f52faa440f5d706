"""evgate's private native module (Rust, pyo3). Use it through `evgate.native`, never directly:
that module picks this one or the pure-Python twins (``EVGATE_NO_NATIVE=1``)."""

__all__ = ["hash_secret", "verify_secret"]

def hash_secret(secret: bytes) -> bytes:
    """Return the SHA-256 digest (32 bytes) of ``secret``.

    Args:
        secret: the secret's bytes (a charger secret or an API token, UTF-8 encoded).

    Returns:
        The 32-byte digest.
    """

def verify_secret(secret: bytes, digest: bytes) -> bool:
    """Tell whether ``secret`` hashes to ``digest``, comparing in constant time.

    Args:
        secret: the presented secret's bytes.
        digest: the stored 32-byte digest; any other length never matches.

    Returns:
        True when SHA-256(secret) equals digest.
    """
