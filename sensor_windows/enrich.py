"""ProcessStart facts to QLOG-grade events of the common schema.

What the ETW event lacks (command line, user, integrity, working directory, module count) comes
from the live process through a :class:`ProcessInspector`: Win32 calls on Windows
(``win32.py``), a description of the processes in a replay. Answers are cached by (pid, create
time), so a reused pid never enriches the wrong process. The image's file facts (digests,
imphash, version resource, Authenticode) come from :mod:`sensor_windows.pe` through a
:class:`FileSource`: the file itself on Windows, a mapped local copy in a replay.
"""

from __future__ import annotations

import datetime as _dt
import ntpath
from collections import OrderedDict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Protocol

from common import ttphash
from common.process_event import process_create
from common.proctable import Entry, ProcessTable
from common.schema import Event, utc_timestamp
from sensor_windows.normalize import ProcessStart
from sensor_windows.pe import PEError, PEFacts, Signature, inspect

CACHE_ENTRIES = 4096


@dataclass
class ProcessInfo:
    """What the running process tells about itself (None: could not be read)."""

    image: str | None = None
    command_line: str | None = None
    user_sid: str | None = None
    user_name: str | None = None          # DOMAIN\\user
    integrity_level: str | None = None
    working_directory: str | None = None
    module_count: int | None = None
    running: bool = True
    create_time: _dt.datetime | None = None


@dataclass(frozen=True)
class StartTime:
    """When a process started, as an event tells it. ``created`` is the kernel's creation
    time (ProcessStart's CreateTime; GetProcessTimes gives the same value, in clock ticks of
    about 15.6 ms); ``logged`` only when the event was written (its header), a little later."""

    created: _dt.datetime | None = None
    logged: _dt.datetime | None = None

    @property
    def moment(self) -> _dt.datetime | None:
        return self.created or self.logged


# How much later than a process's creation its start event may be written.
LOGGED_WITHIN = _dt.timedelta(seconds=1)
_SAME = _dt.timedelta(milliseconds=1)   # datetime keeps microseconds of a 100 ns FILETIME


def same_process(created: _dt.datetime | None, when: StartTime | None) -> bool:
    """Whether a live process created at ``created`` (GetProcessTimes) is the one ``when``
    speaks of: the same creation time, or created at most LOGGED_WITHIN before the event
    was logged. A process whose creation time cannot be read is taken as it is."""
    if when is None or created is None:
        return True
    if when.created is not None:
        return abs(created - when.created) <= _SAME
    if when.logged is not None:
        return -_SAME <= when.logged - created <= LOGGED_WITHIN
    return True


class ProcessInspector(Protocol):
    def describe(self, pid: int, when: StartTime | None) -> ProcessInfo | None: ...
    def running(self, pid: int, when: StartTime | None) -> bool: ...


class FileSource(Protocol):
    def identity(self, path: str) -> tuple[int, int] | None: ...  # (size, mtime ns); None: gone
    def read(self, path: str) -> bytes | None: ...


# PE facts of this many images are remembered (by path, size and modification time).
PE_CACHE_ENTRIES = 1024


@dataclass
class PECache:
    """PE facts by (path, size, mtime): an image is read, hashed and its signatures parsed
    once, not at every start of it; a changed file is another key."""

    files: FileSource
    roots: list[Any] | None = None
    # Windows' verdict on a path (wintrust.WinTrust.verdict), where the host can give one.
    trust: Callable[[str], Any] | None = None
    _entries: OrderedDict[tuple[str, tuple[int, int]], PEFacts | None] = field(
        default_factory=OrderedDict)

    def facts(self, path: str) -> tuple[bool, PEFacts | None]:
        """Whether the image is on disk, and its PE facts (None: not a PE file)."""
        identity = self.files.identity(path)
        if identity is None:
            return False, None
        key = (path.upper(), identity)   # Windows paths compare without case
        if key in self._entries:
            self._entries.move_to_end(key)
            return True, self._entries[key]
        data = self.files.read(path)
        if data is None:
            return False, None
        try:
            facts: PEFacts | None = inspect(data, self.roots)
        except PEError:
            facts = None  # not a PE (a script host's argument, say): no PE facts
        if facts is not None and self.trust is not None:
            verdict = self.trust(path)
            facts.system_status, facts.catalog = verdict.status, verdict.catalog
        self._entries[key] = facts
        if len(self._entries) > PE_CACHE_ENTRIES:
            self._entries.popitem(last=False)
        return True, facts


@dataclass
class CachedInspector:
    """(pid, create time) cache in front of an inspector: a reused pid is another key."""

    inner: ProcessInspector
    _cache: OrderedDict[tuple[int, Any], ProcessInfo | None] = field(
        default_factory=OrderedDict)

    def describe(self, pid: int, when: StartTime | None) -> ProcessInfo | None:
        if when is None or when.moment is None:
            return self.inner.describe(pid, None)  # "whoever has this pid now" goes stale
        key = (pid, when)
        if key not in self._cache:
            self._cache[key] = self.inner.describe(pid, when)
            if len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return self._cache[key]

    def running(self, pid: int, when: StartTime | None) -> bool:
        return self.inner.running(pid, when)  # never cached: it changes


