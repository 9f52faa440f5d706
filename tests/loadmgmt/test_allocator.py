"""The allocator and the change plan: fair shares, admission, and the property of the issue's
acceptance — for random trees, limits, phase wirings and event orders, no circuit phase (nor
any ancestor's) ever carries more than its maxCurrent minus its reserve, also in the middle of
a change."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evgate.loadmgmt.allocator import (
    ROTATIONS,
    Charger,
    Circuit,
    Demand,
    Tree,
    allocate,
    allocate_all,
)
from evgate.loadmgmt.control import Controller, Push


def _three(max_current: int = 320, charger_max: int = 320) -> Tree:
    return Tree.of(
        [Circuit(1, max_current)], [Charger(f"CP-{i}", 1, charger_max) for i in range(3)]
    )


def test_fair_share_of_three_then_two() -> None:
    """32 A, three transactions: 10.6 A each; one stops: 16 A each."""
    tree = _three()
    assert allocate(tree, [Demand(i, f"CP-{i}", i) for i in range(3)]) == {0: 106, 1: 106, 2: 106}
    assert allocate(tree, [Demand(i, f"CP-{i}", i) for i in (0, 2)]) == {0: 160, 2: 160}


def test_a_charger_limit_leaves_its_share_to_the_others() -> None:
    """A 10 A charger takes 10 A; the two others split the rest."""
    tree = Tree.of(
        [Circuit(1, 400)],
        [Charger("A", 1, 100), Charger("B", 1, 320), Charger("C", 1, 320)],
    )
    assert allocate(tree, [Demand(0, "A", 0), Demand(1, "B", 1), Demand(2, "C", 2)]) == {
        0: 100,
        1: 150,
        2: 150,
    }


def test_admission_is_first_come_first_served() -> None:
    """16 A holds two 6 A minimums: the third waits at 0 A; when the first stops, the third
    (waiting longest) is admitted before the fourth."""
    tree = Tree.of([Circuit(1, 160)], [Charger(f"CP-{i}", 1, 320) for i in range(4)])
    demands = [Demand(i, f"CP-{i}", i) for i in range(4)]
    assert allocate(tree, demands) == {0: 80, 1: 80, 2: 0, 3: 0}
    assert allocate(tree, demands[1:]) == {1: 80, 2: 80, 3: 0}


def test_a_waiting_transaction_keeps_its_place_against_a_later_smaller_one() -> None:
    """FIFO through a shared feeder: the later transaction of another sub-circuit does not take
    the room the earlier one waits for."""
    tree = Tree.of(
        [
            Circuit(1, 140),
            Circuit(2, 320, parent_id=1, min_current=100),
            Circuit(3, 320, parent_id=1),
        ],
        [Charger("A", 3, 320), Charger("B", 2, 320), Charger("C", 3, 320)],
    )
    limits = allocate(tree, [Demand(0, "A", 0), Demand(1, "B", 1), Demand(2, "C", 2)])
    assert limits[1] == 0 and limits[2] == 0 and limits[0] == 140


def test_single_phase_chargers_on_different_phases_do_not_share() -> None:
    """Phase rotation: single-phase chargers wired to L1 and L2 each get the whole breaker;
    a second one on L1 shares L1."""
    tree = Tree.of(
        [Circuit(1, 320)],
        [
            Charger("A", 1, 320, ROTATIONS["R"]),
            Charger("B", 1, 320, ROTATIONS["S"]),
            Charger("C", 1, 320, ROTATIONS["R"]),
        ],
    )
    assert allocate(tree, [Demand(0, "A", 0), Demand(1, "B", 1)]) == {0: 320, 1: 320}
    assert allocate(tree, [Demand(0, "A", 0), Demand(1, "B", 1), Demand(2, "C", 2)]) == {
        0: 160,
        1: 320,
        2: 160,
    }


def test_offline_charger_and_reserve_are_kept_free() -> None:
    """An offline charger counts at its maximum, and the reserve is never handed out."""
    tree = Tree.of(
        [Circuit(1, 320, reserve=40)],
        [Charger("A", 1, 320), Charger("B", 1, 100, online=False)],
    )
    assert allocate(tree, [Demand(0, "A", 0)]) == {0: 180}


def test_an_idle_transaction_keeps_the_minimum() -> None:
    """SuspendedEV: the minimum; the rest goes to the one charging."""
    tree = _three()
    limits = allocate(tree, [Demand(0, "CP-0", 0, "idle"), Demand(1, "CP-1", 1)])
    assert limits == {0: 60, 1: 260}


def _answer(control: Controller, pushes: list[Push]) -> list[tuple[str, int | None, int]]:
    """Accept ``pushes``; what they were, sorted (charger, transaction or None, limit)."""
    for push in pushes:
        control.answered(push, "accepted")
    return sorted(
        ((p.charger_id, p.transaction_id, p.limit) for p in pushes),
        key=lambda x: (x[0], x[1] or 0),
    )


def _settle(control: Controller) -> None:
    while pushes := control.step():
        _answer(control, pushes)


def test_defaults_make_room_and_lowers_are_answered_before_any_raise() -> None:
    """32 A, three chargers: each gets a 6 A default; the first transaction takes the room of
    the idle chargers' defaults (lowered to 0 A first) before it is raised to 32 A (its own
    charger's default goes to 0 A too, once the transaction's 6 A TxProfile is accepted);
    each next one starts at 0 A, and the others are lowered (answered) before it is raised."""
    control = Controller()
    control.set_tree([Circuit(1, 320)], [Charger(f"CP-{i}", 1, 320) for i in range(3)])
    _settle(control)
    assert [control.defaults[f"CP-{i}"].confirmed for i in range(3)] == [60, 60, 60]
    control.start(0, "CP-0", 1)
    assert _answer(control, control.step()) == [
        ("CP-0", 0, 60), ("CP-1", None, 0), ("CP-2", None, 0)
    ]  # fmt: skip
    assert _answer(control, control.step()) == [("CP-0", None, 0)]
    assert _answer(control, control.step()) == [("CP-0", 0, 320)]
    control.start(1, "CP-1", 1)
    lower = control.step()
    assert control.step() == []  # the lower is unanswered: no raise yet
    assert _answer(control, lower) == [("CP-0", 0, 160)]
    assert _answer(control, control.step()) == [("CP-1", 1, 160)]
    control.start(2, "CP-2", 1)
    lowers = control.step()
    assert sorted((p.transaction_id, p.limit) for p in lowers) == [(0, 106), (1, 106)]
    control.answered(lowers[0], "accepted")
    assert control.step() == []  # one lower still unanswered: no raise yet
    control.answered(lowers[1], "accepted")
    assert _answer(control, control.step()) == [("CP-2", 2, 106)]
    # One stops: its charger's default stays 0 A (the others use the room), they get 16 A.
    control.stop(1)
    assert _answer(control, control.step()) == [("CP-0", 0, 160), ("CP-2", 2, 160)]
    assert control.defaults["CP-1"].confirmed == 0


def test_a_charger_that_does_not_answer_is_counted_at_its_maximum() -> None:
    """A lower left unanswered: the charger counts at its maximum, the others are lowered to
    make room for it."""
    control = Controller()
    control.set_tree(
        [Circuit(1, 320)], [Charger("A", 1, 160), Charger("B", 1, 320), Charger("C", 1, 320)]
    )
    _settle(control)
    control.start(1, "A", 1)
    control.start(2, "B", 1)
    _settle(control)
    assert [control.transactions[t].confirmed for t in (1, 2)] == [160, 160]
    control.start(3, "C", 1)
    [lower_a, lower_b] = sorted(control.step(), key=lambda p: p.charger_id)
    control.answered(lower_a, "unanswered")
    control.answered(lower_b, "accepted")
    pushes = control.step()
    # A is offered its share again only at its next event; B and C share what A leaves.
    assert {(p.charger_id, p.limit) for p in pushes} == {("B", 80)}


def test_a_busy_chargers_default_is_counted_until_lowered_to_0() -> None:
    """A transaction starts at a charger with a 6 A default: it gets its own 6 A TxProfile, and
    once that is accepted the default goes to 0 A; the charger counts the higher of the two
    until both are answered, and its transaction is raised only then."""
    control = Controller()
    control.set_tree([Circuit(1, 320)], [Charger("A", 1, 320), Charger("B", 1, 320)])
    _settle(control)
    control.start(1, "A", 1)
    pin, lower_b = control.step()  # transactions', idle defaults'
    assert (pin.transaction_id, pin.limit) == (1, 60)
    assert (lower_b.charger_id, lower_b.transaction_id, lower_b.limit) == ("B", None, 0)
    charger_a = control.charger("A")
    assert charger_a is not None
    control.answered(lower_b, "accepted")
    assert control.step() == []  # the pin is in flight: A's default stays, no raise
    control.answered(pin, "accepted")
    [lower_a] = control.step()
    assert (lower_a.charger_id, lower_a.transaction_id, lower_a.limit) == ("A", None, 0)
    assert control.step() == []  # A's default is still in flight: no raise
    assert control.charger_load(charger_a) == 60
    control.answered(lower_a, "accepted")
    assert _answer(control, control.step()) == [("A", 1, 320)]
    assert control.defaults["A"].confirmed == 0


def test_a_transaction_a_little_under_its_default_still_gets_its_own_profile() -> None:
    """The circuit's minimum was 10 A (the default) and is now 6 A, the charger's maximum
    9.5 A: its transaction's share is 0.5 A under the default it draws, a lower too small to
    send by itself; it is sent anyway, and accepted before the default goes to 0 A under it."""
    control = Controller()
    control.set_tree([Circuit(1, 320, min_current=100)], [Charger("A", 1, 320)])
    _settle(control)
    assert control.defaults["A"].confirmed == 100
    control.set_tree([Circuit(1, 320, min_current=60)], [Charger("A", 1, 95)])
    control.start(1, "A", 1)
    pushes = control.step()
    assert [(p.transaction_id, p.limit) for p in pushes] == [(1, 95)]
    _answer(control, pushes)
    assert [(p.transaction_id, p.limit) for p in control.step()] == [(None, 0)]


def test_a_busy_charger_whose_default_is_not_known_counts_at_its_maximum() -> None:
    """The busy charger's default lower goes unanswered: it counts at its maximum (16 A) from
    then on, whatever its transaction is given: idle, that one keeps 6 A and the other
    charger's gets 16 A, not the 26 A it would get beside a charger counted at 6 A; and the
    charger's transaction is not lowered to 0 A for it."""
    control = Controller()
    control.set_tree([Circuit(1, 320)], [Charger("A", 1, 160), Charger("B", 1, 320)])
    _settle(control)
    control.start(1, "A", 1)
    _answer(control, control.step())  # the pin, and B's default
    for push in control.step():
        control.answered(push, "unanswered" if push.transaction_id is None else "accepted")
    control.start(2, "B", 1)
    _settle(control)
    control.set_kind(1, "idle")
    _settle(control)
    charger_a = control.charger("A")
    assert charger_a is not None and control.defaults["A"].failed
    assert control.charger_load(charger_a) == 160
    assert [control.transactions[t].confirmed for t in (1, 2)] == [60, 160]
    assert max(control.loads(1).values()) <= 320


