"""``ttpsensor bench assembly``: the assembler on the streams that used to be quadratic.

Three synthetic streams, parsed first (parsing is not measured), then assembled: exec events in
order with their EOE records (the ordinary case), 100,000 events that never get an EOE followed
by 3,000 later records (a stream cut short, or a type without EOE), and 1,000 nodes' events
with their records shuffled (forwarded logs, interleaved). Prints CPU microseconds per record
for each; the fix of issue 16 took the shuffled case from 353 s to about 1 s on the
development VM.
"""

from __future__ import annotations

import random
import time

import click

from sensor_linux.audit.assemble import Assembler
from sensor_linux.audit.records import Record, parse

_SYSCALL = (b"%stype=SYSCALL msg=audit(%d.%03d:%d): arch=c000003e syscall=59 success=yes "
            b"exit=0 pid=1 uid=0")
_EOE = b"%stype=EOE msg=audit(%d.%03d:%d): "


def in_order(events: int) -> list[bytes]:
    lines = []
    for i in range(events):
        sec, ms = 1_700_000_000 + i // 1000, i % 1000
        lines += [_SYSCALL % (b"", sec, ms, i + 1), _EOE % (b"", sec, ms, i + 1)]
    return lines


def never_closed(events: int, later: int) -> list[bytes]:
    lines = [_SYSCALL % (b"", 1_700_000_000, i % 1000, i + 1) for i in range(events)]
    lines += [_SYSCALL % (b"", 1_700_000_001 + i, 0, events + i + 1) for i in range(later)]
    return lines


def shuffled_nodes(nodes: int, per_node: int, seed: int = 1) -> list[bytes]:
    lines = []
    for node in range(nodes):
        name = b"node=n%d " % node
        for j in range(per_node):
            lines += [_SYSCALL % (name, 1_700_000_000 + j, 0, j + 1),
                      _EOE % (name, 1_700_000_000 + j, 0, j + 1)]
    random.Random(seed).shuffle(lines)
    return lines


def assemble(records: list[Record]) -> tuple[float, int]:
    """CPU seconds to assemble ``records`` (and flush), and the events that came out."""
    assembler = Assembler()
    started = time.process_time()
    events = 0
    for record in records:
        events += len(assembler.add(record, now=0.0))
    events += len(assembler.flush())
    return time.process_time() - started, events


@click.command("assembly")
@click.option("--scale", default=1.0, show_default=True,
              help="Multiply the stream sizes (1.0: 100,000 open events, 1,000 nodes).")
def bench_assembly(scale: float) -> None:
    """CPU per record of the audit assembler on in-order, never-closed and shuffled streams."""
    streams = {
        "in order, with EOE": in_order(int(50_000 * scale)),
        "100k open, then 3k later": never_closed(int(100_000 * scale), 3000),
        "1,000 nodes shuffled": shuffled_nodes(int(1000 * scale), 35),
    }
    click.echo(f"{'stream':28} {'records':>9} {'events':>8} {'cpu s':>7} {'us/record':>10}")
    for name, lines in streams.items():
        records = [parse(line) for line in lines]
        seconds, events = assemble(records)
        click.echo(f"{name:28} {len(records):9d} {events:8d} {seconds:7.2f} "
                   f"{seconds / len(records) * 1e6:10.2f}")
