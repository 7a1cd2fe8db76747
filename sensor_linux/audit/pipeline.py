"""From audit text lines to rendered output lines: parse -> assemble -> build -> render.

One object per input stream. The renderer decides how much work is done: ``laurel`` renders the
assembled records as LAUREL does (no enrichment, as LAUREL's goldens are configured), ``ecs`` and
``qlog`` build enriched common-schema events with TTPHash. Lines that cannot be parsed and
records the assembler rejects are kept verbatim in the parse-error log and counted; they never
stop the stream.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from typing import Callable, TextIO

from common.render import RENDERERS
from common.schema import ACTION_PROCESS_CREATE, Event, get_path
from common.sinks import LazySink, RotatingFileSink, Sink, emit
from sensor_linux.attempts import AttemptFolder
from sensor_linux.audit import laurel
from sensor_linux.audit.assemble import Assembler, AuditEvent
from sensor_linux.audit.events import AuditEventBuilder
from sensor_linux.audit.lines import MAX_LINE
from sensor_linux.audit.records import ParseError, parse
from sensor_linux.enrich import Enricher

FORMATS = ("ecs", "laurel", "qlog")
DEFAULT_ERROR_LOG = "/var/log/ttpsensor/parse-errors.log"
REPORT_FIRST_ERRORS = 10     # then one message per REPORT_EVERY errors, to keep stderr readable
REPORT_EVERY = 1000


@dataclass
class PipelineStats:
    lines: int = 0
    records: int = 0
    parse_errors: int = 0
    rejected: int = 0
    events: int = 0
    output_lines: int = 0
    not_representable: int = 0   # not written: qlog of a generic event, or routed elsewhere
    internal_errors: int = 0     # events our own code failed on; their records are kept
    socket_overflows: int = 0    # netlink receive buffer overflows (live sources)


class AuditPipeline:
    def __init__(self, fmt: str, sink: Sink, *, enricher: Enricher | None = None,
                 error_log: Sink | None = None, assembler: Assembler | None = None,
                 messages: TextIO | None = None,
                 on_event: Callable[[Event], bool] | None = None,
                 keep_exec_attempts: bool = False) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.sink = sink
        self.error_log = error_log
        self.messages = messages if messages is not None else sys.stderr
        # Sees each built event before rendering; returning False keeps it out of the output
        # (the combined sources route audit's execs to the cross-check instead).
        self.on_event = on_event
        self.assembler = assembler or Assembler()
        self.stats = PipelineStats()
        self.builder = AuditEventBuilder(enricher or Enricher()) if fmt != "laurel" else None
        # PATH-walk misses folded into the exec that follows (laurel output keeps records as
        # they are, so nothing is folded there).
        self.folder = AttemptFolder(keep_all=keep_exec_attempts) if self.builder else None

    def feed(self, line: bytes) -> None:
        """One line of auditd's plugin or log format."""
        self.stats.lines += 1
        if len(line) > MAX_LINE:
            # Cut by the line splitter: no real audit record is this long.
            self.stats.parse_errors += 1
            self._keep(f"parse error (line longer than {MAX_LINE} bytes, cut)", line[:MAX_LINE])
            return
        if not line.strip():
            return
        try:
            record = parse(line)
        except ParseError as exc:
            self.stats.parse_errors += 1
            self._keep(f"parse error ({exc.kind})", line)
            return
        self.stats.records += 1
        self._emit(self.assembler.add(record))
        if self.assembler.rejected:
            for reason, rejected in self.assembler.take_rejected():
                self.stats.rejected += 1
                self._keep(reason, rejected.raw)

    def tick(self) -> None:
        """Flush events that waited too long in real time (call when input is idle)."""
        self._emit(self.assembler.tick())
        if self.folder is not None:
            self._output(self.folder.expire())

    def close(self) -> None:
        self._emit(self.assembler.flush())
        if self.folder is not None:
            self._output(self.folder.expire(everything=True))
        self.sink.flush()
        if self.error_log is not None:
            self.error_log.flush()

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self.stats)
        out["assembly"] = dict(asdict(self.assembler.stats), open=self.assembler.inflight)
        if self.folder is not None:
            out["exec_attempts"] = self.folder.summary()
        return out

    def _emit(self, events: list[AuditEvent]) -> None:
        for audit in events:
            self.stats.events += 1
            try:
                if self.builder is None:  # laurel: lines straight from the records
                    self.sink.write(laurel.render(audit))
                    self.stats.output_lines += 1
                    continue
                event = self.builder.build(audit)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the audit stream
                self._internal_error(exc, audit)
                continue
            assert self.folder is not None
            self._output(self.folder.take(event))

    def _output(self, events: list[Event]) -> None:
        for event in events:
            try:
                line = self._render(event)
            except Exception as exc:  # noqa: BLE001
                self._internal_error(exc, None, event)
                continue
            if line is None:
                self.stats.not_representable += 1
                continue
            emit(self.sink, event, line)
            self.stats.output_lines += 1

    def _internal_error(self, exc: Exception, audit: AuditEvent | None,
                        event: Event | None = None) -> None:
        """Count it and keep the records it came from (the event's own copy of them when it
        failed after building)."""
        self.stats.internal_errors += 1
        reason = f"internal error {type(exc).__name__}: {exc}"
        if audit is not None:
            raws = [record.raw for record in audit.records]
        else:
            kept = get_path(event, "audit.records") if event is not None else None
            raws = [r.encode("utf-8", "surrogateescape") if isinstance(r, str) else r
                    for r in kept or []]
        for raw in raws:
            self._keep(reason, raw, self.stats.internal_errors)
        if not raws:
            self.messages.write(f"ttpsensor: {reason}\n")

    def _render(self, event: Event) -> str | None:
        if self.on_event is not None and not self.on_event(event):
            return None
        if self.fmt == "qlog" and get_path(event, "event.action") != ACTION_PROCESS_CREATE:
            return None
        return RENDERERS[self.fmt](event)

    def _keep(self, reason: str, line: bytes, count: int | None = None) -> None:
        """Keep the line verbatim (the error log can be replayed) and say why on stderr, with
        its number among its kind (``count``; parse errors and rejections by default)."""
        if self.error_log is not None:
            self.error_log.write(line.rstrip(b"\n").decode("utf-8", "surrogateescape"))
        if count is None:
            count = self.stats.parse_errors + self.stats.rejected
        if count <= REPORT_FIRST_ERRORS or count % REPORT_EVERY == 0:
            shown = line[:160].decode("utf-8", "replace").rstrip()
            self.messages.write(f"ttpsensor: {reason} (#{count}): {shown}\n")


def open_error_log(path: str | None, max_bytes: int, generations: int) -> LazySink:
    """The parse-error log (``path``, or a default for root and for others), created on its
    first line."""
    chosen = path or (DEFAULT_ERROR_LOG if os.geteuid() == 0 else "ttpsensor-parse-errors.log")

    def open_log() -> RotatingFileSink:
        os.makedirs(os.path.dirname(os.path.abspath(chosen)), mode=0o750, exist_ok=True)
        return RotatingFileSink(chosen, max_bytes, generations)

    return LazySink(open_log, chosen)
