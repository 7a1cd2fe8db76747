"""The live audit sources read what only a live process shows as soon as they read its exec's
SYSCALL record, and parse and build later (every 500 ms: sensor_linux/audit/capture.py). Real
processes and the real /proc here, audit records written for them (no audit subsystem needed):
an event built after its process or its parent is gone still has what was read while they
ran."""

from __future__ import annotations

import os
import subprocess
import time
from types import SimpleNamespace
from typing import Any

import pytest

from common.schema import Event
from sensor_linux import enrich
from sensor_linux.audit.capture import (CHUNK_LINES, MAX_WAITING, MAX_WAITING_BYTES,
                                         ExecCapture, WaitingLines)
from sensor_linux.audit.events import AuditEventBuilder, exec_head
from sensor_linux.audit.pipeline import audit_pipeline
from sensor_linux.audit.plugin import PipeInput
from sensor_linux.audit.source import NetlinkInput
from sensor_linux.batching import BATCH_SECONDS, BUILD_SECONDS, Gather, Pacing
from sensor_linux.enrich import Enricher
from sensor_linux.procfs import PinnedProcess
from sensor_linux.wake import Collected  # an output that keeps the events
from tests.workload import memfd_image

# Pids no process can have (the kernel's limit is 4,194,304, PID_MAX_LIMIT): the records
# written for them name processes that are surely not running, on any machine.
GONE = 1 << 22


def _exec_lines(serial: int, pid: int, ppid: int, exe: str, argv0: str) -> list[bytes]:
    """An exec as audit records it, now (the process table's PID-reuse guard compares the
    record's time with a parent's start)."""
    now = time.time()
    stamp = f"msg=audit({int(now)}.{int(now * 1000) % 1000:03d}:{serial})"
    exe_field = exe.encode().hex().upper() if " " in exe else f'"{exe}"'
    return [line.encode() + b"\n" for line in (
        f"type=SYSCALL {stamp}: arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 "
        f"a3=4 items=1 ppid={ppid} pid={pid} auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 "
        f'sgid=0 fsgid=0 tty=(none) ses=1 comm="x" exe={exe_field} key=(null)',
        f'type=EXECVE {stamp}: argc=1 a0="{argv0}"',
        f'type=CWD {stamp}: cwd="/"',
        f'type=PROCTITLE {stamp}: proctitle="{argv0}"',
        f"type=EOE {stamp}: ")]


def _wait_for_exe(pid: int, prefix: str) -> None:
    """Until ``pid`` runs an image under ``prefix`` and its exec is done: the kernel switches
    the image link before it lays out the arguments, so ``cmdline`` is empty in between."""
    for _ in range(500):
        try:
            if os.readlink(f"/proc/{pid}/exe").startswith(prefix):
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read():
                        return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never ran {prefix}")


def _memfd_sleep(marker: str) -> tuple[subprocess.Popen[bytes], str]:
    """A sleep run from a memfd of its own (a new image: no digest cached); its sha256."""
    fd, digest = memfd_image(marker)
    try:
        proc = subprocess.Popen([marker, "30"], executable=f"/proc/self/fd/{fd}",
                                pass_fds=(fd,))
    finally:
        os.close(fd)
    _wait_for_exe(proc.pid, "/memfd:")
    return proc, digest


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def _capturing(enricher: Enricher) -> tuple[ExecCapture, Collected, Any]:
    """A live source's parts: the first look, and the pipeline that builds later."""
    capture, out = ExecCapture(enricher), Collected()
    return capture, out, audit_pipeline("ecs", out, enricher=enricher,  # type: ignore[arg-type]
                                        captured=capture)


