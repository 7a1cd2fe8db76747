"""Events the kernel splits under load: their late records join them.

With a full backlog the kernel holds a task between its SYSCALL record and the rest of its
event for seconds while other tasks' records get in (sensor_linux/audit/assemble.py). The real
input is auditd's log of the lab's execs at 2,000 a second on two busy CPUs, thinned by
tests/thin_audit_log.py: five execs whose BPRM_FCAPS, EXECVE, CWD, PATH and PROCTITLE records
came about 8 s of audit time after their SYSCALL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from sensor_linux.audit import assemble
from sensor_linux.audit.assemble import Assembler
from sensor_linux.audit.laurel import PEER_CONFIG
from sensor_linux.audit.records import parse
from tests.conftest import require, ttpsensor_command

SPLIT_LOG = Path(__file__).parent / "data" / "audit-split-late.log"
SPLIT_EXECS = 5


def _by_id(path: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            out[event["ID"]].append(event)
    return out


def _merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """LAUREL's lines of one event id as one event: a record type in both parts (PATH items
    split between them) is the first part's items and then the second's."""
    whole: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key in whole and key != "ID":
                whole[key] = whole[key] + value
            else:
                whole[key] = value
    return whole


def test_split_execs_come_out_whole_with_what_laurel_emits_in_two_parts(tmp_path: Path) -> None:
    require(shutil.which("laurel") is not None, "LAUREL (apt-get install laurel) is missing")
    (tmp_path / "laurel").mkdir()
    (tmp_path / "laurel.toml").write_text(PEER_CONFIG.format(directory=tmp_path / "laurel"))
    with open(SPLIT_LOG, "rb") as log:
        subprocess.run(["laurel", "--config", str(tmp_path / "laurel.toml")], stdin=log,
                       capture_output=True, check=True, timeout=120)
    ours = subprocess.run([*ttpsensor_command(), "audisp", str(SPLIT_LOG), "--format", "laurel",
                           "--parse-error-log", str(tmp_path / "errors.log")],
                          capture_output=True, check=True, timeout=120)
    (tmp_path / "ours.jsonl").write_bytes(ours.stdout)
    summary = json.loads(ours.stderr.decode().rsplit("ttpsensor audisp: ", 1)[1])
    theirs, mine = _by_id(tmp_path / "laurel" / "laurel.log"), _by_id(tmp_path / "ours.jsonl")
    # The input does split: LAUREL, which closes an event 5 s of audit time after it, writes
    # each of those execs as two events (its SYSCALL, then the rest).
    split = sorted(i for i, parts in theirs.items() if len(parts) > 1)
    assert len(split) == SPLIT_EXECS
    # Ours: one event for each id, holding every record LAUREL wrote for it.
    assert sorted(mine) == sorted(theirs)
    for event_id, parts in theirs.items():
        assert len(mine[event_id]) == 1, event_id
        assert mine[event_id][0] == _merged(parts), event_id
    for event_id in split:
        assert mine[event_id][0]["EXECVE"]["ARGV"][1].startswith("ttplab-")
    assembly = summary["assembly"]
    assert summary["rejected"] == 0 and assembly["duplicates"] == 0
    assert assembly["lingered"] == assembly["completed_late"] == SPLIT_EXECS
    assert assembly["timed_out"] == 0 and assembly["lingering"] == 0


# What the thinned log loses below, by exec (its index among the log's successful execs): an
# exec that lost several kinds of record counts once, and under each kind.
LOSSES = {3: ("EXECVE",), 10: ("CWD",), 20: ("PATH",), 30: ("PROCTITLE",),
          40: ("CWD", "PROCTITLE"), 45: ("EXECVE", "PATH")}
EXPECTED_INCOMPLETE = {"execs": 6, "missing_execve": 2, "missing_cwd": 2, "missing_path": 2,
                       "missing_proctitle": 2}


def _event_id(line: bytes) -> bytes:
    return line.split(b"msg=audit(", 1)[1].split(b")", 1)[0]


def _lose_records(lines: list[bytes]) -> list[bytes]:
    """``lines`` without the records of LOSSES, as auditd's queue to its plugins drops records
    (of a PATH, the exec's last one: an exec of an ELF binary has two)."""
    execs = [_event_id(line) for line in lines
             if line.startswith(b"type=SYSCALL ") and b" syscall=59 success=yes " in line]
    lost: set[int] = set()
    for index, kinds in LOSSES.items():
        for kind in kinds:
            lost.add(max(n for n, line in enumerate(lines)
                         if line.startswith(b"type=%s " % kind.encode())
                         and _event_id(line) == execs[index]))
    return [line for n, line in enumerate(lines) if n not in lost]


def _incomplete_in_laurel(path: Path) -> dict[str, int]:
    """The peer's view of the same input: LAUREL's successful execs (an event's lines merged)
    that lack EXECVE, CWD or PROCTITLE, or a PATH item of those SYSCALL's items announces."""
    counts = dict.fromkeys(EXPECTED_INCOMPLETE, 0)
    for parts in _by_id(path).values():
        event = _merged(parts)
        syscall = event.get("SYSCALL", {})
        if syscall.get("syscall") != 59 or syscall.get("success") != "yes":
            continue
        missing = [kind for kind in ("EXECVE", "CWD", "PROCTITLE") if kind not in event]
        if len(event.get("PATH", [])) < syscall["items"]:
            missing.append("PATH")
        if missing:
            counts["execs"] += 1
            for kind in missing:
                counts[f"missing_{kind.lower()}"] += 1
    return counts


def test_execs_that_lost_records_before_us_are_counted_by_kind_as_laurel_shows_them(
        tmp_path: Path) -> None:
    """auditd drops records from its queue to its plugins and tells only syslog: an exec that
    lost some of its records still comes out, and the summary counts it, in every format, by
    the kind of record it lacks; LAUREL's output of the same input lacks the same ones."""
    require(shutil.which("laurel") is not None, "LAUREL (apt-get install laurel) is missing")
    log = tmp_path / "lost.log"
    log.write_bytes(b"".join(_lose_records(SPLIT_LOG.read_bytes().splitlines(keepends=True))))
    (tmp_path / "laurel").mkdir()
    (tmp_path / "laurel.toml").write_text(PEER_CONFIG.format(directory=tmp_path / "laurel"))
    with open(log, "rb") as stdin:
        subprocess.run(["laurel", "--config", str(tmp_path / "laurel.toml")], stdin=stdin,
                       capture_output=True, check=True, timeout=120)
    assert _incomplete_in_laurel(tmp_path / "laurel" / "laurel.log") == EXPECTED_INCOMPLETE
    for path, expected in ((SPLIT_LOG, dict.fromkeys(EXPECTED_INCOMPLETE, 0)),
                           (log, EXPECTED_INCOMPLETE)):
        for fmt in ("ecs", "qlog", "laurel"):
            done = subprocess.run([*ttpsensor_command(), "audisp", str(path), "--format", fmt,
                                   "--parse-error-log", str(tmp_path / "errors.log")],
                                  capture_output=True, check=True, timeout=120)
            summary = json.loads(done.stderr.decode().rsplit("ttpsensor audisp: ", 1)[1])
            assert summary["execs_incomplete"] == expected, (path.name, fmt)
            if fmt == "ecs":  # each exec still comes out; those that lost EXECVE, without args
                events = [json.loads(line) for line in done.stdout.splitlines()]
                execs = [e for e in events if e["event"]["action"] == "process_create"]
                assert len(execs) == summary["assembly"]["events"]
                assert sum("args" not in e["process"] for e in execs) == \
                    expected["missing_execve"]


def _line(kind: str, sec: int, serial: int, body: str) -> bytes:
    return f"type={kind} msg=audit({sec}.000:{serial}): {body}\n".encode()


def _syscall(sec: int, serial: int) -> bytes:
    return _line("SYSCALL", sec, serial, "arch=c000003e syscall=59 success=yes exit=0 a0=1 "
                 "a1=2 a2=3 a3=4 items=1 ppid=1 pid=2 comm=\"x\" key=(null)")


def _rest(sec: int, serial: int) -> list[bytes]:
    """An exec's records after its SYSCALL, as the kernel writes them, EOE last."""
    return [_line("EXECVE", sec, serial, 'argc=2 a0="/bin/true" a1="late"'),
            _line("CWD", sec, serial, 'cwd="/"'),
            _line("PATH", sec, serial, 'item=0 name="/bin/true" inode=5 dev=fe:00'),
            _line("PROCTITLE", sec, serial, "proctitle=2F62696E2F74727565"),
            _line("EOE", sec, serial, "")]


def _feed(assembler: Assembler, lines: list[bytes], now: float = 0.0) -> list[str]:
    out = []
    for line in lines:
        out += [e.id for e in assembler.add(parse(line), now=now)]
    return out


def test_a_live_event_lingers_past_the_timeout_and_takes_its_late_records() -> None:
    assembler = Assembler()
    # An exec's SYSCALL, then other execs, whole, for 8 s of audit time.
    assert _feed(assembler, [_syscall(100, 1)]) == []
    others = []
    for n, sec in enumerate(range(101, 109)):
        others += _feed(assembler, [_syscall(sec, 10 + n), *_rest(sec, 10 + n)])
    # The others went out in their order: the exec that waits no longer holds them back.
    assert others == [f"{sec}.000:{10 + n}" for n, sec in enumerate(range(101, 109))]
    assert assembler.lingering == 1 and assembler.stats.lingered == 1
    # Its records come at last: one event, with all of them.
    late = []
    for line in _rest(100, 1):
        late += assembler.add(parse(line), now=0.0)
    assert [e.id for e in late] == ["100.000:1"] and late[0].complete
    assert [r.rtype for r in late[0].records][:2] == [1300, 1309]  # SYSCALL, EXECVE
    assert len(late[0].records) == 5
    assert assembler.take_rejected() == []
    assert (assembler.stats.completed_late, assembler.stats.timed_out) == (1, 0)
    assert assembler.lingering == 0


def test_a_lingering_event_goes_out_incomplete_when_its_linger_ends() -> None:
    assembler = Assembler(linger_ms=20_000, linger_wall=30.0)
    _feed(assembler, [_syscall(100, 1), *_rest(100, 1)[-1:]])  # an EOE: the stream has them
    _feed(assembler, [_syscall(100, 2)])
    _feed(assembler, [_syscall(106, 3), *_rest(106, 3)])
    assert assembler.lingering == 1
    # 20 s of audit time later it goes, without the records that never came.
    out = _feed(assembler, [_syscall(127, 4), *_rest(127, 4)])
    assert out[0] == "100.000:2" and assembler.stats.timed_out == 1
    # A record of it after that is a finished event's: rejected, counted, kept.
    _feed(assembler, _rest(100, 2)[:1])
    assert [r for r, _ in assembler.take_rejected()] == ["duplicate event id"]
    # On an idle system the wall clock ends a linger too.
    _feed(assembler, [_syscall(200, 5)], now=1000.0)
    _feed(assembler, [_syscall(206, 6), *_rest(206, 6)], now=1000.0)
    assert assembler.lingering == 1
    assert assembler.tick(now=1029.0) == []
    assert [e.id for e in assembler.tick(now=1031.0)] == ["200.000:5"]


def test_only_events_with_their_syscall_linger_and_only_where_the_closer_is_known() -> None:
    # No EOE and no closing PROCTITLE seen yet (an old kernel's log): the timeout, as before.
    assembler = Assembler()
    _feed(assembler, [_syscall(100, 1)])
    assert _feed(assembler, [_syscall(106, 2)]) == ["100.000:1"]
    assert assembler.stats.lingered == 0
    # A kernel record without a SYSCALL (no syscall context) has no EOE to wait for.
    assembler = Assembler()
    _feed(assembler, [_syscall(100, 1), _line("EOE", 100, 1, "")])
    _feed(assembler, [_line("CWD", 100, 2, 'cwd="/"')])
    assert "100.000:2" in _feed(assembler, [_syscall(106, 3)])
    assert assembler.stats.lingered == 0 and assembler.lingering == 0
    # With its PROCTITLE, only its EOE could still come (lost, when it has not): the timeout.
    assembler = Assembler()
    _feed(assembler, [_syscall(100, 1), _line("EOE", 100, 1, "")])
    _feed(assembler, [_syscall(100, 2), *_rest(100, 2)[:-1]])
    assert "100.000:2" in _feed(assembler, [_syscall(106, 3)])
    assert assembler.stats.lingered == 0 and assembler.stats.timed_out == 1
    # linger_ms=0: the timeout alone, late records rejected.
    assembler = Assembler(linger_ms=0)
    _feed(assembler, [_syscall(100, 1), _line("EOE", 100, 1, ""), _syscall(100, 2)])
    assert "100.000:2" in _feed(assembler, [_syscall(106, 3)])
    _feed(assembler, _rest(100, 2)[:1])
    assert [r for r, _ in assembler.take_rejected()] == ["duplicate event id"]


def test_lingering_events_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assemble, "MAX_LINGERING", 3)
    assembler = Assembler()
    _feed(assembler, [_syscall(100, 1), _line("EOE", 100, 1, "")])
    _feed(assembler, [_syscall(100, serial) for serial in range(2, 7)])
    out = _feed(assembler, [_syscall(106, 9)])
    # Five lingered, the two oldest went out when the third was over the bound.
    assert out == ["100.000:2", "100.000:3"] and assembler.lingering == 3
    assert assembler.stats.lingered == 5 and assembler.stats.timed_out == 2
    flushed = [e.id for e in assembler.flush()]
    assert flushed == ["100.000:4", "100.000:5", "100.000:6", "106.000:9"]


