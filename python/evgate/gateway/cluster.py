"""gateway room: one fleet over many processes — charger ownership and routed commands.

Each evgate process (a worker, on some node) is an *instance* with a lease in the database.
:class:`Cluster` wraps the process's :class:`~evgate.gateway.server.Gateway`:

* **Ownership.** It observes the gateway's connections and keeps ``charger_owners`` equal to
  what this process holds. It does not replay connect/disconnect events: it keeps a set of
  chargers whose state changed and reconciles each with the gateway's *current* view, in
  batches (a reconnect storm of thousands is a few statements). When a charger connects here
  while another process holds it, the other process is told (``owner`` notification),
  claims its own connection again and closes it when that claim loses: of two racing
  connections the newer one wins, even when a notification arrives late.
* **Leases.** The instance's lease is renewed every third of its length; a process killed
  without a goodbye loses its chargers once the lease runs out (any live process reaps it,
  and sets those that did not reconnect elsewhere ``temporarily unavailable``). A process
  whose lease ran out while it lived (a long pause, a database outage) registers again,
  claims its chargers again and sets them ``available`` again.
* **Routing.** :meth:`call` runs a command here when the charger is here, and otherwise hands
  it to the holder through ``remote_calls`` + NOTIFY, and waits for the outcome the same way.
  The API answers the same either way: 409 when nobody holds the charger, 504 on timeout.

:meth:`connection` stays local (what this process can act on by itself); :meth:`locate`
looks across the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from datetime import UTC, datetime
from typing import Any

import msgspec

from evgate.gateway.interface import (
    MOVED,
    CallRejected,
    CallTimeout,
    ChargerBusy,
    ChargerDisconnected,
    ChargerNotConnected,
    CommandError,
    ConnectionInfo,
    InvalidCommand,
    InvalidResponse,
)
from evgate.gateway.server import Gateway
from evgate.metrics import Registry
from evgate.protocol.errors import ErrorCode, error_class
from evgate.protocol.v16 import ACTION_OF_REQUEST, ACTIONS, Message
from evgate.storage.cluster import ClusterStore, OwnerClaim
from evgate.tasks import service_task

__all__ = ["Cluster"]

log = logging.getLogger(__name__)

_CALL_MARGIN = 3.0  # seconds on top of the holder's own call timeout, for the round trips
_MAX_REMOTE_RUNNING = 256  # commands from other processes run at once; more are refused


class _Failure(msgspec.Struct, frozen=True):
    """A CommandError as it travels between processes."""

    kind: str
    message: str
    code: str = ""
    description: str = ""
    details: dict[str, Any] = {}


class _Outcome(msgspec.Struct, frozen=True):
    """What a routed command came to: the charger's answer, or the error to raise."""

    result: msgspec.Raw = msgspec.Raw(b"null")
    error: _Failure | None = None


_ERRORS: dict[str, type[CommandError]] = {
    cls.__name__: cls
    for cls in (ChargerNotConnected, ChargerDisconnected, CallTimeout, ChargerBusy, InvalidCommand)
}


def _failure_of(exc: CommandError) -> _Failure:
    if isinstance(exc, CallRejected):
        return _Failure("CallRejected", str(exc), exc.code, exc.description, exc.details)
    if isinstance(exc, InvalidResponse):
        return _Failure("InvalidResponse", str(exc), exc.error.code.value, exc.error.description)
    return _Failure(type(exc).__name__, str(exc))


def _without_nul(tree: Any) -> Any:
    if isinstance(tree, str):
        return tree.replace("\x00", "\ufffd")
    if isinstance(tree, list):
        return [_without_nul(item) for item in tree]
    if isinstance(tree, dict):
        return {_without_nul(key): _without_nul(value) for key, value in tree.items()}
    return tree


