"""The Windows twin's code paths that need no Windows API, run where Windows would break them:
under a simulated Windows ``os`` (tests/windows_sim.py), with a console code page that cannot
encode what events carry, and the service's life as the SCM sees it."""

from __future__ import annotations

import ctypes
import json
import sys

import pytest

from sensor_windows import service
from tests.windows_sim import run_as_windows

# A Windows event with text no ANSI code page holds whole (German, Japanese, an emoji).
EVENT_SCRIPT = """
import copy
import json
from common import qlog
from tests.conftest import seed_qlog_example
event = qlog.read_event(json.loads(seed_qlog_example()))
event["process"]["executable"] = (
    "C:\\\\Users\\\\J\\u00fcrgen\\\\\\u65e5\\u672c\\\\notepad\\U0001f600.exe")
event["process"]["command_line"] = "notepad \\u00e4\\u00f6\\u00fc \\u65e5\\u672c\\u8a9e"
"""


def test_file_and_spool_outputs_work_without_posix_calls(tmp_path) -> None:
    done = run_as_windows(EVENT_SCRIPT + f"""
from common.sinks import open_outputs
from common.spool import Spool
outputs = open_outputs(["jsonl:{tmp_path}/events.jsonl", "spool:{tmp_path}/spool"], "ecs",
                       max_bytes=6000, generations=2)
for n in range(5):
    one = copy.deepcopy(event)   # the spool holds events until its frame is written
    one["event"]["id"] = f"id-{{n}}"
    outputs.output.write_event(one, outputs.output.prepare(one))
outputs.close()
back = [e for _, events in Spool("{tmp_path}/spool").read() for e in events]
assert [e["event"]["id"] for e in back] == [f"id-{{n}}" for n in range(5)]
assert back[-1]["process"]["executable"] == event["process"]["executable"]
print("ok")
""")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.strip() == b"ok"
    files = sorted(tmp_path.glob("events.jsonl*"))
    assert len(files) >= 2                  # rotated by size
    for path in files:
        data = path.read_bytes()
        assert b"\r" not in data            # LF only, never text mode's CRLF
        for line in data.decode("utf-8").splitlines():
            assert "J\u00fcrgen" in json.loads(line)["process"]["executable"]


