"""The forwarder: spool frames to a collector over mutual TLS, each acknowledged as stored.

Reads the spool read-only beside the live writer, from its cursor. Each frame goes to the first
collector that answers (in the order given: failover), and the cursor moves only when that
collector has acknowledged the frame as stored. Any failure (refused connection, a collector
killed mid-frame, a timeout, a collector refusing this sensor's spool or host name) closes the
connection and the same frames are sent again after a backoff (0.5 s doubling to 30 s); the
collector's (spool, seq) keys make the resend harmless.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from common import transport
from common.spool import Frame, Spool, SpoolError

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
IO_TIMEOUT = 30.0
# Frames sent before the first answer is read. Each is at most a spool frame (about 64 KB
# compressed), so the window fits the socket buffers of both sides: neither side's send can
# wait on the other's.
WINDOW = 4


@dataclass
class ForwardStats:
    frames_sent: int = 0
    events_acked: int = 0
    resends: int = 0
    connect_failures: int = 0
    nacks: int = 0
    refusals: int = 0        # connections the collector refused (the spool is kept)
    failovers: int = 0
    last_error: str = ""


@dataclass
class Forwarder:
    spool_dir: str
    collectors: list[tuple[str, int]]
    context: ssl.SSLContext
    server_name: str | None = None     # the name in the collector's certificate
    host_name: str = field(default_factory=socket.gethostname)  # the events' host.name
    stats: ForwardStats = field(default_factory=ForwardStats)
    log: Callable[[str], None] = lambda message: None
    _sock: ssl.SSLSocket | None = None
    _current: int = 0

    def _connect(self, spool_id: str) -> ssl.SSLSocket:
        errors = []
        for attempt in range(len(self.collectors)):
            index = (self._current + attempt) % len(self.collectors)
            host, port = self.collectors[index]
            try:
                raw = socket.create_connection((host, port), timeout=IO_TIMEOUT)
                sock = self.context.wrap_socket(raw, server_hostname=self.server_name or host)
                transport.send(sock, b"H", json.dumps({"spool": spool_id,
                                                       "host": self.host_name,
                                                       "version": 1}).encode())
                if index != self._current:
                    self.stats.failovers += 1
                    self.log(f"forwarding to {host}:{port} (failover)")
                self._current = index
                return sock
            except (OSError, ssl.SSLError) as exc:
                self.stats.connect_failures += 1
                errors.append(f"{host}:{port}: {exc}")
        raise ConnectionError("; ".join(errors))

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def forward_once(self) -> int:
        """Send everything spooled and unacknowledged; returns the events acknowledged.

        Up to WINDOW frames are sent before the first answer is read (answers come in the
        order of the frames): the collector decodes the next frame while it commits the one
        before, instead of waiting for this side's next send. The cursor still moves only
        past answered frames, in order."""
        spool = Spool(self.spool_dir, readonly=True)
        acked_before = spool.acked()
        acked = acked_before
        in_flight: deque[Frame] = deque()
        for frame in spool.read_frames(acked):
            if self._sock is None:
                self._sock = self._connect(spool.spool_id)
            transport.send(self._sock, b"F", frame.raw())
            self.stats.frames_sent += 1
            in_flight.append(frame)
            if len(in_flight) >= WINDOW:
                acked = self._answered(spool, in_flight.popleft(), acked)
        while in_flight:
            acked = self._answered(spool, in_flight.popleft(), acked)
        return acked - acked_before

    def _answered(self, spool: Spool, frame: Frame, acked: int) -> int:
        """Read the answer for ``frame`` (the oldest one in flight) and move the cursor past
        it; returns the new cursor."""
        assert self._sock is not None
        kind, body = transport.receive(self._sock)
        if kind == b"A":
            first, count, _new = transport.ACK.unpack(body)
            if first != frame.first_seq or count != frame.count:
                raise transport.ProtocolError("ack for another frame")
        elif kind == b"R":
            self.stats.refusals += 1
            raise transport.RefusedError(
                f"the collector refused this sensor: {body.decode('utf-8', 'replace')}")
        elif kind == b"N":
            # The collector refused the frame (it says why); keeping it would block every
            # frame behind it forever, so it is skipped and counted.
            self.stats.nacks += 1
            self.log(f"collector refused frame {frame.first_seq}: {body[8:].decode()}")
        else:
            raise transport.ProtocolError(f"unexpected message {kind!r}")
        spool.ack(frame.first_seq + frame.count)
        self.stats.events_acked += frame.first_seq + frame.count - acked
        return frame.first_seq + frame.count

    def run(self, stop: Callable[[], bool], idle: float = 0.2) -> None:
        backoff = BACKOFF_FIRST
        while not stop():
            try:
                sent = self.forward_once()
                backoff = BACKOFF_FIRST
                if not sent:
                    time.sleep(idle)
            except (OSError, ssl.SSLError, transport.ProtocolError, SpoolError,
                    ConnectionError) as exc:
                self._close()
                self.stats.resends += 1
                self.stats.last_error = str(exc)
                self.log(f"forwarding failed ({exc}); retrying in {backoff:.1f} s")
                deadline = time.monotonic() + backoff
                while time.monotonic() < deadline and not stop():
                    time.sleep(0.05)
                backoff = min(backoff * 2, BACKOFF_MAX)
        self._close()
