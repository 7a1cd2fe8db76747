"""The eBPF exec source against the live kernel, beside the audit source on the same workload."""

from __future__ import annotations

import json
import mmap
import os
import select
import shutil
import subprocess
import sys
import time

import pytest

from common import ttphash
from common.schema import utc_timestamp
from tests.live import (Sensor, assert_complete, captured, ebpf_and_audit, probes_loaded,
                        registered, require_bcc, stop_all, summary)
from tests.test_audit_live import audit_guard  # noqa: F401  (the fixture)
from tests.workload import run_execs, run_memfd_images

pytestmark = pytest.mark.kernel


def _by_marker(events: list[dict], marker: str) -> dict:
    found = [e for e in events if e["event"]["action"] == "process_create"
             and marker in [a for a in (e["process"].get("args") or []) if isinstance(a, str)]]
    assert len(found) == 1, f"{marker}: {len(found)} events"
    return found[0]


def test_ebpf_and_audit_see_the_same_execs_with_the_same_ttphash(audit_guard, busy_machine,
                                                                 tmp_path) -> None:
    ebpf, audit = ebpf_and_audit(tmp_path)
    try:
        token, spawned = run_execs(2000)
        tokened = f"ttpx-{token}"  # not the workload prefix: these are extra
        # Long arguments up to the 32 KiB limit are exact; beyond it, truncation is flagged.
        fits = "F" * 30_000
        subprocess.run(["/bin/true", f"{tokened}-fits", fits], check=True)
        subprocess.run(["/bin/true", f"{tokened}-long", "L" * 40_000], check=True)
        subprocess.run(["/bin/true", f"{tokened}-many"] + [f"a{i}" for i in range(3000)],
                       check=True)
        # A set-uid binary: real uid 0, effective uid nobody's.
        setuid = tmp_path / "setuid-id"
        shutil.copy("/usr/bin/id", setuid)
        os.chown(setuid, 65534, 65534)
        os.chmod(setuid, 0o4755)
        subprocess.run([str(setuid), f"{tokened}-setuid"], capture_output=True)
        # Failed execs are about the file tried: the marker is in its name (neither source
        # reports the argument vector of an exec that never happened).
        with pytest.raises(FileNotFoundError):
            subprocess.run([f"/nonexistent/{tokened}-enoent"])
        plain = tmp_path / f"{tokened}-eacces"
        plain.write_text("data")
        with pytest.raises(PermissionError):
            subprocess.run([str(plain)])
        # fexecve: execveat(fd, "", argv, envp, AT_EMPTY_PATH)
        subprocess.run([sys.executable, "-c", "import os; fd = os.open('/bin/true', os.O_RDONLY);"
                        f" os.execve(fd, ['true', '{tokened}-fexecve'], {{}})"], check=True)
        last = f"{tokened}-last"
        subprocess.run(["/bin/true", last], check=True)
        for sensor in (ebpf, audit):
            sensor.wait_for(lambda s=sensor: any(last in (e["process"].get("args") or [])
                                                 for e in s.events() if "process" in e),
                            "the last exec", timeout=180)
    finally:
        stop_all(audit, ebpf)
    events = ebpf.events()
    # 2,000 execs: exactly 2,000 events, exact argv (non-UTF-8, empty, quotes, newlines...).
    assert len(captured(events, token)) == 2000
    assert_complete(events, token, spawned)
    by_pid = {e["process"]["pid"]: e for e in events if e["event"]["action"] == "process_create"}
    assert all(by_pid[pid]["process"]["parent"]["pid"] == os.getpid() for pid in spawned)
    fits_event = _by_marker(events, f"{tokened}-fits")
    assert fits_event["process"]["args"][2] == fits and "args_truncated" not in fits_event["process"]
    long_event = _by_marker(events, f"{tokened}-long")
    assert long_event["process"]["args_truncated"] is True
    assert long_event["process"]["args_count"] == 3
    assert long_event["process"]["args"][2] == "L" * (32768 - len("/bin/true") - 1
                                                      - len(f"{tokened}-long") - 1)
    # Many short arguments are no problem: the limit is in bytes, not in arguments.
    many = _by_marker(events, f"{tokened}-many")
    assert "args_truncated" not in many["process"]
    assert many["process"]["args_count"] == 3002 and len(many["process"]["args"]) == 3002
    setuid_event = _by_marker(events, f"{tokened}-setuid")
    assert setuid_event["process"]["real_user"]["id"] == "0"
    assert setuid_event["process"]["user"]["id"] == "65534"
    for marker, code in ((f"{tokened}-enoent", -2), (f"{tokened}-eacces", -13)):
        failed = [e for e in events if e["event"]["action"] == "process_create"
                  and e["event"]["outcome"] == "failure"
                  and marker in str(e["process"].get("executable"))]
        assert [e["process"]["exit_code"] for e in failed] == [code], marker
    fexecve = _by_marker(events, f"{tokened}-fexecve")
    assert fexecve["process"].get("execveat") is True
    # The kernel names it /dev/fd/N; the probes read the file behind the descriptor.
    assert fexecve["process"]["executable"] == os.path.realpath("/bin/true")
    # The same execs through audit: the same TTPHash, every hash complete. Matched on the
    # workload's own marker, not the pid: on a busy machine pids wrap within the run.
    def by_marker(events: list[dict]) -> dict[str, dict]:
        return {e["process"]["args"][1]: e for e in events
                if e["event"]["action"] == "process_create"
                and e["event"]["outcome"] == "success"
                and len(e["process"].get("args") or []) > 1
                and str(e["process"]["args"][1]).startswith(f"ttpw-{token}-")}
    ours, theirs = by_marker(events), by_marker(audit.events())
    assert len(ours) == 2000
    for marker, mine in ours.items():
        assert mine["ttphash"] == ttphash.compute(mine).as_field()
        assert mine["ttphash"]["complete"], ttphash.compute(mine).input
        if marker in theirs:
            assert mine["ttphash"]["value"] == theirs[marker]["ttphash"]["value"], json.dumps(
                [ttphash.compute(mine).input, ttphash.compute(theirs[marker]).input])[:2000]
    # Audit may lose events on a busy machine (its backlog); each one it lost is counted.
    missed = len(ours) - len(set(ours) & set(theirs))
    assert missed <= summary(audit)["kernel_lost"], missed
    # Ours lost no argument; and the /proc reads, counted for the whole busy machine, stay a
    # small fraction of its execs (short-lived processes are described from the record).
    assert not any("args_faulted" in e["process"] for e in ours.values())
    stats = summary(ebpf)
    assert stats["internal_errors"] == 0
    assert stats["proc_reads"] <= 0.05 * stats["received"], stats


