"""How long-running processes tune Python's cyclic garbage collector.

Python's cyclic collector runs after every 700 new containers by default: a few dozen events.
An event is a tree of dicts and lists, freed by reference counting alone, so those runs find
nothing, while each one walks what survived, and every tenth walks more:

* the sensor: what survived is the process table's entries. On the eBPF sensor at 1000
  execs/s the collector cost about a tenth of the sensor's CPU with the default; at this
  setting the sensor costs what it does with the collector disabled.
* the collector: what survived is every event of the frames being decoded, admitted and
  stored (a set of 16 frames is 800,000 containers). Decoding, admitting and storing the
  fleet mix in sets of 16 frames: 106-113 µs per event with the default, 72-83 at this
  setting (/tmp scratch, alternating; `ttpsensor bench collect` has the end-to-end figure).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

GC_YOUNG_CONTAINERS = 20_000
GC_OLDER_RUNS = 20


@contextlib.contextmanager
def steady_gc(restore: bool = True) -> Iterator[None]:
    """A process's main loop with what startup made (modules, probes, a seeded process
    table) moved out of the collector's walks (gc.freeze), and the collector run less often;
    as before when the loop ends, unless ``restore`` is False: for a process that exits with
    the loop (a replay), where the old thresholds would start a full collection of everything
    the run built just before the exit (0.1 s, 4 % of a 20,000-exec replay)."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_CONTAINERS, GC_OLDER_RUNS, GC_OLDER_RUNS)
    try:
        yield
    finally:
        if restore:
            gc.set_threshold(*before)
            gc.unfreeze()
