"""The process-create event both platforms build, around one process table.

A platform makes the ``process`` map of the new process (Linux from kernel facts, Windows from
ETW and the live process) and says how to learn about a parent the table does not know; the
rest is the same everywhere and done here: the event header, ``process.parent`` from the table
(the PID-reuse guard is the table's), the table record, and the TTPHash.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from common import ttphash
from common.proctable import Entry, ProcessTable, parent_context
from common.schema import ACTION_PROCESS_CREATE, Event, new_event


class Parents(Protocol):
    """What a platform knows about parents beyond the table."""

    def running(self, entry: Entry) -> bool | None:
        """Whether the parent of a table entry still runs (its ``isRunning``)."""
        ...

    def unknown(self, ppid: int, child_start: float | None) -> dict[str, Any] | None:
        """The ``process.parent`` map of a parent the table does not know, or None when
        nothing more than its pid can be learned."""
        ...


def parent_map(table: ProcessTable, ppid: int | None, child_start: float | None,
               parents: Parents) -> tuple[dict[str, Any] | None, dict[Any, Any] | None]:
    """``process.parent``: from the table, else from the platform, else just the pid; None
    for PID 0 (the kernel started the process: there is no parent process). With it, the
    table entry's TTPHash cache for that map when it came from the table (else None)."""
    if not ppid:
        return None, None
    entry = table.parent_of(ppid, child_start)
    if entry is not None:
        running = parents.running(entry)
        if entry.hash_parts is None:
            entry.hash_parts = {}
        return parent_context(entry, running), entry.hash_parts.setdefault(running, {})
    return parents.unknown(ppid, child_start) or {"pid": ppid}, None


def process_create(table: ProcessTable, host: dict[str, Any], provider: str,
                   process: dict[str, Any], *, pid: int, start_key: float | None,
                   ppid: int | None, parents: Parents, timestamp: Any = None,
                   original_id: str | None = None, kind: str = "event",
                   record: bool = True, memo: ttphash.Memo | None = None,
                   parent_fields: Mapping[str, Any] | None = None) -> Event:
    """A complete process-create event for ``process`` (which gains its ``parent``), recorded
    in the table unless ``record`` is false (a failed exec does not replace the caller's
    image), with its TTPHash (through the platform's ``memo``). ``parent_fields`` are set on
    any parent found, whichever way it was found (a platform's fixed values)."""
    event = new_event(ACTION_PROCESS_CREATE, provider, host=host, timestamp=timestamp,
                      original_id=original_id, kind=kind)
    parent, parent_cache = parent_map(table, ppid, start_key, parents)
    if parent is not None and parent_fields:
        parent.update(parent_fields)
        parent_cache = None  # the map is no longer the entry's alone
    process["parent"] = parent
    event["process"] = process
    if record:
        table.record(Entry(pid, start_key, process, event["event"]["id"]))
    ttphash.attach(event, memo=memo, parent_cache=parent_cache)
    return event
