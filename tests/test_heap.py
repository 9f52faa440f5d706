"""evgate/heap.py: what a started process does to its garbage collector."""

from __future__ import annotations

import gc

from evgate import heap


def test_settle_freezes_what_start_up_made_and_widens_the_young_generation() -> None:
    thresholds = gc.get_threshold()
    made_at_start_up = [[i] for i in range(1000)]  # tracked containers that live on
    try:
        heap.settle()
        assert gc.get_freeze_count() >= len(made_at_start_up)
        assert gc.get_threshold() == (heap.YOUNG_GENERATION, *thresholds[1:])
        # A cycle made afterwards is still collected.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