@pytest.mark.parametrize("fmt", ["ecs", "qlog"])
def test_stdout_is_utf8_whatever_the_console_code_page(fmt) -> None:
    # A redirected stdout on Windows has the ANSI code page (cp1252 here): it cannot encode
    # these characters, and the sensor used to die on the first such event.
    done = run_as_windows(EVENT_SCRIPT + f"""
from common.sinks import open_outputs
outputs = open_outputs(["-"], {fmt!r})
outputs.output.write_event(event, outputs.output.prepare(event))
outputs.close()
""", env={"PYTHONIOENCODING": "cp1252", "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    line = done.stdout.decode("utf-8")
    assert line.endswith("\n") and "\r" not in line and "\u65e5\u672c\u8a9e" in line


def test_service_outputs_open_under_windows_os(tmp_path) -> None:
    done = run_as_windows(f"""
from sensor_windows.service import open_service_outputs
outputs = open_service_outputs("{tmp_path}/state")
outputs.status.write("status\\n")
outputs.errors.write("rejected")
outputs.close()
print("ok")
""")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert (tmp_path / "state" / "status.jsonl").read_bytes() == b"status\n"
    assert (tmp_path / "state" / "rejected.jsonl").read_bytes() == b"rejected\n"
    assert (tmp_path / "state" / "events.jsonl").exists()


class Recorded:
    def __init__(self) -> None:
        self.reports: list[tuple[int, int, int, int]] = []
        self.log: list[str] = []
        self.closed = 0

    def control(self) -> service.ServiceControl:
        return service.ServiceControl(lambda *status: self.reports.append(status))

    def outputs(self) -> service.ServiceOutputs:
        recorded = self

        class Closing:
            def close(self) -> None:
                recorded.closed += 1
        return service.ServiceOutputs(Closing(), Closing(), Closing())  # type: ignore[arg-type]


def test_a_service_that_cannot_open_its_outputs_reports_a_failure_not_a_clean_stop() -> None:
    seen = Recorded()

    def cannot_open() -> service.ServiceOutputs:
        raise AttributeError("module 'os' has no attribute 'O_CLOEXEC'")  # what used to happen
    code = service.service_body(seen.control(), cannot_open, lambda o: None, seen.log.append)
    assert code == service.EXIT_OUTPUTS
    assert [r[0] for r in seen.reports] == [service.SERVICE_START_PENDING,
                                            service.SERVICE_STOPPED]
    assert seen.reports[-1][3] == service.EXIT_OUTPUTS
    assert service.win32_exit_codes(seen.reports[-1][3]) == (
        service.ERROR_SERVICE_SPECIFIC_ERROR, service.EXIT_OUTPUTS)
    assert "O_CLOEXEC" in seen.log[0]


def test_a_failing_sensor_loop_is_reported_and_its_outputs_closed() -> None:
    seen = Recorded()

    def fails(_outputs: service.ServiceOutputs) -> None:
        raise OSError(5, "StartTrace: access denied")
    code = service.service_body(seen.control(), seen.outputs, fails, seen.log.append)
    assert code == service.EXIT_RUN and seen.closed == 3
    assert [r[0] for r in seen.reports] == [service.SERVICE_START_PENDING,
                                            service.SERVICE_RUNNING, service.SERVICE_STOPPED]
    assert seen.reports[-1][3] == service.EXIT_RUN and "access denied" in seen.log[0]


def test_a_clean_stop_is_reported_as_one() -> None:
    seen = Recorded()
    control = seen.control()
    code = service.service_body(control, seen.outputs,
                                lambda _o: control.handle(service.SERVICE_CONTROL_STOP),
                                seen.log.append)
    assert code == 0 and seen.log == [] and seen.closed == 3
    assert seen.reports[-1] == (service.SERVICE_STOPPED, 0, 0, 0)
    assert service.win32_exit_codes(0) == (service.NO_ERROR, 0)


def test_installed_from_a_venv_the_scm_starts_the_base_interpreter() -> None:
    base, site = r"C:\Program Files\Python312\python.exe", r"C:\ttp\venv\Lib\site-packages"
    [create, _description, _failure, flag, acl] = service.sc_commands(
        "install", base, site, state_dir=r"C:\ProgramData\ttpsensor")
    # The data folder: SYSTEM and Administrators only, by SID, nothing inherited.
    assert acl == ["icacls", r"C:\ProgramData\ttpsensor", "/inheritance:r", "/grant:r",
                   "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"]
    bin_path = create[create.index("binPath=") + 1]
    assert bin_path.startswith(f'"{base}" -c "') and bin_path.endswith('"')
    code = bin_path[len(f'"{base}" -c "'):-1]
    assert '"' not in code
    compile(code, "binPath", "exec")
    assert f"site.addsitedir({site!r})" in code and "sensor_windows.service" in code
    assert flag == ["sc.exe", "failureflag", "ttpsensor", "1"]
    # This test's own interpreter runs in a venv (.venv): the launcher is not what is chosen.
    python, site_dir = service.service_interpreter()
    if sys.prefix != sys.base_prefix:
        assert site_dir is not None and site_dir.startswith(sys.prefix)
        assert python == getattr(sys, "_base_executable", sys.executable)
    else:
        assert (python, site_dir) == (sys.executable, None)


# --- the live inspector's process-state calls against a stand-in kernel32 -------------------

TICK = 156_250                       # a clock tick of about 15.6 ms, in 100 ns units
CREATED = 132853256180000000 + 5 * TICK   # tick-granular, as Windows keeps creation times


class StandInKernel32:
    """OpenProcess, GetProcessTimes, GetExitCodeProcess and CloseHandle as Windows answers
    them: a process that exited stays openable while a handle to it is held (its exit time
    is then set and its exit code is no longer STILL_ACTIVE), and creation times move in
    clock ticks. ``processes``: pid -> (creation FILETIME, exit FILETIME or 0, exit code)."""

    def __init__(self, processes: dict[int, tuple[int, int, int]]) -> None:
        self.processes = processes
        self.open_handles = 0

    def OpenProcess(self, _access: int, _inherit: bool, pid: int) -> int:
        if pid not in self.processes:
            return 0
        self.open_handles += 1
        return 10_000 + pid

    def CloseHandle(self, _handle: int) -> int:
        self.open_handles -= 1
        return 1

    def GetProcessTimes(self, handle: int, created, exited, _kernel, _user) -> int:
        create, exit_, _ = self.processes[handle - 10_000]
        for ref, value in ((created, create), (exited, exit_)):
            ref._obj.dwLowDateTime, ref._obj.dwHighDateTime = value & 0xFFFFFFFF, value >> 32
        return 1

    def K32EnumProcessModulesEx(self, handle: int, _modules, _size: int, needed,
                                _filter: int) -> int:
        if self.processes[handle - 10_000][1]:
            return 0      # exited: no modules to enumerate
        needed._obj.value = 53 * ctypes.sizeof(ctypes.c_void_p)   # 53 HMODULEs
        return 1

    def GetExitCodeProcess(self, handle: int, code) -> int:
        code._obj.value = self.processes[handle - 10_000][2]
        return 1


def _inspector(processes: dict[int, tuple[int, int, int]]):
    from sensor_windows import win32
    inspector = object.__new__(win32.Win32Inspector)   # no WinDLL on Linux
    inspector.k32 = StandInKernel32(processes)
    inspector._accounts = {}
    return inspector


def test_running_is_false_for_an_exited_process_whose_handle_is_still_held() -> None:
    from sensor_windows.enrich import StartTime
    from sensor_windows.normalize import filetime
    from sensor_windows.win32 import STILL_ACTIVE
    started = StartTime(created=filetime(CREATED))
    logged = StartTime(logged=filetime(CREATED + 42_000))       # the header, 4.2 ms later
    inspector = _inspector({
        10: (CREATED, 0, STILL_ACTIVE),                         # alive
        11: (CREATED, CREATED + 5 * TICK, 0),                   # exited, a handle still open
        12: (CREATED, CREATED + 5 * TICK, STILL_ACTIVE),        # exited with code 259
        13: (CREATED + 400 * TICK, 0, STILL_ACTIVE),            # pid reused 6 s later
    })
    assert inspector.running(10, started) and inspector.running(10, logged)
    assert not inspector.running(11, started)
    assert not inspector.running(12, started)
    assert not inspector.running(13, started) and not inspector.running(13, logged)
    assert not inspector.running(14, started)                  # vanished: false, not unknown
    assert inspector.k32.open_handles == 0


def test_the_creation_time_rule_between_an_event_and_the_live_process() -> None:
    import datetime as dt

    from sensor_windows.enrich import StartTime, same_process
    from sensor_windows.normalize import filetime
    created = filetime(CREATED)
    assert same_process(created, StartTime(created=created))
    assert not same_process(created, StartTime(created=created + dt.timedelta(milliseconds=16)))
    # Known only by when its event was written: created shortly before that, never after.
    for late_ms, same in ((0, True), (4.2, True), (16, True), (900, True), (1500, False),
                          (-16, False)):
        logged = created + dt.timedelta(milliseconds=late_ms)
        assert same_process(created, StartTime(logged=logged)) is same, late_ms
    assert same_process(None, StartTime(created=created))     # unreadable: taken as it is
    assert same_process(created, None)


def test_account_names_are_looked_up_once_per_sid(monkeypatch) -> None:
    inspector = _inspector({})
    looked_up: list[str] = []

    def lookup(sid: str) -> str:
        looked_up.append(sid)
        return f"TESTPC\\user-{sid[-4:]}"
    monkeypatch.setattr(inspector, "_lookup_account", lookup)
    for _ in range(3):
        assert inspector._account("S-1-5-21-1-2-3-1001") == "TESTPC\\user-1001"
        assert inspector._account("S-1-5-18") == "TESTPC\\user-5-18"
    assert looked_up == ["S-1-5-21-1-2-3-1001", "S-1-5-18"]


def test_a_32_bit_python_reads_no_working_directory_through_x64_offsets(monkeypatch) -> None:
    from sensor_windows import win32
    inspector = _inspector({10: (CREATED, 0, 259)})
    monkeypatch.setattr(win32, "POINTER_BYTES", 4)
    assert inspector._working_directory(10) is None
    assert inspector.k32.open_handles == 0


def test_pe_facts_are_computed_once_per_image_until_it_changes(tmp_path) -> None:
    import os
    import shutil

    from sensor_windows.enrich import PECache
    from sensor_windows.replay import ReplayWorld
    from tests.test_pe import LAUNCHERS
    shutil.copy(next(p for p in LAUNCHERS if p.endswith("t64.exe")), tmp_path / "tool.exe")
    world = ReplayWorld(str(tmp_path))
    world.files = {"C:\\TOOLS\\TOOL.EXE": "tool.exe", "C:\\TOOLS\\GONE.EXE": "gone.exe"}
    reads: list[str] = []
    real_read = world.read

    def counting_read(path: str) -> bytes | None:
        reads.append(path)
        return real_read(path)
    world.read = counting_read          # type: ignore[method-assign]
    cache = PECache(world)
    first = cache.facts("C:\\Tools\\tool.exe")
    assert first[0] is True and first[1] is not None
    assert cache.facts("c:\\tools\\TOOL.exe") == first            # another case, same file
    assert len(reads) == 1
    # The file is replaced (another size and time): read again.
    data = (tmp_path / "tool.exe").read_bytes()
    (tmp_path / "tool.exe").write_bytes(data + b"\0" * 512)
    os.utime(tmp_path / "tool.exe", ns=(1, 1))
    changed = cache.facts("C:\\Tools\\tool.exe")
    assert len(reads) == 2 and changed[1].sha256 != first[1].sha256
    assert cache.facts("C:\\Tools\\gone.exe") == (False, None)      # not on disk


def test_module_count_as_qlog_reports_it() -> None:
    from sensor_windows.win32 import STILL_ACTIVE
    inspector = _inspector({10: (CREATED, 0, STILL_ACTIVE), 11: (CREATED, CREATED + TICK, 0)})
    assert inspector._module_count(10) == 53
    assert inspector._module_count(11) is None and inspector._module_count(12) is None
    assert inspector.k32.open_handles == 0