def test_a_charger_counted_at_its_maximum_shares_it_within_what_fits() -> None:
    """``whole``: a charger counted at its maximum takes it from the circuit up front and its
    transactions share that maximum; where its maximum does not fit (10 A of 16 A), they get
    what does (the first 10 A, the second waits: no room for its minimum)."""
    tree = Tree.of([Circuit(1, 400)], [Charger("A", 1, 160), Charger("B", 1, 320)])
    demands = [Demand(1, "A", 0), Demand(2, "A", 1), Demand(3, "B", 2)]
    limits, _ = allocate_all(tree, demands, whole=["A"])
    assert limits == {1: 80, 2: 80, 3: 240}
    small = Tree.of([Circuit(1, 100)], [Charger("A", 1, 160)])
    assert allocate_all(small, demands[:2], whole=["A"])[0] == {1: 100, 2: 0}


# The property.


@st.composite
def _trees(draw: st.DrawFn) -> Tree:
    n = draw(st.integers(1, 5))
    circuits: list[Circuit] = []
    for i in range(1, n + 1):
        parent = draw(st.sampled_from([None, *(c.id for c in circuits)]))
        parent_phases = 3 if parent is None else circuits[parent - 1].phases
        max_current = draw(st.integers(60, 640))
        circuits.append(
            Circuit(
                i,
                max_current=max_current,
                phases=draw(st.sampled_from([1, 3])) if parent_phases == 3 else 1,
                parent_id=parent,
                min_current=draw(st.sampled_from([60, 60, 80, 100])),
                reserve=draw(st.integers(0, min(100, max_current))),
            )
        )
    chargers = [
        Charger(
            f"CP-{j}",
            circuit_id=draw(st.integers(1, n)),
            max_current=draw(st.integers(60, 320)),
            wiring=ROTATIONS[draw(st.sampled_from(sorted(ROTATIONS)))],
        )
        for j in range(draw(st.integers(1, 6)))
    ]
    return Tree.of(circuits, chargers)


