"""The Windows sensor's live loop, driven on Linux through a stand-in pywintrace module.

The stand-in has pywintrace 0.2.0's surface (ETW, ProviderInfo, GUID, etw.TraceProperties,
evntrace.ControlTraceW) and calls the event callback from its own thread, as ProcessTrace does.
Everything after it is the real code: queue, normalization, Win32-shaped enrichment from a
described world, PE facts of real files, TTPHash, rendering, error log and counters.
"""

from __future__ import annotations

import ctypes
import gc
import json
import shutil
import threading
import time
import types
from typing import Any

import pytest

from common.gcpolicy import GC_YOUNG_CONTAINERS
from common.render import line_renderer
from common.sinks import TextOutput
from sensor_windows import etw_source, service, win32
from sensor_windows.replay import ReplayWorld
from sensor_windows.runner import WindowsWorld, run_sensor
from tests.conftest import run_cli
from tests.test_pe import LAUNCHERS

FT = "132853256180867746"  # 2021-12-30T08:13:38.086774Z as a FILETIME


class ListSink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


SLOW_STATUS_WRITE = 0.1   # seconds a status line takes to write in SlowStatusSink


class SlowStatusSink(ListSink):
    """A status stream slow to take a status line, as a full disk or a slow pipe is: the
    reporter thread is then usually in the middle of a write when the run stops."""

    def write(self, line: str) -> None:
        if line.startswith('{"status"'):
            time.sleep(SLOW_STATUS_WRITE)
        super().write(line)


class EVENT_TRACE_PROPERTIES(ctypes.Structure):
    """The members of evntrace.h's EVENT_TRACE_PROPERTIES the sensor touches, at their C types
    (a value that does not fit fails here as it would there)."""
    _fields_ = [("BufferSize", ctypes.c_ulong), ("MinimumBuffers", ctypes.c_ulong),
                ("MaximumBuffers", ctypes.c_ulong), ("MaximumFileSize", ctypes.c_ulong),
                ("LogFileMode", ctypes.c_ulong), ("FlushTimer", ctypes.c_ulong),
                ("EnableFlags", ctypes.c_ulong), ("AgeLimit", ctypes.c_long),
                ("NumberOfBuffers", ctypes.c_ulong), ("FreeBuffers", ctypes.c_ulong),
                ("EventsLost", ctypes.c_ulong)]


class TraceProperties:
    """pywintrace 0.2.0's TraceProperties: real-time mode, the ring buffer size given."""

    def __init__(self, ring_buf_size: int = 1024, max_str_len: int = 1024,
                 min_buffers: int = 0, max_buffers: int = 0, props: Any = None) -> None:
        self._props = ctypes.pointer(EVENT_TRACE_PROPERTIES(BufferSize=ring_buf_size,
                                                            LogFileMode=0x100))

    def get(self) -> Any:
        return self._props


def fake_pywintrace(script: list[Any], control_status: int = 0,
                    events_lost: int = 0) -> types.SimpleNamespace:
    """A module like pywintrace's ``etw`` whose session plays ``script`` on its own thread."""
    calls: dict[str, Any] = {"control": [], "sessions": []}
    delivered = threading.Event()

    class ETW:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs
            self.started = self.stopped = False
            calls["sessions"].append(self)

        def start(self) -> None:
            self.started = True
            def play() -> None:
                for item in script:
                    self.kwargs["event_callback"](item)
                delivered.set()
            self.thread = threading.Thread(target=play)
            self.thread.start()

        def stop(self) -> None:
            self.thread.join()
            self.stopped = True

    def control_trace(handle: int, name: str, props: Any, code: int) -> int:
        if code == 0:      # EVENT_TRACE_CONTROL_QUERY: what Windows says of a session
            running = any(s.kwargs["session_name"] == name and s.started and not s.stopped
                          for s in calls["sessions"]) and not calls.get("gone")
            if not running:
                return 4201    # ERROR_WMI_INSTANCE_NOT_FOUND
            props.contents.EventsLost = events_lost
            return 0
        calls["control"].append((handle, name, code))
        return control_status

    return types.SimpleNamespace(
        ETW=ETW, GUID=lambda text: ("GUID", text),
        ProviderInfo=lambda name, guid, **kw: {"name": name, "guid": guid, **kw},
        etw=types.SimpleNamespace(TraceProperties=TraceProperties),
        evntrace=types.SimpleNamespace(ControlTraceW=control_trace, TRACEHANDLE=int,
                                       EVENT_TRACE_CONTROL_STOP=1),
        calls=calls, delivered=delivered)


