"""The connection caps both ports share (evgate/limits.py): the defaults leave a fixed number of
file descriptors to evgate's own connections and files, and a cap's episode is two log lines."""

from __future__ import annotations

import logging
import resource

import pytest

from evgate.limits import RESERVED_FDS, CapEpisode, ConnectionCaps, default_connection_caps


@pytest.mark.parametrize(
    ("fd_limit", "caps"),
    [
        (1024, ConnectionCaps(chargers=730, api=38)),
        (20_000, ConnectionCaps(chargers=18_757, api=987)),
        (1_048_576, ConnectionCaps(chargers=1_047_320, api=1000)),
        (256, ConnectionCaps(chargers=120, api=8)),  # tiny: half is kept back instead
    ],
)
def test_default_caps_leave_a_fixed_headroom(fd_limit: int, caps: ConnectionCaps) -> None:
    """Both ports together leave RESERVED_FDS descriptors (at 1024 as at a million), the API
    gets 5 % of the rest (8 to 1000), the chargers the remainder."""
    assert default_connection_caps(fd_limit) == caps
    left = fd_limit - caps.chargers - caps.api
    assert left == (RESERVED_FDS if fd_limit >= 2 * RESERVED_FDS else fd_limit // 2)


def test_default_caps_without_a_limit_and_from_the_process() -> None:
    """An unlimited process still has caps; without an argument the process's soft limit
    is read."""
    assert default_connection_caps(resource.RLIM_INFINITY) == ConnectionCaps(1_000_000, 1000)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_connection_caps() == default_connection_caps(soft)


def test_a_cap_episode_is_one_warning_and_one_info(caplog: pytest.LogCaptureFixture) -> None:
    """However many connections are refused, and however the port hovers at its cap, an
    episode logs once when the cap is reached and once, with the count refused, when the port
    is down to 75 % of its cap; the next episode logs again."""
    episode = CapEpisode(logging.getLogger("test.cap"), "test port", "CAP", "closed")
    caplog.set_level(logging.INFO, "test.cap")
    for _ in range(3):  # held at its cap of 8: a slot frees, and refills, refused again
        episode.refused(8)
        episode.refused(8)
        episode.ended(7, 8)
    episode.ended(6, 8)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            "test port full: 8 connections, its cap (CAP); new ones are closed until some end",
        ),
        (logging.INFO, "test port accepts connections again (6 open); 6 were refused at the cap"),
    ]
    episode.ended(5, 8)
    episode.refused(8)
    assert len(caplog.records) == 3 and episode.active
