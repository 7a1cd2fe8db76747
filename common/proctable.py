"""The process table: what is known about each live process, for parent context.

Sources record every process they learn about (exec, fork, a /proc scan) and remove it on exit.
An entry holds the ``process`` map of that process's event, so a child's ``process.parent`` is a
copy of it. The table is bounded (least recently used entries go first) and guards against PID
reuse: an entry whose start is later than the child's start cannot be its parent.

Start keys are seconds since the epoch. /proc derives start times from the boot time, which the
kernel reports in whole seconds, so comparisons allow :data:`START_TOLERANCE` of slack.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

# Live processes on a busy host number in the low thousands; the rest are recently exited ones
# kept as parents of late events. Bounded so that a fork-bomb or a long replay stays small.
DEFAULT_MAX_ENTRIES = 16384
START_TOLERANCE = 1.0
# Layouts of process maps remembered (a handful per source: failed execs, scripts, Windows).
MAX_LAYOUTS = 256

# Fields of a process map that describe the process itself and are copied into a child's parent.
PARENT_FIELDS = ("pid", "name", "executable", "args", "command_line", "working_directory",
                 "hash", "on_disk", "user", "real_user", "saved_user", "group", "tty",
                 "start", "entity_id", "package", "container", "audit", "pe", "code_signature",
                 "integrity_level", "kernel_image_name")


@dataclass(slots=True)
class Entry:
    pid: int
    start_key: float | None     # start, seconds since the epoch; None when unknown
    process: dict[str, Any]     # the process map of the event that introduced it
    event_id: str | None = None
    gone: bool = False          # found exited by the last prune
    # What the TTPHash reads of this process as a parent, by its isRunning then by OS:
    # children of one parent read it once (common.ttphash.Memo.compute).
    hash_parts: dict[Any, Any] | None = None


class ProcessTable:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self.evicted = 0
        # The PARENT_FIELDS of a process map by the layout of its keys (_parent_fields).
        self._layouts: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.reuse_rejected = 0
        self.pruned = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, pid: int) -> bool:
        return pid in self._entries

    def record(self, entry: Entry) -> None:
        """Insert or replace the entry for ``entry.pid`` (an exec replaces the image).

        Only the fields a child's ``process.parent`` uses are kept: an entry must not pin the
        whole event (and through it its own parent's) in memory."""
        entry.process = self._parent_fields(entry.process)
        entries = self._entries
        entries[entry.pid] = entry
        entries.move_to_end(entry.pid)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evicted += 1

    def _parent_fields(self, process: dict[str, Any]) -> dict[str, Any]:
        """A copy of the PARENT_FIELDS of ``process``, in their order. Which of them a map
        has is found once per layout of its keys (a source builds its maps in one order),
        not by a test of each field per event. A comprehension copies them: fewer
        instructions than ``dict(zip(names, map(process.__getitem__, names)))``, whose
        method-wrapper call per name costs more than the loop (1 % of an eBPF event)."""
        layout = tuple(process)
        names = self._layouts.get(layout)
        if names is None:
            names = tuple(k for k in PARENT_FIELDS if k in process)
            if len(self._layouts) < MAX_LAYOUTS:
                self._layouts[layout] = names
        return {name: process[name] for name in names}

    def get(self, pid: int) -> Entry | None:
        return self._entries.get(pid)

    def parent_of(self, ppid: int | None, child_start_key: float | None) -> Entry | None:
        """The entry for ``ppid`` if it can be the parent of a child started at that key."""
        if ppid is None:
            return None
        entry = self._entries.get(ppid)
        if entry is None:
            return None
        if (entry.start_key is not None and child_start_key is not None
                and entry.start_key > child_start_key + START_TOLERANCE):
            self.reuse_rejected += 1  # the pid was reused after the child was born
            return None
        self._entries.move_to_end(ppid)
        return entry

    def remove(self, pid: int) -> None:
        self._entries.pop(pid, None)

    def prune(self, alive: Callable[[int], bool]) -> int:
        """Drop entries of processes found gone on two consecutive calls (a grace period for
        events of a process that arrive after it exited). Returns how many were dropped."""
        dropped = 0
        for pid in list(self._entries):
            entry = self._entries[pid]
            if alive(pid):
                entry.gone = False
            elif entry.gone:
                del self._entries[pid]
                dropped += 1
            else:
                entry.gone = True
        self.pruned += dropped
        return dropped


def parent_context(entry: Entry, running: bool | None) -> dict[str, Any]:
    """The ``process.parent`` map built from a table entry."""
    parent = dict(entry.process)  # record() kept only PARENT_FIELDS, in their order
    parent["running"] = running
    if entry.event_id is not None:
        parent["event_id"] = entry.event_id
    return parent
