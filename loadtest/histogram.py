"""loadtest: a latency histogram that many simulator processes can merge.

Log-linear buckets in the manner of HdrHistogram: exact below 128 µs, then 64 buckets per
power of two, so every recorded value is known to within 1/64 (1.6 %) whatever its size. A
histogram is a flat list of counts; merging two is adding lists, and it crosses a process
boundary as a sparse ``{index: count}`` mapping, so a percentile over a whole fleet is exact
to the bucket rather than an average of per-process percentiles.
"""

from __future__ import annotations

__all__ = ["LatencyHistogram"]

_LINEAR = 128  # values below this many µs have a bucket each
_SUB = 64  # buckets per power of two above that
_SUB_BITS = _SUB.bit_length()  # the bits of a value kept: 7, i.e. a mantissa in [64, 128)
_MAX_SHIFT = 40  # 2**47 µs is over four years: nothing we time gets there
_SIZE = _LINEAR + _MAX_SHIFT * _SUB


def _index(us: int) -> int:
    if us < _LINEAR:
        return us if us > 0 else 0
    shift = us.bit_length() - _SUB_BITS
    if shift > _MAX_SHIFT:
        return _SIZE - 1
    return _LINEAR + (shift - 1) * _SUB + (us >> shift) - _SUB


def _lower_bound(index: int) -> int:
    if index < _LINEAR:
        return index
    shift, mantissa = divmod(index - _LINEAR, _SUB)
    return (mantissa + _SUB) << (shift + 1)


class LatencyHistogram:
    """Counts of latencies in microseconds; ``record`` is O(1) and allocates nothing."""

    __slots__ = ("count", "counts", "max_us")

    def __init__(self) -> None:
        self.counts = [0] * _SIZE
        self.count = 0
        self.max_us = 0

    def record(self, us: int) -> None:
        """Add one latency of ``us`` microseconds."""
        self.counts[_index(us)] += 1
        self.count += 1
        if us > self.max_us:
            self.max_us = us

    def merge(self, other: LatencyHistogram) -> None:
        """Add every count of ``other`` to this histogram."""
        counts = self.counts
        for i, n in enumerate(other.counts):
            if n:
                counts[i] += n
        self.count += other.count
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, p: float) -> float:
        """The latency in ms below which ``p`` percent of the values lie (0 when empty).

        Reports the middle of the bucket holding the rank, and the exact maximum for p=100.
        """
        if not self.count:
            return 0.0
        if p >= 100:
            return self.max_us / 1000
        rank = max(1, int(self.count * p / 100 + 0.999999))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                low = _lower_bound(i)
                high = _lower_bound(i + 1) if i + 1 < _SIZE else low
                return min((low + high) / 2, self.max_us) / 1000
        return self.max_us / 1000

    def to_wire(self) -> dict[str, object]:
        """A compact JSON-able form (only the buckets that are not empty)."""
        return {
            "buckets": {str(i): n for i, n in enumerate(self.counts) if n},
            "count": self.count,
            "max_us": self.max_us,
        }

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> LatencyHistogram:
        """The histogram that ``to_wire`` described."""
        h = cls()
        buckets = data["buckets"]
        assert isinstance(buckets, dict)
        for i, n in buckets.items():
            h.counts[int(i)] = int(n)
        h.count = int(data["count"])  # type: ignore[call-overload]
        h.max_us = int(data["max_us"])  # type: ignore[call-overload]
        return h
