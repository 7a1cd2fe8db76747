"""Folding of PATH-walk attempts, and the cross-check's matching, on hand-made event streams."""

from __future__ import annotations

from common.schema import new_event, utc_timestamp
from sensor_linux.attempts import MAX_HELD_PER_PROCESS, MAX_PATHS, AttemptFolder
from sensor_linux.crosscheck import CrossCheck


def _exec(pid: int, path: str, code: int = 0, args: list | None = None,
          start: float = 1_800_000_000.0) -> dict:
    event = new_event("process_create", "test", host={"name": "h"})
    event["event"]["outcome"] = "success" if code == 0 else "failure"
    event["process"] = {"pid": pid, "executable": path, "exit_code": code,
                        "start": utc_timestamp(start)}
    if args is not None:
        event["process"]["args"] = args
    return event


def test_path_walk_misses_fold_into_the_exec_that_follows() -> None:
    folder = AttemptFolder()
    assert folder.take(_exec(7, "/root/.cargo/bin/bash", -2), now=0) == []
    assert folder.take(_exec(7, "/usr/local/sbin/bash", -2), now=0) == []
    assert folder.take(_exec(7, "/etc/hosts/bash", -20), now=0) == []
    other = folder.take(_exec(8, "/usr/bin/true"), now=0)   # another process: untouched
    assert len(other) == 1 and "exec_attempts" not in other[0]["process"]
    [event] = folder.take(_exec(7, "/usr/bin/bash"), now=0.1)
    assert event["process"]["exec_attempts"] == {
        "count": 3, "errors": {"ENOENT": 2, "ENOTDIR": 1},
        "paths": ["/root/.cargo/bin/bash", "/usr/local/sbin/bash", "/etc/hosts/bash"]}
    assert folder.summary() == {"folded": 3, "unfolded": 0, "held": 0}


def test_denied_and_unfollowed_attempts_stay_events() -> None:
    folder = AttemptFolder(window=2.0)
    denied = folder.take(_exec(7, "/tmp/not-executable", -13), now=0)
    assert [e["process"]["exit_code"] for e in denied] == [-13]
    assert folder.take(_exec(9, "/nope", -2), now=0) == []
    assert folder.expire(now=1.0) == []                       # still within the window
    released = folder.expire(now=2.5)
    assert [e["process"]["executable"] for e in released] == ["/nope"]
    assert "exec_attempts" not in released[0]["process"]
    # Attempts held at shutdown come out too: nothing is lost.
    folder.take(_exec(10, "/x", -2), now=3)
    assert len(folder.expire(everything=True)) == 1
    assert folder.summary()["unfolded"] == 2


def test_keep_all_and_the_bounds() -> None:
    keep = AttemptFolder(keep_all=True)
    assert len(keep.take(_exec(7, "/a", -2), now=0)) == 1
    folder = AttemptFolder()
    out = []
    for i in range(MAX_HELD_PER_PROCESS + 5):
        out += folder.take(_exec(7, f"/d{i}/x", -2), now=0)
    assert len(out) == 5                                      # the oldest, released as events
    [event] = folder.take(_exec(7, "/usr/bin/x"), now=0)
    attempts = event["process"]["exec_attempts"]
    assert attempts["count"] == MAX_HELD_PER_PROCESS and len(attempts["paths"]) == MAX_PATHS
    assert folder.folded + folder.unfolded == MAX_HELD_PER_PROCESS + 5


def test_cross_check_matches_the_same_exec_and_reports_a_real_miss() -> None:
    check = CrossCheck({"name": "h"}, window=5.0)
    argv = ["/bin/sh", "/tmp/script.sh", "arg"]
    assert check.add("auditd", _exec(5, "/usr/bin/dash", args=argv), now=0) == []
    assert check.add("ebpf", _exec(5, "/usr/bin/dash", args=argv), now=1) == []
    assert check.matched == 1
    check.add("ebpf", _exec(6, "/usr/bin/true", args=["/bin/true"]), now=2)
    reports = check.expire(now=8)
    assert [r["ttpsensor"]["crosscheck"]["missed_by"] for r in reports] == ["auditd"]
    assert check.summary()["unmatched"] == {"auditd": 0, "ebpf": 1}


