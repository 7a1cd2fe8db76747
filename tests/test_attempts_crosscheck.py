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