def _storable(outcome: _Outcome) -> bytes:
    """``outcome`` as JSON that jsonb can hold: a charger's CALLERROR may carry U+0000 in its
    texts, which jsonb refuses; it travels with U+FFFD in its place."""
    encoded = msgspec.json.encode(outcome)
    if b"\\u0000" not in encoded:
        return encoded
    return msgspec.json.encode(_without_nul(msgspec.json.decode(encoded)))


def _error_of(failure: _Failure) -> CommandError:
    if failure.kind == "CallRejected":
        return CallRejected(failure.code, failure.description, failure.details)
    if failure.kind == "InvalidResponse":
        return InvalidResponse(error_class(ErrorCode(failure.code))(failure.description))
    return _ERRORS.get(failure.kind, CommandError)(failure.message)


class Cluster:
    """The gateway as seen across every evgate process sharing the database.

    Args:
        gateway: this process's gateway (the cluster adds itself as its observer).
        store: the cluster tables.
        node_id: this node's name; ``worker_index``: this worker's number on the node.
        lease: seconds a silent process keeps its chargers.
        call_timeout: the holder's timeout for a command (``Settings.call_timeout``).

    After construction: ``await start()``; wire :meth:`notified` and :meth:`reset` to the
    ``evgate_cluster`` channel's LISTEN; ``await stop()`` after the gateway stopped.
    """

    def __init__(
        self,
        gateway: Gateway,
        store: ClusterStore,
        *,
        node_id: str,
        worker_index: int,
        lease: float,
        call_timeout: float,
        metrics: Registry | None = None,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.node_id = node_id
        self.worker_index = worker_index
        self.instance = f"{node_id}.{worker_index}.{secrets.token_hex(4)}"
        self.lease = lease
        self.call_timeout = call_timeout
        self._dirty: set[str] = set()
        # Chargers held while this process's lease had run out: a reaper may have set them
        # temporarily unavailable; once claimed again they are set available again.
        self._rejoined: set[str] = set()
        self._wake = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        metrics = metrics if metrics is not None else Registry()
        self.m_routed = metrics.counter(
            "evgate_commands_routed_total",
            "Commands for chargers held by another evgate process, by direction and outcome",
            ("direction", "outcome"),
        )
        gateway.add_observer(self)

    # Life cycle

    async def start(self) -> None:
        await self.store.register(
            self.instance, self.node_id, self.worker_index, os.getpid(), self.lease
        )
        self._tasks = [
            service_task(self._reconcile(), name="cluster-ownership"),
            service_task(self._keep_lease(), name="cluster-lease"),
        ]

    async def stop(self) -> None:
        """Stop the tasks and say goodbye (the instance's owner rows go with it)."""
        for task in [*self._tasks, *self._running]:
            task.cancel()
        for task in [*self._tasks, *self._running]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for future in self._waiting.values():
            future.cancel()
        with contextlib.suppress(Exception):
            await self.store.deregister(self.instance)

    # Ownership (ConnectionObserver)

    def charger_connected(self, info: ConnectionInfo) -> None:
        self._dirty.add(info.charger_id)
        self._wake.set()

    def charger_disconnected(self, info: ConnectionInfo, close_code: int, reason: str) -> None:
        self._dirty.add(info.charger_id)
        self._wake.set()

    async def _reconcile(self) -> None:
        claiming = self.store.db.health.retry("charger ownership", log, first=1.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._dirty = self._dirty, set()
            claims: list[OwnerClaim] = []
            releases: list[str] = []
            for charger_id in batch:
                info = self.gateway.connection(charger_id)
                if info is None:
                    releases.append(charger_id)
                else:
                    claims.append(
                        OwnerClaim(
                            charger_id,
                            info.connected_at,
                            info.remote_address,
                            info.security_profile,
                        )
                    )
            try:
                lost = await self.store.claim(self.instance, claims)
                await self.store.release(self.instance, releases)
                if self._rejoined:
                    # Only the connections still open now (one that closed during the claim
                    # stays unavailable); a disconnect from now on is later than seen_alive.
                    seen_alive = datetime.now(UTC)
                    back = [c for c in claims if c.charger_id in self._rejoined and self._open(c)]
                    await self.store.restore(self.instance, back, seen_alive)
                    self._rejoined.difference_update(batch)
            except Exception as exc:
                # The database is away: try the same chargers again shortly.
                self._dirty |= batch
                await asyncio.sleep(claiming.failed(exc))
                self._wake.set()
                continue
            claiming.ok()
            for charger_id in lost:
                self.gateway.close_charger(charger_id, 1000, MOVED)

    def _open(self, claim: OwnerClaim) -> bool:
        """Whether the connection ``claim`` names is still this process's connection."""
        info = self.gateway.connection(claim.charger_id)
        return info is not None and info.connected_at == claim.connected_at

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                if not await self.store.renew(self.instance, self.lease):
                    # Our lease had run out and another process reaped us (a long pause, a
                    # database outage): come back and claim everything we hold again.
                    log.warning("lease of %s had expired; registering again", self.instance)
                    await self.store.register(
                        self.instance, self.node_id, self.worker_index, os.getpid(), self.lease
                    )
                    held = {c.charger_id for c in self.gateway.connections()}
                    self._rejoined |= held
                    self._dirty |= held
                    self._wake.set()
                reaped = await self.store.reap(grace=self.lease)
                if reaped.instances:
                    log.warning(
                        "reaped %s (lease expired); %d of their chargers set temporarily"
                        " unavailable",
                        ", ".join(reaped.instances),
                        len(reaped.unavailable),
                    )
            except Exception as exc:
                self.store.db.health.report(exc, f"the lease of {self.instance}", log)
            else:
                self.store.db.health.ok(f"the lease of {self.instance}")

    # Notifications on the cluster channel

    def notified(self, payload: str) -> None:
        """One ``evgate_cluster`` notification (see :mod:`evgate.storage.cluster`)."""
        kind, _, rest = payload.partition(" ")
        who, _, words = rest.partition(" ")
        if kind == "owner" and who != self.instance:
            # Not a close at once: the notification may be older than our connection (a
            # charger that went A -> B -> A). Claiming again lets the database's newer-wins
            # rule decide; a claim that loses closes the connection (see _reconcile).
            held = [c for c in words.split() if self.gateway.connection(c) is not None]
            if held:
                self._dirty.update(held)
                self._wake.set()
        elif kind == "call" and who == self.instance and words.isdigit():
            if len(self._running) >= _MAX_REMOTE_RUNNING:
                log.warning("too many routed commands running; refusing call %s", words)
                task = service_task(self._refuse(int(words)))
            else:
                task = service_task(self._run_remote(int(words)))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        elif kind == "reply" and who == self.instance and words.isdigit():
            future = self._waiting.get(int(words))
            if future is not None and not future.done():
                future.set_result(None)

    def reset(self) -> None:
        """Notifications may have been missed: claim again, and look for answers."""
        self._dirty |= {c.charger_id for c in self.gateway.connections()}
        self._wake.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)  # the waiter re-reads; no outcome → it waits again

    # ChargerLink

    def connection(self, charger_id: str) -> ConnectionInfo | None:
        """The charger's connection to this process (what it can act on by itself)."""
        return self.gateway.connection(charger_id)

    async def locate(self, charger_id: str) -> ConnectionInfo | None:
        """The charger's connection to any live evgate process, or None."""
        local = self.gateway.connection(charger_id)
        if local is not None:
            return msgspec.structs.replace(local, held_by=self.instance)
        holder = await self.store.holder(charger_id)
        if holder is None or holder.instance == self.instance:
            # A row naming this process while the gateway holds no connection is a release
            # not yet written: this process's own view is the truth about itself.
            return None
        return ConnectionInfo(
            charger_id=charger_id,
            connected_at=holder.connected_at,
            remote_address=holder.remote_address,
            security_profile=holder.security_profile,
            held_by=holder.instance,
        )

    async def call(self, charger_id: str, request: Message) -> Message:
        """Send a command to the charger, wherever it is connected.

        Raises:
            CommandError: as :meth:`Gateway.call`; ChargerNotConnected when no live process
                holds the charger.
        """
        if self.gateway.connection(charger_id) is not None:
            return await self.gateway.call(charger_id, request)
        holder = await self.store.holder(charger_id)
        if holder is None or holder.instance == self.instance:
            raise ChargerNotConnected(f"charger {charger_id!r} is not connected")
        action = ACTION_OF_REQUEST[type(request)]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        call_id = await self.store.send_call(
            self.instance, holder.instance, charger_id, action, msgspec.json.encode(request)
        )
        self._waiting[call_id] = future
        deadline = asyncio.get_running_loop().time() + self.call_timeout + _CALL_MARGIN
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                    # cancellation that arrives with the wake-up. The shield keeps a timeout
                    # from cancelling the future the NOTIFY listener resolves.
                    async with asyncio.timeout(max(remaining, 0)):
                        await asyncio.shield(future)
                except TimeoutError:
                    await self.store.withdraw(call_id)
                    self.m_routed.inc("sent", "timeout")
                    raise CallTimeout(
                        f"charger {charger_id!r} (on {holder.instance}) did not answer in time"
                    ) from None
                raw = await self.store.collect_outcome(call_id)
                if raw is not None:
                    break
                future = asyncio.get_running_loop().create_future()  # a reset's wake-up
                self._waiting[call_id] = future
        except asyncio.CancelledError:
            # The caller went away (its HTTP request ended): withdraw the call at once rather
            # than leave its row to the reaper; shielded, as this task is being cancelled.
            await asyncio.shield(self._withdraw_quietly(call_id))
            raise
        finally:
            self._waiting.pop(call_id, None)
        outcome = msgspec.json.decode(raw, type=_Outcome)
        if outcome.error is not None:
            self.m_routed.inc("sent", outcome.error.kind)
            raise _error_of(outcome.error)
        self.m_routed.inc("sent", "ok")
        return msgspec.json.decode(outcome.result, type=ACTIONS[action].response)

    async def _withdraw_quietly(self, call_id: int) -> None:
        # Its own task under the shield: an error is logged here, never left unretrieved.
        try:
            await self.store.withdraw(call_id)
        except Exception as exc:
            log.warning("could not withdraw routed command %d (%s); the reaper will", call_id, exc)

    async def _run_remote(self, call_id: int) -> None:
        """Run a command another process routed here, and answer it."""
        try:
            row = await self.store.take_call(call_id)
            if row is None:
                return
            try:
                spec = ACTIONS[row["action"]]
                request = msgspec.json.decode(str(row["request"]), type=spec.request)
            except (KeyError, msgspec.ValidationError) as exc:  # a newer process's action?
                request = None
                outcome = _Outcome(error=_failure_of(InvalidCommand(f"unusable command: {exc}")))
            try:
                if request is None:
                    raise InvalidCommand("unusable command")
                response = await self.gateway.call(row["charger_id"], request)
                outcome = _Outcome(result=msgspec.Raw(msgspec.json.encode(response)))
                self.m_routed.inc("received", "ok")
            except CommandError as exc:
                outcome = _Outcome(error=_failure_of(exc))
                self.m_routed.inc("received", type(exc).__name__)
            await self.store.answer_call(call_id, row["origin"], _storable(outcome))
        except Exception:
            log.exception("routed command %d failed", call_id)

    async def _refuse(self, call_id: int) -> None:
        with contextlib.suppress(Exception):
            row = await self.store.take_call(call_id)
            if row is not None:
                busy = _Failure("ChargerBusy", "too many routed commands on the holding process")
                await self.store.answer_call(
                    call_id, row["origin"], msgspec.json.encode(_Outcome(error=busy))
                )