@dataclass
class _Physical:
    """What the simulated chargers really apply: each one's TxDefaultProfile and each
    transaction's TxProfile (None: it has none, its charger's default applies)."""

    default: dict[str, int]
    tx: dict[int, int | None]
    charger_of: dict[int, str]

    def apply(self, push: Push) -> None:
        if push.transaction_id is None:
            self.default[push.charger_id] = push.limit
        elif push.transaction_id in self.tx:
            self.tx[push.transaction_id] = push.limit

    def draw(self, charger_id: str, in_flight: list[Push]) -> int:
        """The most the charger may draw now: as applied, then after each of its unanswered
        pushes in the order sent (a charger handles its CALLs one by one)."""
        default = self.default[charger_id]
        mine = {t: v for t, v in self.tx.items() if self.charger_of[t] == charger_id}

        def total() -> int:
            if not mine:
                return default  # a transaction may start any moment, at the default
            return sum(default if v is None else v for v in mine.values())

        most = total()
        for push in in_flight:
            if push.charger_id != charger_id:
                continue
            if push.transaction_id is None:
                default = push.limit
            elif push.transaction_id in mine:
                mine[push.transaction_id] = push.limit
            most = max(most, total())
        return most


def _check(control: Controller, physical: _Physical, in_flight: list[Push]) -> None:
    """Every circuit phase (and every ancestor's): reserve + what each charger may really draw
    (at most its maximum) ≤ maxCurrent. The controller counts more (an offline or silent
    charger at its maximum): that is its margin, not the property."""
    for sub in control.trees.values():
        totals = {(c.id, p): c.reserve for c in sub.circuits.values() for p in range(3)}
        for charger in sub.chargers.values():
            draw = min(physical.draw(charger.id, in_flight), charger.max_current)
            for slot in sub.slots_of(charger):
                totals[slot] += draw
        for (circuit_id, phase), total in totals.items():
            limit = sub.circuits[circuit_id].max_current
            assert total <= limit, f"circuit {circuit_id} L{phase + 1}: {total} > {limit}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees(), data=st.data())
