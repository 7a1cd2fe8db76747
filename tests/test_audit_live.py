"""The audit netlink sources against the live kernel (unicast and multicast).

Audit state is global to the machine: these tests run serially, compare the state before and
after with auditctl (an independent reader), and put it back even when they fail.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from common.filehash import FileHasher
from sensor_linux.audit.datagrams import DatagramBatch
from sensor_linux.audit.netlink import AUDIT_NLGRP_READLOG, AuditNetlinkError, AuditSocket
from sensor_linux.audit.session import older_processes_warning, process_name
from sensor_linux.procfs import kernel_command_line
from tests.conftest import require, ttpsensor_command
from tests.live import (Sensor, assert_complete, captured, kill_leftovers, registered,
                        stop_all)
from tests.workload import run_execs, run_memfd_images

pytestmark = pytest.mark.kernel


def auditctl_state() -> tuple[dict[str, str], str]:
    status = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True).stdout
    keep = ("enabled", "failure", "pid", "rate_limit", "backlog_limit", "backlog_wait_time")
    values = dict(line.split(" ", 1) for line in status.splitlines() if " " in line)
    rules = subprocess.run(["auditctl", "-l"], capture_output=True, text=True, check=True).stdout
    return {k: values[k] for k in keep}, rules


def kernel_lost() -> int:
    return AuditSocket().status().lost


@pytest.fixture
def audit_guard():
    require(os.geteuid() == 0, "root is needed for audit netlink")
    require(shutil.which("auditctl") is not None, "auditctl (package auditd) is needed")
    try:
        status = AuditSocket().status()
    except AuditNetlinkError as exc:
        require(False, f"audit netlink unavailable: {exc}")
    require(not (status.pid and process_name(status.pid)),
            f"an audit daemon ({process_name(status.pid)}) is already registered")
    before = auditctl_state()
    yield before
    # A sensor the test failed to stop still owns the audit state: end it first.
    left = kill_leftovers()
    after = auditctl_state()
    if after != before:
        # Leave the machine as we found it before failing.
        subprocess.run(["auditctl", "-D"], capture_output=True)
        subprocess.run(["auditctl", "-e", before[0]["enabled"], "-b",
                        before[0]["backlog_limit"]], capture_output=True)
        pytest.fail(f"audit state changed: {before} -> {after}"
                    + (f" (sensors left running, killed: {left})" if left else ""))
    assert not left, f"sensors left running by the test, killed: {left}"


def test_unicast_captures_2000_execs_exactly_and_restores_state(audit_guard, tmp_path) -> None:
    lost_before = kernel_lost()
    files = tmp_path / "ttpsensor-files"
    status_file, state_file = files / "status.json", files / "state.json"
    sensor = Sensor(tmp_path, "unicast", "--source", "audit", "--state-file", str(state_file),
                    "--status-file", str(status_file), "--status-interval", "1")
    secret = tmp_path / "root-only-true"
    shutil.copy("/bin/true", secret)
    secret.chmod(0o700)
    try:
        sensor.wait_for(lambda: registered(sensor), "registration")
        sensor.wait_for(lambda: "running as ttpsensor" in sensor.stderr, "privilege drop")
        status = Path(f"/proc/{sensor.proc.pid}/status").read_text()
        assert "\nUid:\t0\t" not in status
        cap_eff = int(next(l.split()[1] for l in status.splitlines() if l.startswith("CapEff")),
                      16)
        assert cap_eff == (1 << 30) | (1 << 19) | (1 << 2)  # AUDIT_CONTROL, SYS_PTRACE, DAC_R_S
        subprocess.run([str(secret), "ttpw-secret"], check=True)
        assert auditctl_state()[0]["enabled"] == "1"
        assert "ttpsensor-exec" in auditctl_state()[1]
        token, spawned = run_execs(2000)
        sensor.wait_for(lambda: len(captured(sensor.events(), token)) == len(spawned),
                        "all 2000 exec events", timeout=180)
        sensor.wait_for(lambda: any(e["event"]["action"] == "sensor_status"
                                    for e in sensor.events()), "a status event")
        live = json.loads(subprocess.run(ttpsensor_command() + [
            "status", "--json", "--status-file", str(status_file)],
            capture_output=True, text=True, check=True).stdout)
        assert live["alive"] is True and live["source"] == "audit"
    finally:
        assert sensor.stop() == 0, sensor.stderr
    assert_complete(sensor.events(), token, spawned)
    [hidden] = [e for e in sensor.events() if "ttpw-secret" in (e.get("process", {}).get("args")
                                                               or [])]
    # Unreadable to the sensor's user, hashed all the same (CAP_DAC_READ_SEARCH).
    assert hidden["process"]["hash"]["sha256"] == FileHasher().digests("/bin/true").sha256
    assert kernel_lost() == lost_before
    summary = json.loads(sensor.stderr.strip().splitlines()[-1].split("stopped: ", 1)[1])
    assert summary["kernel_lost"] == 0 and summary["socket_overflows"] == 0
    assert summary["parse_errors"] == 0 and summary["internal_errors"] == 0
    assert auditctl_state() == audit_guard  # restored exactly
    assert not state_file.exists()
    # Turning audit on for a kernel booted without audit=1, the sensor says that processes
    # older than audit go unaudited; where audit was on already, it says nothing of it.
    said = "processes already running are not audited" in sensor.stderr
    assert said == (older_processes_warning(int(audit_guard[0]["enabled"]),
                                            kernel_command_line()) is not None)
    final = json.loads(status_file.read_text())
    assert final["running"] is False and final["events"] >= 2000
    assert final["kernel_lost"] == 0 and final["assembly"]["serial_gaps"] == 0


def test_multicast_beside_a_registered_daemon_and_refusal_of_a_second_daemon(
        audit_guard, tmp_path) -> None:
    daemon = Sensor(tmp_path, "daemon", "--source", "audit", "--state-file",
                    str(tmp_path / "ttpsensor-files" / "state.json"))
    listener = None
    try:
        daemon.wait_for(lambda: registered(daemon), "registration")
        second = subprocess.run(ttpsensor_command() + [
            "run", "--source", "audit", "--state-file", str(tmp_path / "other.json")],
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "another audit daemon is registered" in second.stderr
        assert "audit-multicast" in second.stderr and "audisp" in second.stderr
        listener = Sensor(tmp_path, "listener")  # --source auto
        # "running as" comes after the session is open (the group joined) and the table seeded.
        listener.wait_for(lambda: "running as" in listener.stderr, "the listener to be ready")
        assert "multicast" in listener.stderr and f"pid {daemon.proc.pid}" in listener.stderr
        token, spawned = run_execs(2000)
        for sensor in (daemon, listener):
            sensor.wait_for(lambda s=sensor: len(captured(s.events(), token)) == len(spawned),
                            "2000 exec events", timeout=180)
    finally:
        stop_all(*[s for s in (listener, daemon) if s is not None])
    assert_complete(daemon.events(), token, spawned)
    assert_complete(listener.events(), token, spawned)
    assert auditctl_state() == audit_guard


def test_short_lived_memfd_images_are_hashed_though_events_are_built_later(
        audit_guard, busy_machine, tmp_path) -> None:
    """The audit sources build their events every 100 ms, and a memfd image can only be
    hashed while its process lives (or through a descriptor opened then): each exec's image
    is opened when its records are read (sensor_linux/audit/capture.py). Five copies of sleep,
    each a new image (no digest cached), living 40 ms: each event has that image's digest."""
    sensor = Sensor(tmp_path, "memfd", "--source", "audit")
    images: dict[str, str] = {}
    try:
        sensor.wait_for(lambda: registered(sensor), "registration")
        # Reading: what a process of 40 ms shows is gone before a sensor still starting reads.
        sensor.wait_for(lambda: "running as ttpsensor" in sensor.stderr, "privilege drop")
        images = run_memfd_images(5)

        def by_marker(marker: str) -> list[dict]:
            return [e for e in sensor.events() if e["event"]["action"] == "process_create"
                    and (e["process"].get("args") or [None])[0] == marker]
        sensor.wait_for(lambda: all(by_marker(m) for m in images), "the memfd execs")
    finally:
        assert sensor.stop() == 0, sensor.stderr
    for marker, digest in images.items():
        [event] = by_marker(marker)
        assert event["process"]["executable"] == f"/memfd:{marker}"
        assert event["process"]["on_disk"] is False
        assert event["process"].get("hash", {}).get("sha256") == digest, marker


