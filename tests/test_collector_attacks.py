"""A sensor certificate gone bad, against the real collector over TLS: poison frames and
malformed hellos get a NACK or a closed connection, a log line and a count; no traceback, no
resend loop, and the collector keeps serving the next frame."""

from __future__ import annotations

import json
import socket
import ssl
import struct

import google_crc32c
import pytest
import zstandard

from common import transport, wire
from common.spool import MAGIC, encode_frame
from tests.test_forward_collect import _collector, _events, _free_port, _stored, lab  # noqa: F401

pytestmark = pytest.mark.server


def _connect(issued, port: int) -> ssl.SSLSocket:
    s = issued["sensor-a"]
    context = transport.client_context(s.cert, s.key, issued["ca"].cert)
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    return context.wrap_socket(raw, server_hostname="localhost")


def _frame(first_seq: int, events: list, count: int | None = None, payload: bytes | None = None
           ) -> bytes:
    if payload is None:
        payload = zstandard.ZstdCompressor().compress(wire.pack_batch(events))
    tail = struct.pack("<QI", first_seq, len(events) if count is None else count) + payload
    return MAGIC + struct.pack("<II", len(payload), google_crc32c.value(tail)) + tail


def test_poison_frames_are_refused_and_the_next_good_frame_is_stored(lab) -> None:
    tmp, issued = lab
    port = _free_port()
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
    port = _free_port()
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
