"""Execs that came without a record the kernel always writes for one: records lost before us.

The kernel writes a successful execve or execveat as SYSCALL, EXECVE, CWD, as many PATH
records as the SYSCALL record's ``items`` says, and PROCTITLE. One of them missing from an exec
we assembled was lost on the way: auditd drops records from its queue to its plugins
(``q_depth``, ``overflow_action``) and says so only to syslog, five times at most; a record the
kernel held back past the assembler's lingering never joins its exec. Neither reaches us as a
count, so we count what arrived: each successful exec that lacks one of them, and by the kind
it lacks (an exec may lack several). The event builder (ecs, qlog) and the LAUREL renderer
count into one :class:`ExecCompleteness`, which the source's summary reports
(``execs_incomplete``). Other records (EOE, an AVC) are not always written, and their loss is
not counted here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sensor_linux.audit import syscalls
from sensor_linux.audit.records import ParseError, Record, in_kernel_layout

_ITEMS = 8   # ``items=`` among a SYSCALL record's parts in the kernel's layout (SYSCALL_HEAD)
_USUAL_ITEMS = {b"items=%d" % n: n for n in range(8)}


# What an exec's records lack: EXECVE, CWD, a PATH record its SYSCALL announced, PROCTITLE.
Lacks = tuple[bool, bool, bool, bool]


@dataclass
class ExecCompleteness:
    """Successful execs that lacked a record the kernel writes for one (``execs``), and how
    many lacked each kind: EXECVE, CWD, PROCTITLE, or a PATH record of those their SYSCALL
    record announced (``items``: an ELF binary's exec has two, the binary and its loader, and
    one of them lost leaves the other)."""

    execs: int = 0
    missing_execve: int = 0
    missing_cwd: int = 0
    missing_path: int = 0
    missing_proctitle: int = 0

    def count(self, lacks: Lacks) -> None:
        """A successful exec that lacked what ``lacks`` says (:func:`lacking`)."""
        self.execs += 1
        self.missing_execve += lacks[0]
        self.missing_cwd += lacks[1]
        self.missing_path += lacks[2]
        self.missing_proctitle += lacks[3]

    def note(self, syscall: Record, execve: bool, cwd: bool, title: bool, paths: int) -> None:
        """Count the event of ``syscall`` if it is a successful exec that lacks one of an
        exec's records (:func:`lacking`'s arguments): for a caller that has not asked whether
        the event is one (the LAUREL renderer; a non-exec call lacks them too)."""
        lacks = lacking(syscall, execve, cwd, title, paths)
        if lacks is not None and successful_exec(syscall):
            self.count(lacks)


def lacking(syscall: Record, execve: bool, cwd: bool, title: bool, paths: int) -> Lacks | None:
    """What the event of ``syscall`` lacks of an exec's records, told whether it has EXECVE,
    CWD and PROCTITLE records and how many PATH records; None when it lacks none (the usual
    case: a few tests). The caller knows, or asks :func:`successful_exec`, whether the event
    is a successful exec."""
    path_lost = not paths or paths < announced_paths(syscall)
    if path_lost or not (execve and cwd and title):
        return (not execve, not cwd, path_lost, not title)
    return None


def announced_paths(syscall: Record) -> int:
    """The PATH records a SYSCALL record announces (``items``; 0 when it does not say). Asked
    of every exec: the usual counts by a look-up of their text."""
    parts = syscall.plain_parts()
    if len(parts) > _ITEMS:
        known = _USUAL_ITEMS.get(parts[_ITEMS])
        if known is not None:
            return known
        if parts[_ITEMS].startswith(b"items="):  # the kernel's layout
            text = parts[_ITEMS][6:]
            return int(text) if text.isdigit() and len(text) <= 6 else 0
    try:
        items = syscall.get("items")
    except ParseError:  # a value the typing refuses: the LAUREL renderer shows it as text
        return 0
    return items if isinstance(items, int) else 0


@functools.lru_cache(maxsize=256)
def exec_call(arch: bytes, number: bytes) -> bool:
    """Whether a SYSCALL record's ``arch=`` and ``syscall=`` parts name an exec."""
    if not (arch.startswith(b"arch=") and number.startswith(b"syscall=")):
        return False
    arch, number = arch[5:], number[8:]
    if len(arch) > 8 or len(number) > 4 or not number.isdigit():
        return False
    try:
        return syscalls.syscall_name(int(arch, 16), int(number)) in syscalls.EXEC
    except ValueError:
        return False


def successful_exec(syscall: Record) -> bool:
    """Whether a SYSCALL record is of an exec that succeeded: read at its places when the
    record is in the kernel's layout, else from its fields."""
    parts = syscall.plain_parts()
    if parts and in_kernel_layout(parts):
        return parts[2] == b"success=yes" and exec_call(parts[0], parts[1])
    try:
        arch, number = syscall.get("arch"), syscall.get("syscall")
        success = syscall.get("success")
    except ParseError:  # a value the typing refuses: not told an exec
        return False
    return (success == b"yes" and isinstance(arch, int) and isinstance(number, int)
            and syscalls.syscall_name(arch, number) in syscalls.EXEC)
