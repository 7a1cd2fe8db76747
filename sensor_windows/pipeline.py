"""ETW process starts through the one pipeline (common/pipeline.py): the ETW decoder
(normalize) and the worker loop behind the ETW callback's queue.

Shared by the console (``ttpsensor windows run``) and the Windows service. An event that cannot
be normalized, or that our own code fails on, is counted and kept (as JSON, with the reason)
in the error log; it never stops the loop.
"""

from __future__ import annotations

import json
import queue
import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol, TextIO

from common.pipeline import Keeper, Pipeline
from common.sinks import Output, Sink
from sensor_windows.enrich import WindowsEnricher
from sensor_windows.etw_source import EtwItem
from sensor_windows.normalize import NormalizeError, ProcessStart, normalize

POLL_SECONDS = 0.5
FLUSH_SECONDS = 1.0     # at most this long between flushes of the outputs while busy


@dataclass
class EtwDecodeStats:
    received: int = 0
    rejected: int = 0            # not a usable ProcessStart; kept in the error log


class EtwDecoder:
    """ETW ProcessStart events (as pywintrace delivers them) -> normalized starts."""

    def __init__(self, keeper: Keeper, device_map: Callable[[], dict[str, str]]) -> None:
        self.keeper = keeper
        # The device map can change (a volume mounted later): asked for per event, cheap.
        self.device_map = device_map
        self.stats = EtwDecodeStats()
        self._last: EtwItem | None = None

    def decode(self, item: EtwItem) -> list[ProcessStart]:
        self.stats.received += 1
        self._last = item
        event_id, raw = item
        try:
            return [normalize(event_id, raw, self.device_map())]
        except NormalizeError as exc:
            self.stats.rejected += 1
            self.keeper.keep("rejected", self.originals(None, f"rejected: {exc}"),
                             self.stats.rejected)
            return []

    def tick(self) -> list[ProcessStart]:
        return []

    def flush(self) -> list[ProcessStart]:
        return []

    def originals(self, item: ProcessStart | None, reason: str) -> list[bytes | str]:
        """The ETW event a start came from (the one decoded last: one start per event)."""
        return [json.dumps({"reason": reason, "etw": list(self._last or ())}, default=repr)]

    def summary(self) -> dict[str, object]:
        return asdict(self.stats)


def windows_pipeline(enricher: WindowsEnricher, sink: Output, *,
                     device_map: Callable[[], dict[str, str]] | None = None,
                     error_log: Sink | None = None,
                     messages: TextIO | None = None) -> Pipeline:
    """ETW events -> process-create events -> ``sink`` (which renders them in its format)."""
    keeper = Keeper(error_log, messages)
    return Pipeline(EtwDecoder(keeper, device_map or dict), sink, builder=enricher,
                    keeper=keeper)


class Stop(Protocol):
    def is_set(self) -> bool: ...


def drain(pipeline: Pipeline, events: "queue.Queue[EtwItem]", stop: Stop | None) -> None:
    """Handle events until ``stop`` is set (at once, even while events keep coming: the
    caller stops the session and then drains what is left), or with ``stop`` None until
    the queue is empty. The sink is flushed when the queue runs dry and at least every
    FLUSH_SECONDS while it does not."""
    flushed = time.monotonic()
    while stop is None or not stop.is_set():
        try:
            item = events.get(timeout=POLL_SECONDS) if stop is not None else events.get_nowait()
        except queue.Empty:
            pipeline.sink.flush()
            flushed = time.monotonic()
            if stop is None:
                break
            continue
        pipeline.feed(item)
        if time.monotonic() - flushed >= FLUSH_SECONDS:
            pipeline.sink.flush()
            flushed = time.monotonic()
    pipeline.sink.flush()
    pipeline.keeper.flush()
