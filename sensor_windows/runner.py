"""The Windows sensor's main loop, the same for the console and the service.

ETW session -> queue -> the pipeline (sensor_windows/pipeline.py) on this thread -> sinks. The Win32 pieces (the
inspector, the disk and the device map) are parameters, so the loop runs on Linux in tests with
a stand-in pywintrace module and a described world. Counters go to the error stream (and the
status callback) every ``status_interval`` seconds and at the end, with ETW's own lost count.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Callable, TextIO

from common.gcpolicy import steady_gc
from common.sinks import Output, Sink
from sensor_windows.enrich import CachedInspector, FileSource, ProcessInspector, WindowsEnricher
from sensor_windows.etw_source import SESSION_NAME, EtwProcessSource
from sensor_windows.pipeline import drain, windows_pipeline


SESSION_CHECK_SECONDS = 5.0   # how soon a session stopped from outside is noticed


def default_state_dir() -> str:
    """%ProgramData%\\ttpsensor: where the service writes events and errors."""
    return os.path.join(os.environ.get("ProgramData", r"C:\ProgramData"), "ttpsensor")


@dataclass
class WindowsWorld:
    """What the loop asks the machine: processes, files, device names."""

    inspector: ProcessInspector
    files: FileSource
    device_map: Callable[[], dict[str, str]]
    trust: Callable[[str], Any] | None = None    # Windows' signature verdict on a path


def live_world() -> WindowsWorld:
    """The real machine (Windows only)."""
    from sensor_windows import win32, wintrust
    devices = win32.device_map()  # drives rarely change; refreshed when the sensor restarts
    return WindowsWorld(win32.Win32Inspector(), win32.DiskFiles(), lambda: devices,
                        wintrust.WinTrust().verdict)


def run_sensor(stop: threading.Event, sink: Output, host: dict[str, Any], *,
               world: WindowsWorld | None = None, etw_module: ModuleType | None = None,
               error_log: Sink | None = None, status_interval: float = 60.0,
               messages: TextIO | None = None,
               session_name: str = SESSION_NAME) -> dict[str, Any]:
    """Collect until ``stop`` is set (or Ctrl-C) into ``sink`` (common/sinks.py: it renders in
    its format); returns the final counters."""
    world = world or live_world()
    enricher = WindowsEnricher(CachedInspector(world.inspector), world.files, host,
                               trust=world.trust)
    pipeline = windows_pipeline(enricher, sink, device_map=world.device_map,
                                error_log=error_log)
    source = EtwProcessSource(etw_module, session_name=session_name)
    source.start()

    def counters() -> dict[str, Any]:
        source.refresh_lost()
        return {"etw": asdict(source.counters), "pipeline": pipeline.summary(),
                "stale_session_stopped": source.stale_session_stopped,
                "pid_reuse_rejected": enricher.table.reuse_rejected}

    reporter_stop = threading.Event()
    halt = _StopOrGone(stop, source)

    def report() -> None:
        # The session is checked often (a gone session ends the run), status every interval.
        reported = time.monotonic()
        while not reporter_stop.wait(min(status_interval, SESSION_CHECK_SECONDS)):
            snapshot = counters()
            if source.session_gone:
                return
            if messages is not None and time.monotonic() - reported >= status_interval:
                messages.write(json.dumps({"status": snapshot}) + "\n")
                messages.flush()
                reported = time.monotonic()

    reporter = threading.Thread(target=report, name="status", daemon=True)
    reporter.start()
    try:
        with steady_gc():  # as the Linux sensor's loop (common/gcpolicy.py)
            drain(pipeline, source.events, halt)
    finally:
        source.stop()
        # Events that arrived between the last get and the stop are still handled.
        drain(pipeline, source.events, None)
        # Joined, not only told: a status line written after the summary would make the
        # summary no longer the last line, and two threads writing one stream can interleave.
        reporter_stop.set()
        reporter.join()
        sink.flush()
    final = counters()
    final["session_gone"] = source.session_gone
    if messages is not None:
        messages.write(json.dumps({"summary": final}) + "\n")
    if source.session_gone:
        raise SessionGone(f"the ETW session {source.session_name!r} was stopped from outside: "
                          "collection ended (the service is restarted by its recovery "
                          "actions)")
    return final


class SessionGone(RuntimeError):
    """Our ETW session was stopped by someone else: nothing more can arrive."""


@dataclass
class _StopOrGone:
    """What the queue loop waits on: a stop asked for, or a session that is gone."""

    stop: threading.Event
    source: EtwProcessSource

    def is_set(self) -> bool:
        return self.stop.is_set() or self.source.session_gone
