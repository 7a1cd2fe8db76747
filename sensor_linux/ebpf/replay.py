"""A recording of the probes' raw records replayed through the eBPF sensor's pipeline, into an
events file as the live sensor writes it (``--output jsonl:FILE``, ECS).

For ``ttpsensor bench instructions --ebpf-stream``, which counts the instructions of two such
replays under valgrind: the same code per record as ``ttpsensor run --source ebpf`` (decoding,
the one pipeline, enrichment, the TTPHash, the file output), without the kernel (no probes, no
``/proc``: the recording's pids are gone), so that a count repeats to a few instructions.
The executables the records name are looked at on this host (hashed once, their packages
looked up), as the recording was made here.

    python -m sensor_linux.ebpf.replay STREAM EVENTS_FILE [RECORDS]

With RECORDS, the first that many records of the stream (all of it is read all the same: two
replays of one file differ only by the records they build).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from common.gcpolicy import steady_gc
from common.sinks import open_outputs
from sensor_linux.ebpf.probes import decode
from sensor_linux.ebpf.source import ebpf_pipeline
from sensor_linux.enrich import Enricher
from sensor_linux.stages import read_ebpf_stream

# Records handed to the pipeline at a time, as the ring reader hands them over at most
# (probes.HANDOVER_RECORDS) and about what one read holds at 1000 execs/s.
BATCH = 200
# The records' monotonic times (another boot's) turned into wall-clock time by a fixed
# offset, not this boot's: the seconds an event's time is formatted in, and so the
# instructions that formatting takes, are then the same in every run (as
# tests/compare_outputs.py fixes them).
EPOCH_OFFSET = 1_700_000_000.0


def replay(records: list[bytes], events_file: Path) -> int:
    """Build and write the events of ``records`` (raw ring-buffer records); returns how many
    lines were written."""
    outputs = open_outputs([f"jsonl:{events_file}"], "ecs", max_bytes=1 << 40, generations=1)
    pipeline = ebpf_pipeline(Enricher(live=False, host_files=True), outputs.output,
                             keep_exec_attempts=False, epoch_offset=EPOCH_OFFSET)
    with steady_gc(restore=False):  # as the sensor's loop runs
        for at in range(0, len(records), BATCH):
            pipeline.feed_many([decode(data) for data in records[at:at + BATCH]])
        pipeline.close()
    outputs.close()
    return pipeline.stats.output_lines


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or (len(argv) == 3 and not argv[2].isdigit()):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        records = read_ebpf_stream(Path(argv[0]), 0)
    except (OSError, ValueError, click.ClickException) as exc:
        print(f"cannot read {argv[0]}: {exc}", file=sys.stderr)
        return 1
    if len(argv) == 3:
        records = records[:int(argv[2])]
    print(replay(records, Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