def test_no_circuit_is_ever_over_its_breaker(tree: Tree, data: st.DataObject) -> None:
    """Random trees, wirings and event orders (starts, stops, statuses, chargers going away
    and coming back or booting, answers accepted, refused or lost, in any order across
    chargers): no circuit phase is ever over, also while limits change. The chargers start
    with a 0 A default (a safe state, as evgate's would be) and have one connector each."""
    control = Controller()
    control.set_tree(tree.circuits.values(), tree.chargers.values())
    physical = _Physical({c: 0 for c in tree.chargers}, {}, {})
    in_flight: list[Push] = []
    next_tx = 0
    chargers = sorted(tree.chargers)
    in_flight += control.step()
    _check(control, physical, in_flight)
    for _ in range(data.draw(st.integers(5, 60))):
        op = data.draw(
            st.sampled_from(
                ["start", "stop", "kind", "online", "boot", "answer", "answer", "settle"]
            )
        )
        if op == "start":
            charger_id = data.draw(st.sampled_from(chargers))
            busy = charger_id in physical.charger_of.values()
            # One connector per charger: a TxDefaultProfile holds per connector, so a second
            # connector's transaction could draw a second default (README: load management).
            if control.charger(charger_id).online and not busy:  # type: ignore[union-attr]
                control.start(next_tx, charger_id, 1)
                physical.tx[next_tx], physical.charger_of[next_tx] = None, charger_id
                next_tx += 1
        elif op == "stop" and control.transactions:
            tx = data.draw(st.sampled_from(sorted(control.transactions)))
            control.stop(tx)
            del physical.tx[tx], physical.charger_of[tx]
            in_flight[:] = [p for p in in_flight if p.transaction_id != tx]
        elif op == "kind" and control.transactions:
            tx = data.draw(st.sampled_from(sorted(control.transactions)))
            control.set_kind(tx, data.draw(st.sampled_from(["full", "idle", None])))
        elif op == "boot":
            control.rebooted(data.draw(st.sampled_from(chargers)))
        elif op == "online":
            charger_id = data.draw(st.sampled_from(chargers))
            online = not control.charger(charger_id).online  # type: ignore[union-attr]
            if not online:
                # Its pushes are lost; it may have applied any of them.
                for push in [p for p in in_flight if p.charger_id == charger_id]:
                    in_flight.remove(push)
                    if data.draw(st.booleans()):
                        physical.apply(push)
            control.set_online(charger_id, online)
        elif op == "settle":
            # Every charger answers Accepted, promptly, until nothing is left to send.
            for _ in range(50):
                if not in_flight:
                    break
                push = in_flight.pop(0)
                physical.apply(push)
                control.answered(push, "accepted")
                _check(control, physical, in_flight)
                in_flight += control.step()
                _check(control, physical, in_flight)
        elif op == "answer" and in_flight:
            # One charger answers in order; chargers answer in any order.
            oldest: dict[str, Push] = {}
            for push in in_flight:
                oldest.setdefault(push.charger_id, push)
            push = data.draw(st.sampled_from(sorted(oldest.values(), key=lambda p: p.id)))
            in_flight.remove(push)
            outcome = data.draw(st.sampled_from(["accepted", "accepted", "rejected", "unanswered"]))
            if outcome == "accepted" or (outcome == "unanswered" and data.draw(st.booleans())):
                physical.apply(push)
            control.answered(push, outcome)  # type: ignore[arg-type]
        _check(control, physical, in_flight)
        in_flight += control.step()
        _check(control, physical, in_flight)


