"""Where rendered events go: JSON lines on stdout, or a file rotated by size.

A sink takes already-rendered lines (``str`` without the newline); it knows nothing about the
source or the schema. Rotation follows LAUREL's scheme: ``file`` -> ``file.1`` ... ``file.N``,
new files are created 0600 because events carry command lines and user names.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TextIO

from common.ownership import open_private

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_GENERATIONS = 5


class Sink(Protocol):
    def write(self, line: str) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def emit(sink: "Sink", event: object, line: str) -> None:
    """Give a sink the event if it stores events (the spool), else the rendered line."""
    write_event = getattr(sink, "write_event", None)
    if write_event is not None:
        write_event(event, line)
    else:
        sink.write(line)


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
        return os.fdopen(open_private(self.path), "ab")

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


class FanOut:
    """The same lines to several sinks (``--output`` given more than once)."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def write(self, line: str) -> None:
        for sink in self.sinks:
            sink.write(line)

    def write_event(self, event: object, line: str) -> None:
        for sink in self.sinks:
            emit(sink, event, line)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_sink(target: str, max_bytes: int = DEFAULT_MAX_BYTES,
              generations: int = DEFAULT_GENERATIONS) -> Sink:
    """An output by name: ``-`` or ``stdout``; ``jsonl:PATH`` or a bare ``PATH`` for a rotated
    file (its directory is created); ``spool:DIR`` for the durable spool (events, not lines). A path that exists and is not a regular file (/dev/null, a
    FIFO) is written as it is: never rotated, never chmod-ed."""
    if target in ("-", "stdout"):
        return StreamSink()
    if target.startswith("spool:"):
        from common.spool import Spool, SpoolSink
        if not target[6:]:
            raise ValueError("spool: names no directory")
        return SpoolSink(Spool(target[6:]))
    path = target[len("jsonl:"):] if target.startswith("jsonl:") else target
    if not path:
        raise ValueError(f"output {target!r} names no file")
    if os.path.exists(path) and not os.path.isfile(path):
        return StreamSink(open(path, "a", encoding="utf-8", errors="surrogateescape"))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o750, exist_ok=True)
    return RotatingFileSink(path, max_bytes, generations)


class OutputError(ValueError):
    """Outputs that cannot be opened, or that do not go together; the message says why."""


@dataclass
class Outputs:
    """The sinks of ``--output`` targets, opened, and what they are: the files they write
    into (a file in each output's location: its directory is handed to the unprivileged user
    at the privilege drop) and their spools (delivered by a collector)."""

    sink: Sink
    files: list[str]
    spools: list[Any]                 # common.spool.Spool

    def close(self) -> None:
        self.sink.close()


def open_outputs(targets: list[str] | tuple[str, ...], fmt: str = "ecs",
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 generations: int = DEFAULT_GENERATIONS) -> Outputs:
    """Open every target ('-'/'stdout', 'jsonl:PATH' or PATH, 'spool:DIR'). A spool stores
    every event of our schema, so it goes only with ``fmt`` ecs (a qlog stream has process
    creations only, a laurel one no events at all). OutputError says what is wrong."""
    targets = list(targets or ["-"])
    if fmt != "ecs" and any(t.startswith("spool:") for t in targets):
        raise OutputError("a spool output stores ecs events: use --format ecs, or give "
                          "--output explicitly without spool:")
    sinks: list[Sink] = []
    try:
        for target in targets:
            sinks.append(open_sink(target, max_bytes, generations))
    except (OSError, ValueError) as exc:
        for sink in sinks:
            sink.close()
        raise OutputError(f"cannot open output: {exc}") from exc
    files, spools = [], []
    for target, sink in zip(targets, sinks):
        spool = getattr(sink, "spool", None)
        if spool is not None:
            spools.append(spool)
            files.append(os.path.join(spool.dir, "spool.json"))
        elif target not in ("-", "stdout"):
            files.append(target[len("jsonl:"):] if target.startswith("jsonl:") else target)
    return Outputs(sinks[0] if len(sinks) == 1 else FanOut(sinks), files, spools)


class LazySink:
    """A sink created on its first line: for logs that should exist only when needed (the
    parse-error log)."""

    def __init__(self, open_fn: "Callable[[], Sink]", path: str | None = None) -> None:
        self._open = open_fn
        self.path = path
        self._sink: Sink | None = None

    @property
    def opened(self) -> bool:
        return self._sink is not None

    def write(self, line: str) -> None:
        if self._sink is None:
            self._sink = self._open()
        self._sink.write(line)

    def flush(self) -> None:
        if self._sink is not None:
            self._sink.flush()

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
