"""Source: processes observed by scanning /proc.

Until the audit source sees execs as they happen, this is what the sensor can honestly report:
every running process, with the same enrichment and TTPHash an exec event gets, as ECS
``event.kind: state`` (an inventory, not a witnessed exec). It also seeds the process table, which
the audit and eBPF sources need at start for the parents of the first execs they see.
"""

from __future__ import annotations

from typing import Iterator

from common.schema import Event
from sensor_linux.enrich import Enricher
from sensor_linux.procfs import PROC, ProcessFacts, boot_time, list_pids, read_process


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
