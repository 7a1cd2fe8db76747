"""Record what the exec probes deliver, as raw ring-buffer records, for replays that compare
two versions of the code (tests/compare_outputs.py) on the same kernel input.

    python -m tests.record_ebpf tests/data/ebpf-stream.jsonl     # as root, on a real kernel
    python -m tests.record_ebpf --lab 1000 4 lab-stream.jsonl    # the overhead lab's load

Runs a workload that covers the shapes that matter (a script, a relative path, a PATH walk
with misses, a failed exec, hostile arguments, a shell pipeline) while the probes load, and
keeps every record that arrives (other processes of the machine included: it is a recording
of a real, busy host). One JSON line per record: ``{"record": "<hex of the raw bytes>"}``.

With ``--lab RATE SECONDS``, the workload is the overhead lab's load generator instead (the
same program exec'd RATE times a second from one parent): what ``ttpsensor bench instructions
--ebpf-stream`` counts to compare the eBPF sensor's cost in the lab before and after a change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from sensor_linux.ebpf.probes import ExecProbes, ExecRecord, decode
from sensor_linux.lab.loadgen import DEFAULT_PROGRAM
from sensor_linux.lab.overhead import run_load
from sensor_linux.stages import write_ebpf_stream
from tests.workload import run_execs


def load(path: str) -> Iterator[ExecRecord]:
    """The records of a recording, decoded as the probes decode them."""
    with open(path) as f:
        for line in f:
            if line.strip():
                yield decode(bytes.fromhex(json.loads(line)["record"]))


def _workload() -> None:
    run_execs(30)
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "script.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\necho hi | cat > /dev/null\n")
        os.chmod(script, 0o755)
        subprocess.run([script, "arg"], check=True)
        subprocess.run(["./script.sh"], cwd=tmp, check=True)              # relative path
        subprocess.run(["sh", "-c", "true; ls / > /dev/null"], check=True)
        subprocess.run(["env", "PATH=/nonexistent:/usr/local/bin:/usr/bin", "id"],
                       check=True, capture_output=True)                   # a PATH walk
        subprocess.run(["sh", "-c", f"{tmp}/missing 2>/dev/null; true"], check=True)


def _lab_load(probes: ExecProbes, rate: int, seconds: int) -> None:
    """The lab's load generator, as the lab runs it (sensor_linux/lab/overhead.py), the ring
    read while it runs; its failure is raised."""
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(run_load, rate, seconds, "recorded", DEFAULT_PROGRAM)
        while not load.done():
            probes.poll(100)
        load.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", nargs=2, type=int, metavar=("RATE", "SECONDS"),
                        help="record the overhead lab's load instead of the shapes' workload")
    parser.add_argument("out", help="the recording to write (JSON lines)")
    args = parser.parse_args()
    raw: list[bytes] = []
    arriving: list[bytes] = [b""]

    class Recording(ExecProbes):
        # Both ring readers (in place, and BCC's callback) hand each record's bytes here.
        def _deliver(self, raw_record: bytes) -> None:
            arriving[0] = raw_record
            super()._deliver(raw_record)

    # Only what the probes hand on (not the self-check's own exec).
    probes = Recording(on_exec=lambda record: raw.append(arriving[0]))
    probes.load()
    try:
        if args.lab:
            _lab_load(probes, *args.lab)
        else:
            _workload()
        probes.poll(500)
        probes.poll(0)
    finally:
        probes.close()
    write_ebpf_stream(Path(args.out), raw)
    print(f"{len(raw)} records in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