def test_after_sigkill_the_next_start_repairs_the_stale_state(audit_guard, tmp_path) -> None:
    state = str(tmp_path / "ttpsensor-files" / "state.json")
    first = Sensor(tmp_path, "killed", "--source", "audit", "--state-file", state)
    first.wait_for(lambda: registered(first), "registration")
    first.stop(signal.SIGKILL)
    assert auditctl_state() != audit_guard  # the kill left rules and settings behind
    second = Sensor(tmp_path, "repairer", "--source", "audit", "--state-file", state)
    try:
        second.wait_for(lambda: registered(second), "registration of the second sensor")
        # The session registers inside open() and the sensor says what it repaired just
        # after: on a busy machine the line can come a moment after the registration.
        second.wait_for(lambda: "restored the audit state" in second.stderr,
                        "the repair to be reported", timeout=30)
    finally:
        assert second.stop() == 0, second.stderr
    assert auditctl_state() == audit_guard


def test_turning_audit_on_warns_of_older_processes_unless_booted_with_audit() -> None:
    assert older_processes_warning(1, "quiet") is None            # already on
    assert older_processes_warning(0, "ro quiet audit=1") is None  # every task has a context
    assert older_processes_warning(0, "audit=On ro") is None
    for cmdline in ("ro quiet", "audit=0", "loglevel=audit=1", ""):
        warning = older_processes_warning(0, cmdline)
        assert warning and "audit=1" in warning and "not audited" in warning