def test_tiny_ring_buffer_drops_are_all_counted(busy_machine, tmp_path) -> None:
    require_bcc()
    sensor = Sensor(tmp_path, "tiny", "--source", "ebpf", "--ebpf-ringbuf-pages", "1")
    try:
        sensor.wait_for(lambda: probes_loaded(sensor), "the probes to load", timeout=120)
        token, spawned = run_execs(1000)  # a burst the 4 KiB buffer cannot hold
    finally:
        assert sensor.stop() == 0, sensor.stderr
    stats = summary(sensor)
    received = len(captured(sensor.events(), token))
    dropped = stats["probe_drops"]["ringbuf_full"]
    assert dropped > 0, "the burst should overflow a one-page ring buffer"
    # Drops are counted for the whole machine and other processes exec too (busy.sh), so only
    # a bound can be attributed: every one of our execs that did not arrive is among the
    # counted drops, none is lost silently.
    assert 0 < received < len(spawned)
    assert len(spawned) - received <= dropped
    assert stats["received"] + dropped >= len(spawned)
    assert stats["probe_drops"]["pending_full"] == 0
    # Records wrap around a one-page ring all the time: each must still decode whole.
    assert stats["internal_errors"] == 0 and stats["not_representable"] == 0


def test_cross_check_is_silent_on_a_busy_machine_and_reports_what_audit_missed(
        audit_guard, busy_machine, tmp_path) -> None:
    require_bcc()
    sensor = Sensor(tmp_path, "cross", "--source", "cross-check", "--state-file",
                    str(tmp_path / "ttpsensor-files" / "state.json"))
    try:
        sensor.wait_for(lambda: registered(sensor), "registration", timeout=120)
        clean_token, clean = run_execs(500)
        sensor.wait_for(lambda: len(captured(sensor.events(), clean_token)) == 500, "clean")
        time.sleep(6)  # past the matching window: anything unmatched would be reported now
        assert not unmatched(sensor)
        subprocess.run(["auditctl", "-D"], check=True, capture_output=True)  # tamper
        missed_token, missed = run_execs(200)
        sensor.wait_for(lambda: len(captured(unmatched(sensor), missed_token)) == 200,
                        "the unmatched reports", timeout=60)
    finally:
        assert sensor.stop() == 0, sensor.stderr
    # Attributed by the workload's markers (pids wrap on a busy machine; others' execs after
    # the tampering are reported too, rightly).
    reports = unmatched(sensor)
    assert {r["ttpsensor"]["crosscheck"]["missed_by"] for r in reports} == {"auditd"}
    assert set(captured(reports, missed_token)) == set(missed)
    assert captured(reports, clean_token) == {}
    last = reports[-1]["ttpsensor"]["crosscheck"]
    assert last["unmatched"]["ebpf"] == len(reports) and last["unmatched"]["auditd"] == 0
    checked = summary(sensor)["crosscheck"]
    assert checked["matched"] >= 500 and checked["unmatched"]["ebpf"] == len(reports)


