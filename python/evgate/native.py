"""The one place that chooses between the native module and its pure-Python twins.

Every fast path in ``evgate._native`` has a twin here with the same contract. The native one is
used unless ``EVGATE_NO_NATIVE=1``; the parity tests and the benchmarks run both. A missing
native build is an error, not a silent fallback: a slow evgate that looks healthy is worse than
one that refuses to start.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import os
import struct
from array import array
from collections.abc import Callable
from typing import Any

__all__ = [
    "COPY_HEADER",
    "COPY_TRAILER",
    "METER_ROW",
    "PG_EPOCH_US",
    "ROLLUP_RECORD",
    "SHA256_BLOCK",
    "SHA256_INITIAL",
    "USING_NATIVE",
    "copy_meter_rows",
    "hash_secret",
    "hmac_with_state",
    "pure_copy_meter_rows",
    "pure_hash_secret",
    "pure_hmac_with_state",
    "pure_rollup_1m",
    "pure_verify_secret",
    "rollup_1m",
    "sha256_compress",
    "verify_secret",
]

#: The record ``rollup_1m`` returns per (series, minute): a tuple of PostgreSQL's binary COPY
#: format, so a batch's rollups stream into a table as they are. Big-endian: the field count
#: (10), then each field's length and value: series (int4), minute start, min, max, sum, count
#: (int8), first time, first value, last time, last value. Times are µs since PostgreSQL's
#: epoch, 2000-01-01 (``PG_EPOCH_US`` after the Unix one).
ROLLUP_RECORD = struct.Struct(">h ii iq id id id iq iq id iq id")
#: What a binary COPY stream starts and ends with, around its tuples.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_LENGTH = struct.Struct(">i")
_INT4 = struct.Struct(">ii")
_TIME = struct.Struct(">iq")
_FLOAT8 = struct.Struct(">id")
PG_EPOCH_US = 946_684_800_000_000
_MINUTE_US = 60_000_000
_MAX_ABS_US = 1 << 62


def pure_hash_secret(secret: bytes) -> bytes:
    """Pure-Python twin of ``_native.hash_secret``."""
    return hashlib.sha256(secret).digest()


def pure_verify_secret(secret: bytes, digest: bytes) -> bool:
    """Pure-Python twin of ``_native.verify_secret``."""
    if len(digest) != 32:
        return False
    return hmac.compare_digest(hashlib.sha256(secret).digest(), digest)


def _items(buf: bytes, typecode: str, name: str) -> array:  # type: ignore[type-arg]
    items = array(typecode)
    if len(buf) % items.itemsize:
        raise ValueError(f"{name}: length is not a multiple of its item size")
    items.frombytes(buf)
    return items


def pure_rollup_1m(series: bytes, ts_us: bytes, values: bytes) -> bytes:
    """Pure-Python twin of ``_native.rollup_1m`` (same rules, same bytes out)."""
    sids = _items(series, "I", "series")
    times = _items(ts_us, "q", "ts_us")
    vals = _items(values, "d", "values")
    if not len(sids) == len(times) == len(vals):
        raise ValueError(
            f"buffers hold different row counts: series {len(sids)}, ts {len(times)},"
            f" values {len(vals)}"
        )
    # [min, max, sum, count, first_us, first, last_us, last] per (series, minute)
    groups: dict[tuple[int, int], list[float]] = {}
    for s, t, v in zip(sids, times, vals, strict=True):
        if not -_MAX_ABS_US <= t <= _MAX_ABS_US:
            raise ValueError(f"time out of range: {t} µs")
        if v != v:  # NaN
            continue
        key = (s, t // _MINUTE_US * _MINUTE_US)
        g = groups.get(key)
        if g is None:
            groups[key] = [v, v, v, 1, t, v, t, v]
            continue
        if v < g[0]:
            g[0] = v
        if v > g[1]:
            g[1] = v
        g[2] += v
        g[3] += 1
        if t < g[4]:
            g[4] = t
            g[5] = v
        if t >= g[6]:
            g[6] = t
            g[7] = v
    pack = ROLLUP_RECORD.pack
    e = PG_EPOCH_US
    records = []
    for (s, m), (mn, mx, sm, n, fa, fv, la, lv) in sorted(groups.items()):
        sid = s - (s >> 31 << 32)  # a u32, sent as the int4 of its bits
        rest = (m - e, mn, mx, sm, n, fa - e, fv, la - e, lv)
        # Ten fields, each after its length: 4 bytes for the series, 8 for the others.
        records.append(pack(10, 4, sid, *(x for v in rest for x in (8, v))))
    return b"".join(records)


#: The binary COPY type of each ``meter_values`` column, in ``METER_COLUMNS`` order: text,
#: int4, timestamptz (from ``ts_us``) or float8.
METER_ROW = "tiiTttttttdt"


def pure_copy_meter_rows(rows: list[tuple[Any, ...]], ts_us: bytes) -> bytes:
    """Pure-Python twin of ``_native.copy_meter_rows`` (same checks, same bytes out)."""
    if not isinstance(rows, list):
        raise TypeError(f"rows is a list, not {type(rows).__name__}")
    times = _items(ts_us, "q", "ts_us")
    if len(rows) != len(times):
        raise ValueError(f"rows and ts_us hold different row counts: {len(rows)} and {len(times)}")
    out = []
    count = struct.pack(">h", len(METER_ROW))
    for row, t in zip(rows, times, strict=True):
        if not isinstance(row, tuple):
            raise TypeError(f"a meter row is a tuple, not {type(row).__name__}")
        if len(row) != len(METER_ROW):
            raise ValueError(f"a meter row has {len(row)} fields, not {len(METER_ROW)}")
        out.append(count)
        for kind, value in zip(METER_ROW, row, strict=True):
            if kind == "T":  # the row's datetime, already converted by the caller (ts_us)
                if not -_MAX_ABS_US <= t <= _MAX_ABS_US:
                    raise ValueError(f"time out of range: {t} µs")
                out.append(_TIME.pack(8, t - PG_EPOCH_US))
            elif value is None:
                out.append(_NULL)
            elif kind == "t":
                if not isinstance(value, str):
                    raise TypeError(f"a text field is a str, not {type(value).__name__}")
                data = value.encode()
                if len(data) >= 2**31:
                    raise ValueError(f"text of {len(data)} bytes is too long for COPY")
                out.append(_LENGTH.pack(len(data)) + data)
            elif kind == "i":
                number = operator.index(value)
                if not -(2**31) <= number < 2**31:
                    raise ValueError("an int4 field is out of range")
                out.append(_INT4.pack(4, number))
            else:
                if isinstance(value, int):
                    value = float(value)  # OverflowError beyond float8, as the native one
                try:
                    out.append(_FLOAT8.pack(8, value))
                except struct.error:
                    raise TypeError(
                        f"a float8 field is a number, not {type(value).__name__}"
                    ) from None
    return b"".join(out)


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
SHA256_INITIAL = (
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
SHA256_BLOCK = 64


def sha256_compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
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


def _pure_sha256_from(state: tuple[int, ...], done: int, data: bytes) -> bytes:
    """SHA-256 of (``done`` bytes already compressed into ``state``) + ``data``."""
    total = done + len(data)
    data += b"\x80" + b"\x00" * ((55 - total) % SHA256_BLOCK) + struct.pack(">Q", total * 8)
    for i in range(0, len(data), SHA256_BLOCK):
        state = sha256_compress(state, data[i : i + SHA256_BLOCK])
    return struct.pack(">8I", *state)


def pure_hmac_with_state(state: bytes, message: bytes) -> bytes:
    """Pure-Python twin of :func:`hmac_with_state`."""
    words = struct.unpack(">16I", state)
    inner = _pure_sha256_from(words[:8], SHA256_BLOCK, message)
    return _pure_sha256_from(words[8:], SHA256_BLOCK, inner)


USING_NATIVE: bool = os.environ.get("EVGATE_NO_NATIVE", "") not in ("1", "true", "yes")

hash_secret: Callable[[bytes], bytes]
verify_secret: Callable[[bytes, bytes], bool]
rollup_1m: Callable[[bytes, bytes, bytes], bytes]
copy_meter_rows: Callable[[list[tuple[Any, ...]], bytes], bytes]
hmac_with_state: Callable[[bytes, bytes], bytes]

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
    rollup_1m = _native.rollup_1m
    copy_meter_rows = _native.copy_meter_rows
    hmac_with_state = _native.hmac_with_state
else:
    hash_secret = pure_hash_secret
    verify_secret = pure_verify_secret
    rollup_1m = pure_rollup_1m
    copy_meter_rows = pure_copy_meter_rows
    hmac_with_state = pure_hmac_with_state