def test_a_request_the_kernel_never_answers_ends_in_an_error_not_a_hang() -> None:
    require(os.geteuid() == 0, "root is needed for audit netlink")
    import errno
    import time

    from sensor_linux.audit import netlink
    sock = AuditSocket(reply_seconds=0.5)
    try:
        started = time.monotonic()
        # An AUDIT_SET that changes nothing, without NLM_F_ACK: the kernel sends no answer.
        payload = bytes(4 * 11)
        with pytest.raises(AuditNetlinkError) as caught:
            sock.request(netlink.AUDIT_SET, payload, reply=True)
        assert caught.value.errno == errno.ETIMEDOUT and "no answer" in str(caught.value)
        assert time.monotonic() - started < 30
        assert sock.status().enabled in (0, 1, 2)   # the socket still serves requests
    finally:
        sock.close()


_SERIAL = re.compile(rb"msg=audit\(\d+\.\d+:(\d+)\)")


def _records_until(read, token: bytes, execs: int) -> list[bytes]:  # noqa: ANN001
    """Lines from ``read`` (read_batch or read_records of a non-blocking socket) until
    ``execs`` EXECVE records have named ``token`` and each of their events has ended (EOE)."""
    lines: list[bytes] = []
    ours: set[bytes] = set()
    ended: set[bytes] = set()
    deadline = time.monotonic() + 60
    while len(ours) < execs or not ours <= ended:
        assert time.monotonic() < deadline, f"{len(ours)} of {execs} execs read"
        try:
            got = read()[0]
        except BlockingIOError:
            select.select([read.__self__.sock], [], [], 0.1)
            continue
        lines.extend(got)
        for line in got:
            if line.startswith(b"type=EXECVE ") and token in line:
                ours.add(_SERIAL.search(line).group(1))
            elif line.startswith(b"type=EOE "):
                ended.add(_SERIAL.search(line).group(1))
    return lines


def test_batched_reads_give_the_records_reads_one_at_a_time_give(audit_guard, tmp_path) -> None:
    """recvmmsg (NetlinkInput's read) against one recv per datagram, on the same records of
    the live kernel: two multicast listeners beside a registered sensor, each given every
    record. Compared: every record of the workload's execs, in order (the machine's other
    execs are left out: only the two readers' common part is the test's)."""
    daemon = Sensor(tmp_path, "daemon", "--source", "audit", "--state-file",
                    str(tmp_path / "ttpsensor-files" / "state.json"))
    group = 1 << (AUDIT_NLGRP_READLOG - 1)
    batched, single = AuditSocket(groups=group), AuditSocket(groups=group)
    for sock in (batched, single):
        sock.enlarge_buffer()
        sock.sock.setblocking(False)
    try:
        daemon.wait_for(lambda: registered(daemon), "registration")
        token, spawned = run_execs(300)
        from_batches = _records_until(batched.read_batch, token.encode(), len(spawned))
        one_by_one = _records_until(single.read_records, token.encode(), len(spawned))
        assert isinstance(batched._batch, DatagramBatch)  # not the fallback
    finally:
        stop_all(daemon)
        batched.close()
        single.close()
    ours = {_SERIAL.search(line).group(1) for line in one_by_one
            if line.startswith(b"type=EXECVE ") and token.encode() in line}
    assert len(ours) == len(spawned)

    def workload(lines: list[bytes]) -> list[bytes]:
        return [line for line in lines if (m := _SERIAL.search(line)) and m.group(1) in ours]
    assert workload(from_batches) == workload(one_by_one)
    assert len(workload(one_by_one)) >= 5 * len(spawned)  # SYSCALL, EXECVE, ..., EOE
    assert auditctl_state() == audit_guard
