"""What a live Windows process says about itself, through Win32 calls made with ctypes.

The :class:`Win32Inspector` implements :class:`sensor_windows.enrich.ProcessInspector`; tests and
``windows replay`` use the replay world instead, so nothing here runs on Linux beyond import and
the pure helpers. No pywin32: ctypes keeps the MSI free of pywin32's DLL placement problems.
The calls follow psutil's ``arch/windows/proc_info.c`` (command line through
ProcessCommandLineInformation, Windows 8.1+), the token APIs, and a read of the 64-bit PEB for
the working directory (which needs PROCESS_VM_READ, so it is missing for processes we may only
query). The module count (QLOG's Modulecount) is what is loaded when the start is enriched,
a few milliseconds in: it grows while the process loads its DLLs, and is not in the TTPHash.

Every call can fail for a process that already exited or that we may not open (protected
processes): the answer then has None there, and ``running`` says whether it could be opened.
"""

from __future__ import annotations

import ctypes
import ctypes.wintypes as wt
import datetime as _dt
import os
import string
from typing import Any

from sensor_windows.enrich import ProcessInfo, StartTime, same_process
from sensor_windows.normalize import INTEGRITY_BY_RID, filetime

PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
STILL_ACTIVE = 259
LIST_MODULES_ALL = 0x03
POINTER_BYTES = ctypes.sizeof(ctypes.c_void_p)
ACCOUNTS_REMEMBERED = 1024
TOKEN_QUERY = 0x0008
TOKEN_USER_CLASS = 1
TOKEN_INTEGRITY_LEVEL_CLASS = 25
PROCESS_QUERY_INFORMATION = 0x0400
PROCESS_VM_READ = 0x0010
PROCESS_BASIC_INFORMATION_CLASS = 0
PROCESS_COMMAND_LINE_INFORMATION = 60
PEB_PROCESS_PARAMETERS = 0x20            # x64 PEB.ProcessParameters
PARAMETERS_CURRENT_DIRECTORY = 0x38      # x64 RTL_USER_PROCESS_PARAMETERS.CurrentDirectory.DosPath
STATUS_INFO_LENGTH_MISMATCH = 0xC0000004
STATUS_BUFFER_OVERFLOW = 0x80000005
STATUS_BUFFER_TOO_SMALL = 0xC0000023
MAX_PATH_CHARS = 32768


class UNICODE_STRING(ctypes.Structure):
    _fields_ = [("Length", wt.USHORT), ("MaximumLength", wt.USHORT),
                ("Buffer", ctypes.c_void_p)]


class PROCESS_BASIC_INFORMATION(ctypes.Structure):
    _fields_ = [("ExitStatus", ctypes.c_void_p), ("PebBaseAddress", ctypes.c_void_p),
                ("AffinityMask", ctypes.c_void_p), ("BasePriority", ctypes.c_void_p),
                ("UniqueProcessId", ctypes.c_void_p),
                ("InheritedFromUniqueProcessId", ctypes.c_void_p)]


def integrity_word(rid: int) -> str:
    """The mandatory label's RID as QLOG's ProcessIntegrityLevel word."""
    return INTEGRITY_BY_RID.get(rid, f"RID 0x{rid:X}")


def filetime_parts(low: int, high: int) -> _dt.datetime | None:
    """A FILETIME structure's two halves as UTC."""
    return filetime((high << 32) | low)


def _created(times: list[Any] | None) -> _dt.datetime | None:
    """The creation time of GetProcessTimes' answer (None: it gave none)."""
    return filetime_parts(times[0].dwLowDateTime, times[0].dwHighDateTime) if times else None


