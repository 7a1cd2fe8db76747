"""A sensor certificate gone bad, against the real collector over TLS: poison frames and
malformed hellos get a NACK or a closed connection, a log line and a count; no traceback, no
resend loop, and the collector keeps serving the next frame."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import ssl
import struct
import threading
import time
from typing import Iterator

import google_crc32c
import pytest
import zstandard

from collector.server import Collector
from collector.store import Store
from common import transport, wire
from common.spool import MAGIC, encode_frame
from tests.conftest import free_port
from tests.test_forward_collect import _collector, _events, _stored, lab  # noqa: F401

pytestmark = pytest.mark.server


def _connect(issued, port: int, sensor: str = "sensor-a") -> ssl.SSLSocket:
    s = issued[sensor]
    context = transport.client_context(s.cert, s.key, issued["ca"].cert)
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    return context.wrap_socket(raw, server_hostname="localhost")


@contextlib.contextmanager
def serving(tmp, issued, **options) -> Iterator[tuple[Collector, int, io.StringIO]]:
    """An in-process collector over the lab's PKI, serving on a free port until the block
    ends: (collector, port, its log)."""
    c = issued["collector"]
    log = io.StringIO()
    collector = Collector(Store(str(tmp / "store.sqlite")),
                          transport.server_context(c.cert, c.key, issued["ca"].cert), log,
                          **options)
    port = free_port()
    serving = threading.Thread(target=collector.serve, args=("127.0.0.1", port))
    serving.start()
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.getvalue():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield collector, port, log
    finally:
        collector.shutdown()
        serving.join(30)


def _frame(first_seq: int, events: list, count: int | None = None, payload: bytes | None = None
           ) -> bytes:
    if payload is None:
        payload = zstandard.ZstdCompressor().compress(wire.pack_batch(events))
    tail = struct.pack("<QI", first_seq, len(events) if count is None else count) + payload
    return MAGIC + struct.pack("<II", len(payload), google_crc32c.value(tail)) + tail


def test_poison_frames_are_refused_and_the_next_good_frame_is_stored(lab) -> None:
    tmp, issued = lab
    port = free_port()
    store = str(tmp / "store.sqlite")
    collector = _collector(tmp, issued, port, store)
    good = _events(3)
    bad_time = _events(1)
    bad_time[0]["@timestamp"] = {"a": 1}
    bomb = zstandard.ZstdCompressor().compress(b"\x00" * (200 << 20))  # 200 MiB of zeros
    poisons = {
        "sequence past 2^63": _frame(2**63, good),
        "@timestamp a map": _frame(100, bad_time),
        "count disagrees": _frame(200, good, count=2),
        "not events": _frame(300, [1, 2, 3]),
        "zstd bomb": _frame(400, good, payload=bomb),
    }
    try:
        with _connect(issued, port) as tls:
            transport.send(tls, b"H", json.dumps({"spool": "s-1", "version": 1}).encode())
            for name, frame in poisons.items():
                transport.send(tls, b"F", frame)
                kind, body = transport.receive(tls)
                assert kind == b"N", name
            transport.send(tls, b"F", encode_frame(0, good)[0])
            kind, body = transport.receive(tls)
            assert kind == b"A" and transport.ACK.unpack(body) == (0, 3, 3)
    finally:
        collector.stop()
    log = collector.text()
    assert "Traceback" not in log and log.count("refused a frame") == len(poisons)
    assert _stored(store) == 3


@pytest.mark.parametrize("hello", [b"[1, 2]", b"{}", b'{"spool": 7}', b"\xff\xfe",
                                   b'{"spool": "' + b"x" * 500 + b'"}', b"null"])
def test_malformed_hellos_close_the_connection_without_a_traceback(lab, hello) -> None:
    tmp, issued = lab
    port = free_port()
    collector = _collector(tmp, issued, port, str(tmp / "store.sqlite"))
    try:
        with _connect(issued, port) as tls:
            transport.send(tls, b"H", hello)
            with pytest.raises((transport.ProtocolError, OSError)):
                transport.send(tls, b"F", encode_frame(0, _events(1))[0])
                transport.receive(tls)
        # The collector still serves a well-behaved sensor.
        with _connect(issued, port) as tls:
            transport.send(tls, b"H", json.dumps({"spool": "s-2", "version": 1}).encode())
            transport.send(tls, b"F", encode_frame(0, _events(1))[0])
            assert transport.receive(tls)[0] == b"A"
    finally:
        collector.stop()
    assert "Traceback" not in collector.text()
    assert "ended" in collector.text()


def _client_hello() -> bytes:
    """The first flight of a TLS client, to trickle byte by byte (slow-loris)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_idle_and_slow_connections_cannot_lock_a_sensor_out(lab) -> None:
    """1,000 idle TCP connections and 100 slow-loris TLS handshakes, all kept open, while a
    sensor with a certificate connects and sends frames: each of them is stored."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    tmp, issued = lab
    port = free_port()
    store = str(tmp / "store.sqlite")
    # The collector gets 512 descriptors, half of what the attack opens: it must not need
    # one per idle connection.
    collector = _collector(tmp, issued, port, store, nofile=512)
    hello = _client_hello()
    stop = threading.Event()
    idle: list[socket.socket] = []
    slow: list[socket.socket] = []

    def trickle() -> None:
        sent = 0
        while not stop.is_set() and sent < len(hello):
            for sock in slow:
                try:
                    sock.send(hello[sent:sent + 1])
                except OSError:
                    pass  # closed by the collector: as it should
            sent += 1
            stop.wait(0.3)

    try:
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        for _ in range(100):
            slow.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        time.sleep(1)
        stored = 0
        for round_ in range(5):  # five separate connections, spread over the attack
            with _connect(issued, port) as tls:
                transport.send(tls, b"H", json.dumps({"spool": "s-3", "version": 1}).encode())
                transport.send(tls, b"F", encode_frame(round_ * 10, _events(10, round_ * 10))[0])
                kind, _ = transport.receive(tls)
                assert kind == b"A", round_
                stored += 10
            time.sleep(0.5)
    finally:
        stop.set()
        for sock in idle + slow:
            sock.close()
        collector.stop()
    assert _stored(store) == stored == 50
    stats = collector.stopped()
    assert stats["evicted"] >= 1000 - 128  # pushed out by newer ones, or timed out


def test_a_frame_that_meets_a_stopping_collector_is_not_refused(lab) -> None:
    """A refusal makes the forwarder skip the frame; a frame the stopping collector did not
    store gets no answer at all (the connection closes, the forwarder sends it again)."""
    tmp, issued = lab
    with serving(tmp, issued) as (collector, port, log), _connect(issued, port) as tls:
        transport.send(tls, b"H", json.dumps({"spool": "s-4", "version": 1}).encode())
        transport.send(tls, b"F", encode_frame(0, _events(2))[0])
        assert transport.receive(tls)[0] == b"A"
        collector.writer.close()  # as the shutdown does, while this sensor is connected
        transport.send(tls, b"F", encode_frame(2, _events(2, 2))[0])
        with pytest.raises((transport.ProtocolError, OSError)):
            transport.receive(tls)
    assert collector.stats.bad_frames == 0 and collector.stats.frames == 1
    assert "refused a frame" not in log.getvalue() and "stopping" in log.getvalue()


def test_the_collector_serves_with_the_steady_garbage_collector(lab) -> None:
    """While it serves, startup's objects are frozen out of the cyclic collector and it runs
    every GC_YOUNG_CONTAINERS new containers (the frames it holds made the default's walks a
    fifth of its CPU, common/gcpolicy.py); afterwards both are as they were."""
    import gc

    from common.gcpolicy import GC_YOUNG_CONTAINERS
    tmp, issued = lab
    before = gc.get_threshold()
    with serving(tmp, issued):
        assert gc.get_threshold()[0] == GC_YOUNG_CONTAINERS
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