def _signature_fields(sig: Signature) -> dict[str, Any]:
    """One signature as the schema has it (QLOG's Signatures entry): times ISO 8601 UTC."""
    fields = {"subject_name": sig.subject, "issuer": sig.issuer, "thumbprint": sig.thumbprint,
              "digest_algorithm": sig.digest_algorithm, "not_before": sig.not_before,
              "not_after": sig.not_after, "timestamp": sig.timestamp}
    out = {k: v for k, v in fields.items() if v is not None}
    if sig.timestamp_signatures:
        out["timestamp_signatures"] = [_signature_fields(t) for t in sig.timestamp_signatures]
    return out


def _pe_fields(facts: PEFacts) -> dict[str, Any]:
    pe = {k: v for k, v in {"imphash": facts.imphash,
                            "original_file_name": facts.original_file_name,
                            "company": facts.company, "product": facts.product,
                            "file_version": facts.file_version}.items() if v is not None}
    signature: dict[str, Any] = {"exists": facts.signed, "status": facts.status,
                                 # Catalog-signed: the Authenticode SHA-256, its member tag.
                                 "digest": facts.authenticode_sha256 if facts.signed else ""}
    if facts.catalog is not None:
        signature["catalog"] = facts.catalog
    if facts.signatures:
        primary = facts.signatures[0]
        signature.update(subject_name=primary.subject, issuer=primary.issuer,
                         thumbprint=primary.thumbprint,
                         signatures=[_signature_fields(s) for s in facts.signatures])
    return {"pe": pe, "code_signature": signature,
            "hash": {"md5": facts.md5, "sha1": facts.sha1, "sha256": facts.sha256}}


# QLOG writes the parent's Imagefilename and KernelImagefilename as "" (the seed's Explorer),
# and both enter the TTPHash. Set so always: known only when the sensor saw the parent start,
# they would make one execution's hash depend on how long the sensor had been running.
QLOG_PARENT_NAMES = MappingProxyType({"name": "", "kernel_image_name": ""})


@dataclass
class WindowsEnricher:
    inspector: ProcessInspector
    files: FileSource
    host: dict[str, Any]
    table: ProcessTable = field(default_factory=ProcessTable)
    roots: list[Any] | None = None
    fingerprints: ttphash.Memo = field(default_factory=ttphash.Memo)
    trust: Callable[[str], Any] | None = None
    _pe: PECache = field(init=False)

    def __post_init__(self) -> None:
        self._pe = PECache(self.files, self.roots, self.trust)

    def _process_map(self, pid: int, image: str | None, kernel_image: str | None,
                     info: ProcessInfo | None, create_time: _dt.datetime | None) -> dict[str, Any]:
        process: dict[str, Any] = {"pid": pid}
        executable = (info.image if info and info.image else None) or image
        if executable:
            process["executable"] = executable
            process["name"] = ntpath.basename(executable).upper()
        if kernel_image:
            process["kernel_image_name"] = ntpath.basename(kernel_image).upper()
        if create_time is not None:
            process["start"] = utc_timestamp(create_time)
        if info is not None:
            process["running"] = info.running
            if info.command_line is not None:
                process["command_line"] = info.command_line
            if info.working_directory is not None:
                process["working_directory"] = info.working_directory
            if info.integrity_level is not None:
                process["integrity_level"] = info.integrity_level
            if info.module_count is not None:
                process["module_count"] = info.module_count
            user: dict[str, Any] = {}
            if info.user_sid:
                user["sid"] = info.user_sid
            if info.user_name:
                domain, _, name = info.user_name.rpartition("\\")
                user["name"] = name
                if domain:
                    user["domain"] = domain
            if user:
                process["user"] = user
        if executable:
            on_disk, facts = self._pe.facts(executable)
            process["on_disk"] = on_disk
            if facts is not None:
                process.update(_pe_fields(facts))
        return process

    def build(self, start: ProcessStart) -> Event:
        """The event of a process start (common/process_event.py does the parent, the table
        record and the TTPHash)."""
        when = StartTime(start.create_time, start.logged_time)
        info = self.inspector.describe(start.pid, when)
        process = self._process_map(start.pid, start.image, start.image, info, when.moment)
        if "integrity_level" not in process and start.integrity_level:
            process["integrity_level"] = start.integrity_level  # v3 events carry it
        process["creator_pid"] = start.creator_pid
        start_key = when.moment.timestamp() if when.moment else None
        return process_create(self.table, self.host, "etw", process, pid=start.pid,
                              start_key=start_key, ppid=start.ppid, parents=self,
                              timestamp=when.moment,
                              original_id=str(start.sequence) if start.sequence else None,
                              memo=self.fingerprints, parent_fields=QLOG_PARENT_NAMES)

    def running(self, entry: Entry) -> bool:
        """Whether the process of ``entry`` still runs: not another that has its pid now,
        not one that exited while a handle keeps it in the table."""
        started = None if entry.start_key is None else StartTime(logged=_dt.datetime.fromtimestamp(
            entry.start_key, _dt.timezone.utc))
        return self.inspector.running(entry.pid, started)

    def unknown(self, ppid: int, child_start: float | None) -> dict[str, Any] | None:
        """A parent the table does not know, as the live process (unless its pid was reused
        after the child was created)."""
        described = self.inspector.describe(ppid, None)
        if described is None:
            return None
        if described.create_time and child_start is not None \
                and described.create_time.timestamp() > child_start:
            return None  # that pid was reused after the child was created
        return dict(self._process_map(ppid, described.image, None, described, None),
                    running=described.running)