def unmatched(sensor: Sensor) -> list[dict]:
    return [e for e in sensor.events() if e["event"]["action"] == "exec_unmatched"]


NOBODY = 65534


def test_cross_check_says_a_task_rule_hid_an_exec_from_audit(audit_guard, busy_machine,
                                                              tmp_path) -> None:
    """A ``task,never`` rule leaves the tasks it matches without an audit context
    (kernel/auditsc.c, audit_alloc): audit records nothing of them, eBPF sees their execs. The
    probes read that at the exec; the exec's event says so, and the cross-check reports it at
    once with its reason. The root execs of the same run are audited and match."""
    require_bcc()
    sensor = Sensor(tmp_path, "unaudited", "--source", "cross-check", "--state-file",
                    str(tmp_path / "ttpsensor-files" / "state.json"))
    rule = ["task,never", "-F", f"uid={NOBODY}"]
    hidden = f"ttp-hidden-{os.urandom(6).hex()}"
    try:
        sensor.wait_for(lambda: registered(sensor), "registration", timeout=120)
        # The cross-check counts, without a report, tasks created within a second of its
        # start (they may predate audit): the hidden task must be created after that.
        time.sleep(2)
        subprocess.run(["auditctl", "-a", *rule], check=True, capture_output=True)
        created = time.time()
        # sh is forked by this (root) process, so it is audited; as nobody it forks the
        # /bin/true task, which the rule excludes (the "; true" keeps sh from exec'ing it
        # in place).
        subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        "/bin/sh", "-c", f"/bin/true {hidden}; true"], check=True)
        token, spawned = run_execs(50)
        sensor.wait_for(lambda: any(hidden in (r["process"].get("args") or [])
                                    for r in unmatched(sensor)), "the report", timeout=60)
        sensor.wait_for(lambda: len(captured(sensor.events(), token)) == 50, "the root execs")
        time.sleep(6)  # past the matching window: a miss of the root execs would show now
    finally:
        subprocess.run(["auditctl", "-d", *rule], capture_output=True)
        assert sensor.stop() == 0, sensor.stderr
    [report] = [r for r in unmatched(sensor) if hidden in (r["process"].get("args") or [])]
    assert report["ttpsensor"]["crosscheck"]["missed_by"] == "auditd"
    assert report["ttpsensor"]["crosscheck"]["reason"] == "excluded_by_task_rule"
    execs = [e for e in sensor.events() if e["event"]["action"] == "process_create"]
    [event] = [e for e in execs if hidden in (e["process"].get("args") or [])]
    assert event["ttpsensor"]["unaudited_task"] is True
    task_start = event["ttpsensor"]["task_start"]
    assert utc_timestamp(created - 1) < task_start < utc_timestamp(time.time())
    # The sh that started it was forked by root (the rule matches nobody's tasks): audited.
    [shell] = [e for e in execs if e["process"].get("args") == [
        "/bin/sh", "-c", f"/bin/true {hidden}; true"]]
    assert "unaudited_task" not in shell.get("ttpsensor", {})
    assert captured(unmatched(sensor), token) == {}
    assert_complete(sensor.events(), token, spawned)


