"""The source registry and the one runner: a toy source added in a few lines runs end to end
through the real runner, outputs and embedded collector."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from collector.store import Store
from common import ttphash
from common.schema import new_event
from common.sinks import OutputError, emit
from sensor_linux import app
from sensor_linux.batching import BATCH_SECONDS
from sensor_linux.runner import BaseSource, RunConfig
from sensor_linux.sources import SOURCES, SourceEntry
from tests.conftest import SHARED, require


class PipeLines:
    """An input: lines from a pipe, one exec event each."""

    def __init__(self, fd: int, source: "ToySource") -> None:
        self.fd, self.source, self.eof = fd, source, False

    def fileno(self) -> int:
        return self.fd

    def due_in(self) -> None:
        return None

    def drain(self) -> float:
        data = os.read(self.fd, 65536)
        self.eof = not data
        for word in data.decode().split():
            self.source.exec(word)
        return BATCH_SECONDS


class ToySource(BaseSource):
    """The whole of a source: one exec event per word written to a pipe; done at EOF."""

    name, tick_seconds = "toy", 0.2

    def __init__(self, config: RunConfig, sink, say) -> None:  # noqa: ANN001
        self.sink, self.ticks, self.events = sink, 0, 0
        self.input = PipeLines(TOY_PIPE[0], self)

    def exec(self, word: str) -> None:
        """An exec of ``word``; the word ``note`` makes an event of another kind instead."""
        action = "note" if word == "note" else "process_create"
        event = new_event(action, "toy", host={"name": "toy-host", "os": {"type": "linux"}})
        if action == "process_create":
            event["process"] = {"pid": 1000 + self.events, "executable": f"/usr/bin/{word}",
                                "args": [word]}
            ttphash.attach(event)
        emit(self.sink, event)
        self.events += 1

    def inputs(self) -> list:
        return [self.input]

    def tick(self) -> None:
        self.ticks += 1

    def done(self) -> bool:
        return self.input.eof

    def close(self) -> None:
        os.close(self.input.fd)

    def summary(self) -> dict:
        return {"events": self.events, "ticks": self.ticks}


TOY_PIPE: list[int] = []


def test_a_toy_source_runs_through_the_registry_runner_and_outputs(tmp_path) -> None:
    read, write = os.pipe()
    TOY_PIPE[:] = [read]
    registry = {**SOURCES, "toy": SourceEntry("tests.test_runner:ToySource", ("ecs",), "toy")}
    words = ["ls", "cat", "ls", "id"]

    def feed() -> None:
        for word in words:  # slowly: the runner waits, drains and ticks in between
            os.write(write, f"{word}\n".encode())
            threading.Event().wait(0.3)
        os.close(write)

    threading.Thread(target=feed, daemon=True).start()
    said: list[str] = []
    out = tmp_path / "events.jsonl"
    summary = app.run_sensor(RunConfig(source="toy"), [f"jsonl:{out}", f"spool:{tmp_path}/sp"],
                             str(tmp_path / "store.sqlite"), said.append, registry=registry)
    assert summary["source"] == "toy" and summary["events"] == 4
    assert summary["ticks"] >= 3  # ticked while waiting on the pipe, busy or idle
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["process"]["args"] for e in lines] == [[w] for w in words]
    with Store(str(tmp_path / "store.sqlite"), readonly=True) as store:  # delivered at stop
        assert store.count_events() == 4
        assert {r["ttphash"]: r["count"] for r in store.top(10)}[
            lines[0]["ttphash"]["value"]] == 2


def test_a_source_for_another_format_is_a_usage_problem(tmp_path) -> None:
    import pytest
    with pytest.raises(app.UsageProblem, match="--source ebpf writes ecs, qlog only"):
        app.run_sensor(RunConfig(source="ebpf", fmt="laurel"), ["-"], "", print)
    with pytest.raises(OutputError, match="a spool stores events"):
        app.run_sensor(RunConfig(source="audit", fmt="laurel"), [f"spool:{tmp_path}/s"], "",
                       print)


def test_each_output_renders_in_its_format_and_the_spool_keeps_every_event(tmp_path) -> None:
    """--format qlog beside a spool: the text output has QLOG's process creations only, the
    spool every event (the status and generic events a QLOG stream has no form for)."""
    from common.spool import Spool
    read, write = os.pipe()
    TOY_PIPE[:] = [read]
    os.write(write, b"ls note id\n")
    os.close(write)
    registry = {"toy": SourceEntry("tests.test_runner:ToySource", ("ecs", "qlog"), "toy")}
    out = tmp_path / "q.jsonl"
    summary = app.run_sensor(RunConfig(source="toy", fmt="qlog"),
                             [f"jsonl:{out}", f"spool:{tmp_path}/sp"], "", print,
                             registry=registry)
    assert summary["events"] == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["QType"] for d in lines] == ["Process Create"] * 2
    stored = [e for _, events in Spool(f"{tmp_path}/sp", readonly=True).read(0)
              for e in events]
    assert [e["event"]["action"] for e in stored] == ["process_create", "note",
                                                      "process_create"]


class ServingToy(ToySource):
    """The toy as a serving source: privileges dropped (to root: kept), status reported."""

    serving = True


def _serve(tmp_path, fmt: str) -> tuple[list[dict], dict]:
    read, write = os.pipe()
    TOY_PIPE[:] = [read]
    registry = {"toy": SourceEntry("tests.test_runner:ServingToy", ("ecs", "qlog"), "toy")}

    def feed() -> None:
        os.write(write, b"ls\n")
        threading.Event().wait(1.5)   # several status intervals
        os.close(write)

    threading.Thread(target=feed, daemon=True).start()
    out, status = tmp_path / f"{fmt}.jsonl", tmp_path / f"{fmt}-status.json"
    app.run_sensor(RunConfig(source="toy", fmt=fmt, user="root", status_file=str(status),
                             status_interval=0.2), [f"jsonl:{out}"], "", print,
                   registry=registry)
    return ([json.loads(line) for line in out.read_text().splitlines()],
            json.loads(status.read_text()))


def test_status_events_only_where_the_format_has_room_for_them(tmp_path) -> None:
    ecs, final = _serve(tmp_path, "ecs")
    statuses = [e for e in ecs if e.get("event", {}).get("action") == "sensor_status"]
    assert statuses and statuses[-1]["ttpsensor"]["status"]["source"] == "toy"
    assert final["running"] is False and final["events"] == 1
    qlog, final = _serve(tmp_path, "qlog")
    assert [e["QType"] for e in qlog] == ["Process Create"]  # no ECS status event among them
    assert final["running"] is False and final["source"] == "toy"


def test_what_an_unprivileged_sensor_could_not_rotate_is_named() -> None:
    """cannot_replace as the dropped user sees it (run as nobody): a file in a directory it
    cannot write, and one of root's in a sticky directory, are named; /dev/null (never
    rotated) and a file in its own directory are not."""
    require(os.geteuid() == 0, "root is needed to become nobody")
    base = Path(tempfile.mkdtemp(prefix="ttp-nobody-", dir="/tmp"))  # nobody can reach it
    try:
        os.chmod(base, 0o755)
        closed = base / "closed"
        closed.mkdir(mode=0o755)
        sticky = base / "sticky"
        sticky.mkdir()
        os.chmod(sticky, 0o1777)
        (sticky / "root.jsonl").write_text("")
        own = base / "own"
        own.mkdir()
        os.chown(own, 65534, 65534)
        paths = [str(closed / "a.jsonl"), str(sticky / "root.jsonl"), "/dev/null",
                 str(own / "b.jsonl")]
        script = ("import json, sys; from sensor_linux.privileges import cannot_replace; "
                  "print(json.dumps(cannot_replace(sys.argv[1:])))")
        done = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True,
                              text=True, timeout=60,
                              preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    finally:
        shutil.rmtree(base)
    assert done.returncode == 0, done.stderr
    problems = json.loads(done.stdout)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{closed}/a.jsonl: the directory {closed} is not writable")
    assert problems[1].startswith(f"{sticky}/root.jsonl: {sticky} is a shared (sticky)")


def test_the_read_loop_runs_with_a_steadier_collector_and_puts_it_back() -> None:
    """Startup's objects are frozen out of the collector's walks and the collector runs
    less often while the loop runs; afterwards both are as they were, even after a failure."""
    import gc

    from common.gcpolicy import GC_YOUNG_CONTAINERS, steady_gc
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with pytest.raises(RuntimeError):
        with steady_gc():
            assert gc.get_threshold()[0] == GC_YOUNG_CONTAINERS
            assert gc.get_freeze_count() >= frozen + 1
            raise RuntimeError("the loop failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_replay_that_exits_leaves_the_collector_tuned(tmp_path: Path) -> None:
    """Putting the thresholds back starts a full collection of everything the replay built;
    a replay the process exits after (the CLI's) skips it, any other puts them back."""
    import gc

    import io

    from common.sinks import StreamSink
    from sensor_linux.audit.replay import replay
    from common.gcpolicy import GC_YOUNG_CONTAINERS
    from sensor_linux.runner import SignalStop
    log = SHARED / "corpus" / "laurel" / "proc-trace-dpkg-l.txt"
    before = gc.get_threshold()
    config = RunConfig(source="audisp", fmt="laurel", parse_error_log=str(tmp_path / "e.log"))
    try:
        replay(str(log), config, StreamSink(io.StringIO()), SignalStop())
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        summary = replay(str(log), config, StreamSink(io.StringIO()), SignalStop(),
                         then_exit=True)
        assert summary["events"] > 0
        assert gc.get_threshold()[0] == GC_YOUNG_CONTAINERS
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_the_stop_flag_ends_a_wait_when_set_by_another_thread_or_by_a_signal() -> None:
    """The loops wait on the stop flag after every read: a wait must end when the flag is
    set, from another thread or by SIGTERM arriving in the middle of it (as auditd stops its
    plugin), and must last its timeout otherwise. The waits are of a minute: one that ends
    early ended because of the flag."""
    import signal
    import time

    from sensor_linux.runner import SignalStop, install_stop_handlers
    flag = SignalStop()
    assert flag.wait(0) is False and flag.wait(-1.0) is False and not flag.is_set()
    started = time.monotonic()
    assert flag.wait(0.05) is False
    assert time.monotonic() - started >= 0.04  # a timeout is waited, not skipped
    threading.Timer(0.2, flag.set).start()
    started = time.monotonic()
    assert flag.wait(60) is True and time.monotonic() - started < 30
    assert flag.wait(60) is True and flag.is_set()  # set stays set; later waits end at once

    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    try:
        stop = install_stop_handlers()
        main = threading.main_thread().ident
        assert main == threading.get_ident()
        # To the main thread, as a single-threaded sensor receives it.
        threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGTERM)).start()
        started = time.monotonic()
        assert stop.wait(60) is True and time.monotonic() - started < 30
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
