"""loadmgmt room: the change plan — which limits to send when, so that no circuit is over its
capacity at any moment, also while chargers are being told new limits.

Pure and synchronous: the engine (``handlers/smart_charging.py``) feeds it what happens
(transactions, statuses, connections, answers to its pushes) and sends the :class:`Push` es
:meth:`Controller.step` returns. Currents in deciamps.

Two kinds of limit are pushed: a transaction's (a TxProfile) and a charger's default, the
TxDefaultProfile a transaction it starts draws before evgate decides. A charger is counted at
the higher of its transactions' sum and its default, so a transaction that starts cannot
overload, nor can the default coming back in force when the last one stops. Without a
transaction the default is the circuit's minimum while there is room for it, else 0 A (a new
transaction then waits at 0 A until it is given room); once a transaction starts, its
charger's default is lowered to 0 A (a lower: always safe), once the transaction's
TxProfile of its own at the value it draws (a *pin*) is accepted (a charger that refuses it
keeps drawing the default, counted), and raised again only after the stop,
where there is room. A busy charger whose default is not known counts at its maximum; its
transactions share that maximum, within what its circuits can carry now.

What a limit is *counted* at is the most the charger may be drawing for it now: the highest of
its last accepted value and every value sent and not yet answered; a charger that refused or
did not answer, or went offline, is counted at its maximum until it accepts a value again (a
charger whose default is not known yet, too). A new transaction starts at its charger's
default.

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

from evgate.loadmgmt.allocator import Charger, Circuit, Demand, Kind, Tree, allocate_all

__all__ = ["Controller", "Limit", "Outcome", "Push", "TransactionState"]

Outcome = Literal["accepted", "rejected", "unanswered"]


@dataclass(frozen=True, slots=True)
class Push:
    """A limit to send: a TxProfile of ``limit`` deciamps for the transaction, or (no
    ``transaction_id``, connector 0) the charger's TxDefaultProfile.

    Attributes:
        id: unique per controller; its answer is given back with :meth:`Controller.answered`.
    """

    id: int
    transaction_id: int | None
    charger_id: str
    connector_id: int
    limit: int


@dataclass(slots=True)
class Limit:
    """One pushed limit's state: a transaction's, or a charger's default."""

    charger_id: str = ""
    confirmed: int = 0
    in_flight: list[Push] = field(default_factory=list)
    failed: bool = False  # counted at the charger's maximum until a value is accepted
    retry: bool = True  # a failed one is sent a value again at its next event only

    def last(self) -> int:
        return self.in_flight[-1].limit if self.in_flight else self.confirmed


