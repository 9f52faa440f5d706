"""handlers room: the smart-charging engine — load management on the running loop.

It runs the pure decisions of ``loadmgmt/`` (:class:`~evgate.loadmgmt.control.Controller`) on
what happens to the chargers of circuits, and sends the limits it decides with
SetChargingProfile through the :class:`~evgate.gateway.interface.ChargerLink`:

* Triggers: a transaction starts or stops (``handlers/transactions.py``; an operator's stop
  by its notification or, when those were missed, found closed in the database), a
  connector's status changes (``handlers/status.py``), a charger connects or goes away (a
  gateway observer), a circuit or a membership changes (``NOTIFY evgate_circuit``: the trees
  are read again).
* A transaction's limit is a TxProfile in A (one period from its start, stack level
  :data:`ENGINE_STACK_LEVEL`, its transactionId, profile id ``100 + connector``); a charger in
  a circuit without a transaction has a TxDefaultProfile (connector 0, profile id 100): the
  circuit's minimum while there is room for it, else 0 A, sent when it connects, after each
  accepted boot and when it joins, so that a transaction it starts before evgate decides
  cannot overload; once a transaction starts, 0 A (once the transaction's own TxProfile is
  accepted), so that its stop cannot either (``loadmgmt/control.py``).
* Every push's outcome (accepted, rejected, unanswered) is kept (``charging_profile_pushes``)
  with its chargingProfile.applied event, in one transaction.
* Consumption: MeterValues' per-phase Current.Import, mapped through the charger's
  ``phaseRotation``, summed per circuit and up the tree; CircuitConsumptionNotification for
  each circuit with a transaction every ``consumption_interval`` seconds.
* Hysteresis: a connector that turns SuspendedEV (the EV draws nothing) keeps its share until
  the status has held for ``idle_after`` seconds; back to Charging, it gets it at once.

Ownership (scale-out): each process steers the chargers connected to it and counts every other
charger of the tree as offline — at its maximum. That is safe with any number of processes
(none relies on another's decisions); shares are best when a tree's chargers connect to one
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from msgspec import UNSET

from evgate.events.builders import (
    AppliedProfile,
    ChargerRef,
    PhaseCurrent,
    charging_profile_applied,
    circuit_consumption,
)
from evgate.gateway.interface import (
    CallRejected,
    ChargerLink,
    CommandError,
    ConnectionInfo,
)
from evgate.loadmgmt.allocator import PHASES, Charger, Circuit, Kind, deciamps, wiring_of
from evgate.loadmgmt.control import Controller, Outcome, Push
from evgate.protocol.v16 import (
    ChargingProfile,
    ChargingProfileKindType,
    ChargingProfilePurposeType,
    ChargingRateUnitType,
    ChargingSchedule,
    ChargingSchedulePeriod,
    MeterValue,
    SetChargingProfileRequest,
    SetChargingProfileResponse,
)
from evgate.storage.circuits import (
    ENGINE_STACK_LEVEL,
    Allocation,
    CircuitLive,
    CircuitStore,
    PhaseLoad,
    PushRecord,
)
from evgate.tasks import service_task

__all__ = ["ENGINE_STACK_LEVEL", "SmartCharging"]

log = logging.getLogger("evgate.smart_charging")

#: The engine's profile ids: the TxDefaultProfile's, and a TxProfile's is this + connector.
ENGINE_PROFILE_ID = 100

# Connector status → how its transaction draws (None: not at all).
_KINDS: dict[str, Kind | None] = {
    "Charging": "full",
    "SuspendedEVSE": "full",  # waiting for current: evgate's own 0 A, or the charger's
    "SuspendedEV": "idle",
    "Available": None,
    "Faulted": None,
    "Finishing": None,
    "Unavailable": None,
}


@dataclass(frozen=True, slots=True)
class _Reading:
    currents: tuple[float | None, float | None, float | None]  # per circuit phase
    at: datetime


class SmartCharging:
    """The engine. ``app.py`` builds it, points the handlers' hooks at it, adds it as a
    gateway observer and LISTENs on ``evgate_circuit`` (:meth:`reload_soon`)."""

    def __init__(
        self,
        link: ChargerLink,
        store: CircuitStore,
        number_of: Callable[[str], int | None],
        *,
        consumption_interval: float = 60.0,
        idle_after: float = 30.0,
        hysteresis: float = 1.0,
    ) -> None:
        self.link = link
        self.store = store
        self.number_of = number_of
        self.consumption_interval = consumption_interval
        self.idle_after = idle_after
        self.control = Controller(hysteresis=deciamps(hysteresis))
        self._circuits: dict[int, Circuit] = {}
        self._amps: dict[int, tuple[float, float]] = {}  # circuit → (max, min) in A
        self._tx_of_connector: dict[tuple[str, int], int] = {}
        self._connector_of_tx: dict[int, tuple[str, int]] = {}
        self._readings: dict[tuple[str, int], _Reading] = {}
        self._idle_timers: dict[int, asyncio.TimerHandle] = {}
        self._wake = asyncio.Event()
        self._reload = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: list[asyncio.Task[None]] = []
        self._stops_missed = False  # the counted transactions are to be checked (again)
        self._checking = False  # the check's task runs

    # Life cycle.

    async def start(self) -> None:
        """Read the trees and the open transactions, then run."""
        await self._load()
        for tx in await self.store.open_transactions():
            self.transaction_started(tx.charger_id, tx.connector_id, tx.transaction_id)
        self._main = [
            service_task(self._steer(), name="smart-charging"),
            service_task(self._report(), name="circuit-consumption"),
        ]

    async def stop(self) -> None:
        for handle in self._idle_timers.values():
            handle.cancel()
        self._idle_timers.clear()
        tasks = [*self._main, *self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._main, self._tasks = [], set()

    # Triggers (called on the loop; they only change state and wake the engine).

    def transaction_started(self, charger_id: str, connector_id: int, transaction_id: int) -> None:
        self._tx_of_connector[(charger_id, connector_id)] = transaction_id
        self._connector_of_tx[transaction_id] = (charger_id, connector_id)
        self.control.start(transaction_id, charger_id, connector_id)
        self._wake.set()

    def transaction_stopped(self, charger_id: str, transaction_id: int) -> None:
        key = self._connector_of_tx.pop(transaction_id, None)
        if key is not None and self._tx_of_connector.get(key) == transaction_id:
            del self._tx_of_connector[key]
            self._readings.pop(key, None)
        self._cancel_idle(transaction_id)
        self.control.stop(transaction_id)
        self._wake.set()

    def transaction_stops_missed(self) -> None:
        """Stop notifications may have been missed (``HandlerServices``): each transaction
        counted now that the database has no longer open is let go, on a task of the
        engine's (a loss while it checks: it checks again)."""
        self._stops_missed = True
        if not self._checking:
            self._checking = True
            self._spawn(self._let_closed_go())

    def status_changed(self, charger_id: str, connector_id: int, status: str) -> None:
        tx = self._tx_of_connector.get((charger_id, connector_id))
        if tx is None or status not in _KINDS:
            return
        kind = _KINDS[status]
        if kind == "idle":
            # Hysteresis: the share is kept until SuspendedEV has held for idle_after.
            if tx not in self._idle_timers:
                loop = asyncio.get_running_loop()
                self._idle_timers[tx] = loop.call_later(self.idle_after, self._idle, tx)
            return
        self._cancel_idle(tx)
        self.control.set_kind(tx, kind)
        self._wake.set()

    def meter_values(self, charger_id: str, connector_id: int, values: list[MeterValue]) -> None:
        """Per-phase Current.Import of a connector, mapped to its circuit's phases."""
        charger = self.control.charger(charger_id)
        if charger is None:
            return
        currents: list[float | None] = [None, None, None]
        latest: datetime | None = None
        for mv in values:
            for sv in mv.sampled_value:
                if sv.measurand != "Current.Import" or sv.unit not in (UNSET, "A"):
                    continue
                try:
                    amps = float(sv.value)
                except ValueError:
                    continue
                phases = _charger_phases(sv.phase)
                # No phase: the value is on every phase the charger is wired to.
                targets = charger.wiring if phases is None else [
                    charger.wiring[i] for i in phases if i < len(charger.wiring)
                ]  # fmt: skip
                for p in targets:
                    currents[p] = amps
                latest = mv.timestamp if latest is None else max(latest, mv.timestamp)
        if latest is not None:
            self._readings[(charger_id, connector_id)] = _Reading(
                (currents[0], currents[1], currents[2]), latest
            )

    def charger_connected(self, info: ConnectionInfo) -> None:
        if self.control.charger(info.charger_id) is not None:
            self.control.set_online(info.charger_id, True)
            self._wake.set()

    def charger_disconnected(self, info: ConnectionInfo, close_code: int, reason: str) -> None:
        if self.control.charger(info.charger_id) is not None:
            self.control.set_online(info.charger_id, False)
            self._wake.set()

    def boot_accepted(self, charger_id: str) -> None:
        """A charger's BootNotification is being accepted: its TxDefaultProfile is sent again
        after the reply (only queued here, as ``HandlerServices.after_accepted_boot``
        requires)."""
        if self.control.charger(charger_id) is not None:
            self.control.rebooted(charger_id)
            self._wake.set()

    def reload_soon(self, _payload: str = "") -> None:
        """A circuit or a membership changed (NOTIFY), or notifications may have been missed."""
        self._reload.set()
        self._wake.set()

    # What the API shows.

    def live(self, circuit_id: int) -> CircuitLive:
        """The limits of the transactions in a circuit (its sub-circuits' included) and its
        measured current per phase."""
        root = self.control.root_of(circuit_id)
        if root is None:
            return CircuitLive(allocations=[], consumption=[])
        tree = self.control.trees[root]
        below = _below(tree.circuits.values(), circuit_id)
        allocations = [
            Allocation(
                charger_id=tx.charger_id,
                connector_id=tx.connector_id,
                transaction_id=tx.transaction_id,
                limit=_amps(self.control.counted(tx)),
            )
            for tx in self.control.in_tree(root)
            if tree.chargers[tx.charger_id].circuit_id in below
        ]
        allocations.sort(key=lambda a: a.transaction_id)
        return CircuitLive(allocations=allocations, consumption=self._consumption(below))

    # The engine's tasks.

    async def _steer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._reload.is_set():
                self._reload.clear()
                try:
                    await self._load()
                except Exception as exc:  # the database is away: the trees stay as they were
                    log.warning("circuits not reloaded (%s); trying again", exc)
                    self._reload.set()
                    await asyncio.sleep(5)  # pacing: the next attempt
                    self._wake.set()
                    continue
            for push in self.control.step():
                self._spawn(self._send(push))

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.consumption_interval)  # the interval itself
            events = {}
            for circuit_id in sorted(self._circuits):
                if not self.live(circuit_id).allocations:
                    continue  # only while the circuit has a transaction
                circuit = self._circuits[circuit_id]
                max_amps, min_amps = self._amps[circuit_id]
                phases = [
                    PhaseCurrent(phase=p.phase, current=p.current, at=p.last_updated_at)
                    for p in self._consumption(_below(self._circuits.values(), circuit.id))
                ]
                events[circuit_id] = circuit_consumption(circuit_id, max_amps, min_amps, phases)
            if events:
                try:
                    await self.store.append_events(events)
                except Exception as exc:  # an outage: this report is skipped, not queued
                    log.warning("circuit consumption not recorded: %s", exc)

    async def _let_closed_go(self) -> None:
        retry = self.store.db.health.retry("load management's transaction check", log, first=1.0)
        try:
            while self._stops_missed:
                self._stops_missed = False
                # Taken before the read: a transaction counted later (its start committed
                # after the read's snapshot, perhaps) is not the read's to judge.
                counted = set(self.control.transactions)
                try:
                    still_open = await self.store.still_open(counted) if counted else set()
                except Exception as exc:  # the database is away: the same check, later
                    self._stops_missed = True
                    await asyncio.sleep(retry.failed(exc))
                    continue
                retry.ok()
                for transaction_id in sorted(counted - still_open):
                    tx = self.control.transactions.get(transaction_id)
                    if tx is not None:
                        self.transaction_stopped(tx.charger_id, transaction_id)
        finally:
            self._checking = False

    async def _load(self) -> None:
        topology = await self.store.topology()
        circuits = [
            Circuit(
                id=c.id,
                max_current=deciamps(c.max_current),
                phases=c.phases,
                parent_id=c.parent_circuit_id,
                min_current=deciamps(c.min_charge_point_current),
                reserve=_ceil_deciamps(c.offline_reserved_current),
            )
            for c in topology.circuits
        ]
        chargers = [
            Charger(
                id=m.charger_id,
                circuit_id=m.circuit_id,
                max_current=_ceil_deciamps(m.max_current),
                wiring=wiring_of(m.phase_rotation),
                online=self.link.connection(m.charger_id) is not None,
            )
            for m in topology.members
        ]
        self.control.set_tree(circuits, chargers)
        self._circuits = {c.id: c for c in circuits}
        self._amps = {c.id: (c.max_current, c.min_charge_point_current) for c in topology.circuits}

    async def _send(self, push: Push) -> None:
        default = push.transaction_id is None
        profile = AppliedProfile(
            id=ENGINE_PROFILE_ID + push.connector_id,
            purpose="TxDefaultProfile" if default else "TxProfile",
            stack_level=ENGINE_STACK_LEVEL,
            kind="Relative",
            unit="A",
            periods=((0, _amps(push.limit)),),
        )
        outcome = await self._call(push.charger_id, push.connector_id, push.transaction_id, profile)
        self.control.answered(push, outcome)
        self._wake.set()
        await self._keep(push.charger_id, push.connector_id, push.transaction_id, profile, outcome)

    async def _call(
        self, charger_id: str, connector_id: int, transaction_id: int | None, p: AppliedProfile
    ) -> Outcome:
        request = SetChargingProfileRequest(
            connector_id=connector_id,
            cs_charging_profiles=ChargingProfile(
                charging_profile_id=p.id,
                stack_level=p.stack_level,
                charging_profile_purpose=ChargingProfilePurposeType(p.purpose),
                charging_profile_kind=ChargingProfileKindType(p.kind),
                charging_schedule=ChargingSchedule(
                    charging_rate_unit=ChargingRateUnitType(p.unit),
                    charging_schedule_period=[
                        ChargingSchedulePeriod(start_period=s, limit=v) for s, v in p.periods
                    ],
                ),
                transaction_id=UNSET if transaction_id is None else transaction_id,
            ),
        )
        try:
            response = await self.link.call(charger_id, request)
        except CallRejected:
            return "rejected"
        except CommandError:
            return "unanswered"
        if isinstance(response, SetChargingProfileResponse) and response.status == "Accepted":
            return "accepted"
        return "rejected"

    async def _keep(
        self,
        charger_id: str,
        connector_id: int,
        transaction_id: int | None,
        profile: AppliedProfile,
        outcome: Literal["accepted", "rejected", "unanswered"],
    ) -> None:
        now = datetime.now(UTC)
        number = self.number_of(charger_id)
        events = []
        if number is not None:
            charger = ChargerRef(charger_id, number)
            events.append(
                charging_profile_applied(
                    charger, connector_id, transaction_id, profile, outcome, now
                )
            )
        record = PushRecord(
            charger_id=charger_id,
            connector_id=connector_id,
            transaction_id=transaction_id,
            purpose=profile.purpose,
            stack_level=profile.stack_level,
            limit_amps=profile.periods[0][1],
            outcome=outcome,
            sent_at=now,
        )
        try:
            await self.store.record_push(record, events)
        except Exception as exc:  # an outage: the limit holds; only its record is lost
            log.warning("charging profile of %s not recorded: %s", charger_id, exc)

    def _consumption(self, circuits: set[int]) -> list[PhaseLoad]:
        sums = [0.0, 0.0, 0.0]
        seen = [False, False, False]
        latest: datetime | None = None
        for (charger_id, _), reading in self._readings.items():
            charger = self.control.charger(charger_id)
            if charger is None or charger.circuit_id not in circuits:
                continue
            for p, amps in enumerate(reading.currents):
                if amps is not None:
                    sums[p] += amps
                    seen[p] = True
            latest = reading.at if latest is None else max(latest, reading.at)
        if not any(seen):
            return []
        return [
            PhaseLoad(phase=PHASES[p], current=round(sums[p], 3), last_updated_at=latest)  # type: ignore[arg-type]
            for p in range(3)
        ]

    def _idle(self, transaction_id: int) -> None:
        self._idle_timers.pop(transaction_id, None)
        self.control.set_kind(transaction_id, "idle")
        self._wake.set()

    def _cancel_idle(self, transaction_id: int) -> None:
        handle = self._idle_timers.pop(transaction_id, None)
        if handle is not None:
            handle.cancel()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = service_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _amps(deci: int) -> float:
    return deci / 10


def _ceil_deciamps(amps: float) -> int:
    """A charger's maximum or a reserve in deciamps, rounded up (counted, never undercounted)."""
    deci = deciamps(amps)
    return deci if deci / 10 >= amps else deci + 1


def _charger_phases(phase: object) -> list[int] | None:
    """The charger's conductors (0 = its L1) a sampled value's phase names; None: no phase."""
    if phase is UNSET:
        return None
    name = str(phase)
    if name in ("L1", "L1-N"):
        return [0]
    if name in ("L2", "L2-N"):
        return [1]
    if name in ("L3", "L3-N"):
        return [2]
    return []  # N and line-to-line values are no phase current


def _below(circuits: Iterable[Circuit], circuit_id: int) -> set[int]:
    """The circuit and every circuit under it."""
    children: dict[int | None, list[int]] = {}
    for c in circuits:
        children.setdefault(c.parent_id, []).append(c.id)
    found, todo = set(), [circuit_id]
    while todo:
        current = todo.pop()
        found.add(current)
        todo.extend(children.get(current, []))
    return found