def test_hybrid_takes_exec_from_ebpf_and_the_rest_from_audit(audit_guard, busy_machine,
                                                            tmp_path) -> None:
    require_bcc()
    watched = tmp_path / "watched.conf"
    watched.write_text("x")
    rules = tmp_path / "hybrid.rules"
    rules.write_text(f"-w {watched} -p wa -k ttp-watch\n"
                     "-a always,exit -F arch=b64 -S execve -k should-be-removed\n")
    sensor = Sensor(tmp_path, "hybrid", "--source", "hybrid", "--rules", str(rules),
                    "--state-file", str(tmp_path / "ttpsensor-files" / "state.json"))
    try:
        sensor.wait_for(lambda: registered(sensor), "registration", timeout=120)
        loaded = subprocess.run(["auditctl", "-l"], capture_output=True, text=True).stdout
        assert "ttp-watch" in loaded and "should-be-removed" not in loaded
        token, spawned = run_execs(100)
        # Written by a new process: one created before audit was first enabled on this boot
        # (this pytest, on a machine booted without audit=1) is never audited at all
        # (docs/audit.md, "Processes older than audit").
        subprocess.run(["/bin/sh", "-c", 'echo changed > "$1"', "sh", str(watched)],
                       check=True)
        sensor.wait_for(lambda: any(e.get("audit", {}).get("key") == "ttp-watch"
                                    for e in sensor.events()), "the file watch event")
        sensor.wait_for(lambda: len(captured(sensor.events(), token)) == 100, "the execs")
    finally:
        assert sensor.stop() == 0, sensor.stderr
    execs = [e for e in sensor.events() if e["event"]["action"] == "process_create"]
    assert {e["event"]["provider"] for e in execs} == {"ebpf"}
    assert_complete(sensor.events(), token, spawned)



def test_a_short_lived_memfd_image_is_hashed_though_the_ring_gathers(busy_machine,
                                                                     tmp_path) -> None:
    """The sensor reads its ring every 200 ms, but a memfd image can only be hashed through
    /proc/PID/exe while its process lives: the probes wake the sensor for it (execsnoop.c,
    wake_flags; the loop waits on RingWake). Five copies of sleep, each a new image (no
    digest cached) living 40 ms: each event has that image's digest."""
    require_bcc()
    sensor = Sensor(tmp_path, "memfd", "--source", "ebpf")
    images: dict[str, str] = {}
    try:
        sensor.wait_for(lambda: "running as" in sensor.stderr or "staying root"
                        in sensor.stderr, "the sensor to run", timeout=120)
        images = run_memfd_images(5)
        sensor.wait_for(lambda: all(any(e["process"].get("args", [None])[0] == marker
                                        for e in sensor.events() if "process" in e)
                                    for marker in images), "the memfd execs", timeout=60)
    finally:
        assert sensor.stop() == 0, sensor.stderr
    for marker, digest in images.items():
        event = _by_marker(sensor.events(), marker)
        assert event["process"]["on_disk"] is False
        assert event["process"].get("hash", {}).get("sha256") == digest, marker

def test_self_check_refuses_offsets_that_read_the_wrong_member(monkeypatch) -> None:
    """Offsets that are off by one member must stop the sensor, naming what was wrong."""
    require_bcc()
    from sensor_linux.ebpf import probes

    real = probes.kernel_offsets

    def shifted(btf):  # the ids of struct cred read one member too far
        offsets = real(btf)
        offsets["OFF_CRED_UID"] += 4
        return offsets

    monkeypatch.setattr(probes, "kernel_offsets", shifted)
    loaded = probes.ExecProbes(on_exec=lambda record: None, ringbuf_pages=8)
    with pytest.raises(probes.PrerequisiteError, match="uids: expected"):
        loaded.load()
    assert loaded.bpf is None  # detached again


