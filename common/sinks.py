"""Where rendered events go: JSON lines on stdout, or a file rotated by size.

A sink takes already-rendered lines (``str`` without the newline); it knows nothing about the
source or the schema. Rotation follows LAUREL's scheme: ``file`` -> ``file.1`` ... ``file.N``,
new files are created 0600 because events carry command lines and user names.
"""

from __future__ import annotations

import os
import sys
from typing import Protocol, TextIO

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_GENERATIONS = 5


class Sink(Protocol):
    def write(self, line: str) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class StreamSink:
    """Lines to a text stream (stdout by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def write(self, line: str) -> None:
        self._stream.write(line + "\n")

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.flush()


class RotatingFileSink:
    """Lines to ``path``, rotated when the next line would pass ``max_bytes``.

    Keeps ``generations`` old files (``path.1`` newest). Text is written as UTF-8 with
    ``surrogateescape`` so a stray byte can never make a write fail.
    """

    def __init__(self, path: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 generations: int = DEFAULT_GENERATIONS) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if generations < 0:
            raise ValueError("generations must be zero or more")
        self.path = path
        self.max_bytes = max_bytes
        self.generations = generations
        self._file = self._open()
        self._size = os.fstat(self._file.fileno()).st_size

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file may have been created with other bits
        return os.fdopen(fd, "ab")

    def write(self, line: str) -> None:
        data = line.encode("utf-8", "surrogateescape") + b"\n"
        if self._size and self._size + len(data) > self.max_bytes:
            self.rotate()
        self._file.write(data)
        self._size += len(data)

    def rotate(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.generations == 0:
            os.unlink(self.path)
        else:
            for n in range(self.generations - 1, 0, -1):
                older = f"{self.path}.{n}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._file = self._open()
        self._size = 0

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.flush()
        self._file.close()


def open_sink(target: str, max_bytes: int = DEFAULT_MAX_BYTES,
              generations: int = DEFAULT_GENERATIONS) -> Sink:
    """``-`` is stdout; anything else is a rotated file."""
    if target == "-":
        return StreamSink()
    return RotatingFileSink(target, max_bytes, generations)
