"""``ttpsensor bench stages``: what each stage of the hot path costs per event, for the audit
and the eBPF path, next to a plain ``json.dumps`` of the same events measured in the same run.

The stages follow the data: decode (audit text: parse and assemble; eBPF: the ring-buffer
record), build (the whole event: facts, enrichment, parent, fingerprint), and within it facts
(what the records say), enrich (the ``process`` map: users, digests, package) and fingerprint
(the TTPHash); then render (an ECS line) and sink (the line into a rotating events file).
Each is timed alone over the output of the one before, median of three rounds; a round after
the first finds the per-binary caches warm, as a running sensor does. The reference makes a
regression visible on a noisy machine: compare ratios, not microseconds.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import click

from common import ecs, ttphash
from common.pipeline import Keeper
from common.schema import ACTION_PROCESS_CREATE, Event
from common.sinks import RotatingFileSink
from sensor_linux.audit.events import AuditEventBuilder
from sensor_linux.audit.pipeline import AuditDecoder
from sensor_linux.audit.records import SYSCALL
from sensor_linux.ebpf.events import EbpfEventBuilder
from sensor_linux.ebpf.probes import ExecRecord, decode
from sensor_linux.enrich import Enricher

ROUNDS = 3
# The recording the output-comparison tool replays (raw records from a real kernel), when this
# runs from a source tree.
DEFAULT_EBPF_STREAM = Path(__file__).resolve().parent.parent / "tests" / "data" / \
    "ebpf-stream.jsonl"


@dataclass
class Stage:
    name: str
    per_event_us: float
    ratio: float  # to json.dumps of the same events


def _median_us(run: Callable[[], object], events: int) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / max(events, 1) * 1e6


def _each(func: Callable[[Any], object], items: list[Any]) -> Callable[[], None]:
    def run() -> None:
        for item in items:
            func(item)
    return run


def _enricher() -> Enricher:
    # Recorded input: /proc is not read (its pids are gone), the files it names are this
    # host's (the recording was made here), as `ttpsensor audisp` replays a log of this host.
    return Enricher(live=False, host_files=True)


def _tail(events: list[Event], facts: list[Any], enricher: Enricher,
          directory: str) -> list[tuple[str, Callable[[], object], int]]:
    """The stages every path shares, from facts on."""
    lines = [ecs.render(event) for event in events]

    def sink() -> None:
        out = RotatingFileSink(os.path.join(directory, "events.jsonl"), 1 << 30, 1)
        for line in lines:
            out.write(line)
        out.flush()
        out.close()
        os.unlink(os.path.join(directory, "events.jsonl"))

    return [
        ("  enrich (process map)", _each(enricher.process_map, facts), len(facts)),
        ("  fingerprint (TTPHash)", _each(ttphash.compute, events), len(events)),
        ("render (ECS line)", _each(ecs.render, events), len(events)),
        ("sink (rotating file)", sink, len(lines)),
    ]


def audit_stages(lines: list[bytes], directory: str) -> tuple[int, list[Stage]]:
    """Stage costs on audit text ``lines``; returns (exec events, stages)."""
    def decode_all() -> list[Any]:
        decoder = AuditDecoder(Keeper(None))
        items = [item for line in lines for item in decoder.decode(line)]
        return items + decoder.flush()

    items = decode_all()
    builder = AuditEventBuilder(_enricher())
    events = [builder.build(item) for item in items]
    execs = [(item, event) for item, event in zip(items, events)
             if event["event"]["action"] == ACTION_PROCESS_CREATE]
    exec_items = [item for item, _ in execs]
    exec_events = [event for _, event in execs]

    def syscall_of(item: Any) -> Any:
        return next(r for r in item.records if r.rtype == SYSCALL)

    facts = [builder.exec_facts(item, syscall_of(item)) for item in exec_items]

    def build_all() -> None:
        fresh = AuditEventBuilder(builder.enricher)
        for item in items:
            fresh.build(item)

    plan = [
        ("decode (parse, assemble)", decode_all, len(items)),
        ("build (whole event)", build_all, len(items)),
        ("  facts (from the records)",
         _each(lambda item: builder.exec_facts(item, syscall_of(item)), exec_items),
         len(exec_items)),
        *_tail(exec_events, facts, builder.enricher, directory),
    ]
    return len(exec_events), _measure(plan, exec_events)


def ebpf_stages(records: list[bytes], directory: str) -> tuple[int, list[Stage]]:
    """Stage costs on raw eBPF ring-buffer ``records``; returns (events, stages)."""
    decoded: list[ExecRecord] = [decode(data) for data in records]
    builder = EbpfEventBuilder(_enricher())
    events = [builder.build(record) for record in decoded]
    facts = [builder.facts(record) for record in decoded]

    def build_all() -> None:
        for record in decoded:
            builder.build(record)

    plan = [
        ("decode (ring-buffer record)", _each(decode, records), len(records)),
        ("build (whole event)", build_all, len(decoded)),
        ("  facts (from the record)", _each(builder.facts, decoded), len(decoded)),
        *_tail(events, facts, builder.enricher, directory),
    ]
    return len(events), _measure(plan, events)


def _measure(plan: Iterable[tuple[str, Callable[[], object], int]],
             events: list[Event]) -> list[Stage]:
    safe = [ecs.to_json_safe(event) for event in events]  # json.dumps takes no bytes
    reference = _median_us(_each(json.dumps, safe), len(safe))
    stages = [Stage("json.dumps (reference)", reference, 1.0)]
    total = 0.0
    for name, run, count in plan:
        us = _median_us(run, count)
        if not name.startswith(" "):
            total += us
        stages.append(Stage(name, us, us / reference))
    stages.append(Stage("total (decode + build + render + sink)", total, total / reference))
    return stages


def read_ebpf_stream(path: Path, events: int) -> list[bytes]:
    """The raw records of a recording (tests/record_ebpf.py), repeated up to ``events``."""
    with open(path) as f:
        records = [bytes.fromhex(json.loads(line)["record"]) for line in f if line.strip()]
    if not records:
        raise click.ClickException(f"{path} holds no records")
    return [records[i % len(records)] for i in range(max(events, len(records)))]


def read_audit_log(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().splitlines(keepends=True)


def _print(title: str, events: int, stages: list[Stage]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"{title}: {events} exec events, median of {ROUNDS}")
    table.add_column("stage")
    table.add_column("µs / event", justify="right")
    table.add_column("× json.dumps", justify="right")
    for stage in stages:
        table.add_row(stage.name, f"{stage.per_event_us:.1f}", f"{stage.ratio:.2f}")
    Console(width=100).print(table)


@click.command("stages")
@click.option("--audit-log", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Audit records to replay (auditd's log format). Without it, this many "
                   "execs are recorded through audit netlink first (--execs; needs root).")
@click.option("--execs", default=5000, show_default=True,
              help="Execs to record when no --audit-log is given.")
@click.option("--ebpf-stream", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=DEFAULT_EBPF_STREAM if DEFAULT_EBPF_STREAM.exists() else None,
              show_default=True,
              help="Raw eBPF records (tests/record_ebpf.py), repeated up to --ebpf-events.")
@click.option("--ebpf-events", default=5000, show_default=True)
def bench_stages(audit_log: Path | None, execs: int, ebpf_stream: Path | None,
                 ebpf_events: int) -> None:
    """µs per event of each stage (decode, build, facts, enrich, fingerprint, render, sink)
    on the audit and eBPF paths, against json.dumps of the same events in the same run."""
    with tempfile.TemporaryDirectory(prefix="ttpsensor-stages-") as directory:
        if audit_log is None:
            if os.geteuid() != 0:
                raise click.ClickException("recording audit needs root; or give --audit-log")
            from sensor_linux.audit.bench import record
            audit_log = Path(directory) / "recording.log"
            record(audit_log, execs)
        count, stages = audit_stages(read_audit_log(audit_log), directory)
        _print(f"audit path ({audit_log.name})", count, stages)
        if ebpf_stream is None:
            click.echo("eBPF path: no recording (give --ebpf-stream)", err=True)
            return
        count, stages = ebpf_stages(read_ebpf_stream(ebpf_stream, ebpf_events), directory)
        _print(f"eBPF path ({ebpf_stream.name})", count, stages)
