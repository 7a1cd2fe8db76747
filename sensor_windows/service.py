"""The Windows service: the sensor's loop under the Service Control Manager.

The service process is ``python.exe -m sensor_windows.service``. It talks to the SCM through
ctypes (StartServiceCtrlDispatcherW, RegisterServiceCtrlHandlerExW, SetServiceStatus) rather than
pywin32's pythonservice.exe, which fails outside a global Python install unless its DLLs are
copied beside it (pywin32 #1451, #1835). Install, remove, start and stop go through ``sc.exe``,
the tool Windows ships for exactly that; the .msi installs the same service with its own
ServiceInstall table.

What is testable on Linux is pure: the control handler's state machine (:class:`ServiceControl`)
and the ``sc.exe`` command lines. The ctypes glue runs only on Windows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable

SERVICE_NAME = "ttpsensor"
DISPLAY_NAME = "ttpsensor process telemetry"
DESCRIPTION = "Process starts from ETW, enriched like QLOG, with their TTPHash."

SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN = 0x1, 0x4
SERVICE_CONTROL_STOP, SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN = 0x1, 0x4, 0x5
NO_ERROR, ERROR_CALL_NOT_IMPLEMENTED = 0, 120
STOP_WAIT_HINT_MS = 30000   # draining the queue and stopping the ETW session


@dataclass
class ServiceControl:
    """Turns SCM controls into the stop event and status reports.

    ``report(state, accepted, wait_hint_ms)`` sends a SERVICE_STATUS; on Windows it wraps
    SetServiceStatus, in tests it records.
    """

    report: Callable[[int, int, int], None]
    stop: threading.Event = field(default_factory=threading.Event)
    state: int = SERVICE_STOPPED

    def _set(self, state: int, wait_hint_ms: int = 0) -> None:
        self.state = state
        accepted = SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN \
            if state == SERVICE_RUNNING else 0
        self.report(state, accepted, wait_hint_ms)

    def starting(self) -> None:
        self._set(SERVICE_START_PENDING, 10000)

    def running(self) -> None:
        self._set(SERVICE_RUNNING)

    def stopped(self) -> None:
        self._set(SERVICE_STOPPED)

    def handle(self, control: int) -> int:
        """HandlerEx: a Win32 error code, as the SCM expects."""
        if control in (SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN):
            if self.state == SERVICE_RUNNING:
                self._set(SERVICE_STOP_PENDING, STOP_WAIT_HINT_MS)
            self.stop.set()
            return NO_ERROR
        if control == SERVICE_CONTROL_INTERROGATE:
            self.report(self.state, SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN
                        if self.state == SERVICE_RUNNING else 0, 0)
            return NO_ERROR
        return ERROR_CALL_NOT_IMPLEMENTED


def service_command_line(python: str) -> str:
    """The binPath the SCM runs: this Python with the service module."""
    return f'"{python}" -m sensor_windows.service'


def sc_commands(action: str, python: str | None = None) -> list[list[str]]:
    """The ``sc.exe`` calls for install, remove, start and stop."""
    if action == "install":
        return [["sc.exe", "create", SERVICE_NAME,
                 "binPath=", service_command_line(python or sys.executable),
                 "start=", "auto", "DisplayName=", DISPLAY_NAME],
                ["sc.exe", "description", SERVICE_NAME, DESCRIPTION],
                # Restart after a crash: 5 s, 30 s, then every minute.
                ["sc.exe", "failure", SERVICE_NAME, "reset=", "86400",
                 "actions=", "restart/5000/restart/30000/restart/60000"]]
    if action == "remove":
        return [["sc.exe", "stop", SERVICE_NAME], ["sc.exe", "delete", SERVICE_NAME]]
    if action in ("start", "stop"):
        return [["sc.exe", action, SERVICE_NAME]]
    raise ValueError(f"unknown service action {action!r}")


def run_sc(action: str) -> list[str]:
    """Run the calls; returns the error lines (empty when all succeeded)."""
    errors = []
    for argv in sc_commands(action):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        # Stopping a service that is not running (1062) is fine while removing it.
        if done.returncode != 0 and not (action == "remove" and argv[1] == "stop"):
            errors.append(f"{' '.join(argv[:3])}: {(done.stdout + done.stderr).strip()}")
    return errors


def serve() -> None:  # pragma: no cover - needs the Windows SCM
    """Entry point of the service process: dispatch to the SCM and run the loop."""
    import ctypes
    import ctypes.wintypes as wt

    from common.render import line_renderer
    from common.sinks import TextOutput, open_sink
    from sensor_windows.runner import default_state_dir, run_sensor

    advapi = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]

    class SERVICE_STATUS(ctypes.Structure):
        _fields_ = [(name, wt.DWORD) for name in (
            "dwServiceType", "dwCurrentState", "dwControlsAccepted", "dwWin32ExitCode",
            "dwServiceSpecificExitCode", "dwCheckPoint", "dwWaitHint")]

    handler_type = ctypes.WINFUNCTYPE(wt.DWORD, wt.DWORD, wt.DWORD, ctypes.c_void_p,
                                      ctypes.c_void_p)  # type: ignore[attr-defined]
    main_type = ctypes.WINFUNCTYPE(None, wt.DWORD,  # type: ignore[attr-defined]
                                   ctypes.POINTER(wt.LPWSTR))

    class SERVICE_TABLE_ENTRY(ctypes.Structure):
        _fields_ = [("lpServiceName", wt.LPWSTR), ("lpServiceProc", main_type)]

    advapi.RegisterServiceCtrlHandlerExW.restype = ctypes.c_void_p
    status_handle: list[int] = []
    checkpoint = [0]

    def report(state: int, accepted: int, wait_hint: int) -> None:
        checkpoint[0] = 0 if state in (SERVICE_RUNNING, SERVICE_STOPPED) else checkpoint[0] + 1
        status = SERVICE_STATUS(SERVICE_WIN32_OWN_PROCESS, state, accepted, 0, 0,
                                checkpoint[0], wait_hint)
        advapi.SetServiceStatus(ctypes.c_void_p(status_handle[0]), ctypes.byref(status))

    control = ServiceControl(report)
    handler = handler_type(lambda code, _type, _data, _ctx: control.handle(code))

    def service_main(_argc: int, _argv: object) -> None:
        status_handle.append(advapi.RegisterServiceCtrlHandlerExW(SERVICE_NAME, handler, None))
        control.starting()
        state_dir = default_state_dir()
        os.makedirs(state_dir, exist_ok=True)
        sink = TextOutput(open_sink(os.path.join(state_dir, "events.jsonl")),
                          line_renderer("ecs"))
        errors = open_sink(os.path.join(state_dir, "rejected.jsonl"))
        try:
            with open(os.path.join(state_dir, "status.jsonl"), "a", encoding="utf-8") as status:
                control.running()
                run_sensor(control.stop, sink, {"name": socket.gethostname(),
                                                "os": {"type": "windows"}},
                           error_log=errors, messages=status)
        finally:
            sink.close()
            errors.close()
            control.stopped()

    main = main_type(service_main)
    table = (SERVICE_TABLE_ENTRY * 2)(SERVICE_TABLE_ENTRY(SERVICE_NAME, main),
                                      SERVICE_TABLE_ENTRY(None, main_type()))
    if not advapi.StartServiceCtrlDispatcherW(table):
        raise OSError(ctypes.get_last_error(),  # type: ignore[attr-defined]
                      "not started by the Service Control Manager "
                      "(use 'ttpsensor windows run' in a console)")


if __name__ == "__main__":
    serve()
