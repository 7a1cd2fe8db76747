"""Frames in flight: the forwarder sends up to WINDOW frames before it reads an answer, and
the collector hands up to IN_FLIGHT of one connection's frames to its writer before it answers
the first; answers stay in the order of the frames, and each comes after its commit."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

from collector.server import IN_FLIGHT
from common import transport
from common.forward import WINDOW, Forwarder
from common.spool import Spool, decode_frame, encode_frame
from tests.test_collector_attacks import _connect, serving
from tests.test_forward_collect import _events, lab  # noqa: F401


def _message(kind: bytes, body: bytes) -> bytes:
    """What transport.send writes: length, kind, body."""
    return struct.pack(">I", len(body) + 1) + kind + body


def _frames(firsts) -> bytes:
    """Frames of two events each, numbered from each of ``firsts``, as one write."""
    return b"".join(_message(b"F", encode_frame(first, _events(2, first))[0])
                    for first in firsts)


def _wait(condition, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_connections_frames_are_handed_over_before_the_first_is_answered(lab) -> None:
    """With the store busy (its lock held), frames sent back to back all reach the writer,
    which then commits them together; their answers come in order."""
    tmp, issued = lab
    with serving(tmp, issued) as (collector, port, log), _connect(issued, port) as tls:
        transport.send(tls, b"H", json.dumps({"spool": "s-w", "version": 1}).encode())
        _wait(lambda: "connected from" in log.getvalue(), "the hello")
        with collector._lock:      # the store is busy: the writer waits for it
            # Sent in one write, so that each next frame is there to be read when the
            # collector has handed over the one before.
            tls.sendall(_frames(range(0, 2 * IN_FLIGHT, 2)))
            # The writer took the first and waits for the store; the rest wait for it.
            _wait(lambda: collector.writer.waiting() == IN_FLIGHT - 1, "frames handed over")
        answers = [transport.receive(tls) for _ in range(IN_FLIGHT)]
    assert [kind for kind, _ in answers] == [b"A"] * IN_FLIGHT
    assert [transport.ACK.unpack(body)[:2] for _, body in answers] == [
        (2 * n, 2) for n in range(IN_FLIGHT)]
    assert collector.writer.stats.commits == 1
    assert collector.writer.stats.committed_frames == IN_FLIGHT
    assert collector.stats.events_new == 2 * IN_FLIGHT


def test_the_forwarder_sends_a_window_of_frames_before_it_reads_an_answer(lab) -> None:
    """A collector that reads WINDOW frames before it answers any: a forwarder that waited
    for each answer would stall it. The cursor moves past each answered frame, in order."""
    tmp, issued = lab
    spool = Spool(str(tmp / "spool"), batch_events=2)
    for event in _events(2 * (WINDOW + 2)):
        spool.append(event)
    spool.close()
    c = issued["collector"]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received: list[tuple[int, int]] = []

    def collector() -> None:
        context = transport.server_context(c.cert, c.key, issued["ca"].cert)
        raw, _ = listener.accept()
        raw.settimeout(10)     # a forwarder that waits for an answer first fails the test
        with context.wrap_socket(raw, server_side=True) as tls:
            assert transport.receive(tls)[0] == b"H"
            while len(received) < WINDOW + 2:
                batch = []
                for _ in range(min(WINDOW, WINDOW + 2 - len(received))):
                    kind, body = transport.receive(tls)
                    assert kind == b"F"
                    frame = decode_frame(body)
                    batch.append((frame.first_seq, frame.count))
                received.extend(batch)
                for first, count in batch:
                    transport.send(tls, b"A", transport.ACK.pack(first, count, count))

    answering = threading.Thread(target=collector, daemon=True)
    answering.start()
    try:
        context = transport.client_context(issued["sensor-a"].cert, issued["sensor-a"].key,
                                           issued["ca"].cert)
        forwarder = Forwarder(str(tmp / "spool"), [("127.0.0.1", port)], context,
                              server_name="localhost")
        assert forwarder.forward_once() == 2 * (WINDOW + 2)
    finally:
        forwarder._close()
        answering.join(10)
        listener.close()
    assert received == [(2 * n, 2) for n in range(WINDOW + 2)]
    assert Spool(str(tmp / "spool"), readonly=True).acked() == 2 * (WINDOW + 2)
    assert forwarder.stats.frames_sent == WINDOW + 2 and forwarder.stats.nacks == 0


def test_a_refused_frame_among_handed_ones_is_answered_in_its_place(lab) -> None:
    """A frame that does not decode, sent between two good ones: the good one before it is
    answered first, then the refusal, then the one after."""
    tmp, issued = lab
    damaged = bytearray(encode_frame(2, _events(2, 2))[0])
    damaged[-1] ^= 0xFF                                    # its checksum no longer holds
    with serving(tmp, issued) as (collector, port, _), _connect(issued, port) as tls:
        transport.send(tls, b"H", json.dumps({"spool": "s-n", "version": 1}).encode())
        tls.sendall(_frames([0]) + _message(b"F", bytes(damaged)) + _frames([4]))
        answers = [transport.receive(tls) for _ in range(3)]
    assert [kind for kind, _ in answers] == [b"A", b"N", b"A"]
    assert transport.ACK.unpack(answers[0][1])[:2] == (0, 2)
    assert transport.ACK.unpack(answers[2][1])[:2] == (4, 2)
    assert collector.stats.events_new == 4 and collector.stats.bad_frames == 1


def test_frames_handed_to_the_writer_are_bounded_for_all_connections(lab) -> None:
    """With two writer slots, a connection that sent four frames hands over two while the
    store is busy, and gets every answer, in order, once it is free."""
    tmp, issued = lab
    with serving(tmp, issued, writer_frames=2) as (collector, port, log), \
            _connect(issued, port) as tls:
        transport.send(tls, b"H", json.dumps({"spool": "s-b", "version": 1}).encode())
        _wait(lambda: "connected from" in log.getvalue(), "the hello")
        with collector._lock:
            tls.sendall(_frames(range(0, 8, 2)))
            _wait(lambda: collector.writer.waiting() == 1, "frames handed over")
            time.sleep(0.3)   # room for a third frame to be handed over, were it allowed
            assert collector.writer.waiting() == 1
        answers = [transport.receive(tls) for _ in range(4)]
    assert [transport.ACK.unpack(body)[:2] for _, body in answers] == [
        (2 * n, 2) for n in range(4)]
    assert collector.writer.stats.commits >= 2 and collector.stats.events_new == 8
