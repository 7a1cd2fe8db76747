"""Failed exec attempts of a PATH walk, folded into the exec that follows them.

``execvp("bash")`` tries every directory of ``PATH`` in turn: each miss is a failed execve
(ENOENT, or ENOTDIR for a PATH entry that is a file) before the one that succeeds. On an
ordinary machine these misses outnumber real execs. By default a process's ENOENT/ENOTDIR
attempts are held until its next successful exec and then folded into that event as
``process.exec_attempts`` (how many, the errors, the paths tried, up to
:data:`MAX_PATHS`). Attempts that no successful exec follows within ``window`` seconds, and
every other failure (EACCES, EPERM, ENOEXEC, ...), stay events of their own. The audit and eBPF
sources go through the same folder, so they report the same events.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from common.schema import ACTION_PROCESS_CREATE, Event

FOLDED_ERRORS = {-2: "ENOENT", -20: "ENOTDIR"}
DEFAULT_WINDOW = 2.0
MAX_PATHS = 16          # paths listed per folded exec; the count is always exact
MAX_HELD_PER_PROCESS = 64
MAX_PROCESSES = 4096    # processes with attempts held at once


@dataclass
class _Held:
    since: float
    events: list[Event] = field(default_factory=list)


@dataclass
class AttemptFolder:
    keep_all: bool = False          # every attempt an event of its own (nothing folded)
    window: float = DEFAULT_WINDOW
    folded: int = 0                 # attempts folded into a later exec's event
    unfolded: int = 0               # held attempts released as events of their own
    _held: OrderedDict[int, _Held] = field(default_factory=OrderedDict)

    def take(self, event: Event, now: float | None = None) -> list[Event]:
        """The events to write now, in order, for one more ``event`` of the stream."""
        ev = event.get("event") or {}
        if not self._held and ev.get("outcome") != "failure":
            return [event]  # the usual event: nothing held, nothing to hold
        # The clock is read only when something is or will be held (the usual event is not).
        out = self.expire(now) if self._held else []
        process = event.get("process")
        if self.keep_all or ev.get("action") != ACTION_PROCESS_CREATE or not process:
            out.append(event)
            return out
        pid = process.get("pid")
        if ev.get("outcome") == "failure" and process.get("exit_code") in FOLDED_ERRORS:
            held = self._held.get(pid)
            if held is None:
                held = self._held[pid] = _Held(time.monotonic() if now is None else now)
                if len(self._held) > MAX_PROCESSES:
                    out += self._release(next(iter(self._held)))
            held.events.append(event)
            if len(held.events) > MAX_HELD_PER_PROCESS:
                self.unfolded += 1
                out.append(held.events.pop(0))
            return out
        if ev.get("outcome") == "success" and pid in self._held:
            attempts = self._held.pop(pid).events
            self.folded += len(attempts)
            process["exec_attempts"] = _summary(attempts)
        out.append(event)
        return out

    def expire(self, now: float | None = None, everything: bool = False) -> list[Event]:
        """Held attempts no exec followed within the window, as events of their own."""
        now = time.monotonic() if now is None else now
        out: list[Event] = []
        while self._held:
            pid, held = next(iter(self._held.items()))
            if not everything and now - held.since < self.window:
                break
            out += self._release(pid)
        return out

    def _release(self, pid: int) -> list[Event]:
        events = self._held.pop(pid).events
        self.unfolded += len(events)
        return events

    def summary(self) -> dict[str, int]:
        return {"folded": self.folded, "unfolded": self.unfolded,
                "held": sum(len(h.events) for h in self._held.values())}


def _summary(attempts: list[Event]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for event in attempts:
        name = FOLDED_ERRORS[event["process"]["exit_code"]]
        errors[name] = errors.get(name, 0) + 1
    return {"count": len(attempts), "errors": errors,
            "paths": [e["process"].get("executable") for e in attempts[:MAX_PATHS]]}