@pytest.mark.parametrize("opened", [True, False])
def test_a_memfd_image_looked_at_while_it_ran_is_hashed_when_built_after_it_exited(
        opened: bool, monkeypatch) -> None:
    """The exec's lines are looked at while it runs and parsed after it exited; its image is
    hashed through the descriptor opened at the first look. Without that descriptor
    (``opened`` False: the control), the late build has nothing left to hash."""
    if not opened:
        monkeypatch.setattr(enrich, "open_image", lambda pid, proc="/proc": None)
    marker = f"capture-{os.getpid()}-{opened}"
    proc, digest = _memfd_sleep(marker)
    capture, out, pipeline = _capturing(Enricher())
    lines = _exec_lines(1, proc.pid, os.getpid(), f"/memfd:{marker} (deleted)", marker)
    try:
        for line in lines:
            capture.scan(line)
        assert len(capture) == 1
    finally:
        _stop(proc)
    assert not os.path.exists(f"/proc/{proc.pid}/exe")
    for line in lines:
        pipeline.feed(line)
    [event] = out.events
    assert event["process"]["executable"] == f"/memfd:{marker}"
    assert event["process"]["on_disk"] is False
    if opened:
        assert event["process"]["hash"]["sha256"] == digest
    else:
        assert "hash" not in event["process"]
    assert len(capture) == 0 and pipeline.stats.internal_errors == 0


@pytest.mark.parametrize("looked", [True, False])
def test_an_unknown_parent_read_at_the_first_look_is_the_parent_after_it_exited(
        looked: bool) -> None:
    """A parent the table does not know is read from /proc at the child's first look. Built
    after the parent exited without that look (the control), the event has the pid alone."""
    parent = subprocess.Popen(["/bin/sleep", "30"])
    _wait_for_exe(parent.pid, os.path.realpath("/bin/sleep"))  # not the Python forked before
    enricher = Enricher()
    capture, out, pipeline = _capturing(enricher)
    lines = _exec_lines(2, GONE, parent.pid, "/usr/bin/true", "true")
    try:
        if looked:
            for line in lines:
                capture.scan(line)
    finally:
        _stop(parent)
    for line in lines:
        pipeline.feed(line)
    [event] = out.events
    found = event["process"]["parent"]
    assert found["pid"] == parent.pid
    if looked:
        assert found["executable"] == os.path.realpath("/bin/sleep")
        assert found["args"] == ["/bin/sleep", "30"]
    else:
        assert set(found) == {"pid"}
    assert enricher.proc_reads == 1  # once: at the first look, or at the build (gone by then)


def test_a_parent_whose_exec_waits_is_not_read_from_proc() -> None:
    """A parent and its child exec'd in one batch: the child's first look does not read the
    parent from /proc (its exec waits, and will be in the table first), and both events are
    what building each at once gives."""
    def run(looked: bool) -> tuple[list[Event], int]:
        enricher = Enricher()
        capture, out, pipeline = _capturing(enricher)
        lines = (_exec_lines(3, GONE + 1, 1, "/usr/bin/env", "env")
                 + _exec_lines(4, GONE + 2, GONE + 1, "/usr/bin/true", "true"))
        for line in lines:
            if looked:
                capture.scan(line)
        for line in lines:
            pipeline.feed(line)
        pipeline.close()
        return out.events, enricher.proc_reads

    looked, looked_reads = run(True)
    at_once, at_once_reads = run(False)
    assert looked_reads == at_once_reads == 1  # init, the parent of the first, read once

    def parents(events: list[Event]) -> list[tuple[Any, Any]]:
        return [(e["process"]["parent"]["pid"], e["process"]["parent"].get("executable"))
                for e in events]
    assert parents(looked) == parents(at_once)
    assert parents(looked)[1] == (GONE + 1, "/usr/bin/env")
    assert [e["ttphash"]["value"] for e in looked] == [e["ttphash"]["value"] for e in at_once]


def test_the_first_look_reads_what_the_parser_reads_of_every_exec_in_the_corpus() -> None:
    """exec_head reads a SYSCALL record's text without parsing it: for every SYSCALL record
    of the corpus (real kernels, RAW and ENRICHED, several architectures), it names an exec
    exactly when the parser's builder does, with the same key, pid, ppid and executable."""
    from tests.test_audit_corpus import LAUREL_DIR, assemble_file
    builder = AuditEventBuilder(Enricher(live=False))
    checked = 0
    for path in sorted(LAUREL_DIR.glob("*.txt")):
        for audit in assemble_file(path)[0]:
            syscall = next((r for r in audit.records if r.type_name == "SYSCALL"), None)
            if syscall is None:
                continue
            event = builder.build(audit)
            looked = exec_head(syscall.raw)
            if event["event"]["action"] != "process_create":
                assert looked is None, path
                continue
            assert looked is not None, path  # every kernel here writes the head
            key, pid, ppid, executable = looked
            assert key == (audit.node, audit.sec, audit.msec, audit.serial), path
            facts = builder.exec_facts(audit, syscall)
            assert (pid, ppid) == (facts.pid, facts.ppid), path
            if event["event"]["outcome"] == "success":
                assert executable == event["process"]["executable"], path
            checked += 1
    assert checked == 32, checked  # the corpus's execs


