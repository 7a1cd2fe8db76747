"""Source: processes observed by scanning /proc.

Until the audit source sees execs as they happen, this is what the sensor can honestly report:
every running process, with the same enrichment and TTPHash an exec event gets, as ECS
``event.kind: state`` (an inventory, not a witnessed exec). It also seeds the process table, which
the audit and eBPF sources need at start for the parents of the first execs they see.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from common.schema import Event
from common.sinks import Output, emit
from sensor_linux.enrich import Enricher
from sensor_linux.procfs import PROC, ProcessFacts, boot_time, list_pids, read_process
from sensor_linux.runner import BaseSource, RunConfig


class ProcScan:
    """Each :meth:`scan` yields events for processes not seen by an earlier scan."""

    def __init__(self, enricher: Enricher, proc: str = PROC) -> None:
        self.enricher = enricher
        self.proc = proc
        self.btime = boot_time(proc)
        self._seen: dict[int, int | None] = {}   # pid -> start ticks
        self.gone = 0

    def scan(self) -> Iterator[Event]:
        current: list[ProcessFacts] = []
        for pid in list_pids(self.proc):
            facts = read_process(pid, self.proc, self.btime)
            if facts is None or facts.executable is None:
                continue  # exited meanwhile, or a kernel thread (no image, no exec to report)
            current.append(facts)
        alive = {f.pid for f in current}
        for pid in [p for p in self._seen if p not in alive]:
            del self._seen[pid]
            self.enricher.table.remove(pid)
            self.gone += 1
        # Parents start before their children: oldest first gives every child its parent.
        current.sort(key=lambda f: (f.start_ticks or 0, f.pid))
        for facts in current:
            if self._seen.get(facts.pid, -1) == facts.start_ticks:
                continue
            self._seen[facts.pid] = facts.start_ticks
            yield self.enricher.process_event(facts, "procfs", kind="state",
                                              timestamp=facts.start_time)


def seed_process_table(enricher: Enricher) -> None:
    """Learn the running processes first, so the first execs already have their parents."""
    for _ in ProcScan(enricher).scan():
        pass


class ProcfsSource(BaseSource):
    """``--source procfs``: a scan every ``--interval`` seconds (``--once``: one scan). It
    holds no kernel handle: nothing to drop privileges for, no status to report."""

    name = "procfs"         # not serving, not seeded: the scan is the seeding

    def __init__(self, config: RunConfig, sink: Output, say: Callable[[str], None]) -> None:
        self.sink = sink
        self.tick_seconds = config.interval
        self.once = config.once
        self.enricher = Enricher()
        self.scanner = ProcScan(self.enricher)
        self.events = 0
        self.scans = 0
        self.started = time.monotonic()

    def tick(self) -> None:
        for event in self.scanner.scan():
            emit(self.sink, event)
            self.events += 1
        self.scans += 1

    def done(self) -> bool:
        return self.once and self.scans > 0

    def summary(self) -> dict[str, object]:
        hasher, table = self.enricher.hasher, self.enricher.table
        return {"events": self.events, "seconds": round(time.monotonic() - self.started, 3),
                "hash_cache_hits": hasher.hits, "hash_cache_misses": hasher.misses,
                "hash_errors": hasher.errors, "process_table": len(table),
                "pid_reuse_rejected": table.reuse_rejected}
