"""loadmgmt room: the allocator — how many amps each transaction of a circuit tree may draw.

Pure and synchronous. Currents are integers in deciamps (0.1 A, OCPP's usual resolution of a
limit), so that sums are exact: a share is never rounded up past a breaker.

The rules (README "Load management"):

* A circuit's capacity on a phase is its ``max_current`` minus its reserve
  (``offlineReservedCurrent``, kept free for loads evgate cannot see) minus its offline
  chargers, each counted at its maximum (it may be drawing anything it was allowed). Every
  ancestor's capacity is checked the same way: a sub-circuit's load is its parent's load too.
* A charger loads the circuit phases its L1-L3 are wired to (``wiring``, from
  ``phaseRotation``); on a one-phase circuit everything is on L1, and a sub-circuit's L1-L3 are
  its parent's L1-L3.
* A charger never draws more than its ``max_current`` in all, whatever its transactions were
  told (so a charger counted "at its maximum" is counted once, not per transaction).
* Admission, first come first served: every demanding transaction needs at least its circuit's
  ``min_current``; in order of arrival each is admitted if that fits beside those admitted
  before it, else it waits at 0 A, and so do the later ones that need what it could not get
  (a later one never takes room an earlier waiting one is owed).
* Fair share: the admitted transactions are raised together from their minimum until a
  circuit phase, an ancestor's or the charger's own limit is reached (progressive filling);
  a transaction whose EV is not drawing (``idle``) keeps just the minimum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "PHASES",
    "ROTATIONS",
    "Charger",
    "Circuit",
    "Demand",
    "Tree",
    "allocate",
    "allocate_all",
    "deciamps",
    "wiring_of",
]

#: The circuit phases' names, index 0..2.
PHASES = ("L1", "L2", "L3")

#: ``phaseRotation`` → the circuit phases (0 = L1) the charger's L1, L2, L3 are wired to: OCPP
#: 1.6's ConnectorPhaseRotation letters (R, S, T = the circuit's L1, L2, L3) for three-phase
#: chargers, one letter for a single-phase charger.
ROTATIONS: dict[str, tuple[int, ...]] = {
    "RST": (0, 1, 2),
    "RTS": (0, 2, 1),
    "SRT": (1, 0, 2),
    "STR": (1, 2, 0),
    "TRS": (2, 0, 1),
    "TSR": (2, 1, 0),
    "R": (0,),
    "S": (1,),
    "T": (2,),
}

Kind = Literal["full", "idle"]


def deciamps(amps: float) -> int:
    """``amps`` in whole deciamps, rounded down (a limit is never rounded up)."""
    return int(amps * 10 + 1e-9) if amps >= 0 else 0


def wiring_of(rotation: str | None) -> tuple[int, ...]:
    """The circuit phases of a ``phaseRotation`` (none given: the straight ``RST``).

    Raises:
        ValueError: an unknown rotation.
    """
    if rotation is None:
        return ROTATIONS["RST"]
    try:
        return ROTATIONS[rotation]
    except KeyError:
        raise ValueError(f"phaseRotation must be one of {', '.join(ROTATIONS)}") from None


@dataclass(frozen=True, slots=True)
class Circuit:
    """A breaker. Currents in deciamps per phase.

    Attributes:
        id: the circuit's id.
        max_current: the breaker's rating, per phase.
        phases: 1 or 3.
        parent_id: the circuit that feeds this one, or None for a root.
        min_current: the least current a transaction is given when it charges at all.
        reserve: kept free for loads evgate cannot see (offline chargers among them).
    """

    id: int
    max_current: int
    phases: int = 3
    parent_id: int | None = None
    min_current: int = 60
    reserve: int = 0


@dataclass(frozen=True, slots=True)
class Charger:
    """A charger in a circuit.

    Attributes:
        id: the charger's OCPP identity.
        circuit_id: its circuit.
        max_current: the most it may draw, per phase, all its connectors together.
        wiring: the circuit phases its L1.. are wired to (:func:`wiring_of`).
        online: whether it is connected (an offline one is counted at ``max_current``).
    """

    id: str
    circuit_id: int
    max_current: int
    wiring: tuple[int, ...] = (0, 1, 2)
    online: bool = True


@dataclass(frozen=True, slots=True)
class Demand:
    """A transaction that may draw current.

    Attributes:
        transaction_id: the OCPP transaction's id.
        charger_id: its charger.
        order: its place in the admission queue (lower came first).
        kind: ``full`` (charging, or waiting for current) or ``idle`` (its EV draws nothing
            now: it keeps the minimum and leaves the rest to others).
    """

    transaction_id: int
    charger_id: str
    order: int
    kind: Kind = "full"


@dataclass(slots=True)
class Tree:
    """Circuits and their chargers (any number of trees).

    Raises:
        ValueError: from :meth:`check`, a parent that is missing or a cycle.
    """

    circuits: dict[int, Circuit] = field(default_factory=dict)
    chargers: dict[str, Charger] = field(default_factory=dict)

    @classmethod
    def of(cls, circuits: Iterable[Circuit], chargers: Iterable[Charger] = ()) -> Tree:
        tree = cls({c.id: c for c in circuits}, {c.id: c for c in chargers})
        tree.check()
        return tree

    def check(self) -> None:
        """Raise ValueError unless every parent exists and no circuit is its own ancestor."""
        for circuit in self.circuits.values():
            self.path(circuit.id)
        for charger in self.chargers.values():
            if charger.circuit_id not in self.circuits:
                raise ValueError(f"charger {charger.id}: no circuit {charger.circuit_id}")

    def path(self, circuit_id: int) -> list[Circuit]:
        """The circuit and its ancestors, nearest first.

        Raises:
            ValueError: a missing circuit or a cycle.
        """
        path: list[Circuit] = []
        seen: set[int] = set()
        current: int | None = circuit_id
        while current is not None:
            if current in seen:
                raise ValueError(f"circuit {circuit_id}: its parents make a cycle")
            seen.add(current)
            circuit = self.circuits.get(current)
            if circuit is None:
                raise ValueError(f"circuit {current} does not exist")
            path.append(circuit)
            current = circuit.parent_id
        return path

    def root_of(self, circuit_id: int) -> int:
        return self.path(circuit_id)[-1].id

    def phases_of(self, charger: Charger) -> tuple[int, ...]:
        """The phases (of its circuit and every ancestor) a charger loads."""
        if self.circuits[charger.circuit_id].phases == 1:
            return (0,)
        return tuple(sorted(set(charger.wiring)))

    def slots_of(self, charger: Charger) -> list[tuple[int, int]]:
        """The (circuit id, phase) pairs a charger's current flows through."""
        phases = self.phases_of(charger)
        return [(c.id, p) for c in self.path(charger.circuit_id) for p in phases]

    def capacity(self, circuit: Circuit, offline: int = 0) -> int:
        """What a circuit phase may carry of the limits evgate sets, given ``offline`` (the
        sum of its offline chargers' maxima on that phase)."""
        return circuit.max_current - circuit.reserve - offline