def test_self_check_refuses_a_task_start_read_from_the_wrong_member(monkeypatch) -> None:
    """The exec'ing task's creation time (which the cross-check compares with its start) is
    checked against the self-check child's fork, as the ids are."""
    require_bcc()
    from sensor_linux.ebpf import probes

    real = probes.kernel_offsets

    def shifted(btf):  # one member back (one on would be start_boottime: the same value on
        offsets = real(btf)  # a machine never suspended)
        offsets["OFF_TASK_START_TIME"] -= 8
        return offsets

    monkeypatch.setattr(probes, "kernel_offsets", shifted)
    loaded = probes.ExecProbes(on_exec=lambda record: None, ringbuf_pages=8)
    with pytest.raises(probes.PrerequisiteError, match="task_start: expected"):
        loaded.load()
    assert loaded.bpf is None


def test_a_failing_output_stops_the_poll_instead_of_losing_every_event() -> None:
    """What on_exec raises (an output that cannot be written) comes out of poll(): ctypes
    would print it and carry on, each later event lost the same way."""
    require_bcc()
    from sensor_linux.ebpf import probes

    def full_disk(record) -> None:  # noqa: ANN001
        raise OSError(28, "No space left on device")

    loaded = probes.ExecProbes(on_exec=full_disk, ringbuf_pages=8)
    loaded.load()
    try:
        deadline = time.monotonic() + 60
        with pytest.raises(OSError, match="No space left"):
            while time.monotonic() < deadline:   # any exec on the machine will do
                subprocess.run(["/bin/true"], check=True)
                loaded.poll(100)
        # Raised once: with an output that works again, polling goes on (the machine is
        # busy, so other execs are in the ring by now).
        loaded.on_exec = lambda record: None
        loaded.poll(0)
    finally:
        loaded.close()


def test_an_output_the_unprivileged_sensor_could_not_rotate_is_refused_at_start(
        tmp_path) -> None:
    """A root-owned output in a shared sticky directory (such as /tmp): once the sensor has
    dropped to its user it could not rename it to rotate it, and at the first rotation every
    event after was lost. It now stops at start, saying why, before any event is read."""
    require_bcc()
    from tests.conftest import ttpsensor_command
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    own = tmp_path / "ttpsensor-own"
    result = subprocess.run(
        ttpsensor_command() + ["run", "--source", "ebpf", "--output",
                               f"jsonl:{shared}/events.jsonl", "--store", "",
                               "--status-file", str(own / "status.json")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert f"{shared}/events.jsonl: {shared} is a shared (sticky) directory" in result.stderr
    assert "--user root" in result.stderr and "Traceback" not in result.stderr


def _loaded_with_reader(monkeypatch, in_place: bool, on_exec,  # noqa: ANN001
                        ringbuf_pages: int, on_execs=None):  # noqa: ANN001, ANN202
    """The probes loaded with the in-place reader or BCC's callback."""
    require_bcc()
    from sensor_linux.ebpf import probes

    monkeypatch.setattr(probes, "IN_PLACE", in_place)
    loaded = probes.ExecProbes(on_exec=on_exec, on_execs=on_execs, ringbuf_pages=ringbuf_pages)
    loaded.load()
    return loaded


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "bcc-callback"])
@pytest.mark.parametrize("batched", [False, True], ids=["each", "batched"])
def test_both_ring_readers_deliver_the_same_exec_whole(monkeypatch, tmp_path,
                                                       in_place: bool, batched: bool) -> None:
    """The ring is read through BCC's callback, or in place when asked for: both must
    deliver our own execs with their facts, one by one or a poll's records in one call (as
    the sources take them), and a failed delivery must come out of poll()."""
    seen: list = []
    polls: list[int] = []

    def each_poll(records: list) -> None:
        polls.append(len(records))
        seen.extend(records)

    loaded = _loaded_with_reader(monkeypatch, in_place, None if batched else seen.append,
                                 ringbuf_pages=8, on_execs=each_poll if batched else None)
    try:
        assert (loaded._ring is not None) is in_place
        marker = f"ring-{in_place}-{os.getpid()}"
        child = subprocess.Popen(["/bin/true", marker], cwd=tmp_path)
        child.wait()
        deadline = time.monotonic() + 30
        mine: list = []
        want = [b"/bin/true", marker.encode()]
        while not mine and time.monotonic() < deadline:  # other execs of the machine arrive too
            loaded.poll(100)
            mine = [r for r in seen if r.pid == child.pid and r.args == want]
        assert len(mine) == 1
        assert mine[0].cwd == str(tmp_path).encode() and mine[0].ppid == os.getpid()
        # Batched: every record came in a poll's one call, none empty; else none that way.
        assert (sum(polls) == len(seen) and 0 not in polls) if batched else not polls

        def full_disk(record) -> None:  # noqa: ANN001
            raise OSError(28, "No space left on device")

        if batched:
            loaded.on_execs = full_disk
        else:
            loaded.on_exec = full_disk
        with pytest.raises(OSError, match="No space left"):
            while time.monotonic() < deadline + 30:
                subprocess.run(["/bin/true"], check=True)
                loaded.poll(100)
    finally:
        loaded.close()


