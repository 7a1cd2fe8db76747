"""The audit parser, assembler and LAUREL renderer against the real corpus in ../shared/corpus.

LAUREL's golden files are LAUREL 0.8.2's own output for the same input (a peer, not our output
pasted back); every corpus file must go through the parser and the assembler.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor_linux.audit import assemble, laurel
from sensor_linux.audit.assemble import Assembler, AuditEvent
from sensor_linux.audit.records import PROCTITLE, SYSCALL, Hex, Oct, ParseError, parse
from tests.conftest import SHARED, require

CORPUS = SHARED / "corpus"
LAUREL_DIR = CORPUS / "laurel"
PARSER_DIR = CORPUS / "linux-audit-parser"


def _corpus_files(pattern: str) -> list[Path]:
    return sorted(CORPUS.glob(pattern))


def assemble_file(path: Path, drop_eoe: bool = False
                  ) -> tuple[list[AuditEvent], Assembler, list[ParseError]]:
    """``drop_eoe``: read the file as auditd writes it to disk, without EOE records."""
    assembler = Assembler()
    events: list[AuditEvent] = []
    errors: list[ParseError] = []
    with open(path, "rb") as f:
        for line in f:
            if not line.strip() or line.startswith(b"#"):
                continue
            if drop_eoe and line.startswith(b"type=EOE "):
                continue
            try:
                record = parse(line)
            except ParseError as exc:
                errors.append(exc)
                continue
            events += assembler.add(record)
    events += assembler.flush()
    return events, assembler, errors


GOLDEN = sorted(p for p in LAUREL_DIR.glob("record-*.txt") if p.with_suffix(".json").exists())


def test_corpus_is_present() -> None:
    require(LAUREL_DIR.is_dir() and PARSER_DIR.is_dir(), f"{CORPUS} is missing")
    assert len(GOLDEN) == 14


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_laurel_renderer_matches_golden_byte_for_byte(path: Path) -> None:
    events, assembler, errors = assemble_file(path)
    assert errors == [] and assembler.rejected == []
    want = path.with_suffix(".json").read_bytes().decode("utf-8").splitlines()
    assert [laurel.render(e) for e in events] == want


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_without_eoe_records_the_output_is_the_same(path: Path) -> None:
    """auditd's log on disk has no EOE records: the same events come out, and those with a
    PROCTITLE are closed by it (the kernel writes it last), not by a timeout."""
    events, assembler, errors = assemble_file(path, drop_eoe=True)
    assert errors == [] and assembler.rejected == []
    want = path.with_suffix(".json").read_bytes().decode("utf-8").splitlines()
    assert [laurel.render(e) for e in events] == want
    types = [[r.rtype for r in e.records] for e in events]
    with_title = sum(1 for t in types if SYSCALL in t and PROCTITLE in t[t.index(SYSCALL):])
    assert assembler.stats.completed_by_proctitle == with_title


def test_an_eoe_after_its_proctitle_is_absorbed_and_then_eoe_is_awaited() -> None:
    assembler = Assembler()
    first = [b"type=SYSCALL msg=audit(100.000:1): arch=c000003e syscall=59 success=yes exit=0 "
             b"a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=2 comm=\"x\" key=(null)",
             b"type=PROCTITLE msg=audit(100.000:1): proctitle=78",
             b"type=EOE msg=audit(100.000:1): "]
    out = [e for line in first for e in assembler.add(parse(line))]
    assert [e.id for e in out] == ["100.000:1"]
    assert assembler.stats.completed_by_proctitle == 1 and assembler.stats.late_eoe == 1
    assert assembler.rejected == []
    # The stream has EOE records: a PROCTITLE no longer closes, the EOE does.
    second = [line.replace(b"100.000:1", b"100.001:2") for line in first]
    assert assembler.add(parse(second[0])) == [] and assembler.add(parse(second[1])) == []
    assert [e.id for e in assembler.add(parse(second[2]))] == ["100.001:2"]
    assert assembler.stats.completed_by_eoe == 1


ALL_TXT = [p for p in _corpus_files("**/*.txt") if p.name != "README.txt"]


@pytest.mark.parametrize("path", ALL_TXT, ids=[str(p.relative_to(CORPUS)) for p in ALL_TXT])
def test_every_corpus_file_parses_and_assembles(path: Path) -> None:
    events, assembler, errors = assemble_file(path)
    assert errors == []
    # line-eoe.txt is a lone EOE (rejected below); every other file holds events.
    assert events or path.name == "line-eoe.txt"
    # Nothing vanishes: every line is in an event, is the EOE that completed one, or was
    # rejected with a reason.
    lines = sum(1 for line in path.read_bytes().splitlines()
                if line.strip() and not line.startswith(b"#"))
    in_events = sum(len(e.records) for e in events)
    eoes = assembler.stats.completed_by_eoe + assembler.stats.late_eoe
    assert in_events + eoes + len(assembler.rejected) == lines
    for event in events:
        laurel.render(event)  # never raises


def test_spurious_eoe_is_rejected_with_a_reason() -> None:
    events, assembler, errors = assemble_file(PARSER_DIR / "line-eoe.txt")
    assert errors == [] and events == []
    assert [reason for reason, _ in assembler.rejected] == ["EOE for no open event"]
    assert assembler.stats.spurious_eoe == 1


def test_traces_without_eoe_and_reordered_assemble_to_the_same_events() -> None:
    plain, _, _ = assemble_file(LAUREL_DIR / "shell-proc-trace.txt")
    reordered, _, _ = assemble_file(LAUREL_DIR / "shell-proc-trace-reordered.txt")
    assert sorted(e.id for e in plain) == sorted(e.id for e in reordered)
    by_id = {e.id: e for e in reordered}
    for event in plain:
        assert sorted(r.raw for r in event.records) == sorted(r.raw for r in by_id[event.id].records)
    no_eoe, assembler, _ = assemble_file(LAUREL_DIR / "proc-trace-dpkg-l.txt")
    assert len(no_eoe) == 23 and not any(e.complete for e in no_eoe)
    assert assembler.stats.flushed_at_end + assembler.stats.timed_out == 23  # no PROCTITLE


def test_audit_time_timeout_flushes_events_without_eoe() -> None:
    assembler = Assembler(timeout_ms=5000)
    first = parse(b"type=SYSCALL msg=audit(100.000:1): arch=c000003e syscall=59 success=yes "
                  b"exit=0 a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=2 comm=\"x\" key=(null)\n")
    assert assembler.add(first) == []
    later = parse(b"type=SYSCALL msg=audit(106.000:2): arch=c000003e syscall=59 success=yes "
                  b"exit=0 a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=3 comm=\"y\" key=(null)\n")
    flushed = assembler.add(later)
    assert [e.id for e in flushed] == ["100.000:1"] and not flushed[0].complete
    assert assembler.stats.timed_out == 1
    # Wall-clock bound: an idle stream still flushes.
    assert [e.id for e in assembler.tick(now=10**9)] == ["106.000:2"]


def test_eviction_of_open_events_from_a_stream_with_and_without_node_names() -> None:
    assembler = Assembler(max_inflight=1)
    local = parse(b"type=CWD msg=audit(100.000:1): cwd=\"/\"\n")
    forwarded = parse(b"node=web1 type=CWD msg=audit(100.000:2): cwd=\"/\"\n")
    assert assembler.add(local) == []
    evicted = assembler.add(forwarded)   # two open events, one allowed: the oldest goes
    assert [(e.node, e.id) for e in evicted] == [(None, "100.000:1")]
    assert assembler.stats.evicted == 1 and assembler.inflight == 1


def test_duplicate_records_are_rejected_not_merged() -> None:
    line = (b"type=SYSCALL msg=audit(100.000:1): arch=c000003e syscall=59 success=yes exit=0 "
            b"a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=2 key=(null)\n")
    assembler = Assembler()
    assembler.add(parse(line))
    assert len(assembler.add(parse(b"type=EOE msg=audit(100.000:1): \n"))) == 1
    assert assembler.add(parse(line)) == []
    assert [r for r, _ in assembler.take_rejected()] == ["duplicate event id"]


def _exec_lines(serial: int) -> list[bytes]:
    stamp = b"msg=audit(100.000:%d):" % serial
    return [b"type=SYSCALL " + stamp + b" arch=c000003e syscall=59 success=yes exit=0 a0=1 "
            b"a1=2 a2=3 a3=4 items=0 ppid=1 pid=2 key=(null)\n", b"type=EOE " + stamp + b" \n"]


def test_remembered_ids_stay_within_their_bound_at_any_rate() -> None:
    # Every event in the same millisecond: the time window (120 s of audit time) forgets
    # none of them, so only the count bounds what is held.
    assembler = Assembler(max_done=100)
    for serial in range(1, 1001):
        for line in _exec_lines(serial):
            assembler.add(parse(line))
        assembler.add(parse(b"type=USER_END msg=audit(100.000:%d): pid=1 uid=0 "
                            b"msg='op=x res=success'\n" % (10_000 + serial)))
        assert assembler.remembered <= 2 * (100 + 100 // 8)
    assert assembler.stats.events == 2000 and assembler.stats.duplicates == 0
    # The newest ids are still known; the oldest are forgotten, and come back as new events.
    assembler.add(parse(_exec_lines(1000)[0]))
    assert [r for r, _ in assembler.take_rejected()] == ["duplicate event id"]
    assembler.add(parse(_exec_lines(1)[0]))
    assert assembler.take_rejected() == [] and assembler.inflight == 1
    with pytest.raises(ValueError):
        Assembler(max_done=0)


@pytest.mark.parametrize("line, kind", [
    (b"garbage\n", "cannot parse header"),
    (b"type=SYSCALL msg=audit(1.2:3\n", "cannot parse header"),
    (b"type=NOSUCHTYPE msg=audit(1.000:3): a=b\n", "unknown record type"),
    (b"type=SYSCALL msg=audit(1.000:3): arch=c000003e =oops\n", "cannot parse body"),
    (b"type=EXECVE msg=audit(1.000:3): argc=1 a0=\"unterminated\n", "bad execve argument"),
    (b"type=EXECVE msg=audit(1.000:3): argc=1 a0=abc\n", "bad execve argument"),
    (b"type=EXECVE msg=audit(1.000:3): argc=1 a0_len=x\n", "bad argument length"),
    (b"type=CWD msg=audit(1.000:3): cwd=\"/a\"b\n", "garbage at end of value"),
    (b"type=SYSCALL msg=audit(1.000:3): arch=c000003e syscall=59 \xff\xfe\n",
     "cannot parse body"),
])
def test_malformed_lines_raise_parse_errors_naming_the_part(line: bytes, kind: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(line)
    assert info.value.kind == kind and info.value.line == line


def test_field_typing_on_edge_cases() -> None:
    avc = parse((PARSER_DIR / "line-avc-denied.txt").read_bytes())
    assert avc.body[-1] == ("denied", [b"setuid"])
    assert avc.get("capability") == 7
    abend = parse((PARSER_DIR / "line-anom-abend-2.txt").read_bytes())
    assert abend.get("subj") == b"=/usr/bin/man//&man_groff (enforce)"
    assert abend.get("AUID") == b"unset"
    sock = parse((PARSER_DIR / "line-sockaddr-unknown-2.txt").read_bytes())
    assert sock.get("SADDR") == b"unknown family(0)" and sock.get("saddr") == bytes(16)
    unix = parse((PARSER_DIR / "line-sockaddr-unix.txt").read_bytes())
    assert unix.get("SADDR") == b"{fam=local path=/tmp/.{FD2DD8D4-F6AA-4D74-A6E1-AEFAB183DEEB}}"
    auth = parse((PARSER_DIR / "line-user-auth-2.txt").read_bytes())
    assert b"system-property('xsl:vendor')" in auth.get("msg")
    tty = parse((PARSER_DIR / "line-tty.txt").read_bytes())
    assert tty.get("data") == b"rpm -qa | grep syslog\r"
    unknown = parse((PARSER_DIR / "line-unknown.txt").read_bytes())
    assert unknown.rtype == 1334 and unknown.get("prog-id") == 45
    path = parse(b'type=PATH msg=audit(1.000:2): item=0 name="/x" mode=0100755 '
                 b'cap_fp=0000000000000000 dev=fd:01 inode=5\n')
    assert type(path.get("mode")) is Oct and path.get("mode") == 0o100755
    assert type(path.get("cap_fp")) is Hex and path.get("dev") == b"fd:01"


def _syscall(serial: int) -> bytes:
    return (b"type=SYSCALL msg=audit(100.000:%d): arch=c000003e syscall=1 success=yes exit=0 "
            b"a0=1 a1=2 a2=3 a3=4 items=0 ppid=1 pid=2 key=(null)\n" % serial)


def test_serial_gaps_are_counted_and_late_records_fill_them() -> None:
    assembler = Assembler()
    for serial in (1, 2, 5, 9):
        assembler.add(parse(_syscall(serial)))
    assert assembler.stats.serial_gaps == 5  # 3, 4, 6, 7, 8
    assembler.add(parse(_syscall(3)))         # arrived late: not lost after all
    assert assembler.stats.serial_gaps == 4
    assembler.add(parse(b"type=EOE msg=audit(100.000:9): \n"))
    assert assembler.stats.serial_gaps == 4   # records of one event share a serial


def test_auditds_own_serials_make_no_gap(tmp_path: Path) -> None:
    """auditd numbers its own events (DAEMON_START, DAEMON_END) itself: the head and tail of
    a real log of the lab (auditd 3.0.9) has them around the kernel's records, whose
    serials only are measured (the excerpt leaves out 20,009 of them: the lab's execs)."""
    import json
    import re
    import subprocess
    from tests.conftest import ttpsensor_command
    log = Path(__file__).parent / "data" / "audit-daemon-serials.log"
    kernel, daemon = set(), set()
    for line in log.read_bytes().splitlines():
        serial = int(re.search(rb"msg=audit\(\d+\.\d+:(\d+)\)", line).group(1))
        (daemon if line.startswith(b"type=DAEMON_") else kernel).add(serial)
    ordered = sorted(kernel)
    expected = sum(b - a - 1 for a, b in zip(ordered, ordered[1:]))
    assert expected == 20009 and daemon and max(daemon) < min(kernel)
    done = subprocess.run([*ttpsensor_command(), "audisp", str(log), "--format", "laurel",
                           "--parse-error-log", str(tmp_path / "errors.log")],
                          capture_output=True, check=True, timeout=120)
    summary = json.loads(done.stderr.decode().rsplit("ttpsensor audisp: ", 1)[1])
    assert summary["assembly"]["serial_gaps"] == expected
    assert summary["parse_errors"] == summary["rejected"] == 0


def _set_model(serials: list[int]) -> tuple[int, list[bool]]:
    """The gap accounting as one set of missing serials (how the assembler kept it before
    it kept runs): the count left, and whether each serial filled a gap."""
    missing: set[int] = set()
    highest, gaps, filled = None, 0, []
    for serial in serials:
        filled.append(False)
        if highest is None or serial > highest:
            if highest is not None and serial > highest + 1:
                gaps += serial - highest - 1
                if serial - highest - 1 <= assemble.MAX_TRACKED_GAP:
                    missing.update(range(highest + 1, serial))
            highest = serial
        elif serial < highest and serial in missing:
            missing.discard(serial)
            gaps -= 1
            filled[-1] = True
        if len(missing) > 4 * assemble.MAX_TRACKED_GAP:
            missing = {s for s in missing if s > highest - assemble.MAX_TRACKED_GAP}
    return gaps, filled


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 15), st.integers(0, 60)), max_size=80))
def test_missing_serials_kept_as_runs_count_as_a_set_of_them_would(
        steps: list[tuple[int, int]]) -> None:
    """Serials climbing by jumps past MAX_TRACKED_GAP (not tracked) and below it, late ones
    anywhere below the highest (at the edge of what is forgotten too), through the assembler
    and through the set model; the bound made small, so that forgetting happens often."""
    from unittest import mock
    serials, highest = [], 1
    for jump, back in steps:
        highest += jump
        serials += [highest, max(1, highest - back)]
    with mock.patch.object(assemble, "MAX_TRACKED_GAP", 10):
        assembler = Assembler()
        filled = []
        for serial in serials:
            before = assembler.stats.serial_gaps
            assembler._track_serial(None, serial)
            filled.append(assembler.stats.serial_gaps < before)
        assert (assembler.stats.serial_gaps, filled) == _set_model(serials)


def test_exec_rules_are_told_apart_from_watches_and_mixed_rules() -> None:
    from sensor_linux.audit import netlink
    exec_only = netlink.exec_rule(netlink.ARCH_X86_64, (59, 322), b"k")
    assert netlink.is_exec_rule(exec_only)
    mixed = netlink.exec_rule(netlink.ARCH_X86_64, (59, 2), b"k")  # execve and open
    assert not netlink.is_exec_rule(mixed)
    every_syscall = netlink.exec_rule(netlink.ARCH_X86_64, tuple(range(64 * 32)), b"k")
    assert not netlink.is_exec_rule(every_syscall)  # what a file watch looks like
