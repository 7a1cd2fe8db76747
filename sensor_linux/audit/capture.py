"""Read now, build later: the live audit sources' first look at each exec.

The live sources read their records every 20 ms but build the events every 500 ms
(sensor_linux/batching.py: on these VMs work after a pause runs slower, so larger batches cost
less per event). What only a live process shows cannot wait that long: a process of a few
milliseconds takes its ``/proc/PID/exe`` (and a memfd image with it), its cgroup and, when it
was a parent nobody saw start, its own facts. So as each line is read, the SYSCALL record of an
exec is recognized from its text alone (``events.exec_head``, no parse) and those facts are read
at once (``Enricher.capture``); the lines wait, and the event builder takes the facts by the
event's key when it builds it. Everything else in the event comes from the records as before.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from common.pipeline import Pipeline
from common.sinks import Output, Sink
from sensor_linux.audit.assemble import EventKey
from sensor_linux.audit.events import exec_head
from sensor_linux.audit.pipeline import audit_pipeline
from sensor_linux.batching import BUILD_SECONDS, Gather
from sensor_linux.enrich import Enricher
from sensor_linux.procfs import LiveFacts

# Execs read and not built yet at most: a bound on what lines that never become an event (a
# record the parser refuses) can leave behind, and on the image descriptors held open.
MAX_CAPTURED = 4096
# Lines waiting to be parsed at most, beyond one read's (then they are, at once): a bound on
# memory when execs come faster than a build's worth. An exec is about eight lines of some
# 160 bytes, so this keeps the 500 ms cadence up to about 2,000 execs/s in under 2 MB. Lines
# can be 9 KB (long command lines), so their bytes are bounded too.
MAX_WAITING = 8192
MAX_WAITING_BYTES = 4 << 20
# Lines parsed and built between two looks at the input while a build runs (``read_between``):
# about 128 execs, some 10 ms of building. auditd hands its records to a plugin over a UNIX
# socket that holds only a few hundred of its writes (one record each: some 26 of the lab's
# execs, plugin.ROOM_LINES), so a build of 500 ms of execs at 1000/s (35-50 ms) filled it, and
# auditd's dispatcher sat blocked in the socket's send 42 % of the time (LAUREL, which reads as
# records come: never).
CHUNK_LINES = 1024
# How a record line that may be an exec's SYSCALL record starts (with the node name or without).
_MAY_BE_EXEC = (b"type=SYSCALL ", b"node=")


class ExecCapture:
    """The live facts of the execs read and not built yet, by event key."""

    def __init__(self, enricher: Enricher, limit: int = MAX_CAPTURED) -> None:
        self.enricher = enricher
        self.limit = limit
        self._facts: OrderedDict[EventKey, LiveFacts] = OrderedDict()
        self._pending: dict[int, int] = {}  # their pids, with how many (a parent not to read)

    def scan(self, line: bytes) -> None:
        """Read the live facts now if ``line`` is the SYSCALL record of an exec."""
        head = exec_head(line)
        if head is None:
            return
        key, pid, ppid, executable = head
        if key in self._facts:
            return  # the record again (a duplicate): the first look stands
        start = key[1] + key[2] / 1000
        self._facts[key] = self.enricher.capture(pid, ppid, executable, start, self._pending)
        self._pending[pid] = self._pending.get(pid, 0) + 1
        if len(self._facts) > self.limit:
            self._forget(self._facts.popitem(last=False)[1]).close()

    def take(self, key: EventKey) -> LiveFacts | None:
        """The facts read for the event ``key`` (the builder closes them), or None."""
        facts = self._facts.pop(key, None)
        return None if facts is None else self._forget(facts)

    def _forget(self, facts: LiveFacts) -> LiveFacts:
        left = self._pending.get(facts.pid, 0) - 1
        if left > 0:
            self._pending[facts.pid] = left
        else:
            self._pending.pop(facts.pid, None)
        return facts

    def __len__(self) -> int:
        return len(self._facts)

    def close(self) -> None:
        """Close what no event took (the source is stopping)."""
        while self._facts:
            self._forget(self._facts.popitem()[1]).close()


class WaitingLines:
    """Lines read and not parsed yet: each looked at for an exec as it comes (``capture``),
    all fed to ``pipeline`` when a build is due (every ``seconds``), when MAX_WAITING lines or
    MAX_WAITING_BYTES wait, at a tick and at the stop. Without a capture every line is fed as
    it comes. A live audit source owns one, and through it its pipeline (:func:`live_audit`)."""

    def __init__(self, pipeline: Pipeline, capture: ExecCapture | None = None,
                 seconds: float = BUILD_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 new_pass: Callable[[], None] | None = None) -> None:
        self.pipeline = pipeline
        self.capture = capture
        self.builds = Gather(seconds, clock)
        self.lines: list[bytes] = []
        self.waiting_bytes = 0
        # Called before each build pass (RecentLooks.new_pass: one look at a file a pass).
        self.new_pass = new_pass
        # Called between chunks of a build (CHUNK_LINES) to read what has come meanwhile: the
        # plugin's, whose input holds little (see CHUNK_LINES). What it reads waits for the
        # next build, past the bounds above by at most one read (1 MiB) a chunk.
        self.read_between: Callable[[], None] | None = None
        self._feeding = False

    def add(self, line: bytes) -> None:
        self.add_many([line])

    def add_many(self, lines: list[bytes]) -> None:
        """Lines as they are read: each that may be an exec's SYSCALL record looked at now
        (with a capture), all kept for the next build; fed at once when MAX_WAITING lines or
        MAX_WAITING_BYTES wait, and without a capture."""
        if self.capture is None:
            self.pipeline.feed_many(lines)
            return
        scan = self.capture.scan
        for line in lines:
            # Only a SYSCALL record can be an exec (exec_head says which): the other seven of
            # an exec's eight records are passed by one test, not a call each.
            if line.startswith(_MAY_BE_EXEC):
                try:
                    scan(line)
                except Exception as exc:  # noqa: BLE001 - a bug must not stop the stream
                    # Counted and kept; the event is still built, reading /proc at the build.
                    self.pipeline.internal_error(
                        f"internal error in the first look {type(exc).__name__}: {exc}",
                        [line])
        self.lines.extend(lines)
        self.waiting_bytes += sum(map(len, lines))
        if len(self.lines) >= MAX_WAITING or self.waiting_bytes >= MAX_WAITING_BYTES:
            self.feed()  # (does nothing during a build: the reads between its chunks)

    def due_in(self) -> float | None:
        """Seconds until the waiting lines are due (None: none waits)."""
        return self.builds.due_in() if self.lines else None

    def due(self) -> bool:
        return bool(self.lines) and self.builds.due_in() == 0

    def feed_if_due(self) -> None:
        if self.due():
            self.feed()

    def feed(self) -> None:
        """Parse and build what waits, now; with ``read_between``, CHUNK_LINES at a time, the
        input read between them. (Called while a build runs, by a read between its chunks
        that found the end of the input, it does nothing: the stop builds what is left.)"""
        if self._feeding:
            return
        lines, self.lines, self.waiting_bytes = self.lines, [], 0
        self.builds.read()
        if self.new_pass is not None:
            self.new_pass()
        if self.read_between is None or len(lines) <= CHUNK_LINES:
            self.pipeline.feed_many(lines)
            return
        self._feeding = True
        try:
            for start in range(0, len(lines), CHUNK_LINES):
                if start:
                    self.read_between()
                self.pipeline.feed_many(lines[start:start + CHUNK_LINES])
        finally:
            self._feeding = False

    def tick(self) -> None:
        """The source's periodic work: what waits first, then the decoder's timeouts (the
        older lines before what timed out after them)."""
        self.feed()
        self.pipeline.tick()

    def close(self) -> None:
        """The stop: what waits, then everything the pipeline holds; the readings no event
        took are closed."""
        self.feed()
        self.pipeline.close()
        if self.capture is not None:
            self.capture.close()


def live_audit(fmt: str, sink: Output, enricher: Enricher | None, error_log: Sink,
               keep_exec_attempts: bool) -> WaitingLines:
    """A live audit source's pipeline (audit_pipeline in ``fmt``) behind its waiting lines;
    with an enricher (not the laurel format), each exec's live facts are read at the first
    look and its event built later, the execs of a build pass sharing one look at each
    executable's file (RecentLooks.new_pass)."""
    capture = ExecCapture(enricher) if enricher is not None else None
    pipeline = audit_pipeline(fmt, sink, enricher=enricher, error_log=error_log,
                              keep_exec_attempts=keep_exec_attempts, captured=capture)
    return WaitingLines(pipeline, capture,
                        new_pass=enricher.looks.new_pass if enricher is not None else None)
