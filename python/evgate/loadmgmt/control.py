"""loadmgmt room: the change plan — which limits to send when, so that no circuit is over its
capacity at any moment, also while chargers are being told new limits.

Pure and synchronous: the engine (``loadmgmt/engine.py``) feeds it what happens (transactions,
statuses, connections, answers to its pushes) and sends the :class:`Push` es :meth:`step`
returns. Currents in deciamps.

What each transaction is *counted* at is the most its charger may be drawing right now: the
highest of its last accepted limit and every limit sent and not yet answered; a charger that
refused or did not answer a limit, or went offline, is counted at its maximum until it accepts
one again. A new transaction starts at its circuit's minimum (the TxDefaultProfile every
charger in a circuit gets at boot), or at the charger's maximum if that was not accepted.

A step of a tree: the allocator's targets with those counted chargers fixed; every limit that
goes down is sent at once (a lower may always go: it only takes load away); a limit goes up
only when nothing of the tree is in flight, that is once every lower has been answered, so the
raised limit fits beside what the others are counted at. Hysteresis: a raise smaller than
``hysteresis`` is not sent (a fluctuating share does not churn profiles), nor a small lower
while the tree fits and nothing waits to be raised.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from evgate.loadmgmt.allocator import Charger, Circuit, Demand, Kind, Tree, allocate

__all__ = ["Controller", "Outcome", "Push", "TransactionState"]

Outcome = Literal["accepted", "rejected", "unanswered"]


@dataclass(frozen=True, slots=True)
class Push:
    """A limit to send: a TxProfile of ``limit`` deciamps for the transaction.

    Attributes:
        id: unique per controller; its answer is given back with :meth:`Controller.answered`.
    """

    id: int
    transaction_id: int
    charger_id: str
    connector_id: int
    limit: int


@dataclass(slots=True)
class TransactionState:
    """What the controller knows of one transaction."""

    transaction_id: int
    charger_id: str
    connector_id: int
    order: int
    kind: Kind | None = "full"  # None: not drawing at all (Faulted, Available)
    confirmed: int = 0
    in_flight: list[Push] = field(default_factory=list)
    failed: bool = False  # counted at the charger's maximum until a limit is accepted
    retry: bool = True  # a failed one is sent a limit again at its next event only
    target: int = 0


class Controller:
    """The engine's state of every circuit tree, and its change plan.

    After any change (:meth:`set_tree`, :meth:`start`, ...) call :meth:`step` and send what it
    returns; give each push's outcome to :meth:`answered` and step again. Trees are independent:
    each has its own :class:`Tree`, and a step looks only at the trees that changed.
    """

    def __init__(self, hysteresis: int = 10) -> None:
        self.hysteresis = hysteresis
        self.trees: dict[int, Tree] = {}  # by root circuit id
        self.transactions: dict[int, TransactionState] = {}
        self.default_accepted: dict[str, bool] = {}
        self._root_of_charger: dict[str, int] = {}
        self._root_of_circuit: dict[int, int] = {}
        self._by_charger: dict[str, dict[int, TransactionState]] = {}
        self._order = itertools.count()
        self._push_ids = itertools.count(1)
        self._dirty: set[int] = set()  # roots whose limits must be looked at again

    # What happens.

    def set_tree(self, circuits: Iterable[Circuit], chargers: Iterable[Charger]) -> None:
        """Replace the circuits and their chargers (keeping who is online); every tree is
        looked at again.

        Raises:
            ValueError: a missing parent or a cycle (nothing is changed).
        """
        online = {c.id: c.online for t in self.trees.values() for c in t.chargers.values()}
        whole = Tree.of(
            circuits,
            [
                Charger(c.id, c.circuit_id, c.max_current, c.wiring, online.get(c.id, c.online))
                for c in chargers
            ],
        )
        trees: dict[int, Tree] = {}
        root_of_circuit = {c: whole.root_of(c) for c in whole.circuits}
        for circuit in whole.circuits.values():
            trees.setdefault(root_of_circuit[circuit.id], Tree()).circuits[circuit.id] = circuit
        root_of_charger = {}
        for charger in whole.chargers.values():
            root = root_of_circuit[charger.circuit_id]
            trees[root].chargers[charger.id] = charger
            root_of_charger[charger.id] = root
        self.trees, self._root_of_circuit = trees, root_of_circuit
        self._root_of_charger = root_of_charger
        self._dirty.update(trees)

    def tree_of(self, charger_id: str) -> Tree | None:
        root = self._root_of_charger.get(charger_id)
        return None if root is None else self.trees[root]

    def charger(self, charger_id: str) -> Charger | None:
        tree = self.tree_of(charger_id)
        return None if tree is None else tree.chargers[charger_id]

    def root_of(self, circuit_id: int) -> int | None:
        return self._root_of_circuit.get(circuit_id)

    def set_online(self, charger_id: str, online: bool) -> None:
        """A charger connected or went away. A reconnected charger's limits are not known
        (it may have rebooted): its transactions are sent theirs again."""
        tree = self.tree_of(charger_id)
        if tree is None:
            return
        c = tree.chargers[charger_id]
        tree.chargers[charger_id] = Charger(c.id, c.circuit_id, c.max_current, c.wiring, online)
        for tx in self._of_charger(charger_id):
            tx.failed, tx.retry = True, True
            tx.in_flight.clear()  # their answers will not come
        self._touch(charger_id)

    def set_default(self, charger_id: str, accepted: bool) -> None:
        """Whether the charger accepted its TxDefaultProfile of the circuit's minimum."""
        self.default_accepted[charger_id] = accepted

    def start(self, transaction_id: int, charger_id: str, connector_id: int) -> None:
        """A transaction started (or was found open). Ignored if known."""
        if transaction_id in self.transactions:
            return
        tx = TransactionState(transaction_id, charger_id, connector_id, next(self._order))
        tree = self.tree_of(charger_id)
        if tree is not None and self.default_accepted.get(charger_id, False):
            tx.confirmed = tree.circuits[tree.chargers[charger_id].circuit_id].min_current
        else:
            tx.failed = True  # its TxDefaultProfile is not known to hold: count the maximum
        self.transactions[transaction_id] = tx
        self._by_charger.setdefault(charger_id, {})[transaction_id] = tx
        self._touch(charger_id)

    def stop(self, transaction_id: int) -> None:
        """A transaction ended: its current is free (once the tree steps)."""
        tx = self.transactions.pop(transaction_id, None)
        if tx is not None:
            mine = self._by_charger.get(tx.charger_id, {})
            mine.pop(transaction_id, None)
            if not mine:
                self._by_charger.pop(tx.charger_id, None)
            self._touch(tx.charger_id)

    def set_kind(self, transaction_id: int, kind: Kind | None) -> None:
        """How the transaction draws (its connector's status, after the engine's hysteresis):
        ``full``, ``idle`` (keeps the minimum) or None (not at all: 0 A)."""
        tx = self.transactions.get(transaction_id)
        if tx is not None and tx.kind != kind:
            tx.kind = kind
            tx.retry = True
            self._touch(tx.charger_id)

    def answered(self, push: Push, outcome: Outcome) -> None:
        """A push's outcome. Accepted: the charger's limit is the push's. Refused or
        unanswered: the charger may draw anything up to its maximum."""
        tx = self.transactions.get(push.transaction_id)
        if tx is None or push not in tx.in_flight:
            return  # stopped meanwhile, or its charger went away
        tx.in_flight.remove(push)
        if outcome == "accepted":
            tx.confirmed = push.limit
            tx.failed = False
        else:
            tx.failed, tx.retry = True, False
        self._touch(tx.charger_id)

    # What follows.

    def step(self) -> list[Push]:
        """The pushes to send now, for every tree that changed."""
        pushes: list[Push] = []
        dirty, self._dirty = self._dirty, set()
        for root in dirty:
            tree = self.trees.get(root)
            if tree is not None:
                pushes.extend(self._step_tree(root, tree))
        return pushes

    def counted(self, tx: TransactionState) -> int:
        """What a transaction is counted at (the most its charger may be drawing for it)."""
        charger = self.charger(tx.charger_id)
        if charger is None:
            return 0
        if tx.failed or not charger.online:
            return charger.max_current
        return max([tx.confirmed, *(p.limit for p in tx.in_flight)])

    def charger_load(self, charger: Charger) -> int:
        """A charger's counted current: its transactions', at most its maximum; an offline
        one's is its maximum."""
        if not charger.online:
            return charger.max_current
        total = sum(self.counted(tx) for tx in self._of_charger(charger.id))
        return min(total, charger.max_current)

    def loads(self, root: int) -> dict[tuple[int, int], int]:
        """Per (circuit, phase) of a tree, its reserve plus the counted current of its chargers
        (sub-circuits included; an offline one at its maximum): what must stay within
        ``max_current`` at every moment."""
        tree = self.trees[root]
        totals = {(c.id, p): c.reserve for c in tree.circuits.values() for p in range(3)}
        for charger in tree.chargers.values():
            load = self.charger_load(charger)
            for slot in tree.slots_of(charger):
                totals[slot] += load
        return totals

    def in_tree(self, root: int) -> Iterator[TransactionState]:
        for charger_id in self.trees[root].chargers:
            yield from self._of_charger(charger_id)

    def _of_charger(self, charger_id: str) -> Iterator[TransactionState]:
        return iter(list(self._by_charger.get(charger_id, {}).values()))

    def _touch(self, charger_id: str) -> None:
        root = self._root_of_charger.get(charger_id)
        if root is not None:
            self._dirty.add(root)

    def _step_tree(self, root: int, tree: Tree) -> list[Push]:
        txs = list(self.in_tree(root))
        online = {t.charger_id for t in txs if tree.chargers[t.charger_id].online}
        fixed = {
            t.charger_id: tree.chargers[t.charger_id].max_current
            for t in txs
            if t.failed and t.charger_id in online
        }
        drawing = [t for t in txs if t.kind is not None and t.charger_id in online]
        targets = allocate(
            tree,
            [_demand(t) for t in drawing if not t.failed],
            fixed,
        )
        # A failed transaction is offered what it would get were it not failed: a lower
        # from its counted maximum, safe at once (see the module's docstring).
        offered: dict[int, int] = {}
        if any(t.retry for t in txs if t.failed and t.charger_id in online):
            offered = allocate(tree, [_demand(t) for t in drawing])
        lowers: list[tuple[TransactionState, int]] = []
        raises: list[tuple[TransactionState, int]] = []
        for tx in txs:
            if tx.charger_id not in online:
                continue
            if tx.failed:
                if tx.retry:
                    tx.retry = False
                    lowers.append((tx, offered.get(tx.transaction_id, 0)))
                continue
            target = targets.get(tx.transaction_id, 0)
            tx.target = target
            last = tx.in_flight[-1].limit if tx.in_flight else tx.confirmed
            if target < last:
                lowers.append((tx, target))
            elif target >= last + self.hysteresis or (target > last and last == 0):
                raises.append((tx, target))
        busy = any(tx.in_flight for tx in txs)
        if not raises and not self._over(root):
            # Nothing to make room for: a small lower would only churn.
            lowers = [
                (tx, t) for tx, t in lowers if tx.failed or self.counted(tx) - t >= self.hysteresis
            ]
        pushes = [self._push(tx, limit) for tx, limit in lowers]
        if not pushes and not busy:
            pushes = [self._push(tx, limit) for tx, limit in raises]
        elif raises:
            self._dirty.add(root)  # look again once the lowers are answered
        return pushes

    def _over(self, root: int) -> bool:
        circuits = self.trees[root].circuits
        return any(load > circuits[c].max_current for (c, _), load in self.loads(root).items())

    def _push(self, tx: TransactionState, limit: int) -> Push:
        push = Push(next(self._push_ids), tx.transaction_id, tx.charger_id, tx.connector_id, limit)
        tx.in_flight.append(push)
        return push


def _demand(tx: TransactionState) -> Demand:
    return Demand(tx.transaction_id, tx.charger_id, tx.order, tx.kind or "full")
