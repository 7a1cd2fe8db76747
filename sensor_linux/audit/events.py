"""Assembled audit events to events of the common schema.

An exec (execve/execveat, successful or not) becomes a ``process_create`` event with the full
enrichment of :class:`~sensor_linux.enrich.Enricher`; a successful clone/fork records the child
in the process table (a copy of its parent, until it execs); everything else passes through as
a generic event. Every event keeps its original records, losslessly, in ``audit.records``.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Protocol

from common.percent import as_text, as_texts, to_bytes
from common.proctable import Entry
from common.schema import Event, new_event
from sensor_linux.audit import syscalls
from sensor_linux.audit.assemble import AuditEvent, EventKey
from sensor_linux.audit.completeness import ExecCompleteness, exec_call, lacking
from sensor_linux.audit.decode import execve_argv, sockaddr
from sensor_linux.audit.records import (CWD, EXECVE, PATH, PROCTITLE, SOCKADDR, SYSCALL,
                                        SYSCALL_TAIL, ParseError, Record, Value, field_value,
                                        find_field, in_kernel_layout, stamp_token)
from sensor_linux.enrich import Enricher
from sensor_linux.procfs import LiveFacts, ProcessFacts, kernel_tty_name

_DELETED = b" (deleted)"
# A PATH record's (device, inode) and name; up to MAX_PATHS of them remembered.
PathFacts = tuple["tuple[int, int] | None", Value]
MAX_PATHS = 4096
_SYSCALL_FACTS = ("pid", "ppid", "exe", "comm", "tty", "auid", "ses", "uid", "euid", "suid",
                  "fsuid", "gid", "egid", "sgid", "fsgid")


def _int(value: Value) -> int | None:
    return value if isinstance(value, int) else None


def _text(value: Value) -> str | bytes | None:
    return as_text(value) if isinstance(value, bytes) else None


def _tty(value: Value) -> str | None:
    return kernel_tty_name(value) if isinstance(value, bytes) else None


def _device(value: Value) -> int | None:
    """PATH's ``dev=fd:01`` (hex major:minor) as an st_dev number."""
    if not isinstance(value, bytes) or b":" not in value:
        return None
    major, _, minor = value.partition(b":")
    try:
        return os.makedev(int(major, 16), int(minor, 16))
    except (ValueError, OverflowError):  # not hex, or more than a device number holds
        return None


_EXIT, _PPID, _PID = 3, 9, 10
_UNKNOWN = object()  # not remembered yet (None is a remembered answer: no key)
_STABLE_FACTS = _SYSCALL_FACTS[2:]
MAX_STABLE = 4096
# executable, exe_deleted, comm, tty, login_uid, session, uids, gids
StableFacts = tuple[Any, bool, Any, "str | None", "int | None", "int | None", Any, Any]


def _executable(exe: Value) -> tuple[str | bytes | None, bool]:
    """SYSCALL's ``exe`` as a path, and whether the image was deleted while it ran: d_path()
    marks it so; the path is what the eBPF source reports, and on_disk says the rest."""
    if isinstance(exe, bytes) and exe.endswith(_DELETED):
        return _text(exe[:-len(_DELETED)]), True
    return _text(exe), False


def _stable_facts(values: list[Value]) -> StableFacts:
    """The facts of _STABLE_FACTS' values, typed as ProcessFacts holds them."""
    exe, comm, tty, auid, ses, uid, euid, suid, fsuid, gid, egid, sgid, fsgid = values
    executable, deleted = _executable(exe)
    ids = (_int(uid), _int(euid), _int(suid), _int(fsuid))
    gids = (_int(gid), _int(egid), _int(sgid), _int(fsgid))
    return (executable, deleted, _text(comm), _tty(tty), _int(auid), _int(ses),
            None if None in ids else ids, None if None in gids else gids)


def _kernel_head(syscall: Record) -> tuple[bytes, ...] | None:
    """A plain SYSCALL record's parts when they start as the kernel writes them
    (SYSCALL_HEAD; not with ``per=``, or without an outcome), else None. Checked once per
    event: the name, the outcome and the facts read their fields at these places."""
    parts = syscall.plain_parts()
    return parts if in_kernel_layout(parts) else None


class Captured(Protocol):
    """The live facts read of execs before they are built (sensor_linux/audit/capture.py)."""

    def take(self, key: EventKey) -> LiveFacts | None: ...


ExecHead = tuple[EventKey, int, "int | None", "str | bytes | None"]  # key, pid, ppid, exe


