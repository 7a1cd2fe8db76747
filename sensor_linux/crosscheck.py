"""Cross-check: the audit and eBPF exec streams against each other.

Both sources report an exec with the kernel's own facts, so they describe it identically: the
key is the pid and the argument vector the new image received (its first
:data:`KEY_ARG_BYTES` bytes, which the probes always carry whole). An exec seen by one source
waits up to ``window`` seconds for its twin from the other; if none comes, it becomes an
``exec_unmatched`` event naming the source that saw it and the one that missed it, with running
counts. No single-source sensor can see this: a deleted audit rule, a tampered probe, or loss
on one path shows up here.

What one source cannot see by design is not a miss: execs that began before both sources were
listening (``start``), and execs the kernel makes itself (usermode helpers call no execve,
which is what audit's rules match); they are counted, not reported. At shutdown, execs still
within their window are counted as unsettled rather than reported: their twin may be in
flight.

Audit records nothing of a task that has no audit context, which the probes see at each exec
(``ttpsensor.unaudited_task``). The kernel gives none to a task created before audit was first
enabled on this boot, or one a ``task,never`` rule excluded when it was created. A task created
before both sources listened is counted (``unaudited_before_start``), as its exec is no sign
of anything done since: on a machine booted without ``audit=1`` that is every process older
than audit, such as a shell that ``exec``s a program. Any other such exec is reported at once
(its twin cannot come) with the reason ``excluded_by_task_rule``: audit was on when the task
was created (the sensor had turned it on, or the kernel was booted with it), so only a task
rule can have hidden the task from audit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from common.percent import to_bytes
from common.schema import Event, new_event, utc_timestamp

SOURCES = ("auditd", "ebpf")
DEFAULT_WINDOW = 5.0
MAX_PENDING = 100_000
KEY_ARG_BYTES = 4096
START_MARGIN = 1.0           # seconds after the start during which a miss is not reported

Key = tuple[int, bytes]


def exec_key(event: Event) -> Key:
    process = event.get("process") or {}
    args = b"\0".join(to_bytes(a) if a is not None else b"\xff<lost>"
                      for a in process.get("args") or [])
    return (int(process.get("pid") or 0), args[:KEY_ARG_BYTES])


@dataclass
class CrossCheck:
    host: dict[str, Any]
    window: float = DEFAULT_WINDOW
    start: float | None = None      # wall-clock time from which both sources listen
    audit_at_boot: bool = False     # the kernel was booted with audit=1 (session.audit_at_boot)
    matched: int = 0
    unmatched: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SOURCES})
    before_start: int = 0
    unaudited_before_start: int = 0
    kernel_execs: int = 0
    unsettled: int = 0
    _start_cutoff: str | None = None  # process.start form of start + START_MARGIN
    # key -> (when it arrived, the event, whether a miss would be reported)
    _pending: dict[str, OrderedDict[Key, tuple[float, Event, bool]]] = field(
        default_factory=lambda: {s: OrderedDict() for s in SOURCES})

    def __post_init__(self) -> None:
        if self.start is not None:
            self._start_cutoff = utc_timestamp(self.start + START_MARGIN)

    def add(self, source: str, event: Event, now: float | None = None) -> list[Event]:
        """Take a successful exec event from ``source``; return unmatched-exec events due."""
        now = time.monotonic() if now is None else now
        marks = event.get("ttpsensor", {})
        if marks.get("kernel_exec"):
            self.kernel_execs += 1
            return self.expire(now)
        if marks.get("unaudited_task"):
            return self._unaudited(source, event) + self.expire(now)
        other = SOURCES[1] if source == SOURCES[0] else SOURCES[0]
        key = exec_key(event)
        if self._pending[other].pop(key, None) is not None:
            self.matched += 1
        else:
            pending = self._pending[source]
            pending[key] = (now, event, not self._near_start(event))
            if len(pending) > MAX_PENDING:
                _, oldest = pending.popitem(last=False)
                return self._settle(source, oldest) + self.expire(now)
        return self.expire(now)

    def _unaudited(self, source: str, event: Event) -> list[Event]:
        """An exec by a task audit does not record (see the module's docstring)."""
        created = event["ttpsensor"].get("task_start")
        if self._start_cutoff is not None and not self.audit_at_boot and (
                not isinstance(created, str) or self._before_cutoff(created)):
            self.unaudited_before_start += 1
            return []
        return [self._unmatched(source, event, reason="excluded_by_task_rule")]

    def _near_start(self, event: Event) -> bool:
        """Began before both sources listened, or so close to it that one of them may have
        missed it for that reason alone."""
        return self._before_cutoff((event.get("process") or {}).get("start"))

    def _before_cutoff(self, when: object) -> bool:
        """``when`` (a timestamp as the events write it) is before start + START_MARGIN."""
        # ISO 8601 UTC with a fixed width: it sorts as text.
        return (self._start_cutoff is not None and isinstance(when, str)
                and when < self._start_cutoff)

    def expire(self, now: float | None = None) -> list[Event]:
        now = time.monotonic() if now is None else now
        out: list[Event] = []
        for source in SOURCES:
            pending = self._pending[source]
            while pending:
                key, entry = next(iter(pending.items()))
                if now - entry[0] < self.window:
                    break
                del pending[key]
                out += self._settle(source, entry)
        return out

    def _settle(self, source: str, entry: tuple[float, Event, bool]) -> list[Event]:
        if not entry[2]:
            self.before_start += 1
            return []
        return [self._unmatched(source, entry[1])]

    def finish(self, now: float | None = None) -> list[Event]:
        """At shutdown: report what is overdue, count what is still within its window."""
        out = self.expire(now)
        for pending in self._pending.values():
            self.unsettled += len(pending)
            pending.clear()
        return out

    def _unmatched(self, source: str, event: Event, reason: str | None = None) -> Event:
        self.unmatched[source] += 1
        missed_by = SOURCES[1] if source == SOURCES[0] else SOURCES[0]
        report = new_event("exec_unmatched", "ttpsensor", host=self.host, kind="alert")
        report["process"] = {k: event["process"][k] for k in
                             ("pid", "executable", "args", "parent") if k in event["process"]}
        report["ttpsensor"] = {"crosscheck": {
            "seen_by": source, "missed_by": missed_by, "event_id": event["event"]["id"],
            "matched": self.matched, "unmatched": dict(self.unmatched)}}
        if reason is not None:
            report["ttpsensor"]["crosscheck"]["reason"] = reason
        return report

    def summary(self) -> dict[str, Any]:
        return {"matched": self.matched, "unmatched": dict(self.unmatched),
                "before_start": self.before_start, "kernel_execs": self.kernel_execs,
                "unaudited_before_start": self.unaudited_before_start,
                "unsettled_at_stop": self.unsettled,
                "pending": {s: len(p) for s, p in self._pending.items()}}