def test_cross_check_key_survives_ebpf_truncation() -> None:
    check = CrossCheck({"name": "h"})
    whole = ["/bin/true", "x" * 50_000]
    cut = ["/bin/true", "x" * 30_000]            # the probes cut long vectors at their limit
    check.add("auditd", _exec(5, "/usr/bin/true", args=whole), now=0)
    check.add("ebpf", _exec(5, "/usr/bin/true", args=cut), now=0)
    assert check.matched == 1


def test_cross_check_does_not_report_what_one_source_cannot_see() -> None:
    start = 1_800_000_000.0
    check = CrossCheck({"name": "h"}, window=5.0, start=start)
    early = _exec(5, "/usr/bin/true", args=["true"], start=start - 3)
    check.add("ebpf", early, now=0)
    helper = _exec(6, "/usr/sbin/modprobe", args=["modprobe"], start=start + 10)
    helper["ttpsensor"] = {"kernel_exec": True}
    check.add("ebpf", helper, now=0)
    later = _exec(7, "/usr/bin/true", args=["true"], start=start + 10)
    check.add("ebpf", later, now=0)
    reports = check.expire(now=10)
    assert [r["process"]["pid"] for r in reports] == [7]
    summary = check.summary()
    assert summary["before_start"] == 1 and summary["kernel_execs"] == 1
    # At shutdown what is still inside its window is counted, not reported.
    check.add("auditd", _exec(8, "/usr/bin/true", args=["true"], start=start + 20), now=11)
    assert check.finish(now=12) == [] and check.summary()["unsettled_at_stop"] == 1


def _unaudited(pid: int, start: float, task_start: float) -> dict:
    """An eBPF exec by a task without an audit context (events.py: mark_unaudited)."""
    event = _exec(pid, "/usr/bin/true", args=["true", str(pid)], start=start)
    event["ttpsensor"] = {"unaudited_task": True, "task_start": utc_timestamp(task_start)}
    return event


def test_cross_check_counts_unaudited_old_tasks_and_reports_tasks_a_rule_hid() -> None:
    start = 1_800_000_000.0
    check = CrossCheck({"name": "h"}, window=5.0, start=start)
    # A shell older than the sensor exec'ing now: on a machine booted without audit=1 it may
    # predate audit itself. Counted, not reported, and not left waiting for a twin.
    assert check.add("ebpf", _unaudited(5, start + 30, start - 600), now=0) == []
    # A task created after both sources listened, without an audit context: audit was on
    # when it was created, so a task rule hid it. Reported at once: its twin cannot come.
    [report] = check.add("ebpf", _unaudited(6, start + 30, start + 20), now=0)
    assert report["process"]["pid"] == 6
    assert report["ttpsensor"]["crosscheck"]["missed_by"] == "auditd"
    assert report["ttpsensor"]["crosscheck"]["reason"] == "excluded_by_task_rule"
    assert check.expire(now=100) == []
    summary = check.summary()
    assert summary["unaudited_before_start"] == 1
    assert summary["unmatched"] == {"auditd": 0, "ebpf": 1}
    assert summary["pending"] == {"auditd": 0, "ebpf": 0}
    # An ordinary miss carries no reason.
    check.add("ebpf", _exec(7, "/usr/bin/true", args=["true"], start=start + 40), now=100)
    [plain] = check.expire(now=200)
    assert "reason" not in plain["ttpsensor"]["crosscheck"]


def test_cross_check_with_audit_from_boot_reports_even_an_old_unaudited_task() -> None:
    """Booted with audit=1, every task has had an audit context since boot unless a task rule
    excluded it: an old task without one is no gap of audit's start, and is reported."""
    start = 1_800_000_000.0
    check = CrossCheck({"name": "h"}, window=5.0, start=start, audit_at_boot=True)
    [report] = check.add("ebpf", _unaudited(5, start + 30, start - 600), now=0)
    assert report["ttpsensor"]["crosscheck"]["reason"] == "excluded_by_task_rule"
    assert check.summary()["unaudited_before_start"] == 0