def exec_head(line: bytes) -> ExecHead | None:
    """For the SYSCALL record of an exec as the kernel writes it (its head: SYSCALL_HEAD),
    read from its text alone: the event's key (node, seconds, milliseconds, serial), pid, ppid
    and executable; else None (another record, another call, another layout). Made for the
    live sources' first look at a record, before it is parsed (capture.py): it reads every
    record, so what repeats from one exec to the next (the call, the text after the pid) is
    read once (exec_call, _tail_executable)."""
    node = None
    if line.startswith(b"node="):
        first, _, line = line.partition(b" ")
        node = first[5:]
    if not line.startswith(b"type=SYSCALL "):
        return None
    parts = line.split(b" ", 13)
    if len(parts) < 14 or not exec_call(parts[2], parts[3]):
        return None
    # Only the fields read are checked at their places: another layout puts others there.
    ppid, pid = parts[11], parts[12]
    if not (ppid.startswith(b"ppid=") and pid.startswith(b"pid=")):
        return None
    ppid, pid = ppid[5:], pid[4:]
    stamp = stamp_token(parts[1])
    if stamp is None or not (pid.isdigit() and ppid.isdigit()) or len(pid) > 10 \
            or len(ppid) > 10:
        return None
    return (node, *stamp), int(pid), int(ppid) or None, _tail_executable(parts[13])


@functools.lru_cache(maxsize=1024)
def _tail_executable(tail: bytes) -> str | bytes | None:
    """The executable named by a SYSCALL record's text after its pid (ids, terminal, comm,
    exe, key, auditd's ENRICHED names): the same for each run of a command by one user."""
    raw = find_field(tail.replace(b"\x1d", b" "), b"exe")
    try:
        exe = None if raw is None else field_value(SYSCALL, "exe", raw, tail)
    except ParseError:
        exe = None
    return _executable(exe)[0]


def _succeeded(syscall: Record, head: tuple[bytes, ...] | None) -> bool:
    """``success=yes``, read at its place in the kernel's ``head`` when there is one."""
    if head is not None:
        if head[2] == b"success=yes":
            return True
        if head[2] == b"success=no":
            return False
    return syscall.get("success") == b"yes"


def _known_name(syscall: Record) -> str | None:
    """The system call its ``arch`` and ``syscall`` fields name, if we know it."""
    return syscalls.syscall_name(_int(syscall.get("arch")), _int(syscall.get("syscall")))


def _enriched_name(syscall: Record) -> str | None:
    """auditd's ENRICHED name (``SYSCALL=execve``), for a number we do not know."""
    enriched = syscall.get("SYSCALL")
    return enriched.decode("ascii", "replace") if isinstance(enriched, bytes) else None


