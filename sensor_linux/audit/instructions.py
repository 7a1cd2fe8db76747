"""``ttpsensor bench instructions``: machine instructions an exec, ours and LAUREL's, counted.

CPU time on a shared VM moves by a tenth to a third within the hour, so a change of 1-3 % (most
changes to a tuned path) cannot be seen in it. The instructions a replay executes move by a few
in a hundred million (the time of day, a temporary file's name): valgrind's cachegrind counts
them (``--cache-sim=no``: counting only, some 30 times slower than running). Each engine
replays the first half of the log's execs and then the whole log, and the difference divided
by the execs between is what one more exec costs: the start (imports, the package index,
LAUREL's own) is the same in both runs and drops out. LAUREL replays the same two files, its
instructions an exec beside ours.

Instructions are not time: Rust code runs more of them per cycle than the interpreter does,
so the ratio here is not the CPU ratio of ``ttpsensor bench audit`` and the lab. What it is
for is seeing a change: the same replay before and after, within a few instructions.

``--ebpf-stream`` counts the eBPF sensor's pipeline the same way, on a recording of the
probes' raw records (``tests/record_ebpf.py``) replayed into an ECS events file
(``sensor_linux/ebpf/replay.py``): the first half of the records, then all of them (both
replays read the whole recording, so its reading drops out too). It has no peer: what the
eBPF mode is measured against, auditd, is not a replay.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import click
from rich.console import Console
from rich.table import Table

from common.cli import self_command
from sensor_linux.audit.events import exec_head
from sensor_linux.audit.laurel import PEER_CONFIG
from sensor_linux.stages import (audit_log_or_record, read_ebpf_stream, recording_options,
                                 write_ebpf_stream)

_COUNT = re.compile(rb"I\s+refs:\s+([\d,]+)")
FORMATS = ("laurel", "ecs")


@dataclass
class Count:
    """One engine: instructions for the half and the whole log, and an exec's share."""
    engine: str
    half: int
    whole: int
    per_exec: float


def exec_lines(lines: list[bytes]) -> list[int]:
    """The indexes of the SYSCALL records of execs (as the live sources' first look tells
    them, events.exec_head)."""
    return [n for n, line in enumerate(lines) if exec_head(line) is not None]


def split_log(log: Path, directory: Path) -> tuple[Path, Path, int]:
    """The log's first half of execs (cut before the SYSCALL record of the exec in the
    middle) and the whole log, as files in ``directory``; and the execs between them."""
    lines = log.read_bytes().splitlines(keepends=True)
    execs = exec_lines(lines)
    if len(execs) < 20:
        raise click.ClickException(f"{log} holds {len(execs)} exec records; give a log of a "
                                   "few hundred at least")
    middle = execs[len(execs) // 2]
    half, whole = directory / "half.log", directory / "whole.log"
    half.write_bytes(b"".join(lines[:middle]))
    whole.write_bytes(b"".join(lines))
    return half, whole, len(execs) - len(execs) // 2


def repeat_stream(stream: Path, records: int, directory: Path) -> tuple[Path, int]:
    """An eBPF recording repeated to at least ``records`` records, as a recording in
    ``directory``; and how many records it holds."""
    raw = read_ebpf_stream(stream, records)
    repeated = directory / "records.jsonl"
    write_ebpf_stream(repeated, raw)
    return repeated, len(raw)


def counted(argv: list[str], stdin: Path | None, env: dict[str, str]) -> int:
    """The instructions ``argv`` executes (reading ``stdin``, if any), counted by
    cachegrind."""
    with open(stdin or os.devnull, "rb") as source:
        done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                               "--cachegrind-out-file=/dev/null", *argv],
                              stdin=source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env, timeout=3600)
    found = _COUNT.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise click.ClickException(f"{' '.join(argv[:3])} failed under valgrind "
                                   f"(exit {done.returncode}): {' / '.join(tail)}")
    return int(found.group(1).replace(b",", b""))


# An engine: its name, and its command line for a log (and whether it reads it on stdin).
Engine = tuple[str, Callable[[Path], list[str]], bool]


def engines(formats: tuple[str, ...], work: Path, laurel: bool) -> list[Engine]:
    """Ours replays the file (``audisp FILE``: no /proc, no host file looked at, so the
    same instructions each time); LAUREL reads it on stdin, as it only can."""
    def ours(fmt: str) -> Callable[[Path], list[str]]:
        return lambda log: [*self_command(), "audisp", str(log), "--format", fmt,
                            "--parse-error-log", str(work / f"errors-{fmt}.log")]
    out: list[Engine] = [(f"ttpsensor audisp --format {fmt}", ours(fmt), False)
                         for fmt in formats]
    if laurel:
        (work / "laurel").mkdir()
        (work / "laurel.toml").write_text(PEER_CONFIG.format(directory=work / "laurel"))
        out.append(("LAUREL", lambda _: ["laurel", "--config", str(work / "laurel.toml")],
                    True))
    return out


