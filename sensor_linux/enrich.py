"""Turn :class:`ProcessFacts` into a process-create event of the common schema.

One place that every Linux source goes through, so audit, eBPF and /proc events carry the same
fields with the same meanings: identity names, file digests of the image as it ran, package
provenance, parent context from the process table, and the TTPHash.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Container

from common import ttphash
from common.filehash import FileHasher
from common.percent import percent_encode, to_bytes
from common.process_event import process_create
from common.proctable import Entry, ProcessTable, parent_context
from common.schema import Event, utc_timestamp
from sensor_linux.image import RecentLooks, image_facts
from sensor_linux.packages import UNPACKAGED_FIELD, PackageIndex
from sensor_linux.procfs import (PROC, UNSET_ID, LiveFacts, PinnedProcess, ProcessFacts,
                                 boot_time, exe_identity, live_container_id, open_image,
                                 read_exe, read_process)
from sensor_linux.users import UserNames


def linux_host(root: str = "/") -> dict[str, Any]:
    """``host`` map: name, the machine id (stable across reboots) and the OS type."""
    host: dict[str, Any] = {"name": socket.gethostname(), "os": {"type": "linux"}}
    try:
        with open(os.path.join(root, "etc/machine-id")) as f:
            host["id"] = f.read().strip()
    except OSError:
        pass
    return host


# Kept id and image parts (Enricher._stable): at most this many, the oldest first out.
STABLE_ENTRIES = 4096


def _remember(kept: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    kept[key] = value
    kept.move_to_end(key)
    if len(kept) > STABLE_ENTRIES:
        kept.popitem(last=False)


# read_exe's answer and the container of a process that has exited: nothing.
_EXITED: tuple[tuple[str | bytes | None, bool], str | None] = ((None, False), None)

# What shlex.quote leaves as it is, but "%" (percent form writes it as %25): an argument of
# only these needs neither.
_PLAIN_ARGUMENTS = re.compile(r"[\w@+=:,./-]+", re.ASCII)


def command_line(args: list[str | bytes | None] | None) -> str | None:
    """A shell-quoted, readable command line (lossless data stays in ``process.args``).
    An argument the source lost (``None``) shows as ``''``."""
    if args is None:
        return None
    try:
        joined = "".join(args)  # type: ignore[arg-type]
    except TypeError:  # bytes, or a lost argument
        pass
    else:
        # Most command lines: one check of the whole instead of two calls per argument.
        if all(args) and _PLAIN_ARGUMENTS.fullmatch(joined):
            return " ".join(args)  # type: ignore[arg-type]
    return " ".join(shlex.quote(percent_encode(a if a is not None else "")) for a in args)


@dataclass
class Enricher:
    """Holds the caches enrichment needs; one per sensor process."""

    hasher: FileHasher = field(default_factory=FileHasher)
    packages: PackageIndex = field(default_factory=PackageIndex)
    users: UserNames = field(default_factory=UserNames)
    table: ProcessTable = field(default_factory=ProcessTable)
    host: dict[str, Any] = field(default_factory=linux_host)
    fingerprints: ttphash.Memo = field(default_factory=ttphash.Memo)
    looks: RecentLooks = field(default_factory=RecentLooks)  # is an image still at its path
    proc: str = PROC
    # live: events are about processes on this host, now (so /proc may be read for images and
    # unknown parents); false when replaying a recorded log, whose PIDs mean nothing here.
    live: bool = True
    # host_files: the executables events name may be opened and hashed, and looked up in this
    # host's package database. False for a log recorded elsewhere: this host's /usr/bin/ls says
    # nothing about another machine's, and a path there may name a FIFO here.
    host_files: bool = True
    # Reads of /proc made while enriching (parents never seen, images no longer on disk): the
    # eBPF source carries its facts in the record, so this stays near zero there.
    proc_reads: int = 0
    _boot_time: float | None = field(default=None, repr=False)
    # The id and image part of recent process maps, by what it depends on (see
    # _identity_and_image): (kept until, the part). The events that reuse one share its maps,
    # which nothing changes after an event is built (the table's parent maps share them too).
    _stable: OrderedDict[tuple[Any, ...], tuple[float, dict[str, Any]]] = field(
        default_factory=OrderedDict, repr=False)

    def _identity(self, ident: int | None, group: bool = False) -> dict[str, str] | None:
        if ident is None:
            return None
        out = {"id": str(ident)}
        name = self.users.group(ident) if group else self.users.user(ident)
        if name is not None:
            out["name"] = name
        return out

    def _like(self, ident: int | None, known: int | None,
              known_map: dict[str, str] | None) -> dict[str, str] | None:
        """``_identity(ident)``, copied from ``known_map`` when it is the same id (the real,
        effective and saved user are usually one: looked up once)."""
        if ident == known and known_map is not None:
            return dict(known_map)
        return self._identity(ident)

    def process_map(self, facts: ProcessFacts, ran: bool = True) -> dict[str, Any]:
        """The ``process`` map (without parent) for ``facts``. ``ran`` is false for a failed
        exec: its file never became the process's image, so /proc cannot show it."""
        exe = facts.executable
        process: dict[str, Any]
        if exe is not None:
            process = {"pid": facts.pid, "executable": exe,
                       "name": exe.rsplit(b"/" if isinstance(exe, bytes) else "/", 1)[-1]}
        elif facts.comm is not None:
            process = {"pid": facts.pid, "name": facts.comm}
        else:
            process = {"pid": facts.pid}
        args = facts.args
        if args is not None:
            process["args"] = args
            process["args_count"] = len(args)
            process["command_line"] = command_line(args)
        if facts.cwd is not None:
            process["working_directory"] = facts.cwd
        if facts.start_time is not None:
            process["start"] = utc_timestamp(facts.start_time)
        process.update(self._identity_and_image(facts, ran))
        return process

    def _identity_and_image(self, facts: ProcessFacts, ran: bool) -> dict[str, Any]:
        """The rest of the process map: ids and their names, terminal, audit ids, container,
        image (on disk, digests, package). The same for every exec of one file version with
        one set of ids: where the kernel gave the file's identity, it is kept and reused while
        the look that found the file at its path answers (:class:`RecentLooks`), which spares
        an exec of a known binary most of its enrichment."""
        key = self._stable_key(facts, ran)
        if key is not None:
            kept = self._stable.get(key)
            if kept is not None and self.looks.now() < kept[0]:
                return kept[1]
        rest: dict[str, Any] = {}
        if facts.uids is not None:
            real = rest["real_user"] = self._identity(facts.uids[0])
            rest["user"] = self._like(facts.uids[1], facts.uids[0], real)
            rest["saved_user"] = self._like(facts.uids[2], facts.uids[0], real)
        if facts.gids is not None:
            rest["group"] = self._identity(facts.gids[1], group=True)
        rest["interactive"] = facts.tty is not None
        if facts.tty is not None:
            rest["tty"] = {"name": facts.tty}
        audit: dict[str, Any] = {}
        if facts.login_uid is not None:
            audit["login_user"] = (None if facts.login_uid == UNSET_ID
                                   else self._identity(facts.login_uid))
        if facts.session is not None:
            audit["session"] = None if facts.session == UNSET_ID else facts.session
        if audit:
            rest["audit"] = audit
        if facts.container_id:
            rest["container"] = {"id": facts.container_id}
        self._add_image(rest, facts, ran)
        if key is not None and "hash" in rest:
            # Kept no longer than the look at the file answers (a replaced file is looked
            # at anew), and only when it was hashed: a digest that could not be read is
            # tried again at the next exec.
            seen = self.looks.found_at(to_bytes(facts.executable), facts.image_identity)
            if seen is not None:
                _remember(self._stable, key, (seen + self.looks.seconds, rest))
        return rest

    def _stable_key(self, facts: ProcessFacts, ran: bool) -> tuple[Any, ...] | None:
        """What :meth:`_identity_and_image` depends on, when the kernel gave the identity."""
        if facts.image_identity is None or not self.host_files or facts.executable is None:
            return None
        return (facts.executable, facts.image_identity, facts.exe_deleted, ran, facts.uids,
                facts.gids, facts.tty, facts.login_uid, facts.session, facts.container_id)

    def _add_image(self, process: dict[str, Any], facts: ProcessFacts, ran: bool) -> None:
        if not self.host_files:
            process["on_disk"] = None  # not checked: the file is on another machine
            return
        image = facts.live.image_path if facts.live is not None else None
        if facts.image_identity is not None and isinstance(facts.executable, (str, bytes)):
            found = image_facts(to_bytes(facts.executable), facts.image_identity,
                                self.hasher, self.looks, facts.pid if self.live else None,
                                self.proc, image)
            self.proc_reads += found.read_proc
            digests, on_disk = found.digests, found.on_disk
        else:
            digests, on_disk = exe_identity(facts.pid, facts.executable, self.hasher,
                                            self.proc, use_proc=self.live and ran,
                                            image_inodes=facts.image_inodes, cwd=facts.cwd,
                                            exe_link=facts.exe_link, image=image)
        if facts.exe_deleted:
            on_disk = False
        process["on_disk"] = on_disk
        if digests is not None:
            process["hash"] = digests.as_field()
        if facts.executable is None or not self.packages.available:
            return
        if on_disk is False:
            # A deleted or replaced image is not what the package shipped, whatever its path.
            process["package"] = dict(UNPACKAGED_FIELD)
            return
        found = self.packages.provenance(facts.executable, digests)
        process["package"] = found.as_field() if found else dict(UNPACKAGED_FIELD)

    def process_event(self, facts: ProcessFacts, provider: str, *, kind: str = "event",
                      original_id: str | None = None, timestamp: float | None = None,
                      record: bool = True) -> Event:
        """A complete process-create event (common/process_event.py), recorded in the process
        table unless ``record`` is false (a failed exec does not replace the caller's image)."""
        early = facts.live is not None and facts.live.parent_read
        return process_create(self.table, self.host, provider,
                              self.process_map(facts, ran=record), pid=facts.pid,
                              start_key=facts.start_time, ppid=facts.ppid,
                              parents=_ReadEarly(self, facts.live) if early else self,
                              timestamp=timestamp, original_id=original_id, kind=kind,
                              record=record, memo=self.fingerprints)

    def running(self, entry: Entry) -> bool:
        """The kernel names only a live process as a parent (an orphan is adopted at once), so
        the parent of an exec was running at the exec: a fact of the exec, not of how late
        enrichment ran (docs/ttphash.md, isRunning)."""
        return True

    def unknown(self, ppid: int, child_start: float | None) -> dict[str, Any] | None:
        """A parent the table does not know: live, learned from /proc (and recorded)."""
        if not self.live:
            return None
        return self.learned_parent(ppid, child_start, self._read_parent(ppid))

    def _read_parent(self, ppid: int) -> tuple[float | None, dict[str, Any]] | None:
        """A parent's start time and process map, read from /proc; None when it is gone."""
        self.proc_reads += 1
        facts = read_process(ppid, self.proc, self._btime())
        if facts is None or facts.executable is None:
            return None
        return facts.start_time, self.process_map(facts)

    def learned_parent(self, ppid: int, child_start: float | None,
                       read: tuple[float | None, dict[str, Any]] | None
                       ) -> dict[str, Any] | None:
        """Record a parent read from /proc (``read``: start time and process map) and give
        its ``process.parent`` map."""
        if read is None:
            return None
        self.table.record(Entry(ppid, read[0], read[1]))
        entry = self.table.parent_of(ppid, child_start)
        return parent_context(entry, True) if entry is not None else None

    def exe_and_container(self, pid: int, executable: str | bytes | None
                          ) -> tuple[tuple[str | bytes | None, bool], str | None]:
        """``/proc/PID/exe`` (read_exe's answer) and the container of ``pid`` if it still runs
        ``executable``: the link is read once, as both need it. Nothing is read of a process
        that has exited (there is nothing to read, and the look-up costs: PinnedProcess), and
        nothing is kept of one that exited while it was read (its number may have gone to
        another process before the reads)."""
        if self.proc != PROC:  # a /proc of a test: its pids are not the kernel's
            return self._exe_and_container(pid, executable)
        with PinnedProcess(pid) as process:
            if process.exited():
                return _EXITED
            found = self._exe_and_container(pid, executable)
            return _EXITED if process.exited() else found

    def _exe_and_container(self, pid: int, executable: str | bytes | None
                           ) -> tuple[tuple[str | bytes | None, bool], str | None]:
        link = read_exe(pid, self.proc)
        return link, live_container_id(pid, executable, self.proc, link)

    def capture(self, pid: int, ppid: int | None, executable: str | bytes | None,
                start_time: float | None, pending: Container[int]) -> LiveFacts:
        """What only the live process ``pid`` shows, read now for an event built later: the
        image link, the container, the image itself when it has no path (deleted, memfd), and
        a parent that neither the table nor an exec still ``pending`` (not built yet) knows.
        The same reads the build makes otherwise (sensor_linux/audit/events.py)."""
        live = LiveFacts(pid, *self.exe_and_container(pid, executable))
        link = live.exe_link
        if link[1] and link[0] is not None and link[0] == executable:
            live.image_fd = open_image(pid, self.proc)
        if ppid and ppid not in pending and self.table.parent_of(ppid, start_time) is None:
            live.parent, live.parent_read = self._read_parent(ppid), True
        return live

    def _btime(self) -> float:
        if self._boot_time is None:
            self._boot_time = boot_time(self.proc)
        return self._boot_time


class _ReadEarly:
    """The parents of an exec whose unknown parent was read when the exec was read
    (:meth:`Enricher.capture`): that reading is used, not a second one."""

    def __init__(self, enricher: Enricher, live: LiveFacts) -> None:
        self.enricher = enricher
        self.live = live

    def running(self, entry: Entry) -> bool:
        return self.enricher.running(entry)

    def unknown(self, ppid: int, child_start: float | None) -> dict[str, Any] | None:
        return self.enricher.learned_parent(ppid, child_start, self.live.parent)
