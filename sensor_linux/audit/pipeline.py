"""Audit text through the one pipeline (common/pipeline.py): the audit decoder (parse ->
assemble) and the pipeline for each output format.

The format decides how much work is done: ``laurel`` renders the assembled records as LAUREL
does, ``ecs`` and ``qlog`` build enriched common-schema events with TTPHash. Lines that cannot
be parsed and records the assembler rejects are kept verbatim in the parse-error log and
counted; they never stop the stream.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, TextIO

from common import compiled
from common.pipeline import Keeper, Pipeline
from common.schema import Event
from common.sinks import LazySink, Output, RotatingFileSink, Sink
from sensor_linux.attempts import AttemptFolder
from sensor_linux.audit import laurel
from sensor_linux.audit.assemble import Assembler, AuditEvent
from sensor_linux.audit.completeness import ExecCompleteness
from sensor_linux.audit.lines import MAX_LINE
from sensor_linux.audit.records import ParseError, parse, split_path

if TYPE_CHECKING:  # imported where the ecs and qlog formats are built (audit_pipeline)
    from sensor_linux.audit.events import Captured
    from sensor_linux.enrich import Enricher

FORMATS = ("ecs", "laurel", "qlog")
DEFAULT_ERROR_LOG = "/var/log/ttpsensor/parse-errors.log"


@dataclass
class DecodeStats:
    lines: int = 0
    records: int = 0
    parse_errors: int = 0
    rejected: int = 0
    socket_overflows: int = 0    # netlink receive buffer overflows (live sources)


class AuditDecoder:
    """Audit text lines -> assembled audit events. A line that cannot be parsed and a record
    the assembler rejects are kept verbatim and counted."""

    def __init__(self, keeper: Keeper, assembler: Assembler | None = None) -> None:
        self.keeper = keeper
        self.assembler = assembler or Assembler()
        self.stats = DecodeStats()
        # Successful execs missing a record lost before us, counted by the stage after us
        # (the event builder, or the LAUREL renderer) and reported with our counts.
        self.completeness = ExecCompleteness()

    def decode(self, line: bytes) -> list[AuditEvent]:
        """One line of auditd's plugin or log format."""
        self.stats.lines += 1
        if len(line) > MAX_LINE:
            # Cut by the line splitter: no real audit record is this long.
            self._bad(f"parse error (line longer than {MAX_LINE} bytes, cut)", line[:MAX_LINE])
            return []
        if not line or line.isspace():
            return []
        try:
            record = parse(line)
        except ParseError as exc:
            self._bad(f"parse error ({exc.kind})", line)
            return []
        self.stats.records += 1
        events = self.assembler.add(record)
        if self.assembler.rejected:
            for reason, rejected in self.assembler.take_rejected():
                self.stats.rejected += 1
                self.keeper.keep(reason, [rejected.raw],
                                 self.stats.parse_errors + self.stats.rejected)
        return events

    def _bad(self, reason: str, line: bytes) -> None:
        self.stats.parse_errors += 1
        self.keeper.keep(reason, [line], self.stats.parse_errors + self.stats.rejected)

    def tick(self) -> list[AuditEvent]:
        """Events that waited too long in real time (call when input is idle)."""
        return self.assembler.tick()

    def flush(self) -> list[AuditEvent]:
        return self.assembler.flush()

    def originals(self, item: AuditEvent, reason: str) -> list[bytes | str]:
        return [record.raw for record in item.records]

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self.stats)
        out["execs_incomplete"] = asdict(self.completeness)
        out["assembly"] = dict(asdict(self.assembler.stats), open=self.assembler.inflight,
                               lingering=self.assembler.lingering)
        # Which split path parsed (records.split_path): "pure Python" on a host where the C
        # one was not built costs about a quarter more CPU, and says so here.
        out["split_path"] = split_path()
        # How many of the hot modules run compiled (common/compiled.py): the source costs
        # about a sixth more on this path.
        out["compiled_modules"] = compiled.summary()
        return out


def audit_pipeline(fmt: str, sink: Output, *, enricher: Enricher | None = None,
                   error_log: Sink | None = None, assembler: Assembler | None = None,
                   messages: TextIO | None = None,
                   route: Callable[[Event], bool] | None = None,
                   keep_exec_attempts: bool = False,
                   captured: Captured | None = None) -> Pipeline:
    """The pipeline for audit text in ``fmt``: ``laurel`` renders the assembled records as
    LAUREL does (no enrichment, as LAUREL's goldens are configured); ``ecs`` and ``qlog``
    build enriched events with their TTPHash, PATH-walk misses folded into the exec that
    follows (sensor_linux/attempts.py), for ``sink`` to render in its format. ``captured``:
    what a live source read of each exec before it was built (sensor_linux/audit/capture.py)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    keeper = Keeper(error_log, messages)
    decoder = AuditDecoder(keeper, assembler)
    if fmt == "laurel":
        return Pipeline(decoder, sink, render_item=laurel.LaurelRenderer(decoder.completeness),
                        keeper=keeper)
    # Only these formats enrich: a laurel replay does not pay for importing enrichment and
    # the TTPHash (about 10 ms of CPU at its start).
    from sensor_linux.audit.events import AuditEventBuilder
    from sensor_linux.enrich import Enricher
    return Pipeline(decoder, sink, keeper=keeper,
                    builder=AuditEventBuilder(enricher or Enricher(), captured,
                                              decoder.completeness),
                    folder=AttemptFolder(keep_all=keep_exec_attempts), route=route)


def open_error_log(path: str | None, max_bytes: int, generations: int) -> LazySink:
    """The parse-error log (``path``, or a default for root and for others), created on its
    first line."""
    chosen = path or (DEFAULT_ERROR_LOG if os.geteuid() == 0 else "ttpsensor-parse-errors.log")

    def open_log() -> RotatingFileSink:
        os.makedirs(os.path.dirname(os.path.abspath(chosen)), mode=0o750, exist_ok=True)
        return RotatingFileSink(chosen, max_bytes, generations)

    return LazySink(open_log, chosen)