def _start(pid: int, ppid: int, image: str, creator: Any = None) -> tuple[str, dict]:
    return ("1", {"EventHeader": {"ProcessId": str(creator if creator is not None else ppid),
                                  "TimeStamp": FT, "EventDescriptor": {"Id": "1",
                                                                       "Version": "0"}},
                  "ProcessID": str(pid), "ParentProcessID": str(ppid), "SessionID": "1",
                  "ImageName": image})


def test_session_is_configured_as_designed_and_a_stale_one_is_stopped() -> None:
    etw = fake_pywintrace([])
    source = etw_source.EtwProcessSource(etw)
    source.start()
    session = etw.calls["sessions"][0]
    provider = session.kwargs["providers"][0]
    assert provider["guid"] == ("GUID", "{22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}")
    assert provider["any_keywords"] == 0x10 and provider["name"] == \
        "Microsoft-Windows-Kernel-Process"
    assert session.kwargs["session_name"] == "ttpsensor-process"
    assert session.kwargs["ignore_exists_error"] is False
    settings = session.kwargs["properties"].get().contents
    assert settings.BufferSize == 64 and settings.LogFileMode == 0x100 | 0x10
    assert settings.FlushTimer == 50     # milliseconds: short-lived processes still described
    assert etw.calls["control"] == [(0, "ttpsensor-process", 1)]
    assert source.stale_session_stopped is True
    source.stop()
    assert session.stopped

    none_left = etw_source.EtwProcessSource(fake_pywintrace([], control_status=4201))
    none_left.start()
    assert none_left.stale_session_stopped is False
    none_left.stop()
    with pytest.raises(OSError, match="stale ETW session"):
        etw_source.EtwProcessSource(fake_pywintrace([], control_status=5)).start()


def test_callback_only_enqueues_and_counts_what_it_cannot_keep() -> None:
    image = "\\Device\\HarddiskVolume3\\x.exe"
    script = [_start(10 + n, 4, image) for n in range(5)] + [("2", {}), (None, {})]
    etw = fake_pywintrace(script, events_lost=7)
    source = etw_source.EtwProcessSource(etw, queue_events=2)
    source.start()
    assert etw.delivered.wait(10)
    source.stop()
    counters = source.counters
    assert (counters.received, counters.queued, counters.dropped_queue_full) == (5, 2, 3)
    assert counters.other_events == 2 and counters.lost_by_etw == 7
    assert source.events.qsize() == 2