def _woken(loaded, seconds: float) -> bool:  # noqa: ANN001
    return bool(select.select([loaded.wake_fd()], [], [], seconds)[0])


def _read_all(loaded, seen: list, until) -> list:  # noqa: ANN001
    """Read the ring until ``until(record)`` holds for one record; those records."""
    deadline = time.monotonic() + 30
    mine: list = []
    while not mine and time.monotonic() < deadline:  # other execs of the machine arrive too
        loaded.poll(100)
        mine = [r for r in seen if until(r)]
    return mine


def test_an_exec_of_an_unlinked_image_wakes_the_reader_at_once(tmp_path) -> None:
    """A memfd (or deleted) image can only be hashed through /proc/PID/exe while its process
    lives, so the probes wake their reader for it instead of letting it gather (execsnoop.c,
    wake_flags). Other records wake nobody, so the wake-up comes from our exec unless
    the machine exec'd such an image too or filled a sixteenth of 4 MiB within 2 s."""
    require_bcc()
    from sensor_linux.ebpf import probes

    seen: list = []
    loaded = probes.ExecProbes(on_exec=seen.append)
    loaded.load()
    fd = os.memfd_create("ttpsensor-unlinked", 0)
    try:
        with open("/bin/true", "rb") as f:
            os.write(fd, f.read())
        marker = f"unlinked-{os.getpid()}"
        loaded.clear_wake()
        loaded.poll(0)
        child = subprocess.Popen([f"/proc/self/fd/{fd}", marker], pass_fds=(fd,))
        assert _woken(loaded, 2.0)
        child.wait()
        loaded.clear_wake()
        mine = _read_all(loaded, seen, lambda r: r.pid == child.pid and r.args
                         and r.args[-1] == marker.encode())
        assert len(mine) == 1 and mine[0].identity is not None
        assert mine[0].identity.nlink == 0
    finally:
        os.close(fd)
        loaded.close()


def _taken(loaded) -> int:  # noqa: ANN001
    """Bytes the reader has taken from the ring (what the probes are told)."""
    return loaded._ring.position if loaded._ring is not None else loaded._consumed


def _assert_no_wake_unexplained(loaded, seen: list, marker: str) -> None:  # noqa: ANN001
    """Exec a file on disk: its record must be in the ring, and a wake-up meanwhile must be
    explained by what the ring held (an unlinked image of another process, or a
    sixteenth of the ring)."""
    from sensor_linux.batching import EARLY_FILL
    loaded.clear_wake()
    loaded.poll(0)
    # A record put while that read took the backlog was weighed against the read before it
    # (the probes learn what was taken when the read ends), so it may have woken the reader
    # for a fill that read took away: the sensor then reads once more; here the wake-up is
    # cleared. The kernel delivers a wake-up late (irq_work, later still on a busy VM): one
    # raised during the read can arrive after a clear at once, so the clear waits for it (it
    # failed in CI beside 100 execs/s: woken for 44 records, 11 KB). No record put during the
    # wait can wake the reader unless 32 KB arrive in it. The probes count from this read now,
    # and so does `taken`; a record put since stays in the ring for _read_all, in `seen` and
    # in what was held.
    time.sleep(0.1)
    loaded.clear_wake()
    taken = _taken(loaded)
    seen.clear()
    child = subprocess.Popen(["/bin/true", marker])
    child.wait()
    time.sleep(0.3)
    woken = _woken(loaded, 0)
    mine = _read_all(loaded, seen, lambda r: r.pid == child.pid and r.args
                     and r.args[-1] == marker.encode())
    assert len(mine) == 1 and mine[0].identity is not None and mine[0].identity.nlink > 0
    if woken:
        held = _taken(loaded) - taken
        unlinked = [r for r in seen if r.identity is not None and r.identity.nlink == 0]
        assert unlinked or held >= EARLY_FILL * loaded.ringbuf_pages * mmap.PAGESIZE, \
            f"woken for {len(seen)} records of {held} bytes, none unlinked"


