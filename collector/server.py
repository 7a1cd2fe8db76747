"""``ttpsensor collect``: receive spool frames from forwarders over mutual TLS and store them.

One thread per connection, blocking TLS sockets: the handshake happens where its failure can be
logged and counted (plain TCP, no client certificate, a certificate from another CA). Writes to
the store are serialized; a frame is acknowledged after its transaction committed.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, TextIO

from collector.store import Store
from common import transport
from common.spool import decode_frame


@dataclass
class CollectorStats:
    connections: int = 0
    refused: int = 0
    frames: int = 0
    events_new: int = 0
    events_duplicate: int = 0
    bad_frames: int = 0
    internal_errors: int = 0
    by_sensor: dict[str, int] = field(default_factory=dict)


class Collector:
    def __init__(self, store: Store, context: ssl.SSLContext,
                 log: TextIO | None = None) -> None:
        self.store = store
        self.context = context
        self.log_stream = log if log is not None else sys.stderr
        self.stats = CollectorStats()
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None

    def log(self, message: str) -> None:
        self.log_stream.write(f"ttpsensor collect: {message}\n")
        self.log_stream.flush()

    def handle(self, raw: socket.socket, peer: tuple[str, int]) -> None:
        try:
            sock = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with self._lock:
                self.stats.refused += 1
            self.log(f"refused {peer[0]}:{peer[1]}: {exc}")
            raw.close()
            return
        try:
            sensor = transport.peer_name(sock)
            kind, body = transport.receive(sock)
            if kind != b"H":
                raise transport.ProtocolError("no hello")
            hello = json.loads(body)
            if not isinstance(hello, dict) or not isinstance(hello.get("spool"), str) \
                    or not 0 < len(hello["spool"]) <= 64:
                raise transport.ProtocolError("malformed hello")
            spool_id = hello["spool"]
            with self._lock:
                self.stats.connections += 1
            self.log(f"{sensor} connected from {peer[0]} (spool {spool_id})")
            while True:
                kind, body = transport.receive(sock)
                if kind != b"F":
                    raise transport.ProtocolError(f"unexpected message {kind!r}")
                self._frame(sock, sensor, spool_id, body)
        except (transport.ProtocolError, OSError, ValueError, KeyError) as exc:
            if not isinstance(exc, transport.ProtocolError) or "closed" not in str(exc):
                self.log(f"connection from {peer[0]} ended: {exc}")
        except Exception as exc:  # noqa: BLE001 - a peer must never leave a traceback
            with self._lock:
                self.stats.internal_errors += 1
            self.log(f"connection from {peer[0]} ended by an internal error: "
                     f"{type(exc).__name__}: {exc}")
        finally:
            sock.close()

    def _frame(self, sock: ssl.SSLSocket, sensor: str, spool_id: str, data: bytes) -> None:
        first = int.from_bytes(data[12:20], "little") if len(data) >= 20 else 0
        try:
            frame = decode_frame(data)
            events = frame.events()
            check_frame(frame.first_seq, frame.count, events)
        except Exception as exc:  # noqa: BLE001 - any undecodable frame is refused
            self._refuse(sock, sensor, first, str(exc))
            return
        with self._lock:
            try:
                result = self.store.ingest(spool_id, frame.first_seq, events, sensor)
            except Exception as exc:  # noqa: BLE001 - refused, never a silent resend loop
                self._refuse(sock, sensor, first, f"the store refused it: "
                             f"{type(exc).__name__}: {exc}", locked=True)
                return
            self.stats.frames += 1
            self.stats.events_new += result.new
            self.stats.events_duplicate += result.duplicates
            self.stats.by_sensor[sensor] = self.stats.by_sensor.get(sensor, 0) + result.new
        transport.send(sock, b"A", transport.ACK.pack(frame.first_seq, frame.count, result.new))

    def _refuse(self, sock: ssl.SSLSocket, sensor: str, first: int, reason: str,
                locked: bool = False) -> None:
        """NACK a frame (the forwarder skips it, counted on both sides) and log why."""
        if locked:
            self.stats.bad_frames += 1
        else:
            with self._lock:
                self.stats.bad_frames += 1
        transport.send(sock, b"N", (first & (2**64 - 1)).to_bytes(8, "big")
                       + reason[:1000].encode("utf-8", "replace"))
        self.log(f"refused a frame from {sensor}: {reason[:300]}")

    def serve(self, host: str, port: int, ready: Callable[[int], None] | None = None) -> None:
        collector = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                collector.handle(self.request, self.client_address)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((host, port), Handler)
        bound = self._server.server_address[1]
        self.log(f"listening on {host}:{bound}")
        if ready is not None:
            ready(bound)
        self._server.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


MAX_SEQ = 2**63 - 1                    # what the stores' 64-bit integer columns hold
_TEXT_FIELDS = (("@timestamp",), ("event", "action"), ("event", "id"), ("host", "name"),
                ("ttphash", "value"))


def check_frame(first_seq: int, count: int, events: list) -> None:
    """Refuse (ValueError) a frame whose numbers or fields the store cannot hold as stored
    events: a sequence past 2^63, a count that disagrees with its events, an event that is not
    a map, or a text field of another type."""
    if first_seq + count > MAX_SEQ:
        raise ValueError(f"sequence numbers past 2^63 ({first_seq} + {count})")
    if len(events) != count:
        raise ValueError(f"the frame says {count} events and holds {len(events)}")
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise ValueError(f"event {index} is not a map")
        for path in _TEXT_FIELDS:
            node = event
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if node is not None and not isinstance(node, str):
                raise ValueError(f"event {index}: {'.'.join(path)} is a "
                                 f"{type(node).__name__}, not text")
