"""The live eBPF source: probes -> events -> renderer -> sink, with the same status counters
interface as the audit pipeline (StatusReporter reads either)."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

from common.schema import Event
from common.sinks import Sink, emit
from sensor_linux.attempts import AttemptFolder
from sensor_linux.ebpf.events import EbpfEventBuilder
from sensor_linux.batching import BATCH_SECONDS, StopFlag
from sensor_linux.ebpf.probes import FLAG_NO_ENTRY, ExecProbes, ExecRecord

TICK_SECONDS = 1.0


@dataclass
class EbpfStats:
    received: int = 0
    output_lines: int = 0
    internal_errors: int = 0
    failed_execs: int = 0
    arg_faults: int = 0             # arguments the probes could not read (null in args)
    kernel_execs: int = 0           # execs with no execve syscall (the kernel's own helpers)


class EbpfPipeline:
    def __init__(self, builder: EbpfEventBuilder, render: Callable[[Event], str],
                 sink: Sink, on_event: Callable[[Event], None] | None = None,
                 keep_exec_attempts: bool = False) -> None:
        self.builder = builder
        self.folder = AttemptFolder(keep_all=keep_exec_attempts)
        self.on_event = on_event  # sees each event after it is written (cross-check)
        self.render = render
        self.sink = sink
        self.stats = EbpfStats()
        self.probes: ExecProbes | None = None

    def feed(self, record: ExecRecord) -> None:
        self.stats.received += 1
        self.stats.failed_execs += record.failed
        self.stats.arg_faults += record.arg_faults
        self.stats.kernel_execs += bool(record.flags & FLAG_NO_ENTRY)
        try:
            event = self.builder.build(record)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the stream
            self.stats.internal_errors += 1
            sys.stderr.write(f"ttpsensor: internal error on exec of pid {record.pid}: "
                             f"{type(exc).__name__}: {exc}\n")
            return
        self._output(self.folder.take(event))

    def tick(self) -> None:
        """Release failed attempts that no exec followed."""
        self._output(self.folder.expire())

    def finish(self) -> None:
        self._output(self.folder.expire(everything=True))

    def _output(self, events: list[Event]) -> None:
        for event in events:
            try:
                line = self.render(event)
            except Exception as exc:  # noqa: BLE001
                self.stats.internal_errors += 1
                sys.stderr.write(f"ttpsensor: internal error rendering an event: "
                                 f"{type(exc).__name__}: {exc}\n")
                continue
            emit(self.sink, event, line)
            self.stats.output_lines += 1
            if self.on_event is not None:
                self.on_event(event)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self.stats)
        out["exec_attempts"] = self.folder.summary()
        enricher = self.builder.enricher
        execs = max(self.stats.received - self.stats.failed_execs, 1)
        out["proc_reads"] = enricher.proc_reads
        out["proc_reads_per_exec"] = round(enricher.proc_reads / execs, 4)
        if self.probes is not None and self.probes.bpf is not None:
            out["probe_drops"] = self.probes.drops()
            out["probe_load_seconds"] = round(self.probes.load_seconds, 3)
        return out


class EbpfSession:
    """What StatusReporter needs from a source: its mode and what it lost."""

    mode = "ebpf"

    def __init__(self, probes: ExecProbes) -> None:
        self.probes = probes

    def lost(self) -> int:
        return sum(self.probes.drops().values()) if self.probes.bpf is not None else 0


def pump(probes: ExecProbes, pipeline: EbpfPipeline, stop: StopFlag,
         on_tick: Callable[[], None] | None = None) -> None:
    """Drain the ring buffer until ``stop`` is set: one drain per BATCH_SECONDS, not one
    wake-up per exec (see batching.py); the sink is flushed and ``on_tick`` called once a
    second."""
    next_tick = time.monotonic() + TICK_SECONDS
    while not stop.is_set():
        probes.poll(0)
        stop.wait(BATCH_SECONDS)
        if time.monotonic() >= next_tick:
            pipeline.tick()
            pipeline.sink.flush()
            if on_tick is not None:
                on_tick()
            next_tick = time.monotonic() + TICK_SECONDS
