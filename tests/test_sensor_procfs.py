"""The sensor's main job end to end: ``ttpsensor run --once`` against the live /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from common import ecs, ttphash
from common.filehash import FileHasher
from tests.conftest import require, run_cli

# dash keeps extra operands as $0, $1...: a live process whose argv is hostile.
HOSTILE = [b"sh", b"-c", b"sleep 30; :", b"\xff\xfe bytes", b"100%", b"", b"new\nline", b'q"uote',
           b"x" * 5000]


def _events(path) -> list[dict]:
    return [ecs.parse(json.loads(line)) for line in path.read_text().splitlines()]


def test_run_once_reports_processes_with_exact_argv_parent_and_ttphash(tmp_path) -> None:
    require(os.path.exists("/proc/self/exe"), "a Linux /proc is needed")
    child = subprocess.Popen(HOSTILE, executable="/usr/bin/dash")
    try:
        time.sleep(0.2)
        out = tmp_path / "events.jsonl"
        result = run_cli("run", "--source", "procfs", "--once", "--output", str(out))
        assert result.returncode == 0, result.stderr
        assert '"events":' in result.stderr.replace(" ", "")
        events = _events(out)
    finally:
        child.kill()
        child.wait()
    by_pid = {e["process"]["pid"]: e for e in events}
    event = by_pid[child.pid]
    p = event["process"]
    assert p["args"] == ["sh", "-c", "sleep 30; :", b"\xff\xfe bytes", "100%", "", "new\nline",
                         'q"uote', "x" * 5000]
    assert p["executable"] == "/usr/bin/dash"
    assert p["hash"]["sha256"] == FileHasher().digests("/usr/bin/dash").sha256
    assert p["on_disk"] is True
    assert p["package"]["name"] == "dash" and p["package"]["verified"] is True
    assert p["real_user"]["id"] == str(os.getuid()) and p["user"]["name"]
    # Parent context comes from the process table: it is this test process.
    assert p["parent"]["pid"] == os.getpid()
    assert p["parent"]["executable"] == os.path.realpath(sys.executable)
    assert p["parent"]["running"] is True
    assert event["event"]["kind"] == "state" and event["event"]["provider"] == "procfs"
    assert event["ttphash"] == ttphash.compute(event).as_field()
    assert event["ttphash"]["complete"] is True
    # Every process event hashes the same again through `ttpsensor hash` (JSON round trip).
    hashed = run_cli("hash", str(out))
    assert hashed.returncode == 0, hashed.stderr
    assert [line.split()[0] for line in hashed.stdout.splitlines()] == [
        e["ttphash"]["value"] for e in events]


def test_run_in_qlog_format_and_stops_on_sigterm(tmp_path) -> None:
    require(os.path.exists("/proc/self/exe"), "a Linux /proc is needed")
    from tests.conftest import ttpsensor_command
    out = tmp_path / "q.jsonl"
    proc = subprocess.Popen(ttpsensor_command() + ["run", "--source", "procfs", "--format",
                                                   "qlog", "--interval", "0.2", "--output",
                                                   str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.1)  # the first scan is written
    late = subprocess.Popen(["/usr/bin/sleep", "30"])  # appears on a later scan
    while time.monotonic() < deadline and f'"PID":{late.pid},' not in out.read_text():
        time.sleep(0.1)
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    late.kill()
    late.wait()
    assert proc.returncode == 0, err
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(d["QType"] == "Process Create" and len(d["TTPHash"]) == 64 for d in docs)
    assert late.pid in {d["PID"] for d in docs}
    assert "stopped" in err


def test_a_command_line_longer_than_one_read_comes_whole() -> None:
    """/proc files are read with plain descriptor reads of 64 KiB (procfs._read): a command
    line of 200,000 bytes comes in pieces, and every piece is kept, as the kernel has it."""
    from sensor_linux.procfs import read_process

    require(os.path.exists("/proc/self/exe"), "a Linux /proc is needed")
    argv = [b"sh", b"-c", b"sleep 30; :", b"a" * 100_000, b"b" * 100_000]  # 128 KiB each at most
    child = subprocess.Popen(argv, executable="/usr/bin/dash")
    try:
        for _ in range(200):  # until the child runs dash and shows its arguments
            facts = read_process(child.pid)
            if facts is not None and facts.executable == "/usr/bin/dash" and facts.args:
                break
            time.sleep(0.01)
        assert facts is not None and facts.args == [a.decode() for a in argv]
    finally:
        child.kill()
        child.wait()
