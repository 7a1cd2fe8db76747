"""The auditd plugin source (``ttpsensor audisp`` without a file): auditd's records on stdin,
in its string format, as a live source for the runner.

auditd starts the plugin as root and owns the audit session; the plugin holds no kernel
handle, so it drops nothing and reports no status of its own (auditd's is the kernel's).
auditd 3 hands the records over a UNIX stream socket (``socketpair``), which holds only some
26 execs' records: the plugin reads it every 20 ms, sooner when more than ROOM_LINES records (or
ROOM_BYTES) would come in that time (batching.Pacing), and between the chunks of each build
(``capture.CHUNK_LINES``), so that auditd's dispatcher, which serves every plugin on the host,
does not wait for it. Given a pipe instead (a plugin started by hand), it enlarges it.

On SIGTERM (auditd sends it before closing the socket) whatever is already in it is still
read, until EOF or until it stays empty for a moment: records auditd has handed over are never
dropped on shutdown.
"""

from __future__ import annotations

import os
import select
import time
from typing import Callable

from common.sinks import Output
from sensor_linux.audit.lines import LineSplitter
from sensor_linux.audit.pipeline import open_error_log
from sensor_linux.audit.capture import WaitingLines, live_audit
from sensor_linux.batching import BATCH_SECONDS, Pacing
from sensor_linux.enrich import Enricher
from sensor_linux.runner import BaseSource, RunConfig

DRAIN_SECONDS = 2.0      # at most this long reading what is left after SIGTERM
QUIET_SECONDS = 0.2      # ... and only while the pipe keeps delivering
PIPE_BYTES = 1 << 20
READ_BYTES = 1 << 20
# What may gather in auditd's socket between two reads. The socket counts each write (one
# record) at some 768 bytes up to 160 bytes of record, 1,280 up to 500, 2,300 for 1,000, against
# the sender's 212,992 (net.core.wmem_default): 278, 167 and 93 writes, some 26 of the lab's
# execs (eight records, four of them over 300 bytes). 160 records is what 20 ms brings at 1,000
# execs/s; 48 KB half of what 1 KB records fill it with.
ROOM_LINES = 160
ROOM_BYTES = 48 << 10


def enlarge_pipe(fd: int) -> None:
    """Room for a batch of events in a pipe while the plugin waits (see batching.py). auditd 3
    gives its plugins a socket, which the reader cannot enlarge: the pacing and read_if_ready
    keep it from filling."""
    import fcntl
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # not a pipe (auditd's socket, a file, a terminal): nothing to enlarge


class PipeInput:
    """Lines from auditd's socket (or a pipe), split on ``\\n`` only (audit/lines.py)."""

    def __init__(self, fd: int, waiting: WaitingLines) -> None:
        self.fd = fd
        self.waiting = waiting
        self.splitter = LineSplitter()
        self.eof = False
        self.pacing = Pacing(ROOM_LINES, ROOM_BYTES)
        # Read into one buffer, made at the first read: os.read() of READ_BYTES allocates
        # that much for each read of a few tens of kilobytes, which the C library maps anew
        # each time (24-26 us more a read of 24 KB than through this buffer, measured alone;
        # the netlink source does the same for its datagrams).
        self._buffer: memoryview | None = None

    def fileno(self) -> int:
        return self.fd

    def due_in(self) -> float | None:
        """Read when the pipe is readable; due when lines wait to be built."""
        return self.waiting.due_in()

    def drain(self) -> float:
        """Read what the pipe holds (when it is readable: the runner also calls this when
        lines are due to be built, and a read of an empty pipe would block), then build what
        waits if it is due; the pause before the next read (batching.Pacing; none after a
        read that filled the buffer: more is waiting)."""
        if self.waiting.due() and not _readable(self.fd):
            self.waiting.feed_if_due()
            return BATCH_SECONDS
        size, lines = self._read()
        self.waiting.feed_if_due()
        pause = self.pacing.pause(lines, size)  # (measured from every read, a full one too)
        return 0.0 if size == READ_BYTES else pause

    def read_if_ready(self) -> None:
        """Read what has come, if anything has (between the chunks of a build); the pacing
        measures the rate from this read on."""
        if not self.eof and _readable(self.fd):
            size, lines = self._read()
            self.pacing.pause(lines, size)

    def _read(self) -> tuple[int, int]:
        """Read once; the bytes read (0: the end of the input) and the lines they ended."""
        if self._buffer is None:
            self._buffer = memoryview(bytearray(READ_BYTES))
        size = os.readv(self.fd, [self._buffer])
        if not size:
            self.end()
            return 0, 0
        lines = self.splitter.feed(self._buffer[:size].tobytes())
        self.waiting.add_many(lines)
        return size, len(lines)

    def end(self) -> None:
        if not self.eof:
            self.eof = True
            self.waiting.add_many(self.splitter.finish())
            self.waiting.feed()

    def drain_after_stop(self) -> None:
        """What auditd handed over before closing: read until EOF, or until the pipe stays
        empty for QUIET_SECONDS, for at most DRAIN_SECONDS."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while not self.eof and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], QUIET_SECONDS)
            if not ready:
                break
            self.drain()
        self.end()


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


class PluginSource(BaseSource):
    name = "audisp"
    seed = True

    def __init__(self, config: RunConfig, sink: Output, say: Callable[[str], None],
                 fd: int = 0) -> None:
        self.enricher = Enricher(live=True) if config.fmt != "laurel" else None
        self.error_log = open_error_log(config.parse_error_log, config.max_bytes,
                                        config.generations)
        # Each exec's live facts read as it is read, its event built later (capture.py).
        self.waiting = live_audit(config.fmt, sink, self.enricher, self.error_log,
                                  config.keep_exec_attempts)
        self.input = PipeInput(fd, self.waiting)
        self.waiting.read_between = self.input.read_if_ready

    def open(self) -> None:
        enlarge_pipe(self.input.fd)

    def inputs(self) -> list[PipeInput]:
        return [self.input]

    def files(self) -> list[str]:
        return [self.error_log.path]

    def tick(self) -> None:
        self.waiting.tick()

    def done(self) -> bool:
        return self.input.eof

    def finish(self) -> None:
        self.input.drain_after_stop()
        self.waiting.close()

    def close(self) -> None:
        self.error_log.close()

    def summary(self) -> dict[str, object]:
        out = self.waiting.pipeline.summary()
        if self.error_log.opened:
            out["parse_error_log"] = self.error_log.path
        return out
