"""Loss accounting made visible: a status file and periodic status events.

Every counter that says something was lost or degraded is reported, never only logged: the
kernel's lost counter and backlog, netlink socket overflows, audit serial-number gaps, parse
errors and rejected records, assemblies flushed without EOE, process-table evictions and PID
reuse, and internal errors. ``ttpsensor status`` reads the file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Protocol

from common.schema import new_event
from common.sinks import Output, emit


class _Source(Protocol):
    """What the reporter reads from a source (sensor_linux/runner.py's Source)."""

    name: str
    enricher: Any

    def lost(self) -> int: ...
    def backlog(self) -> int | None: ...
    def summary(self) -> dict[str, object]: ...


class StatusReporter:
    def __init__(self, source: _Source, sink: Output, path: str | None,
                 interval: float) -> None:
        """A status event goes to the outputs every ``interval`` (each takes it if its format
        has a form for it: ecs and the spool do, qlog and laurel do not), and the status file
        is replaced."""
        self.source = source
        self.sink = sink
        self.enricher = source.enricher
        self.path = path
        self.interval = interval
        self.started = time.time()
        self.write_failed = False
        self._next = time.monotonic() + interval
        self.write_file(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "pid": os.getpid(), "running": True, "source": self.source.name,
            "started": self.started, "updated": time.time(),
            "kernel_lost": self.source.lost(), **self.source.summary(),
        }
        backlog = self.source.backlog()
        if backlog is not None:
            stats["kernel_backlog"] = backlog
        if self.enricher is not None:
            table = self.enricher.table
            stats["process_table"] = {"entries": len(table), "evicted": table.evicted,
                                      "pruned_exited": table.pruned,
                                      "pid_reuse_rejected": table.reuse_rejected}
            hasher = self.enricher.hasher
            stats["file_hash_cache"] = {"hits": hasher.hits, "misses": hasher.misses,
                                        "errors": hasher.errors}
        return stats

    def tick(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.interval
        if self.enricher is not None and self.enricher.live:
            proc = self.enricher.proc
            self.enricher.table.prune(lambda pid: os.path.exists(f"{proc}/{pid}"))
        stats = self.snapshot()
        self.write_file(stats)
        event = new_event("sensor_status", "ttpsensor", host=getattr(self.enricher, "host", {}),
                          kind="metric")
        event["ttpsensor"] = {"status": stats}
        emit(self.sink, event)

    def final(self, summary: dict[str, Any]) -> None:
        """The last word, written when the sensor stops."""
        self.write_file({"pid": os.getpid(), "running": False, "started": self.started,
                         "updated": time.time(), **summary})

    def write_file(self, stats: dict[str, Any]) -> None:
        """Replace the status file atomically; a failure is reported once, never fatal."""
        if not self.path:
            return
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, mode=0o750, exist_ok=True)
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(stats, f, indent=1)
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self.write_failed:
                sys.stderr.write(f"ttpsensor: cannot write status file {self.path}: {exc}\n")
            self.write_failed = True


def read_status(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def flatten(stats: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten(value, f"{name}.")
        else:
            rows.append((name, value))
    return rows



def print_table(stats: dict[str, Any], alive: bool) -> None:
    """``ttpsensor status``: the counters as a table, with whether the sensor still runs."""
    from rich.console import Console
    from rich.table import Table

    age = time.time() - stats.get("updated", 0)
    state = "running" if alive else ("stopped" if not stats.get("running") else "not running "
                                     "(it did not exit cleanly)")
    table = Table(title=f"ttpsensor {state}, source {stats.get('source')}, "
                        f"updated {age:.0f} s ago")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in flatten(stats):
        if name in ("pid", "running", "source", "started", "updated"):
            continue
        table.add_row(name, str(value))
    Console().print(table)
