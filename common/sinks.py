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
from common.schema import Event

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_GENERATIONS = 5


class Sink(Protocol):
    """Where lines go (stdout, a rotated file, the parse-error log)."""

    def write(self, line: str) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class Output(Protocol):
    """Where events go: an output renders them itself, in its format, or stores them (the
    spool). ``prepare`` renders (a failure there is a bug of ours, counted by the caller);
    ``write_event`` writes what was prepared and says whether the output took the event
    (False: its format has no form for it). ``write`` takes a line rendered from something
    that is not an event (LAUREL output of audit records)."""

    def prepare(self, event: Event) -> Any: ...
    def write_event(self, event: Event, prepared: Any) -> bool: ...
    def write(self, line: str) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def emit(output: "Output", event: Event) -> bool:
    """Render and write one event; whether any output took it."""
    return output.write_event(event, output.prepare(event))


class TextOutput:
    """Events as lines of one format into a line sink."""

    def __init__(self, sink: Sink, render: Callable[[Event], str | None]) -> None:
        self.sink = sink
        self.render = render

    def prepare(self, event: Event) -> str | None:
        return self.render(event)

    def write_event(self, event: Event, prepared: str | None) -> bool:
        if prepared is None:
            return False
        self.sink.write(prepared)
        return True

    def write(self, line: str) -> None:
        self.sink.write(line)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()


# Bytes held before a write to stdout or to an events file; the sensor's tick flushes them
# (about once a second), and a rotation or close writes them out. The default buffer of a file
# (its block size, 4 KiB) cost a write() per event of about 2 KB.
OUTPUT_BUFFER = 1 << 16


class StreamSink:
    """Lines to a text stream: by default stdout, as UTF-8 through a buffer of its own, so
    that neither PYTHONUNBUFFERED (one system call per line, most of the cost of writing)
    nor a console code page (a character it cannot encode stops the sensor; CRLF on
    Windows) decides. Line-buffered on a terminal, where a person reads as events come."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else _stdout_stream()

    def write(self, line: str) -> None:
        self._stream.write(line + "\n")

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.flush()


def _stdout_stream() -> TextIO:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: a test's capture
        return sys.stdout
    sys.stdout.flush()
    return open(fd, "w", encoding="utf-8", errors="surrogateescape", newline="\n",
                buffering=1 if os.isatty(fd) else OUTPUT_BUFFER, closefd=False)


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
        return os.fdopen(open_private(self.path), "ab", buffering=OUTPUT_BUFFER)

    def write(self, line: str) -> None:
        self.write_bytes(line.encode("utf-8", "surrogateescape") + b"\n")

    def write_bytes(self, data: bytes) -> None:
        """A line already encoded, its newline included (:class:`LineFileOutput`)."""
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


class LineFileOutput(TextOutput):
    """Events as lines of one format into a rotating file, rendered straight to the bytes the
    file takes (its renderer: :func:`common.ecs.render_line`): the same bytes as a
    :class:`TextOutput` writes, without the text in between. Other lines (LAUREL's) go
    through as text."""

    sink: RotatingFileSink

    def write_event(self, event: Event, prepared: bytes | None) -> bool:  # type: ignore[override]
        if prepared is None:
            return False
        self.sink.write_bytes(prepared)
        return True


class FanOut:
    """Several outputs (``--output`` given more than once): each event rendered once per
    format, whatever the number of outputs in that format."""

    def __init__(self, outputs: list[Output]) -> None:
        self.outputs = outputs

    def prepare(self, event: Event) -> list[Any]:
        lines: dict[Any, str | None] = {}
        prepared = []
        for output in self.outputs:
            render = getattr(output, "render", None)
            if render is None:
                prepared.append(output.prepare(event))
                continue
            if render not in lines:
                lines[render] = render(event)
            prepared.append(lines[render])
        return prepared

    def write_event(self, event: Event, prepared: list[Any]) -> bool:
        took = False
        for output, item in zip(self.outputs, prepared):
            took |= output.write_event(event, item)
        return took

    def write(self, line: str) -> None:
        for output in self.outputs:
            output.write(line)

    def flush(self) -> None:
        for output in self.outputs:
            output.flush()

    def close(self) -> None:
        for output in self.outputs:
            output.close()


def is_spool_target(target: str) -> bool:
    """``spool:DIR``: the durable spool, not a text output."""
    return target.startswith("spool:")


def open_sink(target: str, max_bytes: int = DEFAULT_MAX_BYTES,
              generations: int = DEFAULT_GENERATIONS) -> Sink:
    """An output by name: ``-`` or ``stdout``; ``jsonl:PATH`` or a bare ``PATH`` for a rotated
    file (its directory is created); ``spool:DIR`` for the durable spool (events, not lines). A path that exists and is not a regular file (/dev/null, a
    FIFO) is written as it is: never rotated, never chmod-ed."""
    if target in ("-", "stdout"):
        return StreamSink()
    if is_spool_target(target):
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
    """The ``--output`` targets, opened as one output, and what they are: the files they
    write into (a file in each output's location: its directory is handed to the
    unprivileged user at the privilege drop) and their spools (delivered by a collector)."""

    output: Output
    files: list[str]
    spools: list[Any]                 # common.spool.Spool

    def close(self) -> None:
        self.output.close()


def open_outputs(targets: list[str] | tuple[str, ...], fmt: str = "ecs",
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 generations: int = DEFAULT_GENERATIONS) -> Outputs:
    """Open every target ('-'/'stdout', 'jsonl:PATH' or PATH, 'spool:DIR'): text outputs
    render events in ``fmt``, a spool stores every event of our schema whatever ``fmt`` is.
    A LAUREL stream has no events for a spool (its lines are rendered from audit records).
    OutputError says what is wrong."""
    from common.render import file_line_renderer, line_renderer
    targets = list(targets or ["-"])
    if fmt == "laurel" and any(map(is_spool_target, targets)):
        raise OutputError("a spool stores events, and --format laurel writes audit records: "
                          "use --format ecs or qlog with a spool output")
    render = line_renderer(fmt)
    render_line = file_line_renderer(fmt)
    outputs: list[Output] = []
    try:
        for target in targets:
            sink = open_sink(target, max_bytes, generations)
            if hasattr(sink, "spool"):
                outputs.append(sink)  # type: ignore[arg-type]
            elif render_line is not None and isinstance(sink, RotatingFileSink):
                outputs.append(LineFileOutput(sink, render_line))
            else:
                outputs.append(TextOutput(sink, render))
    except (OSError, ValueError) as exc:
        for output in outputs:
            output.close()
        raise OutputError(f"cannot open output: {exc}") from exc
    files, spools = [], []
    for target, output in zip(targets, outputs):
        spool = getattr(output, "spool", None)
        if spool is not None:
            spools.append(spool)
            files.append(os.path.join(spool.dir, "spool.json"))
        elif target not in ("-", "stdout"):
            files.append(target[len("jsonl:"):] if target.startswith("jsonl:") else target)
    return Outputs(outputs[0] if len(outputs) == 1 else FanOut(outputs), files, spools)


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
