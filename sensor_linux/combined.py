"""Two sources in one sensor: ``hybrid`` and ``cross-check``.

* hybrid: exec from eBPF (cheap, filtered in the kernel); audit carries the rest of the rule set
  (identity, file watches, configuration changes) with every exec rule removed from it.
* cross-check: both exec streams; eBPF's execs are the output, audit's are matched against them,
  and every exec seen by one and not the other becomes an ``exec_unmatched`` event.

One thread alternates between the two: the ring buffer is drained without waiting, then the
audit socket is waited on briefly, so neither starves the other.
"""

from __future__ import annotations

import select
import time
from typing import Callable

from common.schema import ACTION_PROCESS_CREATE, Event, get_path
from common.sinks import Sink, emit
from sensor_linux.audit.pipeline import AuditPipeline
from sensor_linux.audit.session import UnicastSession
from sensor_linux.batching import BATCH_SECONDS, StopFlag
from sensor_linux.crosscheck import CrossCheck
from sensor_linux.ebpf.probes import ExecProbes
from sensor_linux.ebpf.source import EbpfPipeline

WAIT_SECONDS = 0.05
TICK_SECONDS = 1.0


class CombinedSession:
    """What StatusReporter reads: the mode and the losses of both sources."""

    def __init__(self, mode: str, audit: UnicastSession, probes: ExecProbes) -> None:
        self.mode = mode
        self.audit = audit
        self.probes = probes
        self.control = audit.control

    def lost(self) -> int:
        return self.audit.lost() + sum(self.probes.drops().values())


class Combined:
    def __init__(self, mode: str, audit_pipeline: AuditPipeline, ebpf_pipeline: EbpfPipeline,
                 session: UnicastSession, render: Callable[[Event], str], sink: Sink,
                 crosscheck: CrossCheck | None) -> None:
        self.mode = mode
        self.audit_pipeline = audit_pipeline
        self.ebpf_pipeline = ebpf_pipeline
        self.session = session
        self.render = render
        self.sink = sink
        self.crosscheck = crosscheck
        audit_pipeline.on_event = self._from_audit
        if crosscheck is not None:
            ebpf_pipeline.on_event = self._from_ebpf

    def _from_audit(self, event: Event) -> bool:
        """Audit's execs never reach the output here: eBPF reports them."""
        if get_path(event, "event.action") != ACTION_PROCESS_CREATE:
            return True
        if self.crosscheck is not None and get_path(event, "event.outcome") == "success":
            self._report(self.crosscheck.add("auditd", event))
        return False

    def _from_ebpf(self, event: Event) -> None:
        if self.crosscheck is not None and get_path(event, "event.outcome") == "success":
            self._report(self.crosscheck.add("ebpf", event))

    def _report(self, events: list[Event]) -> None:
        for event in events:
            emit(self.sink, event, self.render(event))

    def pump(self, stop: StopFlag, on_tick: Callable[[], None] | None = None) -> None:
        assert self.session.records is not None
        sock = self.session.records.sock
        sock.setblocking(False)
        probes = self.ebpf_pipeline.probes
        assert probes is not None
        next_tick = time.monotonic() + TICK_SECONDS
        while not stop.is_set():
            probes.poll(0)
            ready, _, _ = select.select([sock], [], [], WAIT_SECONDS)
            if ready:
                while True:
                    try:
                        lines, lost = self.session.records.read_records()
                    except BlockingIOError:
                        break
                    self.audit_pipeline.stats.socket_overflows += lost
                    for line in lines:
                        self.audit_pipeline.feed(line)
                stop.wait(BATCH_SECONDS)  # see batching.py
            if time.monotonic() >= next_tick:
                self.audit_pipeline.tick()
                self.ebpf_pipeline.tick()
                if self.crosscheck is not None:
                    self._report(self.crosscheck.expire())
                self.sink.flush()
                if on_tick is not None:
                    on_tick()
                next_tick = time.monotonic() + TICK_SECONDS

    def finish(self) -> None:
        """Drain both sources and settle every exec still waiting for its twin."""
        probes = self.ebpf_pipeline.probes
        if probes is not None and probes.bpf is not None:
            probes.poll(0)
        self.audit_pipeline.close()
        self.ebpf_pipeline.finish()
        if self.crosscheck is not None:
            self._report(self.crosscheck.finish())
        self.sink.flush()

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"audit": self.audit_pipeline.summary(),
                                  "ebpf": self.ebpf_pipeline.summary()}
        if self.crosscheck is not None:
            out["crosscheck"] = self.crosscheck.summary()
        return out
