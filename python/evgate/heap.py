"""The process's cyclic garbage collector, set for a server that holds many connections.

At CPython's defaults (thresholds 700, 10, 10) an ``evgate serve`` worker ran a full
collection every quarter of a second through a reconnect storm, each one traversing every
tracked object: the ~130,000 that start-up makes (modules, classes, functions, the API's
OpenAPI schemas), which live as long as the process, and every connection's. Each took
75 - 150 ms of CPU, together about half of the 1.3 - 1.5 s a storm of 2,000 chargers took
to boot again (bench/README.md, "Reconnect storm"). Two settings remove that:

* what the process made before it starts serving (every module, class and function its
  imports made: most of start-up's objects) is frozen (``gc.freeze``): no collection looks
  at it again. Frozen before the app starts, not after: a charger connecting while the rest
  starts would be frozen too, and a cycle among frozen objects is never collected;
* the youngest generation holds 10,000 allocations, not 700, so that what a CALL has in
  flight while it waits for its commit (futures, tasks, coroutine frames) dies before a
  collection sees it, instead of surviving into the older generations, whose growth is what
  triggers a full collection.

Garbage that is a cycle (and was made after the freeze) is still collected, somewhat later.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_GENERATION", "settle"]

YOUNG_GENERATION = 10_000


def settle() -> None:
    """Call once per process, after its imports and before it starts serving: collect what
    the imports left behind, freeze what survived, and set the thresholds (see the module)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)