def test_a_first_look_keeps_what_no_event_takes_within_bounds_and_closes_it() -> None:
    """Lines that never become an event (a record the parser refuses) leave their look
    behind: the oldest goes, its image descriptor closed, past the bound; the stop closes the
    rest. A second copy of a record does not look again."""
    capture = ExecCapture(Enricher(), limit=2)
    looks = []
    syscalls = {serial: _exec_lines(serial, os.getpid(), 1, "/usr/bin/python3", "x")[0]
                for serial in (5, 6, 7)}
    for serial in (5, 6, 6, 7):
        capture.scan(syscalls[serial])
        facts = capture._facts[next(reversed(capture._facts))]
        if all(facts is not seen for seen in looks):
            if facts.image_fd is None:
                facts.image_fd = os.open("/dev/null", os.O_RDONLY)  # as if an image were open
            looks.append(facts)
    assert len(capture) == 2 and len(looks) == 3  # serial 6's copy looked no further
    assert looks[0].image_fd is None  # the first, pushed out, was closed
    assert capture._pending == {os.getpid(): 2}
    capture.close()
    assert [facts.image_fd for facts in looks] == [None] * 3
    assert len(capture) == 0 and capture._pending == {}


class _Clock:
    """The time the tests say: a build is due when they move it, not when a slow machine
    took long."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _waiting(pipeline, capture: ExecCapture | None, clock: _Clock) -> WaitingLines:  # noqa: ANN001
    return WaitingLines(pipeline, capture, clock=clock)


class _Quiet:
    """An audit record socket with nothing waiting."""

    def __init__(self) -> None:
        self.sock = SimpleNamespace(setblocking=lambda flag: None, fileno=lambda: -1)

    def read_batch(self) -> tuple[list[bytes], int, bool]:
        raise BlockingIOError


def test_the_audit_inputs_are_due_when_lines_wait_and_build_them_without_reading() -> None:
    """Both audit inputs: not due while nothing waits; due BUILD_SECONDS after their last
    build while lines wait; a drain when due parses and builds them, and on an empty pipe does
    not block (the runner drains a due input whose descriptor is quiet)."""
    lines = _exec_lines(8, GONE + 3, 1, "/usr/bin/true", "true")
    read_end, write_end = os.pipe()
    # A read of the empty pipe raises instead of hanging: a drain must not read it when due.
    os.set_blocking(read_end, False)
    try:
        for make in (lambda w: NetlinkInput(_Quiet(), w),  # type: ignore[arg-type]
                     lambda w: PipeInput(read_end, w)):
            capture, out, pipeline = _capturing(Enricher())
            clock = _Clock()
            item = make(_waiting(pipeline, capture, clock))
            assert item.due_in() is None
            for line in lines:
                item.waiting.add(line)
            assert item.due_in() == BUILD_SECONDS  # BUILD_SECONDS after the last build
            if isinstance(item, NetlinkInput):  # (a pipe is drained only when readable)
                assert item.drain() == BATCH_SECONDS and out.events == []  # not due: waits
            clock.now += BUILD_SECONDS  # the time has come
            assert item.due_in() == 0
            assert item.drain() == BATCH_SECONDS  # the empty pipe was not read
            assert len(out.events) == 1 and item.due_in() is None
        os.write(write_end, b"".join(lines))
        capture, out, pipeline = _capturing(Enricher())
        piped = PipeInput(read_end, _waiting(pipeline, capture, _Clock()))
        piped.drain()
        assert piped.waiting.lines == lines and out.events == []  # read, waiting: not due
        assert len(capture) == 1  # and looked at
    finally:
        os.close(read_end)
        os.close(write_end)


def test_what_waits_for_a_build_is_bounded_in_lines_and_in_bytes() -> None:
    """Lines wait for the build (every BUILD_SECONDS) only up to MAX_WAITING of them or
    MAX_WAITING_BYTES: then the read that passes either bound is built at once, and nothing
    is lost. The clock never moves, so no build falls due on its own."""
    def execs(first: int, count: int, argv0: str) -> list[bytes]:
        return [line for n in range(first, first + count)
                for line in _exec_lines(n, GONE + n, 1, "/usr/bin/true", argv0)]

    # Short lines: the count is the bound. Five lines an exec.
    capture, out, pipeline = _capturing(Enricher())
    waiting = _waiting(pipeline, capture, _Clock())
    below = MAX_WAITING // 5
    waiting.add_many(execs(0, below, "true"))
    assert len(waiting.lines) == below * 5 < MAX_WAITING and out.events == []
    waiting.add_many(execs(below, 1, "true"))
    assert waiting.lines == [] and waiting.waiting_bytes == 0
    assert len(out.events) == below + 1

    # Long lines (an argument of 8,000 bytes, in EXECVE and PROCTITLE): the bytes are.
    capture, out, pipeline = _capturing(Enricher())
    waiting = _waiting(pipeline, capture, _Clock())
    added = 0
    while not out.events:
        assert len(waiting.lines) == added * 5 and waiting.waiting_bytes < MAX_WAITING_BYTES
        before, batch = waiting.waiting_bytes, execs(added, 1, "x" * 8000)
        waiting.add_many(batch)
        added += 1
    assert waiting.lines == [] and len(out.events) == added
    assert before < MAX_WAITING_BYTES <= before + sum(map(len, batch))
    assert added * 5 < MAX_WAITING  # the lines' count was not what fed them


def test_a_build_reads_its_input_between_chunks_and_what_it_reads_waits(monkeypatch) -> None:
    """With ``read_between``, a build parses and builds CHUNK_LINES at a time and calls it
    between chunks (not before the first, not after the last); what it reads waits for the
    next build, in order, and passing a bound meanwhile starts no build inside the build."""
    from sensor_linux.audit import capture as capture_module

    def execs(first: int, count: int) -> list[bytes]:
        return [line for n in range(first, first + count)
                for line in _exec_lines(n, GONE + n, 1, "/usr/bin/true", f"true-{n}")]

    capture, out, pipeline = _capturing(Enricher())
    waiting = _waiting(pipeline, capture, _Clock())
    built_at_each_read: list[int] = []
    arrived = iter(range(1000, 1003))

    def read_between() -> None:
        built_at_each_read.append(len(out.events))
        waiting.add_many(execs(next(arrived), 1))

    waiting.read_between = read_between
    count = (CHUNK_LINES * 5 // 2) // 5          # two and a half chunks of five-line execs
    waiting.add_many(execs(0, count))
    monkeypatch.setattr(capture_module, "MAX_WAITING", 1)  # any read passes the bound
    waiting.feed()
    assert len(built_at_each_read) == 2           # between three chunks
    assert 0 < built_at_each_read[0] < built_at_each_read[1] < count
    assert len(out.events) == count and len(waiting.lines) == 2 * 5
    monkeypatch.undo()
    waiting.feed()
    names = [event["process"]["args"][0] for event in out.events]
    assert names == [f"true-{n}" for n in range(count)] + ["true-1000", "true-1001"]


def test_a_build_leaves_no_full_socket_behind_it(tmp_path) -> None:
    """auditd hands records to its plugins over a UNIX stream socket (socketpair), which
    holds a few hundred of its writes: a build that does not read lets it fill, and auditd's
    dispatcher waits. The plugin reads between the chunks of a build, so a socket full before
    the build has room after it, and what was read waits for the next build."""
    import socket

    from sensor_linux.audit.plugin import PluginSource
    from sensor_linux.runner import RunConfig

    auditd_end, plugin_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        out = Collected()
        source = PluginSource(RunConfig(source="audisp", parse_error_log=str(tmp_path / "e.log")),
                              out, print, fd=plugin_end.fileno())  # type: ignore[arg-type]
        source.waiting.builds = Gather(BUILD_SECONDS, _Clock())  # never due on its own
        count = CHUNK_LINES * 3 // 5
        source.waiting.add_many([line for n in range(count) for line in _exec_lines(
            n, GONE + n, 1, "/usr/bin/true", "true")])
        # auditd's writes, one record each, until the socket takes no more.
        auditd_end.setblocking(False)
        record = _exec_lines(5000, GONE + 5000, 1, "/usr/bin/true", "true")[1]
        written = 0
        with pytest.raises(BlockingIOError):
            while True:
                auditd_end.send(record)
                written += 1
        source.waiting.feed()
        assert len(out.events) == count
        auditd_end.send(record)                     # room again
        assert 0 < len(source.waiting.lines) <= written
    finally:
        auditd_end.close()
        plugin_end.close()


def test_the_plugin_pipe_reads_through_one_buffer_and_says_when_more_waits(monkeypatch) -> None:
    """The pipe is read into one buffer: after a read that fills it the plugin does not
    pause (more is waiting: it is behind), lines cut between reads come out whole and the
    buffer's old bytes never show up in a later, shorter read; EOF ends the input."""
    from sensor_linux.audit import plugin

    monkeypatch.setattr(plugin, "READ_BYTES", 64)
    lines = _exec_lines(10, GONE + 5, 1, "/usr/bin/true", "true")
    data = b"".join(lines)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
        os.close(write_end)
        write_end = -1
        capture, out, pipeline = _capturing(Enricher())
        piped = PipeInput(read_end, _waiting(pipeline, capture, _Clock()))
        pauses = []
        while not piped.eof:
            pauses.append(piped.drain())
        full = len(data) // 64
        assert pauses[:full] == [0.0] * full and len(pauses) == full + 2
        assert 0 < pauses[-2] <= BATCH_SECONDS and pauses[-1] == BATCH_SECONDS  # short, EOF
        # Built at EOF: each line whole, none with a former read's bytes (the EOE closes
        # the event and is not one of its records).
        assert [event["audit"]["records"] for event in out.events] == [
            [line.decode().rstrip("\n") for line in lines[:-1]]]
        assert pipeline.decoder.stats.lines == len(lines)  # and no other line
        assert pipeline.decoder.stats.parse_errors == 0
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_pacing_shortens_the_pause_when_the_input_fills_fast() -> None:
    clock = _Clock()
    pacing = Pacing(160, 48 << 10, BATCH_SECONDS, clock)
    # 1,000 execs/s of eight records of 170 bytes: 160 lines, 27 KB in 20 ms: the whole pause.
    clock.now += 0.02
    assert pacing.pause(160, 160 * 170) == BATCH_SECONDS
    # 2,000 execs/s: the room fills in 10 ms.
    clock.now += 0.02
    assert pacing.pause(320, 320 * 170) == pytest.approx(0.01)
    # Long records: 96 KB in 50 lines in 20 ms, the bytes fill it in 10 ms.
    clock.now += 0.02
    assert pacing.pause(50, 96 << 10) == pytest.approx(0.01)
    assert pacing.pause(0, 0) == BATCH_SECONDS  # nothing read: nothing learned
    with pytest.raises(ValueError):
        Pacing(0, 1)


