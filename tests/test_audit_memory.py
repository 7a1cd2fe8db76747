"""The replay's memory over a long stream, measured on the real command (issue 14: at most
160 MiB over 100,000 events, and no more for a log without EOE records than with them).

The stream is one real exec of this project's lab (tests/data/audit-path-walk.log) again and
again, each time with a pid, a last argument and an event id of its own and a thousand events a
second of audit time: so the process table, the TTPHash memo, the remembered record bodies and
the assembler's remembered ids all fill to their bounds, as on a busy host.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from sensor_linux.audit.bench import spawn_measured
from tests.conftest import ttpsensor_command

RECORDING = Path(__file__).parent / "data" / "audit-path-walk.log"
EXEC_ID = b":2683359)"  # the recording's successful exec (the seven before it are ENOENT)
_STAMP = re.compile(rb"msg=audit\([^)]*\)")


def write_stream(path: Path, events: int, eoe: bool) -> None:
    records = [line for line in RECORDING.read_bytes().splitlines(keepends=True)
               if EXEC_ID in line]
    assert len(records) == 7, "the recording changed"
    with open(path, "wb") as out:
        for i in range(events):
            stamp = b"msg=audit(%d.%03d:%d)" % (1796536196 + i // 1000, i % 1000, 3_000_000 + i)
            for line in records:
                line = _STAMP.sub(stamp, line)
                if line.startswith(b"type=SYSCALL "):
                    line = line.replace(b" pid=7623 ", b" pid=%d " % (10_000 + i))
                elif line.startswith(b"type=EXECVE "):
                    line = line.replace(b'a8="ttplab"', b'a8="ttplab%d"' % i)
                out.write(line)
            if eoe:
                out.write(b"type=EOE " + stamp + b": \n")


def peak_mib(tmp_path: Path, events: int, eoe: bool) -> float:
    log = tmp_path / f"stream-{events}-{eoe}.log"
    write_stream(log, events, eoe)
    out = tmp_path / "out.jsonl"
    with open(os.devnull, "rb") as null_in, open(out, "wb") as fout, \
            open(tmp_path / "stderr", "wb") as ferr:
        usage = spawn_measured(ttpsensor_command() + [
            "audisp", str(log), "--parse-error-log", str(tmp_path / "errors.log")],
            null_in.fileno(), fout.fileno(), ferr.fileno(), dict(os.environ))
    assert usage.exit_code == 0, (tmp_path / "stderr").read_text()
    with open(out, "rb") as f:
        assert sum(1 for _ in f) == events  # every event written
    log.unlink()
    out.unlink()
    return usage.peak_rss_mib


@pytest.fixture(scope="module")
def peaks(tmp_path_factory) -> dict[tuple[int, bool], float]:
    tmp_path = tmp_path_factory.mktemp("memory")
    return {(events, eoe): peak_mib(tmp_path, events, eoe)
            for events, eoe in ((25_000, True), (100_000, True), (100_000, False))}


def test_a_long_replay_stays_within_its_bound(peaks) -> None:
    assert peaks[100_000, True] <= 160, peaks
    # Past the tables' bounds the stream adds little: the assembler's remembered ids (at most
    # 32,768 of about 230 bytes) and the allocator's slack, 7 MiB. Remembering every id of the
    # last 120 s, as before 2026-12-06, added 20 MiB here.
    assert peaks[100_000, True] - peaks[25_000, True] <= 15, peaks


def test_a_log_without_eoe_records_costs_no_more_memory(peaks) -> None:
    # "No more": within the allocator's few MiB of slack between two runs.
    assert peaks[100_000, False] <= peaks[100_000, True] + 4, peaks