def test_run_sensor_end_to_end_with_rejects_kept_and_counters(tmp_path) -> None:
    shutil.copy(next(p for p in LAUNCHERS if p.endswith("t64.exe")), tmp_path / "parent.exe")
    shutil.copy(next(p for p in LAUNCHERS if p.endswith("w64.exe")), tmp_path / "child.exe")
    world = ReplayWorld(str(tmp_path))
    world.files = {"C:\\TOOLS\\PARENT.EXE": "parent.exe", "C:\\TOOLS\\CHILD.EXE": "child.exe"}
    world.add_process({"pid": 700, "image": "C:\\Tools\\parent.exe",
                       "create_time": "2021-12-30T08:00:00Z", "user_sid": "S-1-5-18"})
    world.add_process({"pid": 701, "image": "C:\\Tools\\child.exe",
                       "create_time": "2021-12-30T08:13:38.086774Z",
                       "command_line": "child.exe --flag \"quoted\"\nnext line",
                       "user_sid": "S-1-5-18", "integrity_level": "System"})
    malformed = ("1", {"EventHeader": {}, "ProcessID": "702"})  # no parent, no image
    script = [_start(701, 700, "\\Device\\HarddiskVolume2\\Tools\\child.exe", creator=4),
              malformed, ("2", {"ProcessID": "701"})]
    etw = fake_pywintrace(script, events_lost=1)
    sink, errors, messages = ListSink(), ListSink(), SlowStatusSink()
    stop = threading.Event()

    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(run_sensor(
        stop, TextOutput(sink, line_renderer("qlog")),
        {"name": "testpc", "os": {"type": "windows"}},
        world=WindowsWorld(world, world, lambda: {"\\Device\\HarddiskVolume2": "C:"}),
        etw_module=etw, error_log=errors, status_interval=0.05, messages=messages)))
    before = gc.get_threshold()
    worker.start()
    assert etw.delivered.wait(10)
    deadline = time.monotonic() + 10
    while not sink.lines:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # The queue loop runs with the sensor's garbage-collector setting, put back after.
    assert gc.get_threshold()[0] == GC_YOUNG_CONTAINERS
    stop.set()
    worker.join(30)
    assert not worker.is_alive()
    assert gc.get_threshold() == before

    assert len(sink.lines) == 1
    doc = json.loads(sink.lines[0])
    assert doc["PID"] == 701 and doc["Fullpath"] == "C:\\Tools\\child.exe"
    assert doc["Commandline"] == "child.exe --flag \"quoted\"\nnext line"
    assert doc["OriginalFilename"] == "w64.exe" and doc["ProcessIntegrityLevel"] == "System"
    assert doc["ParentProcess"]["PID"] == 700
    assert doc["ParentProcess"]["OriginalFilename"] == "t64.exe"
    assert len(doc["TTPHash"]) == 64

    assert len(errors.lines) == 1
    kept = json.loads(errors.lines[0])
    assert kept["reason"].startswith("rejected:") and kept["etw"] == list(malformed)

    assert result["etw"] == {"received": 2, "queued": 2, "dropped_queue_full": 0,
                             "other_events": 1, "lost_by_etw": 1}
    assert result["pipeline"]["events"] == 1 and result["pipeline"]["rejected"] == 1
    assert etw.calls["sessions"][0].stopped
    # The summary is the last line, even when a status line was being written at the stop:
    # a late status write would land within a slow write's time after the run returned.
    time.sleep(3 * SLOW_STATUS_WRITE)
    reports = [json.loads(line) for line in "".join(messages.lines).splitlines()]
    assert "summary" in reports[-1] and reports[-1]["summary"] == result


def test_service_control_state_machine() -> None:
    reports: list[tuple[int, int, int]] = []
    control = service.ServiceControl(lambda *status: reports.append(status))
    control.starting()
    control.running()
    assert reports[-1][:2] == (service.SERVICE_RUNNING,
                               service.SERVICE_ACCEPT_STOP | service.SERVICE_ACCEPT_SHUTDOWN)
    assert control.handle(service.SERVICE_CONTROL_INTERROGATE) == service.NO_ERROR
    assert reports[-1][0] == service.SERVICE_RUNNING
    assert control.handle(0x80) == service.ERROR_CALL_NOT_IMPLEMENTED  # user-defined
    assert not control.stop.is_set()
    assert control.handle(service.SERVICE_CONTROL_STOP) == service.NO_ERROR
    assert control.stop.is_set()
    assert reports[-1] == (service.SERVICE_STOP_PENDING, 0, service.STOP_WAIT_HINT_MS, 0)
    control.handle(service.SERVICE_CONTROL_SHUTDOWN)  # a second stop reports nothing new
    assert reports[-1][0] == service.SERVICE_STOP_PENDING
    control.stopped()
    assert [r[0] for r in reports] == [service.SERVICE_START_PENDING, service.SERVICE_RUNNING,
                                       service.SERVICE_RUNNING, service.SERVICE_STOP_PENDING,
                                       service.SERVICE_STOPPED]