def test_the_plugin_reads_sooner_when_auditds_socket_fills_within_the_pause() -> None:
    """At a high rate auditd's socket fills within BATCH_SECONDS (it holds some 44 KB): a
    read that finds it full asks for a shorter pause, so that the reads do not cap the rate
    (at 20 ms, about 1,700 execs/s of small records), and a trickle gets the whole pause."""
    import socket

    from sensor_linux.audit import plugin

    auditd_end, plugin_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        clock = _Clock()
        capture, out, pipeline = _capturing(Enricher())
        piped = PipeInput(plugin_end.fileno(), _waiting(pipeline, capture, clock))
        piped.pacing = Pacing(plugin.ROOM_LINES, plugin.ROOM_BYTES, BATCH_SECONDS, clock)
        auditd_end.setblocking(False)
        lines = _exec_lines(7, GONE + 7, 1, "/usr/bin/true", "true")
        sent = 0
        with pytest.raises(BlockingIOError):
            while True:  # auditd's writes, one record each, for 20 ms: the socket fills
                auditd_end.send(lines[sent % len(lines)])
                sent += 1
        clock.now += BATCH_SECONDS
        pause = piped.drain()
        assert 0 < pause < BATCH_SECONDS * 0.8
        assert len(piped.waiting.lines) == sent  # all of it read
        auditd_end.send(lines[0])               # a trickle: the whole pause
        clock.now += BATCH_SECONDS
        assert piped.drain() == BATCH_SECONDS
    finally:
        auditd_end.close()
        plugin_end.close()


