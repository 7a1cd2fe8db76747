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
import sysconfig
import threading
from dataclasses import dataclass, field
from typing import Callable, TextIO

from common.render import line_renderer
from common.sinks import Output, Sink, TextOutput, open_sink

SERVICE_NAME = "ttpsensor"
DISPLAY_NAME = "ttpsensor process telemetry"
DESCRIPTION = "Process starts from ETW, enriched like QLOG, with their TTPHash."

SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN = 0x1, 0x4
SERVICE_CONTROL_STOP, SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN = 0x1, 0x4, 0x5
NO_ERROR, ERROR_CALL_NOT_IMPLEMENTED = 0, 120
# dwWin32ExitCode of a service that failed for a reason of its own; the reason is then in
# dwServiceSpecificExitCode. A failure reported so is not a clean stop: the SCM logs it (event
# 7024) and, with the failure flag set (sc failureflag), applies the recovery actions.
ERROR_SERVICE_SPECIFIC_ERROR = 1066
EXIT_OUTPUTS = 2      # the outputs (events, rejects, status) could not be opened
EXIT_RUN = 3          # the sensor's loop failed (the ETW session could not start, ...)
STOP_WAIT_HINT_MS = 30000   # draining the queue and stopping the ETW session


@dataclass
class ServiceControl:
    """Turns SCM controls into the stop event and status reports.

    ``report(state, accepted, wait_hint_ms)`` sends a SERVICE_STATUS; on Windows it wraps
    SetServiceStatus, in tests it records.
    """

    report: Callable[[int, int, int, int], None]
    stop: threading.Event = field(default_factory=threading.Event)
    state: int = SERVICE_STOPPED

    def _set(self, state: int, wait_hint_ms: int = 0, specific_exit: int = 0) -> None:
        self.state = state
        accepted = SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN \
            if state == SERVICE_RUNNING else 0
        self.report(state, accepted, wait_hint_ms, specific_exit)

    def starting(self) -> None:
        self._set(SERVICE_START_PENDING, 10000)

    def running(self) -> None:
        self._set(SERVICE_RUNNING)

    def stopped(self, specific_exit: int = 0) -> None:
        """Stopped; a nonzero ``specific_exit`` says it failed (EXIT_*)."""
        self._set(SERVICE_STOPPED, specific_exit=specific_exit)

    def handle(self, control: int) -> int:
        """HandlerEx: a Win32 error code, as the SCM expects."""
        if control in (SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN):
            if self.state == SERVICE_RUNNING:
                self._set(SERVICE_STOP_PENDING, STOP_WAIT_HINT_MS)
            self.stop.set()
            return NO_ERROR
        if control == SERVICE_CONTROL_INTERROGATE:
            self.report(self.state, SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN
                        if self.state == SERVICE_RUNNING else 0, 0, 0)
            return NO_ERROR
        return ERROR_CALL_NOT_IMPLEMENTED


def win32_exit_codes(specific_exit: int) -> tuple[int, int]:
    """``(dwWin32ExitCode, dwServiceSpecificExitCode)`` for a SERVICE_STATUS."""
    return (ERROR_SERVICE_SPECIFIC_ERROR, specific_exit) if specific_exit else (NO_ERROR, 0)


@dataclass
class ServiceOutputs:
    """What the service writes: events, rejected input, and status lines."""

    events: Output
    errors: Sink
    status: TextIO

    def close(self) -> None:
        for item in (self.events, self.errors, self.status):
            try:
                item.close()
            except OSError:
                pass  # closing the others matters more


def open_service_outputs(state_dir: str) -> ServiceOutputs:
    """The service's files in ``state_dir`` (created): events.jsonl (ECS), rejected.jsonl and
    status.jsonl, UTF-8 with LF line ends."""
    os.makedirs(state_dir, exist_ok=True)
    events = TextOutput(open_sink(os.path.join(state_dir, "events.jsonl")),
                        line_renderer("ecs"))
    try:
        errors = open_sink(os.path.join(state_dir, "rejected.jsonl"))
        try:
            status = open(os.path.join(state_dir, "status.jsonl"), "a", encoding="utf-8",
                          newline="\n")
        except BaseException:
            errors.close()
            raise
    except BaseException:
        events.close()
        raise
    return ServiceOutputs(events, errors, status)


def service_body(control: ServiceControl, open_outputs: Callable[[], ServiceOutputs],
                 run: Callable[[ServiceOutputs], object],
                 log: Callable[[str], None]) -> int:
    """What the service does between the SCM's call and its return: report START_PENDING,
    open the outputs, report RUNNING, run until stopped, and always end in SERVICE_STOPPED;
    a failure (of any kind) is logged and reported as a service-specific exit code, never as
    a clean stop. Returns that code (0: stopped as asked)."""
    control.starting()
    code = NO_ERROR
    try:
        try:
            outputs = open_outputs()
        except Exception as exc:  # noqa: BLE001 - every failure must reach the SCM
            log(f"cannot open the outputs: {type(exc).__name__}: {exc}")
            code = EXIT_OUTPUTS
            return code
        try:
            control.running()
            run(outputs)
        except Exception as exc:  # noqa: BLE001
            log(f"the sensor failed: {type(exc).__name__}: {exc}")
            code = EXIT_RUN
        finally:
            outputs.close()
        return code
    finally:
        control.stopped(code)


