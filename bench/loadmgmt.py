"""Load management: a storm of transaction starts over many circuit trees (issue 18).

Measures the smart-charging engine's decisions (``evgate.loadmgmt.control.Controller``, pure,
one core, no I/O; every charger answers at once with Accepted) while ``--starts``
transactions start in random order over ``--circuits`` circuits (sites of one feeder and
four sub-circuits, ``--starts`` chargers spread over the sub-circuits):

* CPU per recompute: one step of one tree (allocation, change plan), p50 / p99 / max;
* time until every tree is settled (no push left to send), and pushes per second.

Peer, in the same run: the same step over one tree holding the whole fleet (what an engine
that did not keep trees apart would recompute on every event), timed on a sample of events.
The ratio says what per-tree recomputation saves.

``python bench/loadmgmt.py [--circuits 10000] [--starts 100000] [--json]``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from evgate.loadmgmt.allocator import Charger, Circuit
from evgate.loadmgmt.control import Controller, Push


def _fleet(circuits: int, chargers: int) -> tuple[list[Circuit], list[Charger]]:
    sites = max(1, circuits // 5)
    made: list[Circuit] = []
    subs: list[int] = []
    next_id = 1
    for _ in range(sites):
        feeder = next_id
        made.append(Circuit(feeder, max_current=1600, min_current=60))
        next_id += 1
        for _ in range(4):
            made.append(Circuit(next_id, max_current=630, parent_id=feeder, min_current=60))
            subs.append(next_id)
            next_id += 1
    fleet = [Charger(f"CP-{i}", subs[i % len(subs)], max_current=320) for i in range(chargers)]
    return made, fleet


def _settle(control: Controller, pushes: list[Push], step_times: list[float]) -> int:
    """Answer every push at once (Accepted) and step until nothing is left; pushes sent."""
    sent = 0
    while pushes:
        sent += len(pushes)
        for push in pushes:
            control.answered(push, "accepted")
        started = time.process_time()
        pushes = control.step()
        step_times.append(time.process_time() - started)
    return sent


def run(circuits: int, starts: int, sample: int) -> dict[str, float]:
    tree_circuits, chargers = _fleet(circuits, starts)
    control = Controller()
    control.set_tree(tree_circuits, chargers)
    step_times: list[float] = []
    _settle(control, control.step(), step_times)  # every charger's default first
    step_times.clear()
    order = list(range(starts))
    random.Random(18).shuffle(order)
    wall = time.perf_counter()
    pushes_sent = 0
    for tx, i in enumerate(order, start=1):
        control.start(tx, f"CP-{i}", 1)
        started = time.process_time()
        pushes = control.step()
        step_times.append(time.process_time() - started)
        pushes_sent += _settle(control, pushes, step_times)
    settled = time.perf_counter() - wall

    # The peer: one tree holding the whole fleet (all sites under one root), a sample of
    # starts on a fleet that already charges.
    whole = Controller()
    root = Circuit(0, max_current=10**9, min_current=60)
    whole.set_tree(
        [root, *(c if c.parent_id else Circuit(c.id, c.max_current, parent_id=0)
                 for c in tree_circuits)],
        chargers,
    )  # fmt: skip
    _settle(whole, whole.step(), [])
    for tx, i in enumerate(order[: starts - sample], start=1):
        whole.start(tx, f"CP-{i}", 1)
    _settle(whole, whole.step(), [])
    peer_times: list[float] = []
    for tx, i in enumerate(order[starts - sample :], start=starts - sample + 1):
        whole.start(tx, f"CP-{i}", 1)
        started = time.process_time()
        pushes = whole.step()
        peer_times.append(time.process_time() - started)
        _settle(whole, pushes, [])
    step_times.sort()
    per_tree = statistics.median(step_times)
    return {
        "circuits": len(tree_circuits),
        "starts": starts,
        "recomputes": len(step_times),
        "recompute_cpu_p50_ms": per_tree * 1e3,
        "recompute_cpu_p99_ms": step_times[int(len(step_times) * 0.99)] * 1e3,
        "recompute_cpu_max_ms": step_times[-1] * 1e3,
        "settled_s": settled,
        "pushes": pushes_sent,
        "pushes_per_s": pushes_sent / settled,
        "whole_fleet_recompute_cpu_p50_ms": statistics.median(peer_times) * 1e3,
        "whole_fleet_over_per_tree": statistics.median(peer_times) / per_tree,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--circuits", type=int, default=10_000)
    parser.add_argument("--starts", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=20, help="peer recomputes timed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.circuits, args.starts, args.sample)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:36} {value:,.3f}" if isinstance(value, float) else f"{key:36} {value:,}")


if __name__ == "__main__":
    main()
