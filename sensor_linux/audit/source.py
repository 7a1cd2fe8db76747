"""The live audit source: records from a netlink session into an :class:`AuditPipeline`."""

from __future__ import annotations

import select
import time
from typing import Callable, Protocol

from sensor_linux.audit.netlink import AuditSocket
from sensor_linux.audit.pipeline import AuditPipeline
from sensor_linux.batching import BATCH_SECONDS, StopFlag

TICK_SECONDS = 1.0


class Session(Protocol):
    mode: str
    records: AuditSocket | None

    def open(self) -> None: ...
    def close(self) -> None: ...
    def lost(self) -> int: ...


def pump(session: Session, pipeline: AuditPipeline, stop: StopFlag,
         on_tick: Callable[[], None] | None = None) -> None:
    """Read records until ``stop`` is set. Socket overflows (ENOBUFS: the kernel could not
    deliver because our receive buffer was full) are counted in the pipeline's stats.

    The record socket is drained without blocking after each wake-up, then left to fill for
    BATCH_SECONDS, and the pipeline is
    ticked at least once a second (timeouts, flushes, status), busy or idle.
    """
    assert session.records is not None
    sock = session.records.sock
    sock.setblocking(False)
    next_tick = time.monotonic() + TICK_SECONDS
    while not stop.is_set():
        timeout = max(0.0, next_tick - time.monotonic())
        ready, _, _ = select.select([sock], [], [], timeout)
        if ready:
            while True:
                try:
                    lines, lost = session.records.read_records()
                except BlockingIOError:
                    break
                pipeline.stats.socket_overflows += lost
                for line in lines:
                    pipeline.feed(line)
            stop.wait(BATCH_SECONDS)  # let the next records gather (see batching.py)
        if time.monotonic() >= next_tick:
            pipeline.tick()
            pipeline.sink.flush()
            if on_tick is not None:
                on_tick()
            next_tick = time.monotonic() + TICK_SECONDS
