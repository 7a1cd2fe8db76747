"""Cross-check: the audit and eBPF exec streams against each other.

Each exec is keyed by (pid, argv). An exec seen by one source waits up to ``window`` seconds for
its twin from the other; if none comes, it becomes an ``exec_unmatched`` event naming the source
that saw it and the one that missed it, with running counts. No single-source sensor can see
this: a deleted audit rule, a tampered probe, or loss on one path shows up here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from common.percent import to_bytes
from common.schema import Event, new_event

SOURCES = ("auditd", "ebpf")
DEFAULT_WINDOW = 5.0
MAX_PENDING = 100_000

Key = tuple[int, tuple[bytes, ...]]


def exec_key(event: Event) -> Key:
    process = event.get("process") or {}
    args = tuple(to_bytes(a) if a is not None else b"" for a in process.get("args") or [])
    return (int(process.get("pid") or 0), args)


@dataclass
class CrossCheck:
    host: dict[str, Any]
    window: float = DEFAULT_WINDOW
    matched: int = 0
    unmatched: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SOURCES})
    _pending: dict[str, OrderedDict[Key, tuple[float, Event]]] = field(
        default_factory=lambda: {s: OrderedDict() for s in SOURCES})

    def add(self, source: str, event: Event, now: float | None = None) -> list[Event]:
        """Take a successful exec event from ``source``; return unmatched-exec events due."""
        now = time.monotonic() if now is None else now
        other = SOURCES[1] if source == SOURCES[0] else SOURCES[0]
        key = exec_key(event)
        if self._pending[other].pop(key, None) is not None:
            self.matched += 1
        else:
            pending = self._pending[source]
            pending[key] = (now, event)
            if len(pending) > MAX_PENDING:
                _, (_, oldest) = pending.popitem(last=False)
                return [self._unmatched(source, oldest)] + self.expire(now)
        return self.expire(now)

    def expire(self, now: float | None = None, everything: bool = False) -> list[Event]:
        now = time.monotonic() if now is None else now
        out = []
        for source in SOURCES:
            pending = self._pending[source]
            while pending:
                key, (seen, event) = next(iter(pending.items()))
                if not everything and now - seen < self.window:
                    break
                del pending[key]
                out.append(self._unmatched(source, event))
        return out

    def _unmatched(self, source: str, event: Event) -> Event:
        self.unmatched[source] += 1
        missed_by = SOURCES[1] if source == SOURCES[0] else SOURCES[0]
        report = new_event("exec_unmatched", "ttpsensor", host=self.host)
        report["event"]["kind"] = "alert"
        report["process"] = {k: event["process"][k] for k in
                             ("pid", "executable", "args", "parent") if k in event["process"]}
        report["ttpsensor"] = {"crosscheck": {
            "seen_by": source, "missed_by": missed_by, "event_id": event["event"]["id"],
            "matched": self.matched, "unmatched": dict(self.unmatched)}}
        return report

    def summary(self) -> dict[str, Any]:
        return {"matched": self.matched, "unmatched": dict(self.unmatched),
                "pending": {s: len(p) for s, p in self._pending.items()}}
