"""The runner's read loop under a flood: records that never stop coming must not keep it from
stopping, ticking (timeouts, status) or flushing."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

from sensor_linux.audit import source as audit_source
from sensor_linux.audit.source import NetlinkInput
from sensor_linux.runner import BaseSource, pump


class EndlessRecords:
    """An audit record socket that always has one more record (a machine exec'ing faster
    than we read); its descriptor is always readable."""

    def __init__(self) -> None:
        self.sock, self._peer = socket.socketpair()
        self._peer.send(b"x")      # never read: select() always says ready
        self.reads = 0

    def read_records(self) -> tuple[list[bytes], int]:
        self.reads += 1
        return [b"type=EOE msg=audit(1.0:1): "], 0


class Counting:
    def __init__(self) -> None:
        self.decoder = SimpleNamespace(stats=SimpleNamespace(socket_overflows=0))
        self.fed = 0

    def feed(self, line: bytes) -> None:
        self.fed += 1


class Flooded(BaseSource):
    tick_seconds = 0.05

    def __init__(self, flood: NetlinkInput) -> None:
        self.flood = flood
        self.ticks = 0

    def inputs(self) -> list[NetlinkInput]:
        return [self.flood]

    def tick(self) -> None:
        self.ticks += 1


class Sink:
    def __init__(self) -> None:
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def test_a_netlink_drain_reads_a_bounded_batch_and_says_more_is_waiting() -> None:
    records, pipeline = EndlessRecords(), Counting()
    assert NetlinkInput(records, pipeline).drain() is True       # type: ignore[arg-type]
    assert records.reads == pipeline.fed == audit_source.DRAIN_DATAGRAMS


def test_the_read_loop_stops_ticks_and_flushes_while_records_never_stop() -> None:
    records, pipeline = EndlessRecords(), Counting()
    source, sink, stop = Flooded(NetlinkInput(records, pipeline)), Sink(), threading.Event()
    loop = threading.Thread(target=pump, args=(source, sink, stop), daemon=True)
    loop.start()
    time.sleep(0.5)
    stop.set()
    loop.join(timeout=10)
    assert not loop.is_alive(), "the read loop did not see the stop"
    assert source.ticks >= 2 and sink.flushes >= 2
    assert pipeline.fed > audit_source.DRAIN_DATAGRAMS   # it kept reading between ticks