def test_the_plugin_source_builds_what_waits_at_a_tick_and_at_the_stop(tmp_path) -> None:
    """Lines read and not due yet are parsed and built by the source's tick (before the
    decoder's own timeouts) and by its finish; the readings left are closed at the stop."""
    from sensor_linux.audit.plugin import PluginSource
    from sensor_linux.runner import RunConfig

    read_end, write_end = os.pipe()
    out = Collected()
    source = PluginSource(RunConfig(source="audisp", parse_error_log=str(tmp_path / "e.log")),
                          out, print, fd=read_end)  # type: ignore[arg-type]
    source.waiting.builds = Gather(BUILD_SECONDS, _Clock())  # never due: the tick builds
    try:
        os.write(write_end, b"".join(_exec_lines(9, GONE + 4, 1, "/usr/bin/true", "true")))
        source.input.drain()
        assert out.events == [] and len(source.input.waiting.lines) == 5  # read, not due
        source.tick()
        assert len(out.events) == 1 and source.input.waiting.lines == []
        os.write(write_end, b"".join(_exec_lines(10, GONE + 5, 1, "/usr/bin/true", "true")))
        # An exec's SYSCALL record the parser refuses (a word that is no field at its end):
        # looked at, but no event ever takes its reading.
        refused = _exec_lines(12, GONE + 7, 1, "/usr/bin/true", "true")[0]
        os.write(write_end, refused.rstrip(b"\n") + b" garbage\n")
        source.input.drain()
        assert len(out.events) == 1 and len(source.waiting.capture) == 2
        os.close(write_end)
        write_end = -1
        source.finish()  # reads to the end of the pipe, then builds what waits
        assert len(out.events) == 2 and len(source.waiting.capture) == 0
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_a_failing_first_look_is_counted_and_kept_and_the_event_still_built(
        monkeypatch) -> None:
    """A bug in the first look must not stop the stream: the line is kept as an internal
    error, and its event is built all the same (reading /proc at the build, as before).
    Only the SYSCALL record is looked at: the exec's other records are passed by."""
    from sensor_linux.audit import capture as capture_module
    looked: list[bytes] = []

    def broken(line: bytes) -> None:
        looked.append(line)
        raise RuntimeError("a bug")

    monkeypatch.setattr(capture_module, "exec_head", broken)
    capture, out, pipeline = _capturing(Enricher())
    input_ = NetlinkInput(_Quiet(), WaitingLines(pipeline, capture))  # type: ignore[arg-type]
    lines = _exec_lines(11, GONE + 6, 1, "/usr/bin/true", "true")
    for line in lines:
        input_.waiting.add(line)
    input_.waiting.feed()
    assert len(out.events) == 1
    assert looked == [line for line in lines if line.startswith(b"type=SYSCALL ")]
    assert pipeline.stats.internal_errors == 1


