"""Cut a test input out of a real auditd log whose events the kernel split under load.

Under a full backlog the kernel holds a task between its SYSCALL record and the rest of its
event (sensor_linux/audit/assemble.py). Such a log is tens of megabytes; this keeps, from the
first split event's SYSCALL to the last one's PROCTITLE, every line of the first ``--split``
events split by more than ``--gap-ms`` of audit time, and every line of one in ``--keep`` of the
other events (whole events, their lines and times as the kernel wrote them): the audit clock
still moves as it did between a SYSCALL and its late records.

    python -m tests.thin_audit_log /var/log/audit/audit.log > tests/data/audit-split-late.log

tests/data/audit-split-late.log came from auditd's log of ``sensor_linux.lab.loadgen`` at
2,000 execs/s on the two-CPU lab VM (2026-12-07), with our plugin attached and Debian's
``q_depth`` of 2,000.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

_STAMP = re.compile(rb"msg=audit\((\d+)\.(\d+):(\d+)\)")


def _stamps(lines: list[bytes]) -> list[tuple[int, int] | None]:
    """Each line's (audit time in ms, serial), None for a line without a stamp."""
    out: list[tuple[int, int] | None] = []
    for line in lines:
        match = _STAMP.search(line)
        out.append(None if match is None else
                   (int(match[1]) * 1000 + int(match[2]), int(match[3])))
    return out


def split_events(lines: list[bytes], stamps: list[tuple[int, int] | None],
                 gap_ms: int) -> list[tuple[int, int, int]]:
    """(serial, first line, last line) of events whose next record after the SYSCALL came
    when the audit clock stood more than ``gap_ms`` past the event's own time (``stamps``:
    each line's, from _stamps)."""
    seen: dict[int, tuple[int, int]] = {}        # serial -> (SYSCALL line, its time)
    clock = 0
    found: dict[int, tuple[int, int, int]] = {}
    for n, (line, stamp) in enumerate(zip(lines, stamps)):
        if stamp is None:
            continue
        ts, serial = stamp
        if line.startswith(b"type=SYSCALL "):
            seen[serial] = (n, ts)
        elif serial in seen:
            first, when = seen[serial]
            if serial in found:
                found[serial] = (serial, first, n)
            elif n > first + 1 and clock - when > gap_ms:
                found[serial] = (serial, first, n)
            elif n == first + 1:
                del seen[serial]                 # came together: not split
        clock = max(clock, ts)
    return sorted(found.values(), key=lambda f: f[1])


@click.command()
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--split", "count", default=4, show_default=True,
              help="Split events to keep.")
@click.option("--gap-ms", default=5000, show_default=True,
              help="How far behind the audit clock an event's late records must come.")
@click.option("--keep", default=200, show_default=True,
              help="Keep one in this many of the other events.")
def main(log: Path, count: int, gap_ms: int, keep: int) -> None:
    """Print the thinned excerpt of LOG on stdout."""
    lines = log.read_bytes().splitlines(keepends=True)
    stamps = _stamps(lines)
    chosen = split_events(lines, stamps, gap_ms)[:count]
    if not chosen:
        raise click.ClickException(f"{log}: no event split by more than {gap_ms} ms")
    start = min(first for _, first, _ in chosen)
    end = max(last for _, _, last in chosen)
    # The rest of a split event's records follow its late one directly.
    serials = {serial for serial, _, _ in chosen}
    while end + 1 < len(lines) and stamps[end + 1] and stamps[end + 1][1] in serials:
        end += 1
    out = sys.stdout.buffer
    for line, stamp in zip(lines[start:end + 1], stamps[start:end + 1]):
        if stamp is not None and (stamp[1] in serials or stamp[1] % keep == 0):
            out.write(line)


if __name__ == "__main__":
    main()