@pytest.mark.parametrize("body", [
    # The kernel's layout, read at its places; and the same fields in another order (a
    # forwarder that rewrote them), read by name.
    "arch=c000003e syscall=59 success={ok} exit=0 a0=1 a1=2 a2=3 a3=4 items=2 ppid=1 pid=2 "
    'comm="x" key=(null)',
    'syscall=59 items=2 arch=c000003e success={ok} exit=0 pid=2 ppid=1 comm="x"',
])
def test_the_count_takes_only_successful_execs_and_the_paths_their_syscall_announced(
        body: str) -> None:
    from sensor_linux.audit.completeness import ExecCompleteness
    counts = ExecCompleteness()
    note = counts.note   # as the LAUREL renderer counts (the builder knows its exec succeeded)
    ok, failed = (parse(_line("SYSCALL", 1, n, body.format(ok=outcome)))
                  for n, outcome in ((1, "yes"), (2, "no")))
    other = parse(_line("SYSCALL", 1, 3, body.format(ok="yes").replace("syscall=59",
                                                                        "syscall=2")))
    note(ok, True, True, True, 2)        # whole: not counted
    note(ok, True, False, True, 2)       # no CWD
    note(ok, True, True, True, 1)        # one PATH of the two announced
    note(failed, False, False, True, 0)  # a failed exec writes fewer records
    note(other, False, True, True, 1)    # open(2): no EXECVE to lose
    assert (counts.execs, counts.missing_cwd, counts.missing_path, counts.missing_execve,
            counts.missing_proctitle) == (2, 1, 1, 0, 0)
