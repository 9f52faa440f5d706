"""handlers room: chargers connecting and disconnecting — NetworkStatusNotification.

:class:`NetworkStatusRecorder` is a gateway ConnectionObserver. The gateway calls it
synchronously, so it only queues the change (bounded); its own task writes the queued changes
through the group-commit writer — each charger's ``chargers.network_status`` and its
NetworkStatusNotification in one transaction, in the order they happened. ``available`` on
connect, ``temporarily unavailable`` on disconnect; a connection taken over by a newer one of
the same charger (here or in another evgate process) emits nothing: the charger never went
away, and the newer connection's ``available`` stands.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from evgate.events.builders import ChargerRef, OutboxEntry, network_status
from evgate.gateway.interface import TAKEN_OVER, ConnectionInfo
from evgate.handlers.services import utc_now
from evgate.metrics import Registry
from evgate.storage.ops import chargers, outbox
from evgate.storage.ops.base import Results, Write
from evgate.storage.ops.chargers import NetworkStatus
from evgate.storage.writer import Writer, WriterClosed
from evgate.tasks import service_task

__all__ = ["NetworkStatusRecorder", "network_event"]

log = logging.getLogger(__name__)

_NETWORK = {True: "available", False: "temporarily unavailable"}


def network_event(charger_id: str, number: int, connected: bool, at: datetime) -> OutboxEntry:
    """The NetworkStatusNotification of a status that the cluster's reap or restore sets in
    its own transaction (``storage.cluster.NetworkEvent``: storage stores events, never
    builds them)."""
    return network_status(ChargerRef(charger_id, number), connected, at)


class NetworkStatusRecorder:
    """Records chargers' connects and disconnects with their events.

    Args:
        writer: the group-commit writer.
        number_of: a charger's ``number`` (None for a charger no longer registered, whose
            change is not recorded): the gateway's credential index answers it.
        max_pending: changes that may wait for the writer (the database away during a
            reconnect storm); more are dropped, logged and counted.
        batch: changes taken at a time (each charger's in a submission of its own, keyed by
            it, which the writer batches with the rest).

    After construction: ``gateway.add_observer(recorder)``, ``start()``; ``await stop()``
    after the gateway stopped (its last disconnects are written) and before the writer.
    """

    def __init__(
        self,
        writer: Writer,
        number_of: Callable[[str], int | None],
        *,
        max_pending: int = 100_000,
        batch: int = 5000,
        metrics: Registry | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.writer = writer
        self.number_of = number_of
        self.max_pending = max_pending
        self.batch = batch
        self.clock = clock
        self._pending: collections.deque[tuple[ChargerRef, bool, datetime]] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        metrics = metrics if metrics is not None else Registry()
        self.m_dropped = metrics.counter(
            "evgate_network_status_dropped_total",
            "Connects and disconnects not recorded: too many waited for the database",
        )

    def start(self) -> None:
        if self._task is None:
            self._task = service_task(self._run(), name="network-status")

    async def stop(self, grace: float = 5.0) -> None:
        """Write what is queued (up to ``grace`` seconds), then stop."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    # ConnectionObserver

    def charger_connected(self, info: ConnectionInfo) -> None:
        self._add(info.charger_id, True, info.connected_at)

    def charger_disconnected(self, info: ConnectionInfo, close_code: int, reason: str) -> None:
        if reason not in TAKEN_OVER:
            self._add(info.charger_id, False, self.clock())

    def _add(self, charger_id: str, connected: bool, at: datetime) -> None:
        number = self.number_of(charger_id)
        if number is None:
            return  # deleted: there is no charger whose status could change
        if len(self._pending) >= self.max_pending:
            self.m_dropped.inc()
            log.warning("network status of %s not recorded: too many changes wait", charger_id)
            return
        self._pending.append((ChargerRef(charger_id, number), connected, at))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._stopping:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            while self._pending:
                take = min(self.batch, len(self._pending))
                changes = [self._pending.popleft() for _ in range(take)]
                # One submission per charger, keyed by it: its changes then commit in order
                # with the charger's own writes (a connect before its BootNotification); the
                # writer batches the submissions together again.
                by_charger: dict[str, list[tuple[ChargerRef, bool, datetime]]] = {}
                for change in changes:
                    by_charger.setdefault(change[0].id, []).append(change)
                outcomes = await asyncio.gather(
                    *(self._write(key, mine) for key, mine in by_charger.items()),
                    return_exceptions=True,
                )
                if any(isinstance(o, WriterClosed) for o in outcomes):
                    return
                for outcome in outcomes:
                    if isinstance(outcome, Exception):
                        # Refused rows (not an outage: the writer retries those itself).
                        log.error("recording network status changes failed", exc_info=outcome)

    async def _write(
        self, charger_id: str, changes: list[tuple[ChargerRef, bool, datetime]]
    ) -> None:
        writes = [
            chargers.network_status(
                NetworkStatus(charger_id=charger.id, status=_NETWORK[connected], at=at)
            )
            for charger, connected, at in changes
        ]

        def described(results: Results) -> list[Write[None]]:
            return outbox.append(
                network_status(charger, connected, at)
                for (charger, connected, at), write in zip(changes, writes, strict=True)
                if results[write]
            )

        await self.writer.submit([outbox.emit(writes, described)], key=charger_id)
