"""The connection caps of the charger port (gateway/) and the API port (api/), shared by both.

Both ports share the process's file descriptors with what evgate opens itself: the database
pool and the writer's committers, the LISTEN connections, webhook and Kafka connections, the
external authorization client, log files, the loop's own descriptors. A port that took them
all would make the next ``accept`` or ``connect`` fail with EMFILE before any cap applied.

* :func:`default_connection_caps` gives both ports' caps when none is configured: a fixed
  :data:`RESERVED_FDS` is kept back, the API gets a small share of the rest, the chargers
  the remainder.
* :class:`CapEpisode` logs one cap's episodes: one line when it is reached, one when the port
  is well below it again, however many connections are refused meanwhile.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

__all__ = ["RESERVED_FDS", "CapEpisode", "ConnectionCaps", "default_connection_caps"]

#: File descriptors the default caps leave to evgate's own connections and files: a pool of
#: 10 (up to 200 configured) plus 4 writer committers and 2 LISTEN connections, 16 per webhook
#: subscription, a few per Kafka broker, and some for logs and the loop. An absolute number,
#: not a share: what evgate opens itself does not grow with the limit. Beyond this (many
#: webhook subscriptions, a large pool), raise the limit or set the caps.
RESERVED_FDS = 256
_API_SHARE = 0.05  # of what is left after the reserve, for the API port
_API_MIN = 8
_API_MAX = 1000  # an operator API needs no more; the chargers need every descriptor they can get
_UNLIMITED_CHARGERS = 1_000_000  # RLIM_INFINITY: a cap still bounds memory


@dataclass(frozen=True)
class ConnectionCaps:
    """Connections each port may hold at once.

    Attributes:
        chargers: the charger port's cap (``max_charger_connections``), handshakes included.
        api: the API port's cap (``api_max_connections``).
    """

    chargers: int
    api: int


def default_connection_caps(fd_limit: int | None = None) -> ConnectionCaps:
    """Both ports' caps when none is configured.

    Args:
        fd_limit: the process's file-descriptor limit; None reads the soft ``RLIMIT_NOFILE``.

    Returns:
        The caps, which together leave :data:`RESERVED_FDS` descriptors (at 1024: 730
        chargers and 38 API connections; at 20,000: 18,757 and 987). Below 512 descriptors
        half of them is kept back instead, so that either port still serves someone.
    """
    if fd_limit is None:
        fd_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if fd_limit == resource.RLIM_INFINITY:
        return ConnectionCaps(_UNLIMITED_CHARGERS, _API_MAX)
    usable = max(fd_limit - RESERVED_FDS, fd_limit // 2)
    api = min(_API_MAX, max(_API_MIN, int(usable * _API_SHARE)))
    return ConnectionCaps(chargers=max(1, usable - api), api=api)


# An episode ends when the open connections are down to this share of the cap: a port held at
# its cap frees and refills one slot at a time, which must not log a line per connection.
_EPISODE_END = 0.75


class CapEpisode:
    """The logging of one port's cap: a WARNING when a connection is first refused at the cap,
    an INFO saying how many were refused once the port is down to 75 % of its cap. Counting
    the refusals in metrics stays with the port.

    Call :meth:`refused` for each connection refused at the cap, and :meth:`ended` after each
    connection of the port ends.

    Args:
        logger: the port's logger.
        port: the port's name in the log lines ("charger port").
        setting: the setting that sets the cap (``EVGATE_MAX_CHARGER_CONNECTIONS``).
        refusal: what happens to a refused connection ("closed at once").
    """

    def __init__(self, logger: logging.Logger, port: str, setting: str, refusal: str) -> None:
        self._log = logger
        self._port = port
        self._setting = setting
        self._refusal = refusal
        self.active = False  # the cap was reached and the port is not yet well below it
        self.refused_in_episode = 0

    def refused(self, open_connections: int) -> None:
        """A connection was refused with ``open_connections`` open (logged if the first)."""
        self.refused_in_episode += 1
        if not self.active:
            self.active = True
            self._log.warning(
                "%s full: %d connections, its cap (%s); new ones are %s until some end",
                self._port,
                open_connections,
                self._setting,
                self._refusal,
            )

    def ended(self, open_connections: int, limit: int) -> None:
        """A connection ended and ``open_connections`` remain under the cap ``limit`` (logged
        if that ends the episode)."""
        if self.active and open_connections <= limit * _EPISODE_END:
            self._log.info(
                "%s accepts connections again (%d open); %d were refused at the cap",
                self._port,
                open_connections,
                self.refused_in_episode,
            )
            self.active = False
            self.refused_in_episode = 0
