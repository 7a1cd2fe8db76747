"""``ttpsensor bench instructions``: the instructions of a replay, counted, and LAUREL's.

Its reason to be is that the count does not move between runs where CPU time does: the test
runs it twice and wants the same count within a few instructions in a hundred million, on a
real log of the lab's execs, with LAUREL (the peer) counted on the same two files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from sensor_linux.audit.instructions import exec_lines, split_log
from tests.conftest import require, ttpsensor_command

LOG = Path(__file__).parent / "data" / "audit-split-late.log"


def test_the_log_is_cut_before_the_exec_in_the_middle(tmp_path: Path) -> None:
    half, whole, between = split_log(LOG, tmp_path)
    execs = len(exec_lines(LOG.read_bytes().splitlines()))
    assert whole.read_bytes() == LOG.read_bytes()
    assert len(exec_lines(half.read_bytes().splitlines())) == execs - between == execs // 2
    # The cut is at a line: the half is the log's first lines, whole.
    assert LOG.read_bytes().startswith(half.read_bytes()) and half.read_bytes().endswith(b"\n")


def test_the_counts_repeat_to_the_instruction_and_laurel_is_counted_beside_them() -> None:
    require(shutil.which("valgrind") is not None, "valgrind (apt-get install valgrind)")
    require(shutil.which("laurel") is not None, "LAUREL (apt-get install laurel)")
    runs = []
    for peer in ("--peer", "--no-peer"):
        done = subprocess.run([*ttpsensor_command(), "bench", "instructions", "--audit-log",
                               str(LOG), "--format", "laurel", peer, "--json"],
                              capture_output=True, check=True, timeout=900)
        runs.append(json.loads(done.stdout))
    counts = {c["engine"]: c for c in runs[0]["counts"]}
    assert sorted(counts) == ["LAUREL", "ttpsensor audisp --format laurel"]
    ours, laurel = counts["ttpsensor audisp --format laurel"], counts["LAUREL"]
    # The same, to a few instructions in hundreds of millions (the time of day, a temporary
    # directory's name), where CPU time moves by a tenth.
    again = runs[1]["counts"][0]
    assert again["engine"] == ours["engine"]
    for key in ("half", "whole", "per_exec"):
        assert abs(again[key] - ours[key]) <= 1e-5 * ours[key], key
    for count in (ours, laurel):
        assert count["whole"] > count["half"] > 0
    # Both turn the same records into the same lines: the same order of magnitude an exec
    # (the lab's VM: ours 1.16x LAUREL's on its 2,000/s log).
    assert 0.3 < ours["per_exec"] / laurel["per_exec"] < 5