def test_an_exec_of_a_file_on_disk_gathers_without_a_wake_up() -> None:
    require_bcc()
    from sensor_linux.ebpf import probes

    seen: list = []
    loaded = probes.ExecProbes(on_exec=seen.append)
    loaded.load()
    try:
        _assert_no_wake_unexplained(loaded, seen, f"on-disk-{os.getpid()}")
    finally:
        loaded.close()


# Run in a process of its own: its memory is the load's alone. Loads twice, so that the
# second compile runs through the code pages the first load gave back.
_RELEASE = r"""
import json, os, re, subprocess, time
from sensor_linux.ebpf.probes import ExecProbes
from sensor_linux.lab.measure import memory_mib

def memory():
    now = memory_mib(os.getpid())
    found, rss = {"VmRSS": now["rss"], "VmHWM": now["peak"]}, {"compiler code": 0}
    name = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", head[0]):
                name = head[5] if len(head) > 5 and head[1] == "r-xp" else None
            elif line.startswith("Rss:") and name and re.search(r"/lib(LLVM|clang)", name):
                rss["compiler code"] += int(head[1]) / 1024
    return {**found, **rss}

out = {}
for n in (1, 2):
    marker = f"released-{os.getpid()}-{n}"
    seen = []
    probes = ExecProbes(on_exec=seen.append, ringbuf_pages=8)
    probes.load()
    out[n] = {**memory(), "released MiB": probes.released.code_bytes / 2**20}
    subprocess.run(["/bin/true", marker])
    # Other execs of the machine arrive too, some without arguments (a failed exec).
    mine = lambda: any((r.args or [])[-1:] == [marker.encode()] for r in seen)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not mine():
        probes.poll(100)
    out[n]["delivered"] = mine()
    probes.close()
print(json.dumps(out))
"""


def test_the_load_gives_back_the_compilers_memory() -> None:
    require_bcc()
    done = subprocess.run([sys.executable, "-c", _RELEASE], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loads = json.loads(done.stdout)
    for load in loads.values():
        assert load["delivered"], loads                      # the probes work after it
        assert load["released MiB"] > 10, loads              # libLLVM's code is tens of MiB
        assert load["compiler code"] < 4, loads              # none of it stays resident
        # The compile's peak (well over 100 MiB) is not what the sensor keeps.
        assert load["VmRSS"] < load["VmHWM"] - 40, loads


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "bcc-callback"])
def test_a_ring_filling_up_wakes_the_reader_and_a_read_resets_it(monkeypatch,
                                                                  in_place: bool) -> None:
    """128 pages: a sixteenth is 32 KiB, which our own sixty execs with 1000-byte arguments
    exceed, and the machine's other execs do not reach in the 0.3 s after the read (the
    probes count from what either reader told them it took)."""
    seen: list = []
    loaded = _loaded_with_reader(monkeypatch, in_place, seen.append, ringbuf_pages=128)
    try:
        loaded.clear_wake()
        loaded.poll(0)
        for _ in range(60):
            subprocess.run(["/bin/true", "f" * 1000], check=True)
        assert _woken(loaded, 2.0)
        _assert_no_wake_unexplained(loaded, seen, f"after-fill-{os.getpid()}")
    finally:
        loaded.close()