def test_the_execs_built_together_share_one_look_at_their_file(tmp_path) -> None:
    """The live audit sources start a build pass at each build (live_audit wires
    RecentLooks.new_pass): three execs of one binary built together take one look at its
    file, and the next build looks again, so a file rewritten in place between two builds
    gives the later execs its new digests."""
    import hashlib

    from sensor_linux.audit.capture import live_audit

    tool = tmp_path / "tool"
    tool.write_bytes(b"\x7fELF one")
    st = os.stat(tool)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"

    def execs(first: int) -> list[bytes]:
        lines = []
        for serial in range(first, first + 3):
            exec_lines = _exec_lines(serial, GONE + serial, 1, str(tool), "tool")
            stamp = exec_lines[1].split(b": ", 1)[0].split(b" ", 1)[1].decode()
            path = (f'type=PATH {stamp}: item=0 name="{tool}" inode={st.st_ino} dev={device} '
                    "mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 "
                    "cap_fe=0 cap_fver=0 cap_frootid=0\n").encode()
            lines += [*exec_lines[:3], path, *exec_lines[3:]]
        return lines

    enricher = Enricher()
    out = Collected()
    waiting = live_audit("ecs", out, enricher, out, keep_exec_attempts=False)
    assert waiting.new_pass == enricher.looks.new_pass
    for line in execs(1):
        waiting.add(line)
    waiting.feed()
    for line in execs(4):
        waiting.add(line)
    with open(tool, "r+b") as f:  # rewritten in place before the second build: same inode
        f.write(b"\x7fELF two!")
    os.utime(tool, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    waiting.feed()
    digests = [e["process"].get("hash", {}).get("sha256") for e in out.events]
    one = hashlib.sha256(b"\x7fELF one").hexdigest().upper()
    two = hashlib.sha256(b"\x7fELF two!").hexdigest().upper()
    assert digests == [one] * 3 + [two] * 3
    assert enricher.looks.shared == 4  # two of each build's three execs shared its look


def _exited_child() -> int:
    """A child that has exited and is not reaped yet (a zombie: its pid still names it)."""
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # waits for the exit, reaps nothing
    return pid


def test_a_pinned_process_says_whether_it_has_exited() -> None:
    """Running, exited and not reaped (its /proc directory is still there), reaped: the
    kernel's answer through the pidfd, which no pid reuse changes."""
    running = subprocess.Popen(["/bin/sleep", "30"])
    zombie = _exited_child()
    try:
        with PinnedProcess(running.pid) as process:
            assert not process.unknown and not process.exited()
        with PinnedProcess(zombie) as process:
            assert os.path.isdir(f"/proc/{zombie}") and process.exited()
    finally:
        _stop(running)
        os.waitpid(zombie, 0)
    with PinnedProcess(GONE + 1) as process:
        assert process.exited()


def test_the_first_look_reads_nothing_of_a_process_that_has_exited(monkeypatch) -> None:
    """An exec whose process has exited by the first look: no /proc read is made for it (the
    answer would be empty, and the look-up costs), while a running one is read."""
    read: list[int] = []
    real = enrich.read_exe

    def counted(pid: int, proc: str = "/proc") -> tuple[Any, bool]:
        read.append(pid)
        return real(pid, proc)
    monkeypatch.setattr(enrich, "read_exe", counted)
    enricher = Enricher()
    running = subprocess.Popen(["/bin/sleep", "30"])
    zombie = _exited_child()
    try:
        _wait_for_exe(running.pid, "/usr/bin/sleep")
        assert enricher.exe_and_container(zombie, "/usr/bin/true") == ((None, False), None)
        assert read == []
        link, _ = enricher.exe_and_container(running.pid, "/usr/bin/sleep")
        assert link == ("/usr/bin/sleep", False) and read == [running.pid]
    finally:
        _stop(running)
        os.waitpid(zombie, 0)


def test_what_was_read_of_a_process_that_exited_meanwhile_is_not_kept(monkeypatch) -> None:
    """The process exits while its link is read (its number could have gone to another
    process before the read): the link read is dropped. The control, a process that stays,
    keeps it."""
    real = enrich.read_exe
    for exits in (False, True):
        running = subprocess.Popen(["/bin/sleep", "30"])
        _wait_for_exe(running.pid, "/usr/bin/sleep")

        def exiting_while_read(pid: int, proc: str = "/proc") -> tuple[Any, bool]:
            found = real(pid, proc)
            if exits:
                running.kill()
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
            return found
        monkeypatch.setattr(enrich, "read_exe", exiting_while_read)
        try:
            link, _ = Enricher().exe_and_container(running.pid, "/usr/bin/sleep")
        finally:
            _stop(running)
        assert link == ((None, False) if exits else ("/usr/bin/sleep", False))