class Win32Inspector:
    """ProcessInspector over kernel32, advapi32 and ntdll (Windows only)."""

    def __init__(self) -> None:
        self.k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        self.adv = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]
        self.ntdll = ctypes.WinDLL("ntdll")  # type: ignore[attr-defined]
        self._accounts: dict[str, str | None] = {}
        self.k32.OpenProcess.restype = wt.HANDLE
        self.k32.OpenProcess.argtypes = [wt.DWORD, wt.BOOL, wt.DWORD]
        self.k32.CloseHandle.argtypes = [wt.HANDLE]
        self.k32.LocalFree.argtypes = [ctypes.c_void_p]
        self.ntdll.NtQueryInformationProcess.restype = ctypes.c_ulong
        self.ntdll.NtQueryInformationProcess.argtypes = [
            wt.HANDLE, ctypes.c_int, ctypes.c_void_p, wt.ULONG, ctypes.POINTER(wt.ULONG)]

    def describe(self, pid: int, when: StartTime | None) -> ProcessInfo | None:
        handle = self.k32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return None  # gone, or not ours to open: the event's own facts stand
        try:
            times = self._times(handle)
            created = _created(times)
            if not same_process(created, when):
                return None  # the pid now belongs to another process
            sid, integrity = self._token(handle)
            return ProcessInfo(image=self._image(handle), command_line=self._command_line(handle),
                               user_sid=sid, user_name=self._account(sid) if sid else None,
                               integrity_level=integrity,
                               working_directory=self._working_directory(pid),
                               module_count=self._module_count(pid),
                               running=self._still_active(handle, times),
                               create_time=created)
        finally:
            self.k32.CloseHandle(handle)

    def running(self, pid: int, when: StartTime | None) -> bool:
        """Opened, the same process, and not exited: a process that exited stays openable
        while anyone holds a handle to it (its exit code is then no longer STILL_ACTIVE)."""
        handle = self.k32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return False
        try:
            times = self._times(handle)
            return same_process(_created(times), when) and self._still_active(handle, times)
        finally:
            self.k32.CloseHandle(handle)

    def _still_active(self, handle: Any, times: list[Any] | None) -> bool:
        code = wt.DWORD()
        if not self.k32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return False
        # A process that exited with 259 itself looks alive here; GetProcessTimes' exit time
        # tells them apart, as psutil does.
        return code.value == STILL_ACTIVE and not (
            times and filetime_parts(times[1].dwLowDateTime, times[1].dwHighDateTime))

    def _module_count(self, pid: int) -> int | None:
        handle = self.k32.OpenProcess(PROCESS_QUERY_INFORMATION | PROCESS_VM_READ, False, pid)
        if not handle:
            return None
        try:
            needed = wt.DWORD()
            if not self.k32.K32EnumProcessModulesEx(handle, None, 0, ctypes.byref(needed),
                                                    LIST_MODULES_ALL):
                return None
            return needed.value // ctypes.sizeof(ctypes.c_void_p)  # bytes of HMODULEs
        finally:
            self.k32.CloseHandle(handle)

    def _working_directory(self, pid: int) -> str | None:
        if POINTER_BYTES != 8:
            return None  # the PEB offsets are x64's: a 32-bit Python would read garbage
        handle = self.k32.OpenProcess(PROCESS_QUERY_INFORMATION | PROCESS_VM_READ, False, pid)
        if not handle:
            return None
        try:
            basic = PROCESS_BASIC_INFORMATION()
            if self.ntdll.NtQueryInformationProcess(handle, PROCESS_BASIC_INFORMATION_CLASS,
                                                    ctypes.byref(basic), ctypes.sizeof(basic),
                                                    None) != 0 or not basic.PebBaseAddress:
                return None
            parameters = ctypes.c_void_p()
            if not self._read(handle, basic.PebBaseAddress + PEB_PROCESS_PARAMETERS,
                              parameters) or not parameters.value:
                return None
            text = UNICODE_STRING()
            if not self._read(handle, parameters.value + PARAMETERS_CURRENT_DIRECTORY, text):
                return None
            chars = ctypes.create_unicode_buffer(text.Length // 2 + 1)
            if not self.k32.ReadProcessMemory(handle, ctypes.c_void_p(text.Buffer), chars,
                                              text.Length, None):
                return None
            return chars.value
        finally:
            self.k32.CloseHandle(handle)

    def _read(self, handle: Any, address: int, into: Any) -> bool:
        return bool(self.k32.ReadProcessMemory(handle, ctypes.c_void_p(address),
                                               ctypes.byref(into), ctypes.sizeof(into), None))

    def _times(self, handle: Any) -> list[Any] | None:
        """GetProcessTimes: creation, exit (zero while running), kernel and user time."""
        times = [wt.FILETIME() for _ in range(4)]
        if not self.k32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return None
        return times

    def _image(self, handle: Any) -> str | None:
        size = wt.DWORD(MAX_PATH_CHARS)
        buffer = ctypes.create_unicode_buffer(MAX_PATH_CHARS)
        if not self.k32.QueryFullProcessImageNameW(handle, 0, buffer, ctypes.byref(size)):
            return None
        return buffer.value

    def _command_line(self, handle: Any) -> str | None:
        needed = wt.ULONG(0)
        status = self.ntdll.NtQueryInformationProcess(handle, PROCESS_COMMAND_LINE_INFORMATION,
                                                      None, 0, ctypes.byref(needed))
        if status not in (STATUS_INFO_LENGTH_MISMATCH, STATUS_BUFFER_OVERFLOW,
                          STATUS_BUFFER_TOO_SMALL) or not needed.value:
            return None
        buffer = ctypes.create_string_buffer(needed.value)
        if self.ntdll.NtQueryInformationProcess(handle, PROCESS_COMMAND_LINE_INFORMATION,
                                                buffer, needed, ctypes.byref(needed)) != 0:
            return None
        text = UNICODE_STRING.from_buffer(buffer)  # its Buffer points into the same buffer
        return ctypes.wstring_at(text.Buffer, text.Length // 2) if text.Buffer else ""

    def _token(self, handle: Any) -> tuple[str | None, str | None]:
        token = wt.HANDLE()
        if not self.adv.OpenProcessToken(handle, TOKEN_QUERY, ctypes.byref(token)):
            return None, None
        try:
            user = self._token_sid(token, TOKEN_USER_CLASS)
            label = self._token_sid(token, TOKEN_INTEGRITY_LEVEL_CLASS)
        finally:
            self.k32.CloseHandle(token)
        integrity = None
        if label and label.upper().startswith("S-1-16-"):
            integrity = integrity_word(int(label.rsplit("-", 1)[1]))
        return user, integrity

    def _token_sid(self, token: Any, info_class: int) -> str | None:
        """TOKEN_USER and TOKEN_MANDATORY_LABEL both start with a SID_AND_ATTRIBUTES."""
        needed = wt.DWORD(0)
        self.adv.GetTokenInformation(token, info_class, None, 0, ctypes.byref(needed))
        if not needed.value:
            return None
        buffer = ctypes.create_string_buffer(needed.value)
        if not self.adv.GetTokenInformation(token, info_class, buffer, needed,
                                            ctypes.byref(needed)):
            return None
        sid = ctypes.c_void_p.from_buffer(buffer).value  # the SID lives inside ``buffer``
        text = ctypes.c_wchar_p()
        if not self.adv.ConvertSidToStringSidW(ctypes.c_void_p(sid), ctypes.byref(text)):
            return None
        try:
            return text.value
        finally:
            self.k32.LocalFree(text)

    def _account(self, sid_text: str) -> str | None:
        """DOMAIN\\user of a SID, remembered: a lookup can go to a domain controller, and
        a host runs processes of a handful of accounts."""
        accounts = self._accounts
        if sid_text not in accounts:
            if len(accounts) >= ACCOUNTS_REMEMBERED:
                accounts.clear()
            accounts[sid_text] = self._lookup_account(sid_text)
        return accounts[sid_text]

    def _lookup_account(self, sid_text: str) -> str | None:
        sid = ctypes.c_void_p()
        if not self.adv.ConvertStringSidToSidW(sid_text, ctypes.byref(sid)):
            return None
        try:
            name = ctypes.create_unicode_buffer(256)
            domain = ctypes.create_unicode_buffer(256)
            name_len, domain_len, use = wt.DWORD(256), wt.DWORD(256), wt.DWORD()
            if not self.adv.LookupAccountSidW(None, sid, name, ctypes.byref(name_len), domain,
                                              ctypes.byref(domain_len), ctypes.byref(use)):
                return None
            return f"{domain.value}\\{name.value}" if domain.value else name.value
        finally:
            self.k32.LocalFree(sid)


class DiskFiles:
    """FileSource over the local disk: the image as it is now (None when it is gone)."""

    def identity(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return None


def device_map() -> dict[str, str]:
    """\\Device\\HarddiskVolumeN -> drive letter, from QueryDosDeviceW over the logical drives."""
    k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    drives = k32.GetLogicalDrives()
    mapping: dict[str, str] = {}
    target = ctypes.create_unicode_buffer(1024)
    for index, letter in enumerate(string.ascii_uppercase):
        if drives & (1 << index) and k32.QueryDosDeviceW(f"{letter}:", target, 1024):
            mapping[target.value] = f"{letter}:"
    return mapping