def test_service_commands_and_console_refusal_on_linux() -> None:
    install = service.sc_commands("install", "C:\\Python312\\python.exe")
    assert install[0][:3] == ["sc.exe", "create", "ttpsensor"]
    assert install[0][4] == '"C:\\Python312\\python.exe" -m sensor_windows.service'
    assert service.sc_commands("remove")[-1] == ["sc.exe", "delete", "ttpsensor"]
    with pytest.raises(ValueError):
        service.sc_commands("pause")
    dry = run_cli("windows", "service", "install", "--dry-run")
    assert dry.returncode == 0 and "sensor_windows.service" in dry.stdout
    assert dry.stdout.splitlines()[0].startswith("sc.exe create ttpsensor binPath=")
    refused = run_cli("windows", "service", "start")
    assert refused.returncode == 1 and "need Windows" in refused.stderr
    console = run_cli("windows", "run")
    assert console.returncode == 1 and "needs Windows" in console.stderr


def test_win32_module_imports_on_linux_and_its_helpers_are_right() -> None:
    assert win32.integrity_word(0x3000) == "High"
    assert win32.integrity_word(0x1234) == "RID 0x1234"
    moment = win32.filetime_parts(int(FT) & 0xFFFFFFFF, int(FT) >> 32)
    assert moment is not None and moment.isoformat() == "2021-12-30T08:13:38.086774+00:00"
    with pytest.raises(RuntimeError, match="needs Windows"):
        etw_source.import_pywintrace()


def test_the_queue_loop_sees_a_stop_while_events_keep_coming(tmp_path) -> None:
    import queue as queue_module
    import time

    from sensor_windows.pipeline import drain

    class Counting:
        def __init__(self) -> None:
            self.fed = 0
            self.sink = types.SimpleNamespace(flush=lambda: None)
            self.keeper = types.SimpleNamespace(flush=lambda: None)

        def feed(self, _item: Any) -> None:
            self.fed += 1

    events: queue_module.Queue = queue_module.Queue(maxsize=1000)
    stop, done = threading.Event(), threading.Event()

    def flood() -> None:           # a busy host: the queue never runs dry
        while not done.is_set():
            try:
                events.put(("1", {}), timeout=0.01)
            except queue_module.Full:
                pass
    feeder = threading.Thread(target=flood, daemon=True)
    feeder.start()
    pipeline = Counting()
    loop = threading.Thread(target=drain, args=(pipeline, events, stop), daemon=True)
    loop.start()
    time.sleep(0.3)
    stop.set()
    loop.join(timeout=10)
    done.set()
    feeder.join(timeout=5)
    assert not loop.is_alive(), "the loop did not see the stop"
    assert pipeline.fed > 0


def test_a_console_run_has_a_session_of_its_own_beside_the_service() -> None:
    etw = fake_pywintrace([])
    stop = threading.Event()
    stop.set()
    world = ReplayWorld("/nonexistent")
    run_sensor(stop, TextOutput(ListSink(), line_renderer("ecs")), {"name": "testpc"},
               world=WindowsWorld(world, world, dict), etw_module=etw,
               session_name=etw_source.CONSOLE_SESSION_NAME)
    # Only the console's own (stale) session is stopped; the service's is left running.
    assert [name for _, name, _ in etw.calls["control"]] == ["ttpsensor-process-console"]
    assert etw.calls["sessions"][0].kwargs["session_name"] == "ttpsensor-process-console"
    assert etw_source.CONSOLE_SESSION_NAME != etw_source.SESSION_NAME


def test_a_session_stopped_from_outside_ends_the_run_as_a_failure(monkeypatch) -> None:
    from sensor_windows import runner
    monkeypatch.setattr(runner, "SESSION_CHECK_SECONDS", 0.05)
    etw = fake_pywintrace([])
    world = ReplayWorld("/nonexistent")
    messages, stop, failure = ListSink(), threading.Event(), {}

    def run() -> None:
        try:
            run_sensor(stop, TextOutput(ListSink(), line_renderer("ecs")), {"name": "testpc"},
                       world=WindowsWorld(world, world, dict), etw_module=etw,
                       status_interval=60, messages=messages)
        except runner.SessionGone as exc:
            failure["error"] = exc
    worker = threading.Thread(target=run)
    worker.start()
    assert etw.delivered.wait(10)
    etw.calls["gone"] = True        # logman stop ttpsensor-process
    worker.join(10)
    assert not worker.is_alive() and not stop.is_set()
    assert "stopped from outside" in str(failure["error"])
    summary = json.loads("".join(messages.lines).splitlines()[-1])["summary"]
    assert summary["session_gone"] is True