@dataclass(slots=True)
class TransactionState(Limit):
    """What the controller knows of one transaction."""

    transaction_id: int = 0
    connector_id: int = 0
    order: int = 0
    kind: Kind | None = "full"  # None: not drawing at all (Faulted, Available)
    target: int = 0
    profiled: bool = False  # sent a TxProfile of its own (before: it draws the default)
    own: bool = False  # a TxProfile of its own was accepted (since it last connected)


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
        self.defaults: dict[str, Limit] = {}  # per charger in a circuit
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
        for charger_id in root_of_charger:
            # Not known yet: counted at the maximum until it accepts one of evgate's.
            self.defaults.setdefault(charger_id, Limit(charger_id=charger_id, failed=True))
        self._dirty.update(trees)

    def tree_of(self, charger_id: str) -> Tree | None:
        root = self._root_of_charger.get(charger_id)
        return None if root is None else self.trees[root]

    def charger(self, charger_id: str) -> Charger | None:
        tree = self.tree_of(charger_id)
        return None if tree is None else tree.chargers[charger_id]

    def circuit_of(self, charger_id: str) -> Circuit | None:
        """The circuit a charger is in."""
        tree = self.tree_of(charger_id)
        return None if tree is None else tree.circuits[tree.chargers[charger_id].circuit_id]

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
        for limit in [*self._of_charger(charger_id), self.defaults[charger_id]]:
            limit.failed, limit.retry = True, True
            limit.in_flight.clear()  # their answers will not come
            if isinstance(limit, TransactionState):
                limit.own = False
        self._touch(charger_id)

    def rebooted(self, charger_id: str) -> None:
        """The charger booted: its default is sent again (OCPP keeps profiles over a reboot,
        but a charger may not)."""
        default = self.defaults.get(charger_id)
        if default is not None:
            default.failed, default.retry = True, True
            self._touch(charger_id)

    def start(self, transaction_id: int, charger_id: str, connector_id: int) -> None:
        """A transaction started (or was found open). Ignored if known."""
        if transaction_id in self.transactions:
            return
        tx = TransactionState(
            transaction_id=transaction_id,
            charger_id=charger_id,
            connector_id=connector_id,
            order=next(self._order),
        )
        default = self.defaults.get(charger_id)
        if default is None or default.failed:
            tx.failed = True  # its TxDefaultProfile is not known to hold: count the maximum
            if default is not None:
                # Its next event: the default is sent again (0 A, a lower: always safe), so
                # that its charger is not counted at its maximum all through the transaction.
                default.retry = True
        else:
            # It draws its default until told otherwise (one sent and unanswered, too).
            tx.confirmed = self._counted(default)
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
                default = self.defaults.get(tx.charger_id)
                if default is not None and default.failed:
                    # Its 0 A default was lost or refused while busy: asked again now (a
                    # lower from its maximum), or it counts at its maximum until its next
                    # start and may starve the circuit's other chargers.
                    default.retry = True
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
        limit: Limit | None
        if push.transaction_id is None:
            limit = self.defaults.get(push.charger_id)
        else:
            limit = self.transactions.get(push.transaction_id)
        if limit is None or push not in limit.in_flight:
            return  # stopped meanwhile, or its charger went away
        limit.in_flight.remove(push)
        if outcome == "accepted":
            limit.confirmed = push.limit
            limit.failed = False
            if isinstance(limit, TransactionState):
                limit.own = True
        else:
            limit.failed, limit.retry = True, False
        self._touch(push.charger_id)

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
        return self._counted(tx)

    def charger_load(self, charger: Charger) -> int:
        """A charger's counted current: the higher of its transactions' sum and its default
        (back in force the moment its last transaction stops); at most its maximum; an
        offline one's is its maximum."""
        if not charger.online:
            return charger.max_current
        total = sum(self.counted(tx) for tx in self._of_charger(charger.id))
        return min(max(total, self.default_counted(charger)), charger.max_current)

    def default_counted(self, charger: Charger) -> int:
        """What a charger's default is counted at: its maximum while not known (refused,
        unanswered, never sent)."""
        default = self.defaults[charger.id]
        return charger.max_current if default.failed else self._counted(default)

    @staticmethod
    def _counted(limit: Limit) -> int:
        return max([limit.confirmed, *(p.limit for p in limit.in_flight)])

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
        txs = [t for t in self.in_tree(root) if tree.chargers[t.charger_id].online]
        online = {c.id for c in tree.chargers.values() if c.online}
        busy_chargers = {t.charger_id for t in txs}
        fixed = {t.charger_id: tree.chargers[t.charger_id].max_current for t in txs if t.failed}
        # Who holds a default keeps it: one whose transaction stopped (its default at 0 A)
        # gets one where there is room, not by taking another's (a lower and a raise).
        idle = sorted(online - busy_chargers, key=lambda c: (-self._counted(self.defaults[c]), c))
        for charger_id in idle:
            if self.defaults[charger_id].failed:
                fixed[charger_id] = tree.chargers[charger_id].max_current
        # A busy charger whose default is not known is counted at its maximum (the default
        # may be back in force the moment its transaction stops); its transactions share it.
        whole = sorted(c for c in busy_chargers if self.defaults[c].failed)
        drawing = [t for t in txs if t.kind is not None]
        targets, defaults = allocate_all(
            tree,
            [_demand(t) for t in drawing if not t.failed],
            fixed,
            [c for c in idle if not self.defaults[c].failed],
            whole,
        )
        # A failed limit is offered what it would get were it not failed, at most what fits
        # beside everything else as counted (other failed ones at their maximum): a lower
        # from its counted maximum, safe at once.
        offered: dict[int, int] = {}
        offered_defaults: dict[str, int] = {}
        failed_retry = any(t.failed and t.retry for t in txs) or any(
            self.defaults[c].failed and self.defaults[c].retry for c in idle
        )
        if failed_retry:
            offered, offered_defaults = allocate_all(
                tree, [_demand(t) for t in drawing], None, idle, whole
            )
            loads = self.loads(root)
            for tx in txs:
                if tx.failed and tx.retry:
                    offered[tx.transaction_id] = self._fitting(
                        tree, loads, tx, offered.get(tx.transaction_id, 0)
                    )
            for c in idle:
                if self.defaults[c].failed and self.defaults[c].retry:
                    offered_defaults[c] = self._fitting(
                        tree, loads, self.defaults[c], offered_defaults.get(c, 0)
                    )
        pins: list[tuple[Limit, int]] = []
        lowers: list[tuple[Limit, int]] = []
        raises: list[tuple[Limit, int]] = []
        wanted: list[tuple[Limit, int, int]] = [
            (tx, targets.get(tx.transaction_id, 0), offered.get(tx.transaction_id, 0)) for tx in txs
        ]
        wanted += [(self.defaults[c], defaults.get(c, 0), offered_defaults.get(c, 0)) for c in idle]
        # A busy charger's default goes to 0 A (a lower: always safe), so that when its
        # transaction stops the charger is back within what it is counted at, and its
        # default is raised again only where there is room. Only once each of its
        # transactions has a TxProfile of its own accepted: one refused (or lost) would leave
        # its EV at 0 A; until then the charger counts the default as well.
        wanted += [
            (self.defaults[c], 0, 0)
            for c in sorted(busy_chargers)
            if all(t.own and not t.failed for t in self._of_charger(c))
        ]
        for limit, target, offer in wanted:
            if limit.failed:
                if limit.retry:
                    limit.retry = False
                    lowers.append((limit, offer))
                continue
            last = limit.last()
            if isinstance(limit, TransactionState):
                limit.target = target
                if not limit.profiled and last > 0:
                    # It draws its default, which goes to 0 A: it gets its own TxProfile
                    # first, of that value (counted the same; raised later if it may be) or
                    # less, however small the lower (none of hysteresis here).
                    pins.append((limit, min(target, last)))
                    continue
            if target < last:
                lowers.append((limit, target))
            elif target >= last + self.hysteresis or (target > last and last == 0):
                raises.append((limit, target))
        busy = any(tx.in_flight for tx in txs) or any(self.defaults[c].in_flight for c in online)
        if not raises and not self._over(root):
            # Nothing to make room for: a small lower would only churn.
            lowers = [
                (limit, t)
                for limit, t in lowers
                if limit.failed or self._counted(limit) - t >= self.hysteresis or t == 0
            ]
        # Pins and transactions' lowers before defaults' (a charger answers in order): a
        # transaction has its own profile before its default is lowered under it.
        pushes = [self._push(limit, value) for limit, value in [*pins, *lowers]]
        if not pushes and not busy:
            pushes = [self._push(limit, value) for limit, value in raises]
        elif raises:
            self._dirty.add(root)  # look again once the lowers are answered
        return pushes

    def _fitting(
        self, tree: Tree, loads: dict[tuple[int, int], int], limit: Limit, wanted: int
    ) -> int:
        """At most ``wanted``: what a failed limit may be given so that its charger fits
        beside the tree's ``loads`` as counted now (its own count taken out). Its default's
        count (its maximum, if not known) does not make room: the transactions draw theirs
        now, wherever the default is."""
        charger = tree.chargers[limit.charger_id]
        others = sum(self.counted(t) for t in self._of_charger(charger.id) if t is not limit)
        own = self.charger_load(charger)
        most = charger.max_current - others
        for slot in tree.slots_of(charger):
            circuit = tree.circuits[slot[0]]
            most = min(most, circuit.max_current - (loads[slot] - own) - others)
        return max(0, min(wanted, most))

    def _over(self, root: int) -> bool:
        circuits = self.trees[root].circuits
        return any(load > circuits[c].max_current for (c, _), load in self.loads(root).items())

    def _push(self, limit: Limit, value: int) -> Push:
        if isinstance(limit, TransactionState):
            push = Push(
                next(self._push_ids),
                limit.transaction_id,
                limit.charger_id,
                limit.connector_id,
                value,
            )
            limit.profiled = True
        else:
            push = Push(next(self._push_ids), None, limit.charger_id, 0, value)
        limit.in_flight.append(push)
        return push


def _demand(tx: TransactionState) -> Demand:
    return Demand(tx.transaction_id, tx.charger_id, tx.order, tx.kind or "full")