@click.command("instructions")
@recording_options("Audit records to replay (auditd's log format).", execs=2000)
@click.option("--format", "formats", type=click.Choice(FORMATS), multiple=True,
              default=FORMATS, show_default=True, help="Our formats to count (repeat).")
@click.option("--peer/--no-peer", default=True, show_default=True,
              help="Count LAUREL too (Debian's laurel package).")
@click.option("--ebpf-stream", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Count the eBPF sensor's pipeline instead, on this recording of raw probe "
                   "records (tests/record_ebpf.py; no peer).")
@click.option("--ebpf-records", type=click.IntRange(min=40), default=4000, show_default=True,
              help="Records of the eBPF replay at least (the recording repeated).")
@click.option("--json", "as_json", is_flag=True, help="The counts as JSON.")
def bench_instructions(audit_log: Path | None, execs: int, formats: tuple[str, ...],
                       peer: bool, ebpf_stream: Path | None, ebpf_records: int,
                       as_json: bool) -> None:
    """Instructions an exec of our replay, and LAUREL's, counted by valgrind (deterministic:
    for seeing a change of 1 % on a noisy host, where CPU time cannot).

    \b
      ttpsensor bench instructions --audit-log recording.log
      ttpsensor bench instructions --audit-log recording.log --format ecs --no-peer
      ttpsensor bench instructions --ebpf-stream tests/data/ebpf-stream.jsonl
    """
    if shutil.which("valgrind") is None:
        raise click.ClickException("valgrind is not installed (apt-get install valgrind)")
    # The same bytecode (compiled or not) and the same hashes in both runs: only the execs
    # between them differ.
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
    if ebpf_stream is not None:
        _count_ebpf(ebpf_stream, ebpf_records, env, as_json)
        return
    if peer and shutil.which("laurel") is None:
        raise click.ClickException("LAUREL is not installed (apt-get install laurel), or "
                                   "give --no-peer")
    with tempfile.TemporaryDirectory(prefix="ttpsensor-instructions-") as directory:
        work = Path(directory)
        log = audit_log_or_record(audit_log, execs, directory)
        half, whole, between = split_log(log, work)
        counts = []
        for name, argv, on_stdin in engines(formats, work, peer):
            click.echo(f"counting {name} (two replays under valgrind) …", err=True)
            first, second = (counted(argv(part), part if on_stdin else None, env)
                             for part in (half, whole))
            counts.append(Count(name, first, second, (second - first) / between))
    if as_json:
        click.echo(json.dumps({"log": str(log), "execs_between": between,
                               "counts": [asdict(c) for c in counts]}))
        return
    laurel = next((c.per_exec for c in counts if c.engine == "LAUREL"), None)
    table = Table(title=f"instructions an exec, counted ({between:,} execs between the two "
                        f"replays of {log.name})")
    for column in ("engine", "instructions/exec", "ratio"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for c in counts:
        ratio = f"{c.per_exec / laurel:.3f}× LAUREL" if laurel and c.engine != "LAUREL" else ""
        table.add_row(c.engine, f"{c.per_exec:,.0f}", ratio)
    Console().print(table)


def _count_ebpf(stream: Path, records: int, env: dict[str, str], as_json: bool) -> None:
    """``--ebpf-stream``: the eBPF pipeline's instructions a record, by two replays."""
    name = "ttpsensor eBPF pipeline (ecs file)"
    with tempfile.TemporaryDirectory(prefix="ttpsensor-instructions-") as directory:
        work = Path(directory)
        repeated, total = repeat_stream(stream, records, work)
        between = total - total // 2
        click.echo(f"counting {name} (two replays under valgrind) …", err=True)
        # Both read the whole file; the first builds its first half of the records. -P: the
        # installed code, not a checkout in the working directory.
        first, second = (counted([sys.executable, "-P", "-m", "sensor_linux.ebpf.replay",
                                  str(repeated), str(work / f"events-{part}.jsonl"),
                                  str(part)], None, env)
                         for part in (total // 2, total))
    count = Count(name, first, second, (second - first) / between)
    if as_json:
        click.echo(json.dumps({"ebpf_stream": str(stream), "records_between": between,
                               "counts": [asdict(count)]}))
        return
    table = Table(title=f"instructions a record, counted ({between:,} records between the "
                        f"two replays of {stream.name})")
    table.add_column("engine")
    table.add_column("instructions/record", justify="right")
    table.add_row(count.engine, f"{count.per_exec:,.0f}")
    Console().print(table)
