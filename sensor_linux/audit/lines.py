"""Audit text split into lines, with bounded memory.

A kernel audit record is at most about 9 KB (MAX_AUDIT_MESSAGE_LENGTH is 8,970 bytes; auditd's
enriched form adds the names), so a line of :data:`MAX_LINE` bytes is far beyond anything real.
A longer one is cut there: its first ``MAX_LINE + 1`` bytes are passed on (the pipeline counts
it as a parse error and keeps that much), the rest is skipped up to the next newline without
being held in memory. Lines end at ``\\n`` only, for a file and a pipe alike (a ``\\r`` inside a
value is the value's business).
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

MAX_LINE = 64 * 1024
READ_BYTES = 1 << 20


class LineSplitter:
    """Feed it chunks of a byte stream; it returns the whole lines they complete."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._pending = b""
        self._skipping = False      # inside an over-long line, after its first bytes
        self.overlong = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                line = self._pending + chunk[start:newline + 1]
                out.append(line if len(line) <= self.max_line else self._cut(line))
            self._pending = b""
            start = newline + 1
        if not self._skipping:
            self._pending += chunk[start:]
            if len(self._pending) > self.max_line:
                out.append(self._cut(self._pending))
                self._pending = b""
                self._skipping = True
        return out

    def finish(self) -> list[bytes]:
        """The last line, when the stream does not end with a newline."""
        rest, self._pending = self._pending, b""
        skipping, self._skipping = self._skipping, False
        return [rest] if rest and not skipping else []

    def _cut(self, line: bytes) -> bytes:
        self.overlong += 1
        return line[:self.max_line + 1]


def read_line_batches(stream: BinaryIO, max_line: int = MAX_LINE) -> Iterator[list[bytes]]:
    """The lines of a file, each at most ``max_line + 1`` bytes (see :class:`LineSplitter`),
    in lists of those each read of READ_BYTES completes."""
    splitter = LineSplitter(max_line)
    while True:
        chunk = stream.read(READ_BYTES)
        if not chunk:
            break
        yield splitter.feed(chunk)
    yield splitter.finish()
