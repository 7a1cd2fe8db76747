"""The worker behind the ETW callback: queue -> normalize -> enrich -> render -> sink.

Shared by the console (``ttpsensor windows run``) and the Windows service. An event that cannot
be normalized, or that our own code fails on, is counted and kept verbatim (as JSON) in the
error log; it never stops the loop.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable

from common.render import RENDERERS
from common.sinks import Sink, emit
from sensor_windows.enrich import WindowsEnricher
from sensor_windows.etw_source import EtwItem
from sensor_windows.normalize import NormalizeError, normalize

POLL_SECONDS = 0.5


@dataclass
class WindowsPipelineStats:
    events: int = 0
    output_lines: int = 0
    rejected: int = 0            # not a usable ProcessStart; kept in the error log
    internal_errors: int = 0     # our own code failed; the event is kept in the error log


class WindowsPipeline:
    def __init__(self, enricher: WindowsEnricher, sink: Sink, fmt: str = "ecs", *,
                 device_map: Callable[[], dict[str, str]] | None = None,
                 error_log: Sink | None = None) -> None:
        if fmt not in ("ecs", "qlog"):
            raise ValueError(f"unknown format {fmt!r}; choose ecs or qlog")
        self.enricher = enricher
        self.sink = sink
        self.render = RENDERERS[fmt]
        # The device map can change (a volume mounted later): asked for per event, cheap.
        self.device_map = device_map or dict
        self.error_log = error_log
        self.stats = WindowsPipelineStats()

    def handle(self, item: EtwItem) -> None:
        event_id, raw = item
        try:
            start = normalize(event_id, raw, self.device_map())
        except NormalizeError as exc:
            self.stats.rejected += 1
            self._keep(f"rejected: {exc}", item)
            return
        try:
            event = self.enricher.build(start)
            line = self.render(event)
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the sensor
            self.stats.internal_errors += 1
            self._keep(f"internal error {type(exc).__name__}: {exc}", item)
            return
        self.stats.events += 1
        emit(self.sink, event, line)
        self.stats.output_lines += 1

    def _keep(self, reason: str, item: EtwItem) -> None:
        if self.error_log is not None:
            self.error_log.write(json.dumps({"reason": reason, "etw": list(item)},
                                            default=repr))

    def drain(self, events: "queue.Queue[EtwItem]", stop: threading.Event | None) -> None:
        """Handle events until ``stop`` is set and the queue is empty (None: until empty)."""
        while True:
            try:
                item = events.get(timeout=POLL_SECONDS) if stop else events.get_nowait()
            except queue.Empty:
                self.sink.flush()
                if stop is None or stop.is_set():
                    break
                continue
            self.handle(item)
        self.sink.flush()
        if self.error_log is not None:
            self.error_log.flush()

    def summary(self) -> dict[str, Any]:
        return asdict(self.stats)
