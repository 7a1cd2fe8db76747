"""The live eBPF source: probes -> events -> renderer -> sink. The runner
(sensor_linux/runner.py) owns its lifecycle."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Callable

from common.render import RENDERERS
from common.schema import Event
from common.sinks import Sink, emit
from sensor_linux.attempts import AttemptFolder
from sensor_linux.ebpf.events import EbpfEventBuilder
from sensor_linux.ebpf.probes import FLAG_NO_ENTRY, ExecProbes, ExecRecord, PrerequisiteError
from sensor_linux.enrich import Enricher
from sensor_linux.runner import TICK_SECONDS, RunConfig, SourceError


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


class RingInput:
    """The probes' ring buffer: polled, never waited on (its callbacks feed the pipeline)."""

    def __init__(self, probes: ExecProbes) -> None:
        self.probes = probes

    def fileno(self) -> int | None:
        return None

    def drain(self) -> bool:
        self.probes.poll(0)
        return False


def load_probes(probes: ExecProbes) -> None:
    """Compile and load the probes, or a source error that says why not."""
    try:
        probes.load()
    except (PrerequisiteError, ValueError) as exc:
        raise SourceError(str(exc)) from exc


class EbpfSource:
    """``--source ebpf``: the exec probes alone."""

    name = "ebpf"
    serving = True
    seed = True
    status_events = True
    tick_seconds = TICK_SECONDS

    def __init__(self, config: RunConfig, sink: Sink, say: Callable[[str], None]) -> None:
        self.say = say
        self.enricher = Enricher()
        self.pipeline = EbpfPipeline(EbpfEventBuilder(self.enricher), RENDERERS[config.fmt],
                                     sink, keep_exec_attempts=config.keep_exec_attempts)
        self.probes = ExecProbes(on_exec=self.pipeline.feed, argv_size=config.ebpf_argv_bytes,
                                 ringbuf_pages=config.ebpf_ringbuf_pages)
        self.pipeline.probes = self.probes

    def open(self) -> None:
        load_probes(self.probes)
        self.say(f"source: eBPF exec probes, compiled and loaded in "
                 f"{self.probes.load_seconds:.2f} s")

    def inputs(self) -> list[RingInput]:
        return [RingInput(self.probes)]

    def files(self) -> list[str]:
        return []

    def tick(self) -> None:
        self.pipeline.tick()

    def done(self) -> bool:
        return False

    def lost(self) -> int:
        return sum(self.probes.drops().values()) if self.probes.bpf is not None else 0

    def backlog(self) -> int | None:
        return None

    def release(self) -> None:
        pass  # nothing machine-global: the probes go with the process

    def finish(self) -> None:
        if self.probes.bpf is not None:
            self.probes.poll(0)  # what is already in the ring buffer
        self.pipeline.finish()

    def close(self) -> None:
        self.probes.close()

    def summary(self) -> dict[str, object]:
        return self.pipeline.summary()
