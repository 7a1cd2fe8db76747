"""The live eBPF source: probe records through the one pipeline (common/pipeline.py). The
runner (sensor_linux/runner.py) owns its lifecycle."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from common import compiled
from common.pipeline import Pipeline
from common.schema import Event
from common.sinks import Output
from sensor_linux.attempts import AttemptFolder
from sensor_linux.batching import BATCH_SECONDS, Gather
from sensor_linux.ebpf.events import EbpfEventBuilder
from sensor_linux.ebpf.probes import FLAG_NO_ENTRY, ExecProbes, ExecRecord, PrerequisiteError
from sensor_linux.enrich import Enricher
from sensor_linux.runner import BaseSource, RunConfig, SourceError


@dataclass
class RecordStats:
    received: int = 0
    failed_execs: int = 0
    arg_faults: int = 0             # arguments the probes could not read (null in args)
    kernel_execs: int = 0           # execs with no execve syscall (the kernel's own helpers)


class ExecRecords:
    """The decoder of the eBPF pipeline: a probe record is an item already; it is counted."""

    def __init__(self) -> None:
        self.stats = RecordStats()

    def decode(self, record: ExecRecord) -> list[ExecRecord]:
        stats = self.stats
        stats.received += 1
        # The rest only counts the unusual exec: tested at once, not a counter at a time.
        if record.retval < 0 or record.arg_faults or record.flags & FLAG_NO_ENTRY:
            stats.failed_execs += record.failed
            stats.arg_faults += record.arg_faults
            stats.kernel_execs += bool(record.flags & FLAG_NO_ENTRY)
        return [record]

    def tick(self) -> list[ExecRecord]:
        return []

    def flush(self) -> list[ExecRecord]:
        return []

    def originals(self, item: ExecRecord, reason: str) -> list[bytes | str]:
        return [f"exec of pid {item.pid}"]  # said, not kept: a record is not text

    def summary(self) -> dict[str, object]:
        return asdict(self.stats)


def ebpf_pipeline(enricher: Enricher, sink: Output, keep_exec_attempts: bool,
                  observe: Callable[[Event], None] | None = None,
                  mark_unaudited: bool = False,
                  epoch_offset: float | None = None) -> Pipeline:
    """Probe records -> events -> ``sink``; PATH-walk misses folded; with
    ``mark_unaudited``, execs that syscall audit cannot record say so. ``epoch_offset``:
    see :class:`EbpfEventBuilder` (a replay's)."""
    builder = EbpfEventBuilder(enricher, mark_unaudited=mark_unaudited,
                               epoch_offset=epoch_offset)
    return Pipeline(ExecRecords(), sink, builder=builder,
                    folder=AttemptFolder(keep_all=keep_exec_attempts), observe=observe)


def probe_summary(pipeline: Pipeline, enricher: Enricher,
                  probes: ExecProbes) -> dict[str, object]:
    """The pipeline's counters with what the probes lost and what /proc reading cost."""
    out = pipeline.summary()
    records: RecordStats = pipeline.decoder.stats  # type: ignore[attr-defined]
    execs = max(records.received - records.failed_execs, 1)
    out["proc_reads"] = enricher.proc_reads
    out["proc_reads_per_exec"] = round(enricher.proc_reads / execs, 4)
    out["compiled_modules"] = compiled.summary()  # common/compiled.py
    if probes.bpf is not None:
        out["probe_drops"] = probes.drops()
        out["probe_load_seconds"] = round(probes.load_seconds, 3)
        if probes.released is not None:
            out["compiler_code_released_mib"] = round(probes.released.code_bytes / 2**20, 1)
    return out


class RingInput:
    """The probes' ring buffer, read every ``gather.seconds`` (sensor_linux/batching.py:
    larger batches cost less per event) or at once when the probes wake the reader: for an
    image with no link (a deleted file, a memfd), hashed through /proc/PID/exe, which a
    short-lived process takes with it, and when the ring is filling (``execsnoop.c``:
    ``wake_flags``). The loop waits on the wake-up descriptor until the read is due
    (:meth:`due_in`). The hybrid and cross-check sources read it before each audit batch too
    (:meth:`read`): audit events need the execs before them in the process table."""

    def __init__(self, probes: ExecProbes, gather: Gather) -> None:
        self.probes = probes
        self.gather = gather

    def fileno(self) -> int:
        return self.probes.wake_fd()

    def due_in(self) -> float | None:
        return self.gather.due_in()

    def drain(self) -> float:
        self.read()
        return BATCH_SECONDS

    def read(self) -> None:
        """Read what the ring holds now, due or not."""
        self.probes.clear_wake()
        self.gather.read()
        self.probes.poll(0)


def load_probes(probes: ExecProbes) -> None:
    """Compile and load the probes, or a source error that says why not."""
    try:
        probes.load()
    except (PrerequisiteError, ValueError) as exc:
        raise SourceError(str(exc)) from exc


class EbpfSource(BaseSource):
    """``--source ebpf``: the exec probes alone."""

    name = "ebpf"
    serving = True
    seed = True

    def __init__(self, config: RunConfig, sink: Output, say: Callable[[str], None]) -> None:
        self.say = say
        self.enricher = Enricher()
        self.pipeline = ebpf_pipeline(self.enricher, sink, config.keep_exec_attempts)
        self.probes = ExecProbes(on_execs=self.pipeline.feed_many,
                                 argv_size=config.ebpf_argv_bytes,
                                 ringbuf_pages=config.ebpf_ringbuf_pages)

    def open(self) -> None:
        load_probes(self.probes)
        self.say(f"source: eBPF exec probes, compiled and loaded in "
                 f"{self.probes.load_seconds:.2f} s")

    def inputs(self) -> list[RingInput]:
        return [RingInput(self.probes, Gather())]

    def tick(self) -> None:
        self.pipeline.tick()

    def lost(self) -> int:
        return sum(self.probes.drops().values()) if self.probes.bpf is not None else 0

    def finish(self) -> None:
        if self.probes.bpf is not None:
            self.probes.poll(0)  # what is already in the ring buffer
        self.pipeline.close()

    def close(self) -> None:
        self.probes.close()

    def summary(self) -> dict[str, object]:
        return probe_summary(self.pipeline, self.enricher, self.probes)