def test_a_stopped_transactions_charger_returns_within_its_default_budget() -> None:
    """Two chargers on a 60 A circuit (minimum 60 A): one default may be 60 A at a time. A
    transaction at one charger, not drawing (kind None), lets the other's default rise to
    60 A; the first charger's default, 60 A when its transaction started, is lowered to 0 A
    before that, so when its transaction stops 60 A at most may start, not 120 A (the gap the
    property found: a busy charger's default was neither counted nor lowered)."""
    tree = Tree.of(
        [Circuit(2, 60, phases=1, min_current=60)],
        [Charger("CP-1", 2, 60, wiring=(0,)), Charger("CP-2", 2, 60, wiring=(0,))],
    )
    control = Controller()
    control.set_tree(tree.circuits.values(), tree.chargers.values())
    physical = _Physical({"CP-1": 0, "CP-2": 0}, {}, {})
    in_flight = control.step()

    def settle() -> None:
        for _ in range(50):
            if not in_flight:
                return
            push = in_flight.pop(0)
            physical.apply(push)
            control.answered(push, "accepted")
            _check(control, physical, in_flight)
            in_flight.extend(control.step())
            _check(control, physical, in_flight)

    settle()
    starter = next(c for c, v in physical.default.items() if v == 60)
    control.start(0, starter, 1)
    physical.tx[0], physical.charger_of[0] = None, starter
    control.set_kind(0, None)
    in_flight.extend(control.step())
    settle()
    other = "CP-2" if starter == "CP-1" else "CP-1"
    assert physical.default == {starter: 0, other: 60}
    control.stop(0)
    del physical.tx[0], physical.charger_of[0]
    _check(control, physical, in_flight)
    in_flight.extend(control.step())
    settle()
    assert physical.default == {starter: 0, other: 60}  # no room for a second default


