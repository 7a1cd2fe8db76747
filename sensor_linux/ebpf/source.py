"""The live eBPF source: probes -> events -> renderer -> sink, with the same status counters
interface as the audit pipeline (StatusReporter reads either)."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

from common.schema import Event
from common.sinks import Sink, emit
from sensor_linux.ebpf.events import EbpfEventBuilder
from sensor_linux.batching import BATCH_SECONDS, StopFlag
from sensor_linux.ebpf.probes import ExecProbes, ExecRecord

TICK_SECONDS = 1.0


@dataclass
class EbpfStats:
    received: int = 0
    output_lines: int = 0
    internal_errors: int = 0


class EbpfPipeline:
    def __init__(self, builder: EbpfEventBuilder, render: Callable[[Event], str],
                 sink: Sink, on_event: Callable[[Event], None] | None = None) -> None:
        self.builder = builder
        self.on_event = on_event  # sees each event after it is written (cross-check)
        self.render = render
        self.sink = sink
        self.stats = EbpfStats()
        self.probes: ExecProbes | None = None

    def feed(self, record: ExecRecord) -> None:
        self.stats.received += 1
        try:
            event = self.builder.build(record)
            line = self.render(event)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the stream
            self.stats.internal_errors += 1
            sys.stderr.write(f"ttpsensor: internal error on exec of pid {record.pid}: "
                             f"{type(exc).__name__}: {exc}\n")
            return
        emit(self.sink, event, line)
        self.stats.output_lines += 1
        if self.on_event is not None:
            self.on_event(event)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self.stats)
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


def pump(probes: ExecProbes, sink: Sink, stop: StopFlag,
         on_tick: Callable[[], None] | None = None) -> None:
    """Drain the ring buffer until ``stop`` is set: one drain per BATCH_SECONDS, not one
    wake-up per exec (see batching.py); the sink is flushed and ``on_tick`` called once a
    second."""
    next_tick = time.monotonic() + TICK_SECONDS
    while not stop.is_set():
        probes.poll(0)
        stop.wait(BATCH_SECONDS)
        if time.monotonic() >= next_tick:
            sink.flush()
            if on_tick is not None:
                on_tick()
            next_tick = time.monotonic() + TICK_SECONDS
