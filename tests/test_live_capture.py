"""The live audit sources read what only a live process shows as soon as they read its exec,
and build the event later (every 100 ms: sensor_linux/batching.py). Real processes and the real
/proc here, audit records written for them (no audit subsystem needed): an event built after
its process or its parent is gone still has what was read while they ran."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from types import SimpleNamespace
from typing import Any

import pytest

from common.pipeline import MAX_HELD, Pipeline
from common.schema import Event
from sensor_linux import enrich
from sensor_linux.audit.pipeline import audit_pipeline
from sensor_linux.audit.plugin import PipeInput
from sensor_linux.audit.source import NetlinkInput
from sensor_linux.batching import BUILD_SECONDS
from sensor_linux.enrich import Enricher


class Collected:
    """An output that keeps the events."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def prepare(self, event: Event) -> None:
        return None

    def write_event(self, event: Event, prepared: Any) -> bool:
        self.events.append(event)
        return True

    def write(self, line: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


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
    for _ in range(500):
        try:
            if os.readlink(f"/proc/{pid}/exe").startswith(prefix):
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never ran {prefix}")


def _memfd_sleep(marker: str) -> tuple[subprocess.Popen[bytes], str]:
    """A sleep run from a memfd of its own (a new image: no digest cached); its sha256."""
    image = open("/usr/bin/sleep", "rb").read() + os.urandom(8)
    fd = os.memfd_create(marker, 0)
    try:
        os.write(fd, image)
        proc = subprocess.Popen([marker, "30"], executable=f"/proc/self/fd/{fd}",
                                pass_fds=(fd,))
    finally:
        os.close(fd)
    _wait_for_exe(proc.pid, "/memfd:")
    return proc, hashlib.sha256(image).hexdigest().upper()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("opened", [True, False])
def test_a_memfd_image_read_while_it_ran_is_hashed_when_the_event_is_built_after_it_exited(
        opened: bool, monkeypatch) -> None:
    """The exec is held (nothing built) until the build; the process is gone by then, and
    its image is hashed through the descriptor opened at capture. Without that descriptor
    (``opened`` False: the control), the late build has nothing left to hash."""
    if not opened:
        monkeypatch.setattr(enrich, "open_image", lambda pid, proc="/proc": None)
    marker = f"capture-{os.getpid()}-{opened}"
    proc, digest = _memfd_sleep(marker)
    out = Collected()
    pipeline = audit_pipeline("ecs", out, enricher=Enricher(), capture=True)  # type: ignore[arg-type]
    try:
        for line in _exec_lines(1, proc.pid, os.getpid(), f"/memfd:{marker} (deleted)", marker):
            pipeline.feed(line)
        assert out.events == [] and len(pipeline.held) == 1  # held, not built
    finally:
        _stop(proc)
    assert not os.path.exists(f"/proc/{proc.pid}/exe")
    pipeline.build_held()
    [event] = out.events
    assert event["process"]["executable"] == f"/memfd:{marker}"
    assert event["process"]["on_disk"] is False
    if opened:
        assert event["process"]["hash"]["sha256"] == digest
    else:
        assert "hash" not in event["process"]
    assert pipeline.held == [] and pipeline.stats.internal_errors == 0


@pytest.mark.parametrize("capture", [True, False])
def test_an_unknown_parent_read_at_capture_is_the_parent_after_it_exited(capture: bool) -> None:
    """A parent the table does not know is read from /proc when the child's exec is read.
    Fed after the parent exited with no capture (the control), the event has the pid alone."""
    parent = subprocess.Popen(["/bin/sleep", "30"])
    _wait_for_exe(parent.pid, "/")
    out = Collected()
    enricher = Enricher()
    pipeline = audit_pipeline("ecs", out, enricher=enricher, capture=capture)  # type: ignore[arg-type]
    lines = _exec_lines(2, 4_000_000, parent.pid, "/usr/bin/true", "true")
    try:
        if capture:
            for line in lines:
                pipeline.feed(line)
    finally:
        _stop(parent)
    if not capture:
        for line in lines:
            pipeline.feed(line)
    pipeline.close()
    [event] = out.events
    found = event["process"]["parent"]
    assert found["pid"] == parent.pid
    if capture:
        assert found["executable"] == os.path.realpath("/bin/sleep")
        assert found["args"] == ["/bin/sleep", "30"]
    else:
        assert set(found) == {"pid"}
    assert enricher.proc_reads == 1  # once: at capture, or at the build that found it gone


def test_a_parent_whose_exec_is_held_is_not_read_from_proc() -> None:
    """A parent and its child exec'd in one batch: the child's capture does not read the
    parent from /proc (its exec is pending and will be in the table first), and both events
    are what building each at once gives."""
    def run(capture: bool) -> tuple[list[Event], int]:
        out, enricher = Collected(), Enricher()
        pipeline = audit_pipeline("ecs", out, enricher=enricher, capture=capture)  # type: ignore[arg-type]
        for line in (_exec_lines(3, 3_999_998, 1, "/usr/bin/env", "env")
                     + _exec_lines(4, 3_999_999, 3_999_998, "/usr/bin/true", "true")):
            pipeline.feed(line)
        pipeline.close()
        return out.events, enricher.proc_reads

    held, held_reads = run(True)
    at_once, at_once_reads = run(False)
    assert held_reads == at_once_reads == 1  # init, the parent of the first, read once
    def parents(events: list[Event]) -> list[tuple[Any, Any]]:
        return [(e["process"]["parent"]["pid"], e["process"]["parent"].get("executable"))
                for e in events]
    assert parents(held) == parents(at_once)
    assert parents(held)[1] == (3_999_998, "/usr/bin/env")
    assert [e["ttphash"]["value"] for e in held] == [e["ttphash"]["value"] for e in at_once]


class _Items:
    """A decoder whose items are what it is fed; ``tick`` and ``flush`` give one each."""

    def decode(self, raw: Any) -> list[Any]:
        return [raw]

    def tick(self) -> list[Any]:
        return ["timed out"]

    def flush(self) -> list[Any]:
        return ["flushed"]

    def originals(self, item: Any, reason: str) -> list[bytes | str]:
        return [str(item)]

    def summary(self) -> dict[str, object]:
        return {}


class _Recorder:
    def __init__(self) -> None:
        self.built: list[Any] = []

    def build(self, item: Any) -> Event:
        self.built.append(item)
        return {"event": {"action": "x"}}


def test_a_capturing_pipeline_holds_items_in_order_until_a_build_a_tick_or_the_close() -> None:
    captured: list[Any] = []
    builder = _Recorder()

    def capture(item: Any) -> None:
        if item == "bad":
            raise ValueError("a bug in capture")
        captured.append(item)

    pipeline = Pipeline(_Items(), Collected(), builder=builder,  # type: ignore[arg-type]
                        capture=capture)
    for item in ("a", "bad", "b"):
        pipeline.feed(item)
    assert captured == ["a", "b"] and builder.built == []
    assert pipeline.stats.internal_errors == 1  # counted, and the item is still built
    pipeline.build_held()
    assert builder.built == ["a", "bad", "b"] and pipeline.held == []
    pipeline.feed("c")
    pipeline.tick()  # what is held first, then what timed out in the decoder
    assert builder.built[3:] == ["c", "timed out"]
    for n in range(MAX_HELD - 1):
        pipeline.feed(n)
    assert len(builder.built) == 5  # not yet: one short of the bound
    pipeline.feed("full")
    assert len(builder.built) == 5 + MAX_HELD and pipeline.held == []
    pipeline.feed("d")
    pipeline.close()
    assert builder.built[-2:] == ["d", "flushed"]


class _Holding:
    """A capturing pipeline's face to its input: what is fed is held until built."""

    def __init__(self) -> None:
        self.decoder = SimpleNamespace(stats=SimpleNamespace(socket_overflows=0))
        self.held: list[bytes] = []
        self.builds: list[list[bytes]] = []

    def feed(self, line: bytes) -> None:
        self.held.append(line)

    def build_held(self) -> None:
        self.builds.append(self.held)
        self.held = []


class _Quiet:
    """An audit record socket with nothing waiting."""

    def __init__(self) -> None:
        self.sock = SimpleNamespace(setblocking=lambda flag: None, fileno=lambda: -1)

    def read_batch(self) -> tuple[list[bytes], int, bool]:
        raise BlockingIOError


def test_the_audit_inputs_are_due_when_events_wait_and_build_them_without_reading() -> None:
    """Both audit inputs: not due while nothing waits; due BUILD_SECONDS after their last
    build while something does; a drain when due builds it, and on an empty pipe does not
    block (the runner drains a due input whose descriptor is quiet)."""
    read_end, write_end = os.pipe()
    try:
        for make in (lambda p: NetlinkInput(_Quiet(), p),  # type: ignore[arg-type]
                     lambda p: PipeInput(read_end, p)):  # type: ignore[arg-type]
            pipeline = _Holding()
            item = make(pipeline)
            assert item.due_in() is None
            pipeline.held.append(b"an exec")
            item.builds.read()  # as after a build: the next is BUILD_SECONDS away
            assert 0 < item.due_in() <= BUILD_SECONDS
            if isinstance(item, NetlinkInput):  # (a pipe is drained only when readable)
                assert item.drain() is False and pipeline.builds == []  # not due: held
            item.builds._last_read -= BUILD_SECONDS  # the time has come
            assert item.due_in() == 0
            started = time.monotonic()
            assert item.drain() is False
            assert time.monotonic() - started < 1  # the empty pipe was not read
            assert pipeline.builds == [[b"an exec"]] and item.due_in() is None
        os.write(write_end, b"type=EOE msg=audit(1.0:1): \n")
        pipeline = _Holding()
        PipeInput(read_end, pipeline).drain()  # type: ignore[arg-type]
        assert pipeline.held == [b"type=EOE msg=audit(1.0:1): \n"]  # read, held: not due
    finally:
        os.close(read_end)
        os.close(write_end)
