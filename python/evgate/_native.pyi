"""evgate's private native module (Rust, pyo3). Use it through `evgate.native`, never directly:
that module picks this one or the pure-Python twins (``EVGATE_NO_NATIVE=1``)."""

__all__ = ["hash_secret", "rollup_1m", "verify_secret"]

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

def rollup_1m(series: bytes, ts_us: bytes, values: bytes) -> bytes:
    """Aggregate a batch of numeric meter values per series and minute.

    The three buffers hold one entry per row, little-endian: ``series`` a ``u32`` series id
    (the caller's numbering of (charger, connector, measurand, phase, location)), ``ts_us`` an
    ``i64`` time in microseconds since the Unix epoch, ``values`` an ``f64``. NaN values are
    skipped. The minute of a row is ``floor(ts_us / 60e6) * 60e6``; sums add in input order;
    first is the value of the earliest row (the first of equal times), last of the latest (the
    last of equal times).

    Args:
        series: ``4 * n`` bytes.
        ts_us: ``8 * n`` bytes.
        values: ``8 * n`` bytes.

    Returns:
        One record per (series, minute), sorted by series then minute, each a tuple of
        PostgreSQL's binary COPY format (118 bytes, ``struct`` ``">h ii iq id id id iq iq id iq
        id"``: the field count 10, then each field's length and value): series (int4), minute
        start, min, max, sum, count, first time, first value, last time, last value; times in
        µs since 2000-01-01, PostgreSQL's epoch. Framed by a COPY header and trailer, the
        records are a binary COPY stream for ``meter_rollup_1m``'s columns.

    Raises:
        ValueError: a buffer's length is not a multiple of its item size, the buffers hold
            different numbers of rows, or a time lies beyond ±2**62 µs.
    """
