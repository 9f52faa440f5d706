"""A charger's in-memory message log (``MessageLog``): its last messages, oldest first, at the
cost of a list of what it holds."""

from __future__ import annotations

import sys
from collections import deque

from evgate.gateway.connection import LogEntry, MessageLog


def _entry(n: int) -> LogEntry:
    return (float(n), n % 2 == 0, b"x", n)


def test_keeps_the_last_maxlen_entries_oldest_first() -> None:
    log = MessageLog(3)
    assert len(log) == 0 and list(log) == []
    for n in range(2):
        log.append(_entry(n))
    assert [e[3] for e in log] == [0, 1]
    for n in range(2, 8):
        log.append(_entry(n))
        assert [e[3] for e in log] == list(range(max(0, n - 2), n + 1))
    assert len(log) == 3


def test_a_log_of_size_zero_keeps_nothing() -> None:
    log = MessageLog(0)
    log.append(_entry(1))
    assert len(log) == 0 and not log and list(log) == []


def test_costs_less_than_a_deque() -> None:
    """An idle charger's log (a Heartbeat and its answer) and a full one of the default 16:
    a deque costs 760 bytes however few it holds."""
    for held in (2, 16):
        log = MessageLog(16)
        for n in range(held):
            log.append(_entry(n))
        size = sys.getsizeof(log) + sys.getsizeof(log._entries)
        assert size < sys.getsizeof(deque(maxlen=16)) / 3
