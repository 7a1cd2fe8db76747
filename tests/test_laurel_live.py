"""Live differential test against LAUREL: one auditd, two plugins, the same records.

auditd runs with a private configuration directory and both LAUREL (Debian's laurel 0.5.1) and
``ttpsensor audisp --format laurel`` attached as plugins. A workload of hostile execs runs; both
outputs must hold the same event ids, and for every exec event the EXECVE, CWD, PATH and
PROCTITLE records and the SYSCALL record's own fields must be identical.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sensor_linux.audit.laurel import PEER_CONFIG
from sensor_linux.audit.netlink import AuditSocket
from sensor_linux.audit.session import process_name
from sensor_linux.lab.modes import AUDITD_CONF, PLUGIN_CONF
from tests.conftest import require, ttpsensor_command
from tests.workload import HOSTILE, run_execs

pytestmark = pytest.mark.kernel

def _json_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(errors="surrogateescape").splitlines()
            if line.strip()]


def _workload(tmp: Path) -> set[str]:
    """At least 300 execs with everything the issue lists; returns the run's tokens."""
    tokens = set()
    token, _ = run_execs(300)                       # spaces, quotes, \\, \\n, \\t, bytes, ""
    tokens.add(token)
    run = lambda *argv: subprocess.run(list(argv), capture_output=True)  # noqa: E731
    run("/bin/true", "ttpw-big", "A" * 100 * 1024)                         # a 100 KiB argument
    run("/bin/true", "ttpw-many", *[f"arg{i}" for i in range(2000)])        # 2,000 arguments
    script = tmp / "script.sh"
    script.write_text("#!/bin/sh\n/bin/true ttpw-from-script\n")
    script.chmod(0o755)
    run(str(script), "ttpw-shebang")                                        # a shebang script
    run("/bin/sh", "-c", "/bin/sh -c '/bin/sh -c \"/bin/true ttpw-nested\"'")  # nested shells
    doomed = tmp / "doomed-sleep"
    shutil.copy("/bin/sleep", doomed)
    proc = subprocess.Popen([str(doomed), "0.5"])
    time.sleep(0.1)
    doomed.unlink()                                                         # a deleted binary
    proc.wait()
    with pytest.raises(FileNotFoundError):
        subprocess.run(["/nonexistent/ttpw-missing"])                       # a failing exec
    plain = tmp / "not-executable"
    plain.write_text("data")
    with pytest.raises(PermissionError):
        subprocess.run([str(plain)])                                        # EACCES
    run("/bin/true", *[h.decode("utf-8", "surrogateescape") for h in HOSTILE])
    return tokens


@pytest.fixture
def auditd_with_two_plugins(tmp_path):
    require(os.geteuid() == 0, "root is needed to run auditd")
    for tool in ("auditd", "auditctl", "laurel"):
        require(shutil.which(tool) is not None, f"{tool} is needed (apt-get install auditd laurel)")
    status = AuditSocket().status()
    require(not (status.pid and process_name(status.pid)),
            f"an audit daemon ({process_name(status.pid)}) is already registered")
    before = subprocess.run(["auditctl", "-s"], capture_output=True, text=True).stdout
    enabled_before = next(l.split()[1] for l in before.splitlines() if l.startswith("enabled"))
    plugins = tmp_path / "plugins.d"
    plugins.mkdir()
    (tmp_path / "laurel").mkdir()
    (tmp_path / "auditd.conf").write_text(AUDITD_CONF.format(dir=tmp_path, log_format="ENRICHED"))
    (tmp_path / "laurel.toml").write_text(PEER_CONFIG.format(directory=tmp_path / "laurel"))
    (plugins / "laurel.conf").write_text(PLUGIN_CONF.format(
        path=shutil.which("laurel"), args=f"--config {tmp_path}/laurel.toml"))
    plugin = Path(ttpsensor_command()[0]).with_name("ttpsensor-audisp")
    assert plugin.exists(), "the plugin needs the installed ttpsensor-audisp command"
    (tmp_path / "audisp.toml").write_text(
        f'format = "laurel"\noutputs = ["jsonl:{tmp_path}/ours.jsonl"]\n'
        f'parse-error-log = "{tmp_path}/ours-errors.log"\n')
    (plugins / "ttpsensor.conf").write_text(PLUGIN_CONF.format(
        path=plugin, args=f"--config {tmp_path}/audisp.toml"))
    for conf in [tmp_path / "auditd.conf", *plugins.iterdir()]:
        conf.chmod(0o640)
    auditd = subprocess.Popen(["auditd", "-f", "-n", "-s", "enable", "-c", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "auditd.err", "w"))
    try:
        deadline = time.monotonic() + 30
        while AuditSocket().status().pid != auditd.pid:
            if auditd.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"auditd did not start: {(tmp_path / 'auditd.err').read_text()}")
            time.sleep(0.1)
        subprocess.run(["auditctl", "-a", "always,exit", "-F", "arch=b64", "-S",
                        "execve,execveat", "-k", "ttp-difftest"], check=True)
        subprocess.run(["auditctl", "-a", "always,exit", "-F", "arch=b32", "-S",
                        "execve,execveat", "-k", "ttp-difftest"], check=True)
        yield tmp_path, auditd
    finally:
        subprocess.run(["auditctl", "-D"], capture_output=True)
        if auditd.poll() is None:
            auditd.send_signal(signal.SIGTERM)
            auditd.wait(timeout=60)
        subprocess.run(["auditctl", "-e", enabled_before], capture_output=True)


