"""The syscalls the sensor needs to recognize, per audit architecture.

Exec creates a process image, clone/fork a process, exit ends one; bind/accept versus connect
tells which end a socket address describes. Any other syscall keeps its number, or the name
auditd's ENRICHED format supplies. Numbers from the kernel's syscall tables
(arch/*/syscall*.tbl).
"""

from __future__ import annotations

# AUDIT_ARCH_* values (linux/audit.h) -> name; the one arch table (netlink's exec rules use it)
ARCHES = {
    0xC000003E: "x86_64", 0x40000003: "i386", 0xC00000B7: "aarch64", 0x40000028: "arm",
    0x80000015: "ppc64", 0xC0000015: "ppc64le", 0x80000016: "s390x", 0xC00000F3: "riscv64",
}

_TABLES: dict[str, dict[int, str]] = {
    "x86_64": {56: "clone", 57: "fork", 58: "vfork", 59: "execve", 60: "exit",
               231: "exit_group", 322: "execveat", 435: "clone3"},
    "i386": {1: "exit", 2: "fork", 11: "execve", 120: "clone", 190: "vfork", 252: "exit_group",
             358: "execveat", 435: "clone3"},
    "aarch64": {93: "exit", 94: "exit_group", 220: "clone", 221: "execve", 281: "execveat",
                435: "clone3"},
    "riscv64": {93: "exit", 94: "exit_group", 220: "clone", 221: "execve", 281: "execveat",
                435: "clone3"},
    "arm": {1: "exit", 2: "fork", 11: "execve", 120: "clone", 190: "vfork", 248: "exit_group",
            387: "execveat", 435: "clone3"},
    "ppc64": {1: "exit", 2: "fork", 11: "execve", 120: "clone", 189: "vfork", 234: "exit_group",
              362: "execveat", 435: "clone3"},
    "s390x": {1: "exit", 2: "fork", 11: "execve", 120: "clone", 190: "vfork", 248: "exit_group",
              354: "execveat", 435: "clone3"},
}
_SOCKETS = {
    "x86_64": {42: "connect", 43: "accept", 49: "bind", 288: "accept4"},
    "aarch64": {200: "bind", 202: "accept", 203: "connect", 242: "accept4"},
    "riscv64": {200: "bind", 202: "accept", 203: "connect", 242: "accept4"},
    "ppc64": {327: "bind", 328: "connect", 330: "accept", 344: "accept4"},
    "i386": {361: "bind", 362: "connect", 364: "accept4"},
    "arm": {282: "bind", 283: "connect", 285: "accept", 366: "accept4"},
    "s390x": {361: "bind", 362: "connect", 364: "accept4"},
}
for _arch, _names in _SOCKETS.items():
    _TABLES[_arch].update(_names)
_TABLES["ppc64le"] = _TABLES["ppc64"]

EXEC = frozenset({"execve", "execveat"})
CLONE = frozenset({"clone", "clone3", "fork", "vfork"})
EXIT = frozenset({"exit", "exit_group"})


ARCH_CODES = {name: code for code, name in ARCHES.items()}


def exec_syscalls(arch: int) -> tuple[int, ...]:
    """The numbers of execve and execveat under an AUDIT_ARCH_* value (empty when unknown)."""
    table = _TABLES.get(ARCHES.get(arch, ""), {})
    return tuple(sorted(number for number, name in table.items() if name in EXEC))


def syscall_name(arch: int | None, number: int | None) -> str | None:
    """The name of a followed syscall, or None when it is not one of them (or unknown)."""
    if arch is None or number is None:
        return None
    table = _TABLES.get(ARCHES.get(arch, ""))
    return table.get(number) if table else None
