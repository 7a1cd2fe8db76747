"""Two sources in one sensor: ``hybrid`` and ``cross-check``.

* hybrid: exec from eBPF (cheap, filtered in the kernel); audit carries the rest of the rule set
  (identity, file watches, configuration changes) with every exec rule removed from it.
* cross-check: both exec streams; eBPF's execs are the output, audit's are matched against them,
  and every exec seen by one and not the other becomes an ``exec_unmatched`` event.

One thread alternates between the two: the ring buffer is drained without waiting, then the
audit socket is waited on briefly, so neither starves the other.
"""

from __future__ import annotations

import time
from typing import Callable

from common.schema import ACTION_PROCESS_CREATE, Event, get_path
from common.sinks import Output, emit
from sensor_linux.audit.capture import WaitingLines
from sensor_linux.audit.netlink import AuditNetlinkError
from sensor_linux.audit.pipeline import audit_pipeline, open_error_log
from sensor_linux.audit.session import AuditBusy, AuditLocked, UnicastSession
from sensor_linux.audit.source import NetlinkInput, audit_error
from sensor_linux.batching import Gather
from sensor_linux.crosscheck import CrossCheck
from sensor_linux.ebpf.probes import ExecProbes
from sensor_linux.ebpf.source import RingInput, ebpf_pipeline, load_probes, probe_summary
from sensor_linux.enrich import Enricher
from sensor_linux.runner import BaseSource, Input, RunConfig, SourceError


class RingFirst:
    """The audit input, read after the ring: an audit event (a connect, an open) needs the
    exec of its process, which the ring may still hold while it gathers."""

    def __init__(self, audit: NetlinkInput, ring: RingInput) -> None:
        self.audit = audit
        self.ring = ring

    def fileno(self) -> int:
        return self.audit.fileno()

    def due_in(self) -> float | None:
        return None  # the ring input is due on its own

    def drain(self) -> float:
        self.ring.read()
        return self.audit.drain()


class CombinedSource(BaseSource):
    """``--source hybrid|cross-check``: the exec probes and an audit unicast session."""

    serving = True
    seed = True

    def __init__(self, config: RunConfig, sink: Output, say: Callable[[str], None]) -> None:
        self.name = self.mode = config.source
        self.config = config
        self.sink = sink
        self.say = say
        self.enricher = Enricher()
        hybrid = self.mode == "hybrid"
        # Both modes run syscall audit beside the probes: an exec it cannot record says so.
        self.ebpf_pipeline = ebpf_pipeline(self.enricher, sink, config.keep_exec_attempts,
                                           observe=None if hybrid else self._from_ebpf,
                                           mark_unaudited=True)
        self.probes = ExecProbes(on_execs=self.ebpf_pipeline.feed_many,
                                 argv_size=config.ebpf_argv_bytes,
                                 ringbuf_pages=config.ebpf_ringbuf_pages)
        # hybrid: only the user's rules, exec rules removed; cross-check: audit's exec rules too.
        self.audit = UnicastSession(rules=[] if hybrid else None,
                                    rules_file=config.rules_file, state_file=config.state_file,
                                    without_exec=hybrid)
        self.error_log = open_error_log(config.parse_error_log, config.max_bytes,
                                        config.generations)
        self.audit_pipeline = audit_pipeline("ecs", sink, enricher=self.enricher,
                                             error_log=self.error_log, route=self._from_audit)
        self.crosscheck: CrossCheck | None = None

    def open(self) -> None:
        try:
            load_probes(self.probes)
            self.audit.open()
        except SourceError:
            self.probes.close()
            raise
        except (AuditBusy, AuditLocked, AuditNetlinkError) as exc:
            self.probes.close()
            self.audit.close()
            raise audit_error(exc) from exc
        self.say(f"source: {self.mode}: eBPF exec probes (loaded in "
                 f"{self.probes.load_seconds:.2f} s) and audit netlink unicast")
        if self.mode == "cross-check":
            # Both sources listen from now on: a miss of an earlier exec is no miss.
            self.crosscheck = CrossCheck(self.enricher.host, start=time.time(),
                                         audit_at_boot=self.audit.audit_at_boot)

    def inputs(self) -> list[Input]:
        assert self.audit.records is not None
        ring = RingInput(self.probes, Gather())
        return [ring, RingFirst(NetlinkInput(self.audit.records,
                                                 WaitingLines(self.audit_pipeline)), ring)]

    def files(self) -> list[str]:
        return [self.config.state_file, self.error_log.path]

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
            emit(self.sink, event)

    def tick(self) -> None:
        self.audit_pipeline.tick()
        self.ebpf_pipeline.tick()
        if self.crosscheck is not None:
            self._report(self.crosscheck.expire())

    def lost(self) -> int:
        probes = sum(self.probes.drops().values()) if self.probes.bpf is not None else 0
        return (self.audit.lost() if self.audit.control is not None else 0) + probes

    def backlog(self) -> int | None:
        control = self.audit.control
        return control.status().backlog if control is not None else None

    def release(self) -> None:
        self.audit.close()

    def finish(self) -> None:
        """Drain both sources and settle every exec still waiting for its twin."""
        if self.probes.bpf is not None:
            self.probes.poll(0)
        self.audit_pipeline.close()
        self.ebpf_pipeline.close()
        if self.crosscheck is not None:
            self._report(self.crosscheck.finish())
        self.sink.flush()

    def close(self) -> None:
        self.probes.close()
        self.error_log.close()

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"audit": self.audit_pipeline.summary(),
                                  "ebpf": probe_summary(self.ebpf_pipeline, self.enricher,
                                                        self.probes)}
        if self.crosscheck is not None:
            out["crosscheck"] = self.crosscheck.summary()
        return out