def _exec_events(events: list[dict]) -> dict[str, dict]:
    return {e["ID"]: e for e in events
            if isinstance(e.get("SYSCALL"), dict) and e["SYSCALL"].get("SYSCALL") in
            ("execve", "execveat")}


def _own_fields(record: dict) -> dict:
    """A record without enrichment objects (maps LAUREL adds, such as PID or SPAWNED_BY)."""
    return {k: v for k, v in record.items() if not isinstance(v, dict)}


def test_laurel_and_ttpsensor_agree_on_a_hostile_workload(auditd_with_two_plugins) -> None:
    tmp, auditd = auditd_with_two_plugins
    _workload(tmp)
    ours_path, laurel_path = tmp / "ours.jsonl", tmp / "laurel" / "laurel.log"
    marker = "ttpw-hostile-end"
    subprocess.run(["/bin/true", marker])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "terminated unexpectedly" in (tmp / "auditd.err").read_text():
            pytest.fail(f"a plugin died: {(tmp / 'auditd.err').read_text()}")
        if all(marker in p.read_text(errors="replace") for p in (ours_path, laurel_path)
               if p.exists()) and ours_path.exists() and laurel_path.exists():
            break
        time.sleep(0.5)
    subprocess.run(["auditctl", "-D"], capture_output=True)
    auditd.send_signal(signal.SIGTERM)
    auditd.wait(timeout=60)
    time.sleep(1.0)  # plugins finish writing after auditd closes their pipes
    ours, theirs = _json_lines(ours_path), _json_lines(laurel_path)
    assert ours and theirs, (tmp / "auditd.err").read_text()
    assert {e["ID"] for e in ours} == {e["ID"] for e in theirs}
    ours_exec, theirs_exec = _exec_events(ours), _exec_events(theirs)
    assert len(ours_exec) >= 300 and ours_exec.keys() == theirs_exec.keys()
    for event_id, mine in ours_exec.items():
        other = theirs_exec[event_id]
        for record in ("EXECVE", "CWD", "PATH", "PROCTITLE"):
            assert mine.get(record) == other.get(record), (event_id, record)
        assert _own_fields(mine["SYSCALL"]) == _own_fields(other["SYSCALL"]), event_id
    kinds = {json.dumps(e["EXECVE"]["ARGV"][1:2]) for e in ours_exec.values() if "EXECVE" in e}
    assert any("ttpw-big" in k for k in kinds) and any("ttpw-many" in k for k in kinds)
    failed = [e for e in ours_exec.values() if e["SYSCALL"]["success"] == "no"]
    assert {e["SYSCALL"]["exit"] for e in failed} >= {-2, -13}
