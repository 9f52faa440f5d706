"""api room: the live feed — what changes at chargers, as it happens, for the dashboard's stream.

:class:`LiveFeed` is fed in-process, synchronously, by ``app.py``'s wiring: the gateway tells it
of connects and disconnects (it is a ``ConnectionObserver``), the StatusNotification handler of
each committed status change (``HandlerServices.status_changed``). It fans each change out to
the open streams (``GET /api/v1/events/stream``, ``api/fleet.py``), each with a bounded queue of
its own: a publish is a ``put_nowait`` per stream, never an await, so a slow browser never slows
a charger. A stream whose queue is full loses the changes that do not fit and is told so once
(a ``resync`` event: the browser reloads what it shows), and there are at most ``max_streams``.

Only this process's chargers are fed: under ``--workers N`` a browser sees the changes of the
worker its stream landed on live, the others' on its next reload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

import msgspec

from evgate.gateway.interface import TAKEN_OVER, ConnectionInfo
from evgate.metrics import Registry
from evgate.storage.ops.connectors import ConnectorStatus

__all__ = [
    "ConnectionChange",
    "LiveChange",
    "LiveFeed",
    "LiveStream",
    "StatusChange",
    "StreamEnded",
    "StreamsFull",
]


class StatusChange(msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag="status"):
    """A connector's committed status change (connector 0: the charger itself)."""

    charger_id: str
    connector_id: int
    status: str
    error_code: str
    status_at: datetime
    info: str | None = None


class ConnectionChange(msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag="network"):
    """A charger connected (``available``) or went away (``temporarily unavailable``)."""

    charger_id: str
    network_status: Literal["available", "temporarily unavailable"]
    at: datetime
    remote_address: str
    security_profile: int


class Resync(msgspec.Struct, frozen=True, tag="resync"):
    """Changes were lost (the stream's queue was full): reload what is shown."""


#: What a stream carries; its ``type`` names the kind (``status``, ``network``, ``resync``).
LiveChange = StatusChange | ConnectionChange | Resync
_RESYNC = Resync()


class StreamsFull(Exception):
    """``max_streams`` streams are open already."""


class StreamEnded(Exception):
    """The feed closed: the process is stopping."""


class LiveStream:
    """One reader's stream of changes (see :meth:`LiveFeed.stream`)."""

    __slots__ = ("lost", "queue")

    def __init__(self, size: int) -> None:
        # None is the end: the feed closed.
        self.queue: asyncio.Queue[LiveChange | None] = asyncio.Queue(size)
        self.lost = False

    async def next(self, within: float) -> LiveChange | None:
        """The next change, or None when none came within ``within`` seconds.

        Raises:
            StreamEnded: the feed closed (the process is stopping).
        """
        if self.lost and self.queue.empty():
            self.lost = False
            return _RESYNC
        try:
            async with asyncio.timeout(within):
                change = await self.queue.get()
        except TimeoutError:
            return None
        if change is None:
            self.queue.put_nowait(None)  # still the end for a second call
            raise StreamEnded
        return change


class LiveFeed:
    """Fans chargers' changes out to the open streams.

    Args:
        queue_size: changes a stream may hold unread; beyond, it loses them and gets a resync.
        max_streams: streams open at once; one more is refused (:class:`StreamsFull`).
        metrics: the process's registry (streams open, changes lost).

    After construction: ``gateway.add_observer(feed)``, point the handlers' ``status_changed``
    at :meth:`connector_status`; ``close()`` before the API server stops (it ends every stream,
    which the server would otherwise wait for).
    """

    def __init__(
        self, queue_size: int = 1000, max_streams: int = 100, metrics: Registry | None = None
    ) -> None:
        self.queue_size = queue_size
        self.max_streams = max_streams
        self._streams: set[LiveStream] = set()
        self._closed = False
        metrics = metrics if metrics is not None else Registry()
        metrics.gauge(
            "evgate_live_streams", "Open live-event streams (the dashboard's)"
        ).set_function(lambda: len(self._streams))
        self.m_lost = metrics.counter(
            "evgate_live_changes_lost_total",
            "Changes a live-event stream lost because its reader was slow (it was told to resync)",
        )

    # Fed by the gateway (ConnectionObserver) and the StatusNotification handler.

    def charger_connected(self, info: ConnectionInfo) -> None:
        self.publish(_connection(info, "available", info.connected_at))

    def charger_disconnected(self, info: ConnectionInfo, close_code: int, reason: str) -> None:
        if reason in TAKEN_OVER:
            return  # a newer connection of the charger stands: it never went away
        self.publish(_connection(info, "temporarily unavailable", datetime.now(UTC)))

    def connector_status(self, stored: ConnectorStatus) -> None:
        """A StatusNotification changed a connector's stored status (committed)."""
        self.publish(
            StatusChange(
                charger_id=stored.charger_id,
                connector_id=stored.connector_id,
                status=stored.status,
                error_code=stored.error_code,
                status_at=stored.status_at,
                info=stored.info,
            )
        )

    def publish(self, change: LiveChange) -> None:
        """Queue ``change`` on every open stream, without waiting for any."""
        for stream in self._streams:
            if stream.lost:  # until it has read what it holds and been told to resync
                self.m_lost.inc()
                continue
            try:
                stream.queue.put_nowait(change)
            except asyncio.QueueFull:
                stream.lost = True
                self.m_lost.inc()

    # Read by the stream route.

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def full(self) -> bool:
        """Whether ``max_streams`` streams are open."""
        return self.open_streams >= self.max_streams

    @contextlib.contextmanager
    def stream(self) -> Iterator[LiveStream]:
        """A stream of the changes from now on, ended by :meth:`close`.

        Raises:
            StreamsFull: ``max_streams`` are open.
        """
        if self.full:
            raise StreamsFull(f"{self.max_streams} live streams are open")
        stream = LiveStream(self.queue_size)
        if self._closed:
            stream.queue.put_nowait(None)
        self._streams.add(stream)
        try:
            yield stream
        finally:
            self._streams.discard(stream)

    def close(self) -> None:
        """End every stream (the process is stopping); streams opened later end at once."""
        self._closed = True
        for stream in self._streams:
            # The end must arrive even in a full queue: drop what it holds.
            while not stream.queue.empty():
                stream.queue.get_nowait()
            stream.queue.put_nowait(None)


def _connection(
    info: ConnectionInfo,
    status: Literal["available", "temporarily unavailable"],
    at: datetime,
) -> ConnectionChange:
    return ConnectionChange(
        charger_id=info.charger_id,
        network_status=status,
        at=at,
        remote_address=info.remote_address,
        security_profile=info.security_profile,
    )
