"""The ETW session: Microsoft-Windows-Kernel-Process ProcessStart events into a queue.

pywintrace (module ``etw``) is imported only when a session starts, and only on Windows: on
Linux it installs but fails at import (it needs ``ctypes.oledll``). Tests pass a stand-in
module with the same surface (``ETW``, ``ProviderInfo``, ``GUID``, ``etw.TraceProperties``,
``evntrace.ControlTraceW``).

The callback runs on pywintrace's ProcessTrace thread; a slow callback makes ETW drop buffers
(pywintrace #33), so it only enqueues. A full queue drops the event and counts it rather than
blocking the trace. The session has a fixed name: a sensor killed without ``stop()`` leaves its
trace running (and a random name would leak one per crash, pywintrace #45), so a stale session
of that name is stopped before ours starts.
"""

from __future__ import annotations

import queue
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

SESSION_NAME = "ttpsensor-process"
# `windows run` in a console has a session of its own: with the service's name, starting it
# would stop the running service's session as a stale one.
CONSOLE_SESSION_NAME = "ttpsensor-process-console"
PROVIDER_NAME = "Microsoft-Windows-Kernel-Process"
PROVIDER_GUID = "{22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}"
KEYWORD_PROCESS = 0x10          # WINEVENT_KEYWORD_PROCESS
PROCESS_START = 1
TRACE_LEVEL_INFORMATION = 4
RING_BUFFER_KB = 64             # pywintrace's 1 MB default costs 2 MB x CPUs of non-paged pool
# Real-time buffers are delivered when full or when the flush timer fires (by default about
# once a second): a short-lived process would be gone, with its command line, before its start
# event reached us. FlushTimer counts milliseconds with EVENT_TRACE_USE_MS_FLUSH_TIMER
# (Windows 8 and later).
FLUSH_MS = 50
EVENT_TRACE_USE_MS_FLUSH_TIMER = 0x00000010
QUEUE_EVENTS = 65536
ERROR_SUCCESS = 0
ERROR_WMI_INSTANCE_NOT_FOUND = 4201
EVENT_TRACE_CONTROL_QUERY = 0

EtwItem = tuple[int, dict[str, Any]]


def import_pywintrace() -> ModuleType:
    """pywintrace's ``etw`` module, with a clear error where it cannot work."""
    if sys.platform != "win32":
        raise RuntimeError("the ETW session needs Windows (pywintrace cannot be imported here)")
    import etw  # noqa: PLC0415 - Windows only, and only when a session starts
    return etw


@dataclass
class EtwCounters:
    received: int = 0           # ProcessStart events the callback saw
    queued: int = 0
    dropped_queue_full: int = 0  # our worker fell behind: counted, never silent
    other_events: int = 0       # anything but event 1 (the provider also sends stops, ...)
    lost_by_etw: int = 0        # EventsLost of the session: buffers ETW could not deliver


class EtwProcessSource:
    """One ETW real-time session; ``events`` is the queue its callback fills."""

    def __init__(self, etw_module: ModuleType | None = None, *,
                 session_name: str = SESSION_NAME, queue_events: int = QUEUE_EVENTS,
                 ring_buffer_kb: int = RING_BUFFER_KB, flush_ms: int = FLUSH_MS) -> None:
        self._etw_module = etw_module
        self.session_name = session_name
        self.ring_buffer_kb = ring_buffer_kb
        self.flush_ms = flush_ms
        self.events: queue.Queue[EtwItem] = queue.Queue(maxsize=queue_events)
        self.counters = EtwCounters()
        self.stale_session_stopped = False
        self.session_gone = False      # the session was stopped by someone else
        self._session: Any = None
        self._stopping = False

    def _on_event(self, item: EtwItem) -> None:
        # The ProcessTrace thread: no parsing, no I/O, no locks beyond the queue's.
        try:
            event_id = int(item[0])
        except (TypeError, ValueError, IndexError):
            event_id = -1
        if event_id != PROCESS_START:
            self.counters.other_events += 1
            return
        self.counters.received += 1
        try:
            self.events.put_nowait(item)
            self.counters.queued += 1
        except queue.Full:
            self.counters.dropped_queue_full += 1

    def start(self) -> None:
        etw = self._etw_module or import_pywintrace()
        provider = etw.ProviderInfo(PROVIDER_NAME, etw.GUID(PROVIDER_GUID),
                                    level=TRACE_LEVEL_INFORMATION, any_keywords=KEYWORD_PROCESS)
        properties = etw.etw.TraceProperties(ring_buf_size=self.ring_buffer_kb)
        settings = properties.get().contents
        settings.LogFileMode |= EVENT_TRACE_USE_MS_FLUSH_TIMER
        settings.FlushTimer = self.flush_ms
        session = etw.ETW(session_name=self.session_name, properties=properties,
                          providers=[provider], event_callback=self._on_event,
                          event_id_filters=[PROCESS_START],
                          # With the error ignored, pywintrace never enables the provider on
                          # an existing session and stop() does nothing: we want to know.
                          ignore_exists_error=False)
        self.stale_session_stopped = self._stop_stale(etw, session)
        session.start()
        self._session = session

    def _stop_stale(self, etw: ModuleType, session: Any) -> bool:
        """Stop a session of our name left by a sensor that died; True if there was one.

        pywintrace's ``control_stop`` drops ControlTraceW's status, so it is called directly:
        0 means a stale session was stopped, ERROR_WMI_INSTANCE_NOT_FOUND that there was none.
        """
        trace = etw.evntrace
        status = trace.ControlTraceW(trace.TRACEHANDLE(0), self.session_name,
                                     etw.etw.TraceProperties().get(),
                                     trace.EVENT_TRACE_CONTROL_STOP)
        if status not in (ERROR_SUCCESS, ERROR_WMI_INSTANCE_NOT_FOUND):
            raise OSError(status, f"cannot stop the stale ETW session {self.session_name!r}")
        return status == ERROR_SUCCESS

    def refresh_lost(self) -> int:
        """Read the session's EventsLost (ETW's own drops) into the counters, and notice a
        session that is gone (stopped from outside: ``logman stop``, another tool taking our
        name). pywintrace's ``query()`` drops ControlTraceW's status and answers zeros for a
        session that no longer exists, so ControlTraceW is called directly."""
        if self._session is None:
            return self.counters.lost_by_etw
        etw = self._etw_module or import_pywintrace()
        trace = etw.evntrace
        properties = etw.etw.TraceProperties()
        try:
            status = trace.ControlTraceW(trace.TRACEHANDLE(0), self.session_name,
                                         properties.get(), EVENT_TRACE_CONTROL_QUERY)
        except Exception:  # noqa: BLE001 - a query failure must not stop the sensor
            return self.counters.lost_by_etw
        if status == ERROR_WMI_INSTANCE_NOT_FOUND:
            # Unless we are stopping it ourselves (the status thread may ask meanwhile).
            self.session_gone = not self._stopping
        elif status == ERROR_SUCCESS:
            self.counters.lost_by_etw = int(properties.get().contents.EventsLost)
        return self.counters.lost_by_etw

    def stop(self) -> None:
        """Stop the session; pywintrace 0.2.0's consumer thread is not a daemon, so always."""
        if self._session is not None:
            self.refresh_lost()
            self._stopping = True
            session, self._session = self._session, None
            session.stop()
