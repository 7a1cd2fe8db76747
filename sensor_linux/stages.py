"""``ttpsensor bench stages``: what each stage of the hot path costs per event, for the audit
and the eBPF path, next to a plain ``json.dumps`` of the same events measured in the same run.

The stages follow the data: decode (audit text: parse and assemble; eBPF: the ring-buffer
record), build (the whole event: facts, enrichment, parent, fingerprint), and within it facts
(what the records say), enrich (the ``process`` map: users, digests, package) and fingerprint
(the TTPHash); then render (an ECS line) and sink (the line into a rotating events file).
Each is timed alone over the output of the one before, median of three rounds; audit records
are parsed anew for each round of a stage that reads them (a record caches its fields once
read), while a round after the first finds the per-binary caches warm, as a running sensor
does. The reference makes a
regression visible on a noisy machine: compare ratios, not microseconds.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import click

from common import compiled, ecs, ttphash
from common.bench import Row, median_us_fresh, print_table
from common.pipeline import Keeper
from common.schema import ACTION_PROCESS_CREATE, Event
from common.sinks import RotatingFileSink
from sensor_linux.audit.assemble import AuditEvent
from sensor_linux.audit.events import AuditEventBuilder
from sensor_linux.audit.pipeline import AuditDecoder
from sensor_linux.audit.records import EXECVE, SYSCALL, Record, split_path
from sensor_linux.ebpf.events import EbpfEventBuilder
from sensor_linux.ebpf.probes import ExecRecord, decode, decode_path
from sensor_linux.enrich import Enricher

ROUNDS = 3
# The recording the output-comparison tool replays (raw records from a real kernel), when this
# runs from a source tree.
DEFAULT_EBPF_STREAM = Path(__file__).resolve().parent.parent / "tests" / "data" / \
    "ebpf-stream.jsonl"

# A stage: its name (indented: part of the stage above it, not added to the total), what an
# untimed step makes for each round, the timed work on it, and how many events it handles.
Plan = list[tuple[str, Callable[[], Any], Callable[[Any], object], int]]


def _same(value: Any) -> Callable[[], Any]:
    return lambda: value


def _each(func: Callable[[Any], object]) -> Callable[[list[Any]], None]:
    def run(items: list[Any]) -> None:
        for item in items:
            func(item)
    return run


def _enricher() -> Enricher:
    # Recorded input: /proc is not read (its pids are gone), the files it names are this
    # host's (the recording was made here), as `ttpsensor audisp` replays a log of this host.
    return Enricher(live=False, host_files=True)


def _tail(events: list[Event], facts: list[Any], enricher: Enricher, directory: str) -> Plan:
    """The stages every path shares, from facts on."""
    path = os.path.join(directory, "events.jsonl")

    def sink(lines: list[str]) -> None:
        out = RotatingFileSink(path, 1 << 30, 1)
        for line in lines:
            out.write(line)
        out.flush()
        out.close()
        os.unlink(path)

    return [
        ("  enrich (process map)", _same(facts), _each(enricher.process_map), len(facts)),
        # Through the sensor's memo, fresh each round: a new command of a known parent
        # finds the parent's part, a repeated event (the eBPF stream is replayed in a loop)
        # its whole hash.
        ("  fingerprint (TTPHash)", lambda: (events, ttphash.Memo()), _fingerprint,
         len(events)),
        ("render (ECS line)", _same(events), _each(ecs.render), len(events)),
        ("sink (rotating file)", lambda: [ecs.render(event) for event in events], sink,
         len(events)),
    ]


def _fingerprint(prepared: tuple[list[Event], ttphash.Memo]) -> None:
    events, memo = prepared
    for event in events:
        memo.compute(event)


def _syscall_of(item: AuditEvent) -> Record:
    return next(r for r in item.records if r.rtype == SYSCALL)


def audit_stages(lines: list[bytes], directory: str) -> tuple[int, list[Row]]:
    """Stage costs on audit text ``lines``; returns (exec events, rows)."""
    def decode_all(_: object = None) -> list[AuditEvent]:
        decoder = AuditDecoder(Keeper(None))
        items = [item for line in lines for item in decoder.decode(line)]
        return items + decoder.flush()

    def decode_execs() -> list[AuditEvent]:
        # Freshly parsed each round: a record caches its fields once they are read.
        return [item for item in decode_all() if any(r.rtype == EXECVE for r in item.records)]

    items = decode_all()
    builder = AuditEventBuilder(_enricher())
    events = [builder.build(item) for item in items]
    exec_events = [e for e in events if e["event"]["action"] == ACTION_PROCESS_CREATE]
    facts = [builder.exec_facts(item, _syscall_of(item)) for item in decode_execs()]

    def build_all(fresh: list[AuditEvent]) -> None:
        again = AuditEventBuilder(builder.enricher)
        for item in fresh:
            again.build(item)

    plan: Plan = [
        ("decode (parse, assemble)", _same(None), decode_all, len(items)),
        ("build (whole event)", decode_all, build_all, len(items)),
        ("  facts (from the records)", decode_execs,
         _each(lambda item: builder.exec_facts(item, _syscall_of(item))), len(facts)),
        *_tail(exec_events, facts, builder.enricher, directory),
    ]
    return len(exec_events), _measure(plan, exec_events)


def ebpf_stages(records: list[bytes], directory: str) -> tuple[int, list[Row]]:
    """Stage costs on raw eBPF ring-buffer ``records``; returns (events, rows)."""
    decoded: list[ExecRecord] = [decode(data) for data in records]
    builder = EbpfEventBuilder(_enricher())
    events = [builder.build(record) for record in decoded]
    facts = [builder.facts(record) for record in decoded]
    plan: Plan = [
        ("decode (ring-buffer record)", _same(records), _each(decode), len(records)),
        ("build (whole event)", _same(decoded), _each(builder.build), len(decoded)),
        ("  facts (from the record)", _same(decoded), _each(builder.facts), len(decoded)),
        *_tail(events, facts, builder.enricher, directory),
    ]
    return len(events), _measure(plan, events)


def _measure(plan: Plan, events: list[Event]) -> list[Row]:
    safe = [ecs.to_json_safe(event) for event in events]  # json.dumps takes no bytes
    reference = median_us_fresh(_same(safe), _each(json.dumps), len(safe), ROUNDS)
    rows = [Row("json.dumps (reference)", reference)]
    total = 0.0
    for name, prepare, run, count in plan:
        us = median_us_fresh(prepare, run, count, ROUNDS)
        if not name.startswith(" "):
            total += us
        rows.append(Row(name, us, "json.dumps", us / reference))
    rows.append(Row("total (decode + build + render + sink)", total, "json.dumps",
                    total / reference))
    return rows


def read_ebpf_stream(path: Path, events: int) -> list[bytes]:
    """The raw records of a recording (tests/record_ebpf.py), repeated up to ``events``."""
    with open(path) as f:
        records = [bytes.fromhex(json.loads(line)["record"]) for line in f if line.strip()]
    if not records:
        raise click.ClickException(f"{path} holds no records")
    return [records[i % len(records)] for i in range(max(events, len(records)))]


def write_ebpf_stream(path: Path, records: list[bytes]) -> None:
    """Raw records as a recording :func:`read_ebpf_stream` reads: a JSON line each,
    ``{"record": "<hex of the raw bytes>"}``."""
    with open(path, "w") as f:
        f.writelines(json.dumps({"record": data.hex()}) + "\n" for data in records)


def read_audit_log(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().splitlines(keepends=True)


def audit_log_or_record(audit_log: Path | None, execs: int, directory: str) -> Path:
    """``audit_log``, or else ``execs`` execs recorded through audit netlink into
    ``directory`` (root only: a clear error otherwise)."""
    if audit_log is not None:
        return audit_log
    if os.geteuid() != 0:
        raise click.ClickException("recording audit needs root; or give --audit-log")
    from sensor_linux.audit.bench import record
    recording = Path(directory) / "recording.log"
    click.echo(f"recording {execs:,} execs through audit netlink …", err=True)
    record(recording, execs)
    return recording


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def recording_options(records: str, execs: int = 5000) -> Decorator:
    """The ``--audit-log`` and ``--execs`` options of a bench that takes an audit recording
    (given, or made by :func:`audit_log_or_record`); ``records`` says what the file is for."""
    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--execs", default=execs, show_default=True,
                               help="Execs to record when no --audit-log is given.")(command)
        return click.option(
            "--audit-log", type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help=f"{records} Without it, --execs execs are recorded through audit netlink "
                 f"first (needs root).")(command)
    return add


@click.command("stages")
@recording_options("Audit records to replay (auditd's log format).")
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
        audit_log = audit_log_or_record(audit_log, execs, directory)
        count, stages = audit_stages(read_audit_log(audit_log), directory)
        print_table(stages, f"audit path ({audit_log.name}): {count} exec events, median of "
                            f"{ROUNDS}, split path: {split_path()}, compiled modules: "
                            f"{compiled.summary()}")
        if ebpf_stream is None:
            click.echo("eBPF path: no recording (give --ebpf-stream)", err=True)
            return
        count, stages = ebpf_stages(read_ebpf_stream(ebpf_stream, ebpf_events), directory)
        print_table(stages, f"eBPF path ({ebpf_stream.name}): {count} exec events, median of "
                            f"{ROUNDS}, decoding: {decode_path()}, compiled modules: "
                            f"{compiled.summary()}")
