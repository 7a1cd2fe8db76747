"""``ttpsensor bench wake``: what a batch costs when it follows a pause, against the same
events fed without one.

The live audit sources read every 20 ms (sensor_linux/batching.py), and the overhead lab found
their CPU to be a cost per exec plus a cost per batch (docs/overhead.md). This measures that
second part without the kernel: recorded execs go through the whole audit pipeline (parse,
assemble, build, enrich without /proc, TTPHash, ECS line) in batches of a few execs, each after
a pause, and the CPU each exec took (the thread's, not the pause's) is set against the same
pipeline fed without pauses. The reference is ``json.dumps`` of the same events under the same
pattern: a pause that slows a C function too is the machine's (what ran on the core meanwhile
took its caches), not the pipeline's.

Two last tables measure the host alone. First the CPU a read of one byte in each of a few
thousand pages costs right after a pause, against the same reads without one, in 4 KiB pages
and in 2 MiB ones (transparent huge pages, asked for by madvise). On a VM the first touch of a page
after a pause can need the guest's and the host's page tables walked again from memory; where
that costs microseconds a page, a process pays for each page of its working set it touches
after each sleep, which a Python process has many of (docs/overhead.md, 2026-12-06, later).
Then how fast the interpreter runs two fixed pieces of work (``interpreter_costs``): a host
slower at them moves every ratio of ours against a C or Rust peer.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click

from common import ecs
from common.bench import Row, print_table, timing_fresh
from common.schema import Event
from sensor_linux.audit.pipeline import audit_pipeline
from sensor_linux.enrich import Enricher
from sensor_linux.procfs import anon_huge_pages_kib
from sensor_linux.stages import audit_log_or_record, read_audit_log, recording_options

BATCH_SIZES = (1, 2, 5, 20)
WARM_EXECS = 1000  # fed first, untimed: the per-binary caches fill, as in a running sensor
BATCHES = 100  # per batch size
TOUCHED_PAGES = 2000  # 8 MiB at one byte a 4 KiB page: more than the caches hold
HUGE_PAGE = 2 << 20
PAGE_ROUNDS = 10  # each page figure is the median of this many rounds


@dataclass
class Collected:
    """An output that renders each event as an ECS line, as the sensor's does, and keeps the
    events (for the reference) instead of writing the lines."""

    events: list[Event] = field(default_factory=list)

    def prepare(self, event: Event) -> str | None:
        return ecs.render(event)

    def write_event(self, event: Event, prepared: Any) -> bool:
        self.events.append(event)
        return True

    def write(self, line: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def group_events(lines: list[bytes]) -> list[list[bytes]]:
    """The lines of an auditd log, one list per event: consecutive lines with one
    ``msg=audit(STAMP)`` token (a recording has each event's records together)."""
    groups: list[list[bytes]] = []
    last = None
    for line in lines:
        parts = line.split(b" ", 2)
        stamp = parts[1] if len(parts) > 1 else None
        if stamp != last or not groups:
            groups.append([])
            last = stamp
        groups[-1].append(line)
    return groups


def needed(sizes: tuple[int, ...], batches: int, continuous: int, warm: int) -> int:
    """How many events one run feeds: warm-up, the continuous run, then the batches."""
    return warm + continuous + sum(size * batches for size in sizes)


def _cpu_us(feed: Callable[[list[Any]], None], batches: list[list[Any]],
            gap: float) -> float:
    """The thread's CPU per item of ``feed`` over ``batches``, ``gap`` seconds apart (the
    pause itself is not counted)."""
    cpu = 0.0
    items = 0
    for batch in batches:
        start = time.thread_time()
        feed(batch)
        cpu += time.thread_time() - start
        items += len(batch)
        if gap:
            time.sleep(gap)
    return cpu / max(items, 1) * 1e6


def _slices(items: list[Any], start: int, size: int, count: int) -> list[list[Any]]:
    return [items[start + i * size:start + (i + 1) * size] for i in range(count)]


def wake_costs(groups: list[list[bytes]], gap: float, sizes: tuple[int, ...] = BATCH_SIZES,
               batches: int = BATCHES, continuous: int = 2000,
               warm: int = WARM_EXECS) -> tuple[int, list[Row]]:
    """Rows for the pipeline and for ``json.dumps``: µs per exec fed without pauses, then in
    batches of each of ``sizes`` execs ``gap`` seconds apart, and what each wake adds.
    Returns (events built, rows)."""
    want = needed(sizes, batches, continuous, warm)
    if len(groups) < want:
        raise click.ClickException(
            f"the log holds {len(groups):,} events and this run feeds {want:,} (record more "
            "with --execs, give a longer --audit-log, or fewer --batches/--continuous)")
    collected = Collected()
    pipeline = audit_pipeline("ecs", collected,  # type: ignore[arg-type]
                              enricher=Enricher(live=False, host_files=True))

    def feed(batch: list[list[bytes]]) -> None:
        for group in batch:
            pipeline.feed_many(group)

    feed(groups[:warm])
    at = warm + continuous
    no_pause = _cpu_us(feed, [groups[warm:at]], 0.0)
    batched = {}
    for size in sizes:
        batched[size] = _cpu_us(feed, _slices(groups, at, size, batches), gap)
        at += size * batches
    pipeline.close()
    built = len(collected.events)

    safe = [ecs.to_json_safe(event) for event in collected.events]
    reference = {size: _cpu_us(_dumps, _slices(safe, 0, size, batches), gap)
                 for size in sizes}
    return built, (_rows("pipeline", no_pause, batched)
                   + _rows("json.dumps", _cpu_us(_dumps, [safe[:continuous]], 0.0), reference))


def _dumps(events: list[dict[str, Any]]) -> None:
    for event in events:
        json.dumps(event)


def _rows(what: str, base: float, batched: dict[int, float]) -> list[Row]:
    """The figure without pauses, then each batch size's against it; the wake's cost is the
    extra per exec times the execs of a batch."""
    rows = [Row(f"{what}, no pause", base)]
    for size, us in batched.items():
        rows.append(Row(f"{what}, {size} a batch: a wake {(us - base) * size:+,.0f} µs", us,
                        "no pause", us / base if base > 0 else 0.0))
    return rows


@dataclass
class PageCosts:
    """µs of the thread's CPU per page, one read in each of ``pages`` pages: without a pause
    and after ``pause_s`` seconds of sleep, in 4 KiB pages (small) and in memory asked for in
    2 MiB pages (huge; ``huge_given``: whether the kernel gave that region any)."""

    pause_s: float
    pages: int
    small_no_pause_us: float
    small_paused_us: float
    huge_no_pause_us: float
    huge_paused_us: float
    huge_given: bool


def page_costs(gap: float, pages: int = TOUCHED_PAGES, rounds: int = PAGE_ROUNDS) -> PageCosts:
    """The host's cost of a page read after a ``gap``-second pause; each figure the median
    of ``rounds``."""
    small_no_pause, small_paused, _ = _page_reads(False, pages, gap, rounds)
    huge_no_pause, huge_paused, given = _page_reads(True, pages, gap, rounds)
    return PageCosts(gap, pages, small_no_pause, small_paused, huge_no_pause, huge_paused,
                     given)


def _page_reads(huge: bool, pages: int, gap: float, rounds: int) -> tuple[float, float, bool]:
    """µs per page without a pause and after ``gap`` in a fresh region (asked for in 2 MiB
    pages when ``huge``), and whether the region got any huge page."""
    size = pages * mmap.PAGESIZE + HUGE_PAGE  # room to start at a 2 MiB boundary
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        anchor = ctypes.c_char.from_buffer(memory)
        start = -ctypes.addressof(anchor) % HUGE_PAGE
        del anchor  # (the mapping cannot close while a ctypes object holds it)
        if huge:
            memory.madvise(mmap.MADV_HUGEPAGE)
        before = anon_huge_pages_kib()
        memory.write(b"\1" * size)  # every page there before the first timed read
        given = anon_huge_pages_kib() > before
        offsets = range(start, start + pages * mmap.PAGESIZE, mmap.PAGESIZE)
        return (_touch_us(memory, offsets, 0.0, rounds), _touch_us(memory, offsets, gap, rounds),
                given)
    finally:
        memory.close()


def page_touch_rows(costs: PageCosts) -> list[Row]:
    """``costs`` as rows: each page size without the pause, then after it against that."""
    rows = []
    huge = "2 MiB pages " + ("(given)" if costs.huge_given else "(asked for, not given)")
    for kind, no_pause, paused in (
            ("4 KiB pages", costs.small_no_pause_us, costs.small_paused_us),
            (huge, costs.huge_no_pause_us, costs.huge_paused_us)):
        rows.append(Row(f"{kind}, no pause", no_pause))
        rows.append(Row(f"{kind}, after a {costs.pause_s * 1000:g} ms pause", paused,
                        "no pause", paused / no_pause if no_pause > 0 else 0.0))
    return rows


def page_costs_line(costs: PageCosts, after: PageCosts | None = None) -> str:
    """A sentence of ``costs``, for reports made on the host (the overhead lab's); with
    ``after``, what the same reads cost when the lab's modes had run."""
    huge = "in 2 MiB pages" if costs.huge_given else "2 MiB pages asked for, not given:"
    line = (f"The host: a 4 KiB page first read after a {costs.pause_s * 1000:g} ms pause "
            f"costs {costs.small_paused_us:.2f} µs of CPU ({costs.small_no_pause_us:.2f} "
            f"without the pause; {huge} {costs.huge_paused_us:.2f})")
    if after is not None:
        line += (f", and {after.small_paused_us:.2f} µs ({after.small_no_pause_us:.2f}) "
                 "measured again after the modes")
    return (line + ". Where it costs microseconds, a process pays for every page it touches "
            "after each sleep (`ttpsensor bench wake`, docs/overhead.md).")


# The interpreter's speed on this host, with work fixed here rather than our pipeline's (a
# change of ours must not move it). Our sensors are Python and their peers C and Rust, so a
# host that runs Python slower moves every ratio against a peer, and the page reads above do
# not show it: on the eighteenth session's VM json.dumps of the stage bench's events took 2.2
# times as long as on the VMs before, its pages cost less, and the eBPF modes' ratio to auditd
# went from 0.43x to 0.6x (docs/overhead.md). Not common.bench.sample_linux_event: our schema
# and TTPHash code build that one, and it changes with them.
_REFERENCE_EVENT: dict[str, Any] = {
    "@timestamp": "2026-12-07T22:00:00.123456Z",
    "event": {"kind": "event", "category": ["process"], "type": ["start"],
              "action": "process_create", "outcome": "success"},
    "host": {"name": "host-01", "id": "5d41402abc4b2a76b9719d911017c592"},
    "process": {"pid": 41234, "executable": "/usr/bin/true", "name": "true",
                "args": ["/usr/bin/true", "ttplab-0123456789", "--flag", "value 17"],
                "command_line": "/usr/bin/true ttplab-0123456789 --flag 'value 17'",
                "working_directory": "/root", "user": {"id": "0", "name": "root"},
                "hash": {"sha256": "0f" * 32},
                "parent": {"pid": 41200, "executable": "/usr/bin/python3.11",
                           "name": "python3", "args": ["python3", "-m", "loadgen"]}},
    "ttphash": {"value": "ab" * 32, "complete": True},
}
_REFERENCE_RECORD = (
    b'type=SYSCALL msg=audit(1796680000.123:45865): arch=c000003e syscall=59 success=yes '
    b'exit=0 a0=55d0c1a2b3c0 a1=55d0c1a2b400 a2=7ffd3c1e9a80 a3=0 items=2 ppid=41200 '
    b'pid=41234 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 '
    b'ses=3 comm="true" exe="/usr/bin/true" subj=unconfined key="ttpsensor-exec"')
INTERPRETER_ITEMS = 2000


@dataclass
class InterpreterCosts:
    """µs of the process's CPU an item, each the median of ``rounds`` runs of ``items``
    (common.bench.timing_fresh, no cyclic collection inside a run):
    ``json.dumps`` of a fixed process event (the C encoder walking a dict, as every renderer's
    reference does) and a fixed SYSCALL record's fields split into a dict by a Python loop
    (the interpreter's own bytecode)."""

    items: int
    rounds: int
    dumps_us: float
    parse_us: float


def interpreter_costs(items: int = INTERPRETER_ITEMS,
                      rounds: int = PAGE_ROUNDS) -> InterpreterCosts:
    """This host's speed at two fixed pieces of interpreter work (no pause between them)."""
    def dumps() -> None:
        for _ in range(items):
            json.dumps(_REFERENCE_EVENT)

    def parse() -> None:
        for _ in range(items):
            _reference_fields(_REFERENCE_RECORD)

    def cpu_us(run: Callable[[], None]) -> float:
        spent = timing_fresh(lambda: None, lambda _: run(), items, rounds).cpu_us
        assert spent is not None  # (None only when another process's CPU is asked for)
        return spent

    return InterpreterCosts(items, rounds, cpu_us(dumps), cpu_us(parse))


def _reference_fields(record: bytes) -> dict[bytes, bytes]:
    """A record's ``key=value`` fields, quotes taken off: deliberately plain Python."""
    fields = {}
    for part in record.split(b" "):
        key, sep, value = part.partition(b"=")
        if sep:
            fields[key] = value.strip(b'"')
    return fields


def interpreter_rows(costs: InterpreterCosts) -> list[Row]:
    return [Row("json.dumps of a fixed process event", costs.dumps_us),
            Row("a fixed SYSCALL record's fields, split by a Python loop", costs.parse_us)]


def interpreter_line(costs: InterpreterCosts, after: InterpreterCosts | None = None) -> str:
    """A sentence of ``costs`` for the lab's report; with ``after``, the same measured again
    when the modes had run."""
    line = (f"The interpreter: json.dumps of a fixed process event {costs.dumps_us:.2f} µs, "
            f"a fixed audit record split by a Python loop {costs.parse_us:.2f} µs")
    if after is not None:
        line += (f"; {after.dumps_us:.2f} and {after.parse_us:.2f} µs measured again after "
                 "the modes")
    return (line + ". Our sensors are Python and their peers C and Rust: on a host that runs "
            "these slower, every ratio against a peer is higher (docs/overhead.md).")


def _touch_us(memory: mmap.mmap, offsets: range, gap: float, rounds: int) -> float:
    """The thread's CPU per page of one read in each page at ``offsets``, each round after
    ``gap`` seconds of sleep (a round after no sleep follows the one before at once)."""
    times = []
    for _ in range(rounds):
        if gap:
            time.sleep(gap)
        start = time.thread_time()
        for offset in offsets:
            memory[offset]
        times.append(time.thread_time() - start)
    return statistics.median(times) / len(offsets) * 1e6


@click.command("wake")
@recording_options("Audit records to replay (auditd's log format, each event's records "
                   "together).", execs=6000)
@click.option("--gap-ms", default=20.0, show_default=True,
              help="The pause between batches (the live audit sources wait 20 ms).")
@click.option("--batches", default=BATCHES, show_default=True,
              help="Batches timed for each batch size.")
@click.option("--continuous", default=2000, show_default=True,
              help="Execs fed without pauses, the figure the batches are set against.")
@click.option("--warm", default=WARM_EXECS, show_default=True,
              help="Execs fed first, untimed, so that the per-binary caches are warm.")
def bench_wake(audit_log: Path | None, execs: int, gap_ms: float, batches: int,
               continuous: int, warm: int) -> None:
    """CPU per event of the audit pipeline when a batch of 1, 2, 5 or 20 events follows a pause,
    against the same pipeline fed without pauses, and json.dumps under the same pattern."""
    if gap_ms < 0:
        raise click.BadParameter("a pause is zero or more milliseconds", param_hint="--gap-ms")
    if batches < 1 or continuous < 1 or warm < 0:
        raise click.BadParameter("--batches and --continuous take a positive number, "
                                 "--warm zero or more")
    with tempfile.TemporaryDirectory(prefix="ttpsensor-wake-") as directory:
        audit_log = audit_log_or_record(audit_log, execs, directory)
        groups = group_events(read_audit_log(audit_log))
        built, rows = wake_costs(groups, gap_ms / 1000, batches=batches,
                                 continuous=continuous, warm=warm)
    print_table(rows, f"CPU per event, batches {gap_ms:g} ms apart ({audit_log.name}: "
                      f"{built:,} events built)")
    print_table(page_touch_rows(page_costs(gap_ms / 1000)),
                f"the host: CPU per page of one read in each of {TOUCHED_PAGES:,} pages, "
                f"median of {PAGE_ROUNDS} rounds", item="page")
    print_table(interpreter_rows(interpreter_costs()),
                f"the host's interpreter: CPU per item, {INTERPRETER_ITEMS:,} items, median of "
                f"{PAGE_ROUNDS} rounds", item="item")
