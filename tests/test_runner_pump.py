"""The runner's read loop under a flood: records that never stop coming must not keep it from
stopping, ticking (timeouts, status) or flushing; the pause after a drain; inputs that gather,
read when due or woken."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from types import SimpleNamespace

from sensor_linux.audit import source as audit_source
from sensor_linux.audit.capture import WaitingLines
from sensor_linux.audit.source import NetlinkInput
from sensor_linux.batching import BATCH_SECONDS
from sensor_linux.runner import BaseSource, pump


class EndlessRecords:
    """An audit record socket that always has one more record (a machine exec'ing faster
    than we read); its descriptor is always readable."""

    def __init__(self) -> None:
        self.sock, self._peer = socket.socketpair()
        self._peer.send(b"x")      # never read: select() always says ready
        self.reads = 0

    def read_batch(self) -> tuple[list[bytes], int, bool]:
        self.reads += 1
        return [b"type=EOE msg=audit(1.0:1): "], 0, True


class Counting:
    def __init__(self) -> None:
        self.decoder = SimpleNamespace(stats=SimpleNamespace(socket_overflows=0))
        self.fed = 0

    def feed(self, line: bytes) -> None:
        self.fed += 1

    def feed_many(self, lines: list[bytes]) -> None:
        self.fed += len(lines)


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
    netlink = NetlinkInput(records, WaitingLines(pipeline))  # type: ignore[arg-type]
    assert netlink.drain() == 0.0
    assert records.reads == pipeline.fed == audit_source.DRAIN_DATAGRAMS


def test_the_read_loop_stops_ticks_and_flushes_while_records_never_stop() -> None:
    records, pipeline = EndlessRecords(), Counting()
    netlink = NetlinkInput(records, WaitingLines(pipeline))  # type: ignore[arg-type]
    source, sink, stop = Flooded(netlink), Sink(), threading.Event()
    loop = threading.Thread(target=pump, args=(source, sink, stop), daemon=True)
    loop.start()
    time.sleep(0.5)
    stop.set()
    loop.join(timeout=10)
    assert not loop.is_alive(), "the read loop did not see the stop"
    assert source.ticks >= 2 and sink.flushes >= 2
    assert pipeline.fed > audit_source.DRAIN_DATAGRAMS   # it kept reading between ticks



class Trickle:
    """A descriptor with one record now and then: drained at once, never behind."""

    def __init__(self, pause: float = BATCH_SECONDS) -> None:
        self.sock, self._peer = socket.socketpair()
        self._peer.send(b"x")      # never read: select() always says ready
        self.pause = pause

    def fileno(self) -> int:
        return self.sock.fileno()

    def due_in(self) -> None:
        return None

    def drain(self) -> float:
        return self.pause


class Waits:
    """A stop flag that records how long the loop waits between drains."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return len(self.waits) >= 3

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return False


def test_the_read_loop_lets_events_gather_after_a_drain_that_is_not_behind() -> None:
    source = Flooded(Trickle())  # type: ignore[arg-type]
    stop = Waits()
    pump(source, Sink(), stop)  # type: ignore[arg-type]
    assert stop.waits == [BATCH_SECONDS] * 3


def test_the_read_loop_pauses_as_briefly_as_an_input_asks() -> None:
    # (auditd's socket fills in less than BATCH_SECONDS at a high rate: batching.Pacing)
    source = Flooded(Trickle(pause=0.007))  # type: ignore[arg-type]
    stop = Waits()
    pump(source, Sink(), stop)  # type: ignore[arg-type]
    assert stop.waits == [0.007] * 3


class _Gathering:
    """An input that gathers: its descriptor (a pipe) turns readable only when woken, and
    it is due ``due`` seconds after each drain."""

    def __init__(self, due: float, stop: threading.Event, drains_to_stop: int) -> None:
        self.due, self.stop, self.drains_to_stop = due, stop, drains_to_stop
        self.read_end, self.write_end = os.pipe()
        self.drains: list[str] = []
        self.last = time.monotonic()

    def fileno(self) -> int:
        return self.read_end

    def due_in(self) -> float:
        return max(0.0, self.last + self.due - time.monotonic())

    def drain(self) -> float:
        woken = bool(select.select([self.read_end], [], [], 0)[0])
        if woken:
            os.read(self.read_end, 100)
        self.drains.append("woken" if woken else "due")
        self.last = time.monotonic()
        if len(self.drains) >= self.drains_to_stop:
            self.stop.set()
        return BATCH_SECONDS

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)


class Quiet(Flooded):
    tick_seconds = 3600.0   # no tick turns the loop meanwhile


def _pump_until_stopped(item: _Gathering, stop: threading.Event) -> None:
    """Run the runner's loop on ``item`` until it stops it; after 30 s, stop it and wake it
    (a loop that waits too long would not see the stop), which the test then sees."""
    def give_up() -> None:
        stop.set()
        os.write(item.write_end, b"!")

    guard = threading.Timer(30, give_up)
    guard.start()
    try:
        pump(Quiet(item), Sink(), stop)  # type: ignore[arg-type]
    finally:
        guard.cancel()


def test_the_loop_drains_a_quiet_input_when_it_is_due() -> None:
    """A ring that gathers is read when due, though its descriptor never turns readable and
    no tick comes (the eBPF source's records wake nobody: execsnoop.c, wake_flags)."""
    stop = threading.Event()
    item = _Gathering(0.05, stop, drains_to_stop=3)
    try:
        _pump_until_stopped(item, stop)
        assert item.drains == ["due", "due", "due"]
    finally:
        item.close()


def test_the_loop_drains_a_woken_input_before_it_is_due() -> None:
    stop = threading.Event()
    item = _Gathering(3600.0, stop, drains_to_stop=1)
    try:
        os.write(item.write_end, b"x")   # the probes' wake-up (an unlinked image, a fill)
        _pump_until_stopped(item, stop)
        assert item.drains == ["woken"]
    finally:
        item.close()
