"""evgate's private native module (Rust, pyo3). Use it through `evgate.native`, never directly:
that module picks this one or the pure-Python twins (``EVGATE_NO_NATIVE=1``)."""

from typing import Any

__all__ = ["copy_meter_rows", "hash_secret", "hmac_with_state", "rollup_1m", "verify_secret"]

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

def copy_meter_rows(rows: list[tuple[Any, ...]], ts_us: bytes) -> bytes:
    """Encode a batch of meter rows as tuples of PostgreSQL's binary COPY format.

    Each row is a tuple of ``meter_values``' twelve columns in ``METER_COLUMNS`` order, typed
    as ``evgate.native.METER_ROW`` says: ``str`` for text, ``int`` for int4, a number for
    float8, ``None`` for NULL. The time column's value is not read: row ``i``'s time is entry
    ``i`` of ``ts_us`` (little-endian ``i64`` µs since the Unix epoch; the caller converts its
    datetimes, sharing the work between the rows of one instant).

    Args:
        rows: the rows.
        ts_us: ``8 * len(rows)`` bytes.

    Returns:
        One tuple per row: the field count 12, then each field's length (-1 for NULL) and
        big-endian value; times in µs since 2000-01-01. Framed by ``COPY_HEADER`` and
        ``COPY_TRAILER``, a binary COPY stream for ``meter_values``' columns.

    Raises:
        TypeError: ``rows`` is not a list, a row is not a tuple, or a field is not of its
            column's type.
        ValueError: a row does not have twelve fields, ``ts_us`` does not hold one time per
            row, an int4 is out of range, a text is 2 GiB or longer, or a time lies beyond
            ±2**62 µs.
        OverflowError: an ``int`` for a float8 is beyond its range.
        UnicodeEncodeError: a text holds a lone surrogate (no UTF-8 for it).
    """

def hmac_with_state(state: bytes, message: bytes) -> bytes:
    """Return HMAC-SHA256(key, message) from the key's schedule.

    Args:
        state: 64 bytes, the two SHA-256 chaining states (big-endian words) after compressing
            ``key XOR ipad`` and ``key XOR opad`` (``events.signing.hmac_state`` makes it).
        message: the bytes to authenticate.

    Returns:
        The 32-byte tag, equal to ``hmac.new(key, message, "sha256").digest()``.

    Raises:
        ValueError: ``state`` is not 64 bytes.
    """
