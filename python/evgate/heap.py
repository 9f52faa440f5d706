"""The process's cyclic garbage collector, set for a server that holds many connections.

At CPython's defaults (thresholds 700, 10, 10) an ``evgate serve`` worker ran a full
collection every quarter of a second through a reconnect storm, each one traversing every
tracked object: the ~130,000 that start-up makes (modules, classes, functions, the API's
OpenAPI schemas), which live as long as the process, and every connection's. Each took
75 - 150 ms of CPU, together about half of the 1.3 - 1.5 s a storm of 2,000 chargers took
to boot again (bench/README.md, "Reconnect storm"). Two settings remove that:

* start-up's objects are frozen (``gc.freeze``) once the process has started: no collection
  looks at them again;
* the youngest generation holds 10,000 allocations, not 700, so that what a CALL has in
  flight while it waits for its commit (futures, tasks, coroutine frames) dies before a
  collection sees it, instead of surviving into the older generations, whose growth is what
  triggers a full collection.

Garbage that is a cycle is still collected, somewhat later; nothing else changes.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_GENERATION", "settle"]

YOUNG_GENERATION = 10_000


def settle() -> None:
    """Call once the process has started, before it serves: collect what start-up left
    behind, freeze what survived, and set the thresholds (see the module)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)