# Review findings (rev26lm).


def test_a_refused_pin_does_not_leave_its_transaction_at_0_a() -> None:
    """A charger that refuses TxProfiles (or a transactionId it does not know yet) but keeps
    TxDefaultProfiles: the pin is refused, and the 0 A default sent behind it in the same step
    is accepted. Its transaction then draws 0 A with room for it, and nothing sends a value
    again (retry waits for a kind change or a reconnect). Before the change it kept drawing
    its 6 A default."""
    control = Controller()
    control.set_tree([Circuit(1, 320)], [Charger("A", 1, 320)])
    _settle(control)
    control.start(1, "A", 1)
    for push in control.step():
        control.answered(push, "rejected" if push.transaction_id is not None else "accepted")
    for _ in range(5):
        for push in control.step():
            control.answered(push, "rejected" if push.transaction_id is not None else "accepted")
    # What the charger applies: no TxProfile of the transaction's, so its default.
    assert control.defaults["A"].confirmed > 0, "the EV draws 0 A on an empty 32 A circuit"


def test_two_chargers_counted_whole_share_what_the_circuit_is_over() -> None:
    """Two busy chargers (16 A each) on a 16 A circuit whose TxDefaultProfiles are refused:
    both are counted whole, and ``allocate_all`` takes the whole over (16 A) from each of
    them, so both transactions are given 0 A for good (before the change: 8 A each), though
    0 A changes nothing of what they are counted at (each at its maximum)."""
    tree = Tree.of([Circuit(1, 160)], [Charger("A", 1, 160), Charger("B", 1, 160)])
    control = Controller()
    control.set_tree(tree.circuits.values(), tree.chargers.values())

    def answer(pushes: list[Push]) -> None:
        for push in pushes:
            control.answered(push, "rejected" if push.transaction_id is None else "accepted")

    answer(control.step())
    control.start(1, "A", 1)
    control.start(2, "B", 1)
    for _ in range(5):
        answer(control.step())
    assert [control.transactions[t].confirmed for t in (1, 2)] == [80, 80]


def test_a_default_lost_while_busy_is_sent_again_at_the_stop() -> None:
    """A busy charger's 0 A default goes unanswered: once its transaction stops it is idle
    with an unknown default, counted at its maximum (32 A) and never asked again until its
    next start: the other charger of the 32 A circuit gets no default and its transaction
    waits at 0 A for good."""
    control = Controller()
    control.set_tree([Circuit(1, 320)], [Charger("A", 1, 320), Charger("B", 1, 320)])
    _settle(control)
    control.start(1, "A", 1)
    _answer(control, control.step())  # the pin, and B's default
    [lost] = control.step()
    assert (lost.charger_id, lost.transaction_id, lost.limit) == ("A", None, 0)
    control.answered(lost, "unanswered")
    _settle(control)
    control.stop(1)
    _settle(control)
    control.start(2, "B", 1)
    _settle(control)
    assert control.transactions[2].confirmed > 0, "B waits at 0 A beside an idle charger"


def test_chargers_counted_whole_take_a_circuits_over_once_among_them() -> None:
    """What a circuit is over is taken once from the chargers counted whole on it: equal
    parts (8 A each of two 16 A chargers on 16 A), and what one cannot give (a 2 A charger on
    a 2 A circuit beside a 16 A one) is taken from the other, so they fit together."""
    tree = Tree.of([Circuit(1, 160)], [Charger("A", 1, 160), Charger("B", 1, 160)])
    demands = [Demand(1, "A", 0), Demand(2, "B", 1)]
    assert allocate_all(tree, demands, whole=["A", "B"])[0] == {1: 80, 2: 80}
    small = Tree.of(
        [Circuit(1, 400), Circuit(2, 20, parent_id=1, min_current=10)],
        [Charger("A", 2, 160), Charger("B", 2, 20)],
    )
    limits = allocate_all(small, demands, whole=["A", "B"])[0]
    assert sum(limits.values()) <= 20 and limits[1] > 0, limits