def _keep(table: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Remember ``value`` by ``key``; a full table starts a new generation (cleared: the
    common entries come back at once, and the check costs nothing on the hot path)."""
    if len(table) >= limit:
        table.clear()
    table[key] = value


def _head_decimal(part: bytes, syscall: Record) -> Value:
    """``pid``/``ppid`` of a head part as Record.values types it."""
    key, _, raw = part.partition(b"=")
    if raw.isdigit() and len(raw) <= 18:
        return int(raw)
    return field_value(SYSCALL, key.decode("ascii"), raw, syscall.raw)


class AuditEventBuilder:
    """Turns :class:`AuditEvent` objects into common-schema events, one at a time, in order."""

    def __init__(self, enricher: Enricher, captured: Captured | None = None,
                 completeness: ExecCompleteness | None = None) -> None:
        self.enricher = enricher
        # Successful execs missing a record lost before us (the source's summary reports it).
        self.completeness = ExecCompleteness() if completeness is None else completeness
        # What the live sources read of each exec as its SYSCALL record came in (capture.py).
        self.captured = captured
        self._paths: dict[tuple[bytes, ...], PathFacts] = {}
        # SYSCALL's facts after its head, by their text (see _facts).
        self._stable: dict[tuple[bytes, ...], StableFacts] = {}
        self._names: dict[tuple[bytes, ...], str] = {}  # by arch and syscall (see _name)
        self._keys: dict[tuple[bytes, ...], str | None] = {}  # rule keys (see _rule_key)
        self.process_events = 0
        self.generic_events = 0

    def build(self, audit: AuditEvent) -> Event:
        if self.captured is not None and audit.live is None:
            audit.live = self.captured.take((audit.node, audit.sec, audit.msec, audit.serial))
        if audit.live is None:
            return self._build(audit)
        try:
            return self._build(audit)
        finally:
            audit.live.close()  # the image descriptor, if one was opened

    def _build(self, audit: AuditEvent) -> Event:
        syscall = next((r for r in audit.records if r.rtype == SYSCALL), None)
        head = _kernel_head(syscall) if syscall is not None else None
        name = self._name(syscall, head) if syscall is not None else None
        if name in syscalls.EXEC and syscall is not None:
            event = self._exec_event(audit, syscall, head, name)
            self.process_events += 1
        else:
            if name in syscalls.CLONE and syscall is not None:
                self._record_clone(audit, syscall)
            elif name in syscalls.EXIT and syscall is not None:
                self._record_exit(syscall)
            event = self._generic_event(audit, syscall, name)
            self.generic_events += 1
        event.setdefault("audit", {}).update(self._audit_map(audit, syscall, name, head))
        return event

    def _name(self, syscall: Record, head: tuple[bytes, ...] | None) -> str | None:
        """The system call's name (:func:`_known_name`, else :func:`_enriched_name`); a known
        one remembered by the text of ``arch`` and ``syscall`` when the record has the
        kernel's ``head``."""
        key = head[:2] if head is not None else None
        name = self._names.get(key) if key is not None else None
        if name is None:
            name = _known_name(syscall)
            if name is None:
                return _enriched_name(syscall)
            if key is not None:
                _keep(self._names, key, name, MAX_STABLE)
        return name

    def _facts(self, audit: AuditEvent, syscall: Record,
               head: tuple[bytes, ...] | None) -> ProcessFacts:
        if head is not None:
            # The kernel's layout: none of the ids, terminal, session, comm or exe is in the
            # head, so their values are a function of the fields after it (remembered).
            tail = head[SYSCALL_TAIL]
            stable = self._stable.get(tail)
            if stable is None:
                stable = _stable_facts(syscall.values(_STABLE_FACTS))
                _keep(self._stable, tail, stable, MAX_STABLE)
            ppid = _head_decimal(head[_PPID], syscall)
            pid = _head_decimal(head[_PID], syscall)
        else:
            pid, ppid, *rest = syscall.values(_SYSCALL_FACTS)
            stable = _stable_facts(rest)
        executable, deleted, comm, tty, login_uid, session, uids, gids = stable
        return ProcessFacts(
            pid=_int(pid) or 0, ppid=_int(ppid), start_time=audit.sec + audit.msec / 1000,
            executable=executable, exe_deleted=deleted, comm=comm, tty=tty,
            login_uid=login_uid, session=session, uids=uids, gids=gids)

    def _exec_event(self, audit: AuditEvent, syscall: Record, head: tuple[bytes, ...] | None,
                    name: str) -> Event:
        success = _succeeded(syscall, head)
        facts = self._exec_facts(audit, syscall, head, success)
        event = self.enricher.process_event(
            facts, "auditd", original_id=audit.id, timestamp=facts.start_time,
            record=success)
        event["event"]["outcome"] = "success" if success else "failure"
        exit_code = _int(_head_decimal(head[_EXIT], syscall) if head is not None
                         else syscall.get("exit"))
        if exit_code is not None:
            event["process"]["exit_code"] = exit_code
        if name == "execveat":
            event["process"]["execveat"] = True
        return event

    def exec_facts(self, audit: AuditEvent, syscall: Record) -> ProcessFacts:
        """What an exec's records say about the new process (before enrichment)."""
        head = _kernel_head(syscall)
        return self._exec_facts(audit, syscall, head, _succeeded(syscall, head))

    def _exec_facts(self, audit: AuditEvent, syscall: Record, head: tuple[bytes, ...] | None,
                    success: bool) -> ProcessFacts:
        facts = self._facts(audit, syscall, head)
        execve: list[tuple[str, Value]] = []
        inodes: set[tuple[int, int]] = set()
        paths: list[Value] = []
        has_execve = has_cwd = has_title = False  # (what a record lost before us leaves out)
        for record in audit.records:
            if record.rtype == EXECVE:
                execve.extend(record.body)
                has_execve = True
            elif record.rtype == CWD:
                facts.cwd = _text(record.get("cwd"))
                has_cwd = True
            elif record.rtype == PATH:
                inode, name = self._path_facts(record)
                if inode is not None:
                    inodes.add(inode)
                paths.append(name)
            elif record.rtype == PROCTITLE:
                has_title = True
        if success:
            lacks = lacking(syscall, has_execve, has_cwd, has_title, len(paths))
            if lacks is not None:
                self.completeness.count(lacks)
        if execve:
            argv, _ = execve_argv(execve)
            facts.args = as_texts(argv)  # type: ignore[assignment]
        facts.image_inodes = frozenset(inodes) if inodes else None
        if self.enricher.live:
            live = facts.live = audit.live
            facts.exe_link, facts.container_id = (
                (live.exe_link, live.container_id) if live is not None  # read at the first look
                else self.enricher.exe_and_container(facts.pid, facts.executable))
        if success and facts.image_inodes is not None and self.enricher.host_files \
                and not facts.exe_deleted and facts.executable is not None:
            # The file at the kernel's path, if it is the one the exec touched: its version
            # keys the image's digests and the enrichment kept for it (sensor_linux/image.py).
            path = to_bytes(facts.executable)
            if path.startswith(b"/"):
                facts.image_identity = self.enricher.looks.identity_at(path,
                                                                       facts.image_inodes)
        if not success:
            # A failed exec leaves the caller's image in place: the event is about the file it
            # tried to run (the first PATH item), and the table is not changed.
            facts.executable = _text(paths[0]) if paths else None
            facts.image_inodes = None
        return facts

    def _path_facts(self, record: Record) -> PathFacts:
        """A PATH record's ``(device, inode)`` (None without both) and name; remembered by
        the text of a plain record, as an exec's PATH records repeat for each run of it."""
        parts = record.plain_parts()
        found = self._paths.get(parts) if parts else None
        if found is None:
            dev, ino = _device(record.get("dev")), _int(record.get("inode"))
            found = (None if dev is None or ino is None else (dev, ino), record.get("name"))
            if parts:
                _keep(self._paths, parts, found, MAX_PATHS)
        return found

    def _record_clone(self, audit: AuditEvent, syscall: Record) -> None:
        """The child of a successful clone/fork starts as a copy of its parent."""
        child = _int(syscall.get("exit"))
        if syscall.get("success") != b"yes" or not child or child < 0:
            return
        when = audit.sec + audit.msec / 1000
        table = self.enricher.table
        caller = _int(syscall.get("pid")) or -1
        parent = table.get(caller)
        if parent is None:
            # The caller was never seen exec'ing: learn what the SYSCALL record says about it.
            facts = self._facts(audit, syscall, _kernel_head(syscall))
            known = {"pid": facts.pid, "executable": facts.executable, "name": facts.comm}
            parent = Entry(caller, None, {k: v for k, v in known.items() if v is not None})
            table.record(parent)
        process = {k: v for k, v in parent.process.items() if k != "parent"}
        process["pid"] = child
        table.record(Entry(child, when, process, parent.event_id))

    def _record_exit(self, syscall: Record) -> None:
        """The process is gone: its entry goes at the table's next prune (late events of it
        may still arrive and need it as a parent)."""
        entry = self.enricher.table.get(_int(syscall.get("pid")) or -1)
        if entry is not None:
            entry.gone = True

    def _generic_event(self, audit: AuditEvent, syscall: Record | None,
                       name: str | None) -> Event:
        first = audit.records[0].type_name.lower() if audit.records else "unknown"
        event = new_event(first, "auditd", host=self.enricher.host,
                          timestamp=audit.sec + audit.msec / 1000, original_id=audit.id)
        if syscall is not None:
            pid = _int(syscall.get("pid"))
            if pid is not None:
                event["process"] = {"pid": pid, "executable": _text(syscall.get("exe")),
                                    "name": _text(syscall.get("comm"))}
            success = syscall.get("success")
            if isinstance(success, bytes):
                event["event"]["outcome"] = "success" if success == b"yes" else "failure"
        arch = _int(syscall.get("arch")) if syscall is not None else None
        addresses = [sockaddr(r.get("saddr"), arch) for r in audit.records
                     if r.rtype == SOCKADDR and isinstance(r.get("saddr"), bytes)]
        if addresses:
            address = addresses[0]
            if "path" in address:
                address["path"] = as_text(address["path"])  # type: ignore[arg-type]
            # connect/sendto name the peer; bind/accept name this end.
            side = "source" if name in ("bind", "accept", "accept4") else "destination"
            if "address" in address:
                event[side] = {"ip": address["address"], "port": address["port"]}
            event.setdefault("audit", {})["sockaddr"] = address
        return event

    def _audit_map(self, audit: AuditEvent, syscall: Record | None, name: str | None,
                   head: tuple[bytes, ...] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": audit.id,
            "complete": audit.complete,
            "records": as_texts([r.raw.rstrip(b"\n") for r in audit.records]),
        }
        if audit.node is not None:
            out["node"] = as_text(audit.node)
        if syscall is not None:
            if name is not None:
                out["syscall"] = name
            key = self._rule_key(syscall, head)
            if key is not None:
                out["key"] = key
        return out

    def _rule_key(self, syscall: Record, head: tuple[bytes, ...] | None) -> str | None:
        """The audit rule's ``key`` as text; remembered by the text after the kernel's
        ``head`` (where it is, with the ids and names that repeat from one exec to the
        next)."""
        if head is None:
            key = syscall.get("key")
            return as_text(key) if isinstance(key, bytes) else None
        tail = head[SYSCALL_TAIL]
        found = self._keys.get(tail, _UNKNOWN)
        if found is _UNKNOWN:
            key = syscall.get("key")
            found = as_text(key) if isinstance(key, bytes) else None
            _keep(self._keys, tail, found, MAX_STABLE)
        return found  # type: ignore[return-value]