# A constraint: a circuit phase, or a charger as a whole.
_Key = tuple[int, int] | str


def allocate(
    tree: Tree, demands: Iterable[Demand], fixed: Mapping[str, int] | None = None
) -> dict[int, int]:
    """Each demand's limit in deciamps (0: waits for room); see :func:`allocate_all`."""
    return allocate_all(tree, demands, fixed)[0]


def allocate_all(
    tree: Tree,
    demands: Iterable[Demand],
    fixed: Mapping[str, int] | None = None,
    idle: Iterable[str] = (),
    whole: Iterable[str] = (),
) -> tuple[dict[int, int], dict[str, int]]:
    """Each demand's limit in deciamps (0: waits for room), and each idle charger's default.

    Args:
        tree: the circuits and chargers; demands of chargers not in it get nothing.
        demands: the transactions to share among.
        fixed: per online charger, current it is counted at whatever this allocation says
            (a charger that did not answer or refused its last limit: its maximum); its
            other demands share what is left of its own maximum.
        idle: online chargers without a transaction, in the order they get room: each gets
            its circuit's minimum as the default a transaction it starts would draw (its
            TxDefaultProfile) if that fits in what the transactions left, else 0 (a
            transaction it starts waits at 0 A until evgate gives it room).
        whole: online chargers counted at their maximum whatever their demands get (a busy
            charger whose default is not known: it may be back in force the moment a
            transaction stops): the circuits lose that maximum up front, and its demands
            share the charger's own maximum without taking more from them.
    """
    fixed = fixed or {}
    room: dict[_Key, int] = {}
    offline: dict[tuple[int, int], int] = {}
    for gone in tree.chargers.values():
        if not gone.online:
            for slot in tree.slots_of(gone):
                offline[slot] = offline.get(slot, 0) + gone.max_current
    for circuit in tree.circuits.values():
        for p in range(3):
            room[(circuit.id, p)] = tree.capacity(circuit, offline.get((circuit.id, p), 0))
    for charger_id, amount in fixed.items():
        held = tree.chargers.get(charger_id)
        if held is None or not held.online:
            continue
        amount = min(amount, held.max_current)
        room[charger_id] = held.max_current - amount
        for slot in tree.slots_of(held):
            room[slot] -= amount
    counted_whole: set[str] = set()
    for charger_id in whole:
        held = tree.chargers.get(charger_id)
        if held is None or not held.online or charger_id in counted_whole:
            continue
        counted_whole.add(charger_id)
        rest = held.max_current - min(fixed.get(charger_id, 0), held.max_current)
        room.setdefault(charger_id, held.max_current)
        for slot in tree.slots_of(held):
            room[slot] -= rest
    _absorb_over(tree, room, sorted(counted_whole))

    limits: dict[int, int] = {}
    members: dict[int, list[_Key]] = {}
    blocked: set[_Key] = set()
    for demand in sorted(demands, key=lambda d: d.order):
        limits[demand.transaction_id] = 0
        charger = tree.chargers.get(demand.charger_id)
        if charger is None or not charger.online:
            continue
        keys: list[_Key] = [charger.id]
        if charger.id not in counted_whole:
            keys += tree.slots_of(charger)
        room.setdefault(charger.id, charger.max_current)
        need = tree.circuits[charger.circuit_id].min_current
        short = [k for k in keys if room[k] < need]
        if short or any(k in blocked for k in keys):
            blocked.update(short)  # FIFO: what it waits for, later ones wait for too
            continue
        for k in keys:
            room[k] -= need
        limits[demand.transaction_id] = need
        if demand.kind == "full":
            members[demand.transaction_id] = keys

    # Progressive filling: raise every unfrozen member by the same step until a constraint
    # has no room for another step; its members freeze.
    while members:
        count: dict[_Key, int] = {}
        for keys in members.values():
            for k in keys:
                count[k] = count.get(k, 0) + 1
        step = min(room[k] // n for k, n in count.items())
        full = {k for k, n in count.items() if room[k] // n == step}
        # Integer steps: exact sums; a remainder smaller than one step per member stays
        # unused (at most a few deciamps), so equal demands get equal limits.
        for tx in members:
            limits[tx] += step
        for k, n in count.items():
            room[k] -= step * n
        members = {tx: keys for tx, keys in members.items() if not full.intersection(keys)}

    defaults: dict[str, int] = {}
    for charger_id in idle:
        charger = tree.chargers.get(charger_id)
        if charger is None or not charger.online:
            continue
        need = min(tree.circuits[charger.circuit_id].min_current, charger.max_current)
        keys = [charger.id, *tree.slots_of(charger)]
        room.setdefault(charger.id, charger.max_current)
        if all(room[k] >= need for k in keys):
            for k in keys:
                room[k] -= need
            defaults[charger_id] = need
        else:
            defaults[charger_id] = 0
    return limits, defaults


def _absorb_over(tree: Tree, room: dict[_Key, int], whole: list[str]) -> None:
    """Counting a charger at its maximum does not let it draw that much now where the maximum
    does not fit: what a circuit phase is over is taken from the own room of the chargers
    counted whole on it, once in all (not from each of them), in equal parts first, the rest
    from whoever still has room. The circuit phases keep them counted at their maximum."""
    absorbed: dict[tuple[int, int], int] = {}

    def over(slot: tuple[int, int]) -> int:
        return max(0, -(room[slot] + absorbed.get(slot, 0)))

    sharing: dict[tuple[int, int], int] = {}
    for charger_id in whole:
        for slot in tree.slots_of(tree.chargers[charger_id]):
            sharing[slot] = sharing.get(slot, 0) + 1
    takes: dict[str, int] = {}
    for charger_id in whole:
        slots = tree.slots_of(tree.chargers[charger_id])
        part = max(0, *(-(-over(s) // sharing[s]) for s in slots))  # rounded up
        takes[charger_id] = min(room[charger_id], part)
    for charger_id in [*whole, *whole]:  # equal parts, then the rest in order
        slots = tree.slots_of(tree.chargers[charger_id])
        take = takes.pop(charger_id, None)
        if take is None:
            take = min(room[charger_id], max(0, *(over(s) for s in slots)))
        room[charger_id] -= take
        for slot in slots:
            absorbed[slot] = absorbed.get(slot, 0) + take
