"""Assemble records into events, keyed by ``(node, timestamp:serial)``.

Kernel records of multi-record events (types 1300-2099 and LOGIN) wait for their EOE; user-space
records are events of their own. Events whose EOE never comes (auditd over the network drops
them, some types have none, input may be cut) are flushed when the audit clock has moved
``timeout_ms`` past them, or when they have waited ``wall_timeout`` seconds of real time (so an
idle system still flushes), or at the end of input. Records may arrive interleaved and in any
order. Completed ids are remembered for ``done_ms`` of audit time to reject duplicates, the
last ``max_done`` of them at most (kernel and user-space ids each), so that memory does not
follow the event rate.

A log as auditd writes it to disk carries no EOE records. Until the stream has shown an EOE, a
PROCTITLE closes its event once its SYSCALL is there: at syscall exit the kernel writes SYSCALL,
the auxiliary records and PROCTITLE last, just before the EOE (audit_log_exit), so nothing of
that event can follow (records logged during the syscall, CONFIG_CHANGE or AVC, come before).
Waiting for a timeout instead held every event for seconds (memory, and a slow release). An
EOE that does come after such a close is absorbed, and from then on events wait for their EOE
as usual.

With ``ordered`` (the default), completed events are released in event-id order: one that
completes while an earlier event is still open waits for it (or for its timeout). Consumers that
follow processes need this: in a reordered stream a child's exec would otherwise be seen before
the clone that created the child.

Under load the kernel can hold an event's records back: when its backlog is full, a task
writing the records of its syscall waits in ``audit_log_start`` (up to ``backlog_wait_time``,
60 s by default) between its SYSCALL record and the next, while other tasks' records get in.
auditd's log of 2,000 execs/s on two busy CPUs had execs whose EXECVE, CWD, PATH and PROCTITLE
came up to 85,000 lines and 8.9 s of audit time after their SYSCALL. So an event that has its
SYSCALL but not its PROCTITLE (the kernel's last record before the EOE), in a stream known to
carry what completes events (EOE records, or PROCTITLE records that closed events before), does
not time out after ``timeout_ms``: it *lingers*, for ``linger_ms`` of audit time or
``linger_wall`` seconds more (whichever ends first), at most MAX_LINGERING of them. A lingering
event no longer holds back the release of later events (it comes out late, out of id order,
when its records come or its linger ends), and its records still join it. Before, they were
rejected as a finished event's and the exec went out without its arguments.

Problems never stop assembly: a duplicate record or an EOE for no open event is set aside in
:attr:`Assembler.rejected` with its reason, and counted.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sensor_linux.audit.records import DAEMON, EOE, MULTIPART, PROCTITLE, SYSCALL, Record

DEFAULT_TIMEOUT_MS = 5_000
DEFAULT_WALL_TIMEOUT = 5.0
DEFAULT_DONE_MS = 120_000
# The kernel's default backlog_wait_time: the longest one record of an event waits for room.
DEFAULT_LINGER_MS = 60_000
DEFAULT_LINGER_WALL = 60.0
# Events lingering at most (the oldest times out first): memory stays bounded when the kernel
# lost the rest of many events.
MAX_LINGERING = 4096
# Completed event ids remembered for duplicate detection at most (each of the two sets), the
# oldest forgotten first: at 1000 events a second the window is 33 s instead of 120, and memory
# stays bounded whatever the rate (about 230 bytes an id, 7.5 MiB at most a set; before,
# 100,000 execs stamped within 100 s held 100,000 ids, some 20 MiB).
DEFAULT_MAX_DONE = 32_768
DEFAULT_MAX_INFLIGHT = 100_000
MAX_TRACKED_GAP = 1000
# More records than any kernel event has (an argv at the kernel's limit is a few hundred
# EXECVE records): the rest of a bigger one is rejected, counted and kept.
MAX_RECORDS_PER_EVENT = 4096
# Events closed by their PROCTITLE whose EOE may still come (only before the first EOE).
MAX_EARLY_CLOSED = 4096

EventKey = tuple[bytes | None, int, int, int]  # node, seconds, milliseconds, serial


@dataclass
class AuditEvent:
    """All records of one audit event, in arrival order."""

    node: bytes | None
    sec: int
    msec: int
    serial: int
    records: list[Record] = field(default_factory=list)
    complete: bool = False          # EOE or closing PROCTITLE seen, or a user-space record
    arrived: float = 0.0            # monotonic time of the first record
    # What /proc showed when a live source read the exec, for its event built later
    # (sensor_linux/procfs.py: LiveFacts, read by sensor_linux/audit/capture.py).
    live: Any = None

    @property
    def id(self) -> str:
        """LAUREL's and ausearch's event id, ``1615114232.375:15558``."""
        return f"{self.sec}.{self.msec:03d}:{self.serial}"

    @property
    def timestamp_ms(self) -> int:
        return self.sec * 1000 + self.msec


@dataclass
class AssemblyStats:
    events: int = 0
    completed_by_eoe: int = 0
    completed_by_proctitle: int = 0  # closed by their PROCTITLE in a stream without EOE
    late_eoe: int = 0               # the EOE of an event its PROCTITLE had closed
    timed_out: int = 0              # flushed by audit-time or wall-time timeout, without EOE
    lingered: int = 0               # past the timeout with their SYSCALL, left to wait longer
    completed_late: int = 0         # of those, completed by their EOE (or PROCTITLE) after all
    flushed_at_end: int = 0
    evicted: int = 0                # flushed early because too many events were open
    duplicates: int = 0
    spurious_eoe: int = 0
    serial_gaps: int = 0            # serial numbers never seen (records lost before us)


class Assembler:
    def __init__(self, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                 wall_timeout: float = DEFAULT_WALL_TIMEOUT, done_ms: int = DEFAULT_DONE_MS,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, ordered: bool = True,
                 max_done: int = DEFAULT_MAX_DONE, linger_ms: int = DEFAULT_LINGER_MS,
                 linger_wall: float = DEFAULT_LINGER_WALL) -> None:
        """``linger_ms``/``linger_wall``: how much longer than the timeouts an event that has
        its SYSCALL and not its PROCTITLE waits for the rest of its records (0: not at all)."""
        if max_done <= 0:
            raise ValueError("max_done must be positive")
        self.timeout_ms = timeout_ms
        self.wall_timeout = wall_timeout
        self.linger_ms = linger_ms
        self.linger_wall = linger_wall
        self.done_ms = done_ms
        self.max_done = max_done
        # Trimmed back to max_done when an eighth over it: one pass from the front of the
        # dict per trim (a dict's front is slow to pop one at a time).
        self._done_ceiling = max_done + max(1, max_done // 8)
        self.max_inflight = max_inflight
        self.ordered = ordered
        self._ready: list[tuple[tuple[int, int, int, bytes], int, AuditEvent]] = []  # heap
        self._released = 0
        self.stats = AssemblyStats()
        self.rejected: list[tuple[str, Record]] = []
        self._inflight: dict[EventKey, AuditEvent] = {}
        # Completed ids -> audit time (ms). Kept apart for user-space records, because a user
        # message (SERVICE_START) shares its id with the kernel event of the sendto() carrying it.
        self._done: dict[EventKey, int] = {}
        self._done_user: dict[EventKey, int] = {}
        self._clock_ms = 0                         # newest audit time seen
        # Serial-gap accounting per node: the highest serial seen, and recent missing ones (a
        # late record fills its gap again).
        self._max_serial: dict[bytes | None, int] = {}
        self._missing: dict[bytes | None, _MissingSerials] = {}
        self._next_expire_ms = 0
        # Open events by (time, serial, node), oldest first, for expiry, eviction and ordered
        # release without scanning every open event per record (lazy: entries of events that
        # closed meanwhile are skipped when they reach the top).
        self._open: list[tuple[tuple[int, int, int, bytes], int, EventKey]] = []
        self._opened = 0
        self._eoe_seen = False
        # The event the last record opened, while it stays open (see add).
        self._last: AuditEvent | None = None
        self._closed_early: OrderedDict[EventKey, None] = OrderedDict()
        # Timed-out events still waiting for their records, in the order they began to linger
        # (so their deadlines too): key -> (event, audit-time deadline ms, wall deadline).
        self._lingering: OrderedDict[EventKey, tuple[AuditEvent, int, float]] = OrderedDict()

    @property
    def inflight(self) -> int:
        return len(self._inflight)


    def add(self, record: Record, now: float | None = None) -> list[AuditEvent]:
        """Take one record; return the events it completed or that timed out meanwhile."""
        last = self._last
        if last is not None and record.serial == last.serial and record.msec == last.msec \
                and record.sec == last.sec and record.node == last.node:
            rtype = record.rtype
            if rtype != EOE and (rtype != PROCTITLE or self._eoe_seen) \
                    and len(last.records) < MAX_RECORDS_PER_EVENT and rtype in MULTIPART:
                # The next record of the open event the last record went to: nothing else
                # to do (same time, same serial, nothing completed, no open event changed to
                # release a held one), and most records come this way. A PROCTITLE too, once
                # EOE records are known to come (without them it completes the event).
                last.records.append(record)
                return []
        done = self._add(record, now)
        if not done and not self._ready:
            return done  # most other records: nothing completed, nothing held
        return self._release(done)

    def _add(self, record: Record, now: float | None) -> list[AuditEvent]:
        out: list[AuditEvent] = []
        rtype = record.rtype
        key = (record.node, record.sec, record.msec, record.serial)
        ts = record.sec * 1000 + record.msec
        if ts > self._clock_ms:
            self._clock_ms = ts
            if ts >= self._next_expire_ms:
                self._expire_by_audit_time(out, now)
                self._next_expire_ms = ts + 1000
        if rtype not in DAEMON:  # auditd's numbers, not the kernel's: no gap against them
            self._track_serial(record.node, record.serial)
        self._last = None
        if self._lingering and (rtype == EOE or rtype in MULTIPART):
            lingering = self._lingering.get(key)
            if lingering is not None:
                self._add_late(key, lingering[0], record, out)
                return out
        if rtype == EOE:
            self._eoe_seen = True
            event = self._inflight.pop(key, None)
            if event is None:
                if key in self._closed_early:  # the EOE of an event its PROCTITLE closed
                    del self._closed_early[key]
                    self.stats.late_eoe += 1
                    return out
                self._reject("duplicate EOE" if key in self._done else "EOE for no open event",
                             record)
                return out
            self._complete_by_eoe(key, event, out)
            return out
        if rtype not in MULTIPART:
            if key in self._done_user:
                self._reject("duplicate event id", record)
                return out
            self._remember(self._done_user, key)
            self.stats.events += 1
            out.append(AuditEvent(record.node, record.sec, record.msec, record.serial, [record],
                                  complete=True))
            return out
        if key in self._done:
            self._reject("duplicate event id", record)
            return out
        event = self._inflight.get(key)
        if event is None:
            event = AuditEvent(record.node, record.sec, record.msec, record.serial,
                               arrived=time.monotonic() if now is None else now)
            self._inflight[key] = event
            self._opened += 1
            heapq.heappush(self._open, (_order_key(key), self._opened, key))
            if len(self._inflight) > self.max_inflight:
                oldest = self._oldest_open()
                assert oldest is not None
                self.stats.evicted += 1
                self._finish(oldest, self._inflight.pop(oldest), out)
        elif len(event.records) >= MAX_RECORDS_PER_EVENT:
            self._reject("too many records for one event", record)
            return out
        event.records.append(record)
        if rtype == PROCTITLE and not self._eoe_seen and _has_syscall(event):
            del self._inflight[key]
            self._close_by_proctitle(key, event, out)
        elif key in self._inflight:
            self._last = event
        return out

    def _complete_by_eoe(self, key: EventKey, event: AuditEvent,
                         out: list[AuditEvent]) -> None:
        event.complete = True
        self.stats.completed_by_eoe += 1
        self._finish(key, event, out)

    def _close_by_proctitle(self, key: EventKey, event: AuditEvent,
                            out: list[AuditEvent]) -> None:
        """Its PROCTITLE closed the event (no EOE seen yet in the stream): all its records are
        here, as surely as with an EOE, which may still come and is then absorbed."""
        self.stats.completed_by_proctitle += 1
        event.complete = True
        self._finish(key, event, out)
        self._closed_early[key] = None
        if len(self._closed_early) > MAX_EARLY_CLOSED:
            self._closed_early.popitem(last=False)  # O(1), unlike a dict's front

    def _give_up(self, key: EventKey, event: AuditEvent, out: list[AuditEvent]) -> None:
        """The event goes out without the record that would complete it."""
        self.stats.timed_out += 1
        self._finish(key, event, out)

    def _add_late(self, key: EventKey, event: AuditEvent, record: Record,
                  out: list[AuditEvent]) -> None:
        """A record of a lingering event: it joins the event, and the record that completes
        the event releases it (out of id order: later events did not wait for it)."""
        rtype = record.rtype
        if rtype == EOE:
            self._eoe_seen = True
            del self._lingering[key]
            self.stats.completed_late += 1
            self._complete_by_eoe(key, event, out)
            return
        if len(event.records) >= MAX_RECORDS_PER_EVENT:
            self._reject("too many records for one event", record)
            return
        event.records.append(record)
        if rtype == PROCTITLE and not self._eoe_seen:
            del self._lingering[key]
            self.stats.completed_late += 1
            self._close_by_proctitle(key, event, out)

    def _time_out(self, key: EventKey, event: AuditEvent, out: list[AuditEvent],
                  now: float | None) -> None:
        """An open event past its timeout (already out of the open events): it lingers if it
        has its SYSCALL but not yet its PROCTITLE, and the stream is known to carry the record
        that would complete it; else it goes out incomplete (with its PROCTITLE, only its EOE
        could still come: the kernel writes it next)."""
        closers_seen = self._eoe_seen or self.stats.completed_by_proctitle
        if self.linger_ms <= 0 or not closers_seen or not _awaits_records(event):
            self._give_up(key, event, out)
            return
        if event is self._last:
            self._last = None
        now = time.monotonic() if now is None else now
        self._lingering[key] = (event, self._clock_ms + self.linger_ms, now + self.linger_wall)
        self.stats.lingered += 1
        if len(self._lingering) > MAX_LINGERING:
            oldest, (evicted, _, _) = self._lingering.popitem(last=False)
            self._give_up(oldest, evicted, out)

    def _expire_lingering(self, out: list[AuditEvent], now: float | None) -> None:
        """Lingering events whose audit-time or (with ``now``) wall deadline has passed go out
        incomplete, oldest first."""
        lingering = self._lingering
        while lingering:
            key, (event, audit_deadline, wall_deadline) = next(iter(lingering.items()))
            if audit_deadline > self._clock_ms and (now is None or wall_deadline > now):
                return
            del lingering[key]
            self._give_up(key, event, out)

    @property
    def lingering(self) -> int:
        """Timed-out events still waiting for the rest of their records."""
        return len(self._lingering)

    def _oldest_open(self) -> EventKey | None:
        """The open event with the earliest (time, serial, node), skipping closed ones."""
        heap = self._open
        while heap and heap[0][2] not in self._inflight:
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def tick(self, now: float | None = None) -> list[AuditEvent]:
        """Flush events that have waited ``wall_timeout`` seconds of real time."""
        return self._release(self._tick(now))

    def _tick(self, now: float | None) -> list[AuditEvent]:
        now = time.monotonic() if now is None else now
        # The open events are in arrival order (dict order): the stale ones come first.
        stale = []
        for key, event in self._inflight.items():
            if now - event.arrived < self.wall_timeout:
                break
            stale.append(key)
        out: list[AuditEvent] = []
        for key in sorted(stale, key=_sort_key):
            self._time_out(key, self._inflight.pop(key), out, now)
        self._expire_lingering(out, now)
        return out

    def flush(self) -> list[AuditEvent]:
        """End of input: emit every open event, oldest first."""
        out: list[AuditEvent] = []
        waiting = {**self._inflight, **{k: v[0] for k, v in self._lingering.items()}}
        for key in sorted(waiting, key=_sort_key):
            self.stats.flushed_at_end += 1
            self._finish(key, waiting[key], out)
        self._inflight.clear()
        self._lingering.clear()
        return self._release(out)

    def _release(self, done: list[AuditEvent]) -> list[AuditEvent]:
        """In ordered mode, hold completed events until no earlier event is open."""
        if not self.ordered:
            return done
        for event in done:
            self._released += 1
            heapq.heappush(self._ready, (_order(event), self._released, event))
        if not self._ready:
            return []
        open_key = self._oldest_open()
        oldest_open = None if open_key is None else _order_key(open_key)
        out: list[AuditEvent] = []
        while self._ready and (oldest_open is None or self._ready[0][0] < oldest_open):
            out.append(heapq.heappop(self._ready)[2])
        return out

    def _track_serial(self, node: bytes | None, serial: int) -> None:
        highest = self._max_serial.get(node)
        if highest is None or serial > highest:
            if highest is not None and serial > highest + 1:
                gap = serial - highest - 1
                self.stats.serial_gaps += gap
                if gap <= MAX_TRACKED_GAP:
                    missing = self._missing.get(node)
                    if missing is None:
                        missing = self._missing[node] = _MissingSerials()
                    missing.add(highest + 1, serial)
                    if missing.count > 4 * MAX_TRACKED_GAP:
                        missing.forget_to(serial - MAX_TRACKED_GAP)
            self._max_serial[node] = serial
        elif serial < highest:
            missing = self._missing.get(node)
            if missing is not None and missing.fill(serial):
                self.stats.serial_gaps -= 1

    def take_rejected(self) -> list[tuple[str, Record]]:
        rejected, self.rejected = self.rejected, []
        return rejected

    def _expire_by_audit_time(self, out: list[AuditEvent], now: float | None) -> None:
        limit = self._clock_ms - self.timeout_ms
        while True:
            key = self._oldest_open()
            if key is None or key[1] * 1000 + key[2] >= limit:
                break
            self._time_out(key, self._inflight.pop(key), out, now)
        if self._lingering:
            self._expire_lingering(out, None)
        done_limit = self._clock_ms - self.done_ms
        for done in (self._done, self._done_user):
            # Entries go in as the audit clock (which never goes back) stands: oldest first.
            expired = []
            for key, when in done.items():
                if when >= done_limit:
                    break
                expired.append(key)
            for key in expired:
                del done[key]

    def _finish(self, key: EventKey, event: AuditEvent, out: list[AuditEvent]) -> None:
        if event is self._last:
            self._last = None
        self._remember(self._done, key)
        self.stats.events += 1
        out.append(event)

    def _remember(self, done: dict[EventKey, int], key: EventKey) -> None:
        """Remember a completed id (with the audit time, for the time window), within
        max_done."""
        done[key] = self._clock_ms
        if len(done) > self._done_ceiling:
            for old in list(itertools.islice(done, len(done) - self.max_done)):
                del done[old]

    @property
    def remembered(self) -> int:
        """Completed event ids held for duplicate detection."""
        return len(self._done) + len(self._done_user)

    def _reject(self, reason: str, record: Record) -> None:
        if reason.startswith("duplicate"):
            self.stats.duplicates += 1
        else:
            self.stats.spurious_eoe += 1
        self.rejected.append((reason, record))


class _MissingSerials:
    """A node's recent serial numbers never seen, as runs ``[start, end)`` in order: a gap
    costs one entry, not one per serial. Gaps of hundreds come when the kernel drops events
    from a full backlog (its ``lost`` counter), when the sensor is busiest; kept one entry
    per serial, they cost 9-25 µs an event."""

    __slots__ = ("starts", "ends", "count")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.count = 0

    def add(self, start: int, end: int) -> None:
        """A gap above every one held."""
        self.starts.append(start)
        self.ends.append(end)
        self.count += end - start

    def fill(self, serial: int) -> bool:
        """``serial`` came after all: whether it was one of the gaps held."""
        at = bisect.bisect_right(self.starts, serial) - 1
        if at < 0 or serial >= self.ends[at]:
            return False
        start, end = self.starts[at], self.ends[at]
        if start == serial:
            self.starts[at] = serial + 1
        elif serial == end - 1:
            self.ends[at] = serial
        else:
            self.starts.insert(at + 1, serial + 1)
            self.ends.insert(at + 1, end)
            self.ends[at] = serial
        if self.starts[at] == self.ends[at]:
            del self.starts[at], self.ends[at]
        self.count -= 1
        return True

    def forget_to(self, floor: int) -> None:
        """Forget the serials up to ``floor``."""
        keep = bisect.bisect_right(self.ends, floor + 1)
        del self.starts[:keep], self.ends[:keep]
        if self.starts and self.starts[0] <= floor:
            self.starts[0] = floor + 1
        self.count = sum(end - start for start, end in zip(self.starts, self.ends))


def _has_syscall(event: AuditEvent) -> bool:
    for record in event.records:  # (SYSCALL comes first: no generator for the usual case)
        if record.rtype == SYSCALL:
            return True
    return False


def _awaits_records(event: AuditEvent) -> bool:
    """The event has its SYSCALL, and the kernel has more records of it to write (PROCTITLE,
    its last before the EOE, has not come)."""
    types = {record.rtype for record in event.records}
    return SYSCALL in types and PROCTITLE not in types


def _order(event: AuditEvent) -> tuple[int, int, int, bytes]:
    return _order_key((event.node, event.sec, event.msec, event.serial))


def _order_key(key: EventKey) -> tuple[int, int, int, bytes]:
    node, sec, msec, serial = key
    return (sec, msec, serial, node or b"")


def _sort_key(key: EventKey) -> tuple[bytes, int, int, int]:
    node, sec, msec, serial = key
    return (node or b"", sec, msec, serial)