def service_interpreter() -> tuple[str, str | None]:
    """The python.exe the SCM must start, and the site-packages it must add (None: its own).
    In a virtual environment ``sys.executable`` is a launcher that runs the base interpreter
    as its child: the SCM would wait for a dispatcher in a process it did not start (errors
    1053 and 1063). So the base interpreter, told where the environment's packages are."""
    if sys.prefix != sys.base_prefix:
        return (getattr(sys, "_base_executable", None) or sys.executable,
                sysconfig.get_path("purelib"))
    return sys.executable, None


def service_command_line(python: str, site_dir: str | None = None) -> str:
    """The binPath the SCM runs: ``python`` with the service module, found in ``site_dir``
    when given (a path is written as a Python literal: Windows paths hold no double quote,
    and inside a quoted argument a backslash not before a quote is itself)."""
    if site_dir is None:
        return f'"{python}" -m sensor_windows.service'
    code = (f"import site; site.addsitedir({site_dir!r}); import runpy; "
            "runpy.run_module('sensor_windows.service', run_name='__main__')")
    return f'"{python}" -c "{code}"'


# The data folder holds command lines and user names: SYSTEM and Administrators only, where
# it would inherit ProgramData's ACL (every local user may read). Well-known SIDs, not names:
# names are localized.
DATA_ACL = ["/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"]


def sc_commands(action: str, python: str | None = None, site_dir: str | None = None,
                state_dir: str | None = None) -> list[list[str]]:
    """The ``sc.exe`` (and, at install, ``icacls``) calls for install, remove, start and
    stop; ``python`` and ``site_dir`` default to :func:`service_interpreter`'s, ``state_dir``
    to the service's data folder."""
    if action == "install":
        if python is None:
            python, site_dir = service_interpreter()
        if state_dir is None:
            from sensor_windows.runner import default_state_dir
            state_dir = default_state_dir()
        return [["sc.exe", "create", SERVICE_NAME,
                 "binPath=", service_command_line(python, site_dir),
                 "start=", "auto", "DisplayName=", DISPLAY_NAME],
                ["sc.exe", "description", SERVICE_NAME, DESCRIPTION],
                # Restart after a crash: 5 s, 30 s, then every minute.
                ["sc.exe", "failure", SERVICE_NAME, "reset=", "86400",
                 "actions=", "restart/5000/restart/30000/restart/60000"],
                # ...and after a failure the service reports itself (a service-specific exit
                # code with SERVICE_STOPPED), not only after a crash.
                ["sc.exe", "failureflag", SERVICE_NAME, "1"],
                ["icacls", state_dir, *DATA_ACL]]
    if action == "remove":
        return [["sc.exe", "stop", SERVICE_NAME], ["sc.exe", "delete", SERVICE_NAME]]
    if action in ("start", "stop"):
        return [["sc.exe", action, SERVICE_NAME]]
    raise ValueError(f"unknown service action {action!r}")


def run_sc(action: str) -> list[str]:
    """Run the calls; returns the error lines (empty when all succeeded)."""
    errors = []
    for argv in sc_commands(action):
        if argv[0] == "icacls":
            os.makedirs(argv[1], exist_ok=True)  # the folder exists before the service runs
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        # Stopping a service that is not running (1062) is fine while removing it.
        if done.returncode != 0 and not (action == "remove" and argv[1] == "stop"):
            errors.append(f"{' '.join(argv[:3])}: {(done.stdout + done.stderr).strip()}")
    return errors


def serve() -> None:  # pragma: no cover - needs the Windows SCM
    """Entry point of the service process: dispatch to the SCM and run the loop."""
    import ctypes
    import ctypes.wintypes as wt
    import time

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

    def report(state: int, accepted: int, wait_hint: int, specific_exit: int) -> None:
        checkpoint[0] = 0 if state in (SERVICE_RUNNING, SERVICE_STOPPED) else checkpoint[0] + 1
        win32_exit, service_exit = win32_exit_codes(specific_exit)
        status = SERVICE_STATUS(SERVICE_WIN32_OWN_PROCESS, state, accepted, win32_exit,
                                service_exit, checkpoint[0], wait_hint)
        advapi.SetServiceStatus(ctypes.c_void_p(status_handle[0]), ctypes.byref(status))

    control = ServiceControl(report)
    handler = handler_type(lambda code, _type, _data, _ctx: control.handle(code))
    state_dir = default_state_dir()

    def log(message: str) -> None:
        # No console: failures go to a log beside the outputs (and the SCM gets the code).
        try:
            os.makedirs(state_dir, exist_ok=True)
            with open(os.path.join(state_dir, "service.log"), "a", encoding="utf-8",
                      newline="\n") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {message}\n")
        except OSError:
            pass

    def run(outputs: ServiceOutputs) -> None:
        run_sensor(control.stop, outputs.events, {"name": socket.gethostname(),
                                                  "os": {"type": "windows"}},
                   error_log=outputs.errors, messages=outputs.status)

    def service_main(_argc: int, _argv: object) -> None:
        status_handle.append(advapi.RegisterServiceCtrlHandlerExW(SERVICE_NAME, handler, None))
        service_body(control, lambda: open_service_outputs(state_dir), run, log)

    main = main_type(service_main)
    table = (SERVICE_TABLE_ENTRY * 2)(SERVICE_TABLE_ENTRY(SERVICE_NAME, main),
                                      SERVICE_TABLE_ENTRY(None, main_type()))
    if not advapi.StartServiceCtrlDispatcherW(table):
        raise OSError(ctypes.get_last_error(),  # type: ignore[attr-defined]
                      "not started by the Service Control Manager "
                      "(use 'ttpsensor windows run' in a console)")


if __name__ == "__main__":
    serve()
