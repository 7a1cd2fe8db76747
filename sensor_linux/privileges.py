"""Drop root after the audit sockets are open, keeping only the capabilities still needed.

What the running sensor still needs, and why:

* ``CAP_AUDIT_CONTROL``: a unicast session restores the machine's audit state at exit;
* ``CAP_SYS_PTRACE``: ``/proc/PID/exe`` of other users' processes (digests of the image as it
  ran, even when deleted);
* ``CAP_DAC_READ_SEARCH``: read and hash executables that are not world-readable, and
  ``/proc/PID/*`` files of other users.

Reading audit records needs nothing more once the socket is open (the kernel checks
CAP_AUDIT_READ at bind time). Directories the sensor writes to after the drop (rotated outputs,
the status file, the audit state file) are given to the user first.

Python has no binding for capset(2); it is called through ctypes (linux/capability.h, version 3
headers: two 32-bit words per set).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import stat

CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
CAP_AUDIT_CONTROL = 30
KEEP = (CAP_AUDIT_CONTROL, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH)

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_SET_KEEPCAPS = 8
_SYS_CAPSET = 126  # x86_64


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class PrivilegeError(OSError):
    pass


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _capset(mask: int) -> None:
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
        data[i].inheritable = 0
    if _libc().syscall(_SYS_CAPSET, ctypes.byref(header), data) != 0:
        raise PrivilegeError(ctypes.get_errno(), "capset failed")


def sensor_dirs(paths: list[str]) -> list[str]:
    """The directories of ``paths`` that belong to the sensor (named for it, or below one that
    is), which may be handed to the unprivileged user; shared directories such as /tmp never
    are."""
    dirs = []
    for path in paths:
        directory = os.path.dirname(os.path.abspath(path))
        if any("ttpsensor" in part for part in directory.split(os.sep)) \
                and directory not in dirs:
            dirs.append(directory)
    return dirs


def cannot_replace(paths: list[str]) -> list[str]:
    """Why this process could not rotate or replace each of ``paths`` (rename it, create it
    anew), for those it could not: run after the privilege drop, so that an output in a
    shared directory fails at start, not at its first rotation with events in flight."""
    problems = []
    for path in paths:
        if os.path.exists(path) and not os.path.isfile(path):
            continue  # /dev/null, a FIFO: written as they are, never rotated (common/sinks.py)
        directory = os.path.dirname(os.path.abspath(path))
        # The effective ids and capabilities (CAP_DAC_READ_SEARCH crosses a 0700 parent).
        if not os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
            problems.append(f"{path}: the directory {directory} is not writable")
            continue
        try:
            owner = os.lstat(path).st_uid
            shared = os.stat(directory)
        except FileNotFoundError:
            continue
        me = os.geteuid()
        if me != 0 and shared.st_mode & stat.S_ISVTX and me not in (owner, shared.st_uid):
            problems.append(f"{path}: {directory} is a shared (sticky) directory and the file "
                            "is not ours, so it cannot be renamed")
    return problems


def drop_to(user: str, writable_dirs: list[str]) -> str:
    """Become ``user`` keeping only :data:`KEEP`; returns a sentence saying what was done."""
    if user == "root":
        return "staying root (--user root)"
    if os.getuid() != 0:
        return "not root: nothing to drop"
    if os.uname().machine != "x86_64":
        return f"privilege drop not implemented for {os.uname().machine}; still root"
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(2, f"no such user {user!r} to drop to (create it, e.g. "
                             f"'useradd --system {user}', or pass --user root to stay root)")
    for directory in writable_dirs:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        for name in os.listdir(directory):  # existing files we will append to or rotate
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                os.chown(path, entry.pw_uid, entry.pw_gid)
    libc = _libc()
    if libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise PrivilegeError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS) failed")
    os.setgroups([])
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    mask = 0
    for cap in KEEP:
        mask |= 1 << cap
    _capset(mask)
    libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0)
    return (f"running as {user} (uid {entry.pw_uid}) with CAP_AUDIT_CONTROL, CAP_SYS_PTRACE "
            f"and CAP_DAC_READ_SEARCH only")
