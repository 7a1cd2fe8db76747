"""``ttpsensor collect``: receive spool frames from forwarders over mutual TLS and store them.

One thread per connection, blocking TLS sockets: the handshake happens where its failure can be
logged and counted (plain TCP, no client certificate, a certificate from another CA). One
writer thread stores the frames of every connection, those that wait committed together
(collector/writer.py); a frame is acknowledged after its transaction committed.

Nobody can tie it up without a certificate: a connection has :data:`HANDSHAKE_SECONDS` in all
to complete TLS and say hello (a slow sender gains nothing by trickling bytes); at most
:data:`MAX_PENDING` connections may be at that stage, and a new one pushes out the oldest, so
idle connections cannot lock a real sensor out (its handshake takes milliseconds); at most
:data:`MAX_SENSORS` authenticated connections are served, each closed after
:data:`IDLE_SECONDS` without a message (the forwarder reconnects).
"""

from __future__ import annotations

import json
import select
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, TextIO

from collector.admit import (AdmitCounts, Identity, Refused, SpoolOwners, admit,
                            certificate_identity)
from collector.store import Incoming, IngestResult, Store
from collector.writer import CAPACITY, FrameWriter, Pending
from common import transport, ttphash
from common.gcpolicy import steady_gc
from common.spool import claimed_first_seq, decode_frame


HANDSHAKE_SECONDS = 10.0
IDLE_SECONDS = 600.0
IN_FLIGHT = 4          # a connection's frames handed to the writer before the first is answered
MAX_PENDING = 128
MAX_SENSORS = 1024
LISTEN_BACKLOG = 1024


@dataclass
class CollectorStats:
    connections: int = 0
    refused: int = 0
    evicted: int = 0              # connections closed before their hello: too slow, or pushed
                                  # out by newer ones
    over_capacity: int = 0        # authenticated connections refused: MAX_SENSORS reached
    refused_hosts: int = 0        # hellos from a host the certificate does not speak for
    frames: int = 0
    events_new: int = 0
    events_duplicate: int = 0
    bad_frames: int = 0
    internal_errors: int = 0
    by_sensor: dict[str, int] = field(default_factory=dict)


class Collector:
    def __init__(self, store: Store, context: ssl.SSLContext,
                 log: TextIO | None = None, writer_frames: int = CAPACITY) -> None:
        self.store = store
        self.context = context
        self.log_stream = log if log is not None else sys.stderr
        self.stats = CollectorStats()
        self.admitted = AdmitCounts()   # TTPHash checks, refused frames and spools
        self.owners = SpoolOwners(store)
        self._lock = threading.Lock()   # the stats, the pending connections, the store
        self.writer = FrameWriter(store, self._lock, self._stored, writer_frames)
        # TTPHashes recomputed at admission, remembered across sensors: a fleet's commands
        # repeat (one thread at a time uses it).
        self.memo = ttphash.Memo()
        self._memo_lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None
        # Connections before their hello, oldest first: socket -> deadline (monotonic).
        self._pending: OrderedDict[socket.socket, float] = OrderedDict()
        self._sensors = 0
        self._reaper_stop = threading.Event()

    def log(self, message: str) -> None:
        self.log_stream.write(f"ttpsensor collect: {message}\n")
        self.log_stream.flush()

    def _admit(self, raw: socket.socket) -> None:
        """Count a new connection as pending; push out the oldest pending ones over the cap."""
        with self._lock:
            self._pending[raw] = time.monotonic() + HANDSHAKE_SECONDS
            while len(self._pending) > MAX_PENDING:
                oldest, _ = self._pending.popitem(last=False)
                self.stats.evicted += 1
                _kill(oldest)

    def _reap(self) -> None:
        """Close pending connections past their deadline (a trickle of bytes does not help:
        the deadline is for the whole handshake and hello)."""
        while not self._reaper_stop.wait(0.5):
            now = time.monotonic()
            with self._lock:
                while self._pending:
                    raw, deadline = next(iter(self._pending.items()))
                    if deadline > now:
                        break
                    del self._pending[raw]
                    self.stats.evicted += 1
                    _kill(raw)

    def handle(self, raw: socket.socket, peer: tuple[str, int]) -> None:
        self._admit(raw)
        raw.settimeout(HANDSHAKE_SECONDS)
        try:
            sock = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with self._lock:
                # One that was pushed out or timed out is counted as evicted already.
                evicted = self._pending.pop(raw, None) is None
                if not evicted:
                    self.stats.refused += 1
            if not evicted:
                self.log(f"refused {peer[0]}:{peer[1]}: {exc}")
            raw.close()
            return
        counted = False
        try:
            identity = certificate_identity(sock.getpeercert() or {})
            kind, body = transport.receive(sock)
            if kind != b"H":
                raise transport.ProtocolError("no hello")
            spool_id, host = _hello(body)
            with self._lock:
                if self._pending.pop(raw, None) is None:
                    raise transport.ProtocolError("too slow: closed before its hello")
                if self._sensors >= MAX_SENSORS:
                    self.stats.over_capacity += 1
                    raise transport.ProtocolError(f"over capacity ({MAX_SENSORS} sensors)")
                self._sensors += 1
                counted = True
                self.stats.connections += 1
                refusal = self._refusal(identity, spool_id, host)
            if refusal is not None:
                # Refused before any frame: the forwarder keeps its spool and says why.
                transport.send(sock, b"R", refusal.encode("utf-8", "replace"))
                self.log(f"refused {identity.name} from {peer[0]}: {refusal}")
                _drain_and_close(sock)
                return
            sock.settimeout(IDLE_SECONDS)
            self.log(f"{identity.name} connected from {peer[0]} (spool {spool_id})")
            self._frames(sock, identity, spool_id)
        except Refused as exc:
            with self._lock:
                self.stats.refused += 1
            self.log(f"refused a sensor from {peer[0]}: {exc}")
        except (transport.ProtocolError, OSError, ValueError, KeyError) as exc:
            if not isinstance(exc, transport.ProtocolError) or "closed" not in str(exc):
                self.log(f"connection from {peer[0]} ended: {exc}")
        except Exception as exc:  # noqa: BLE001 - a peer must never leave a traceback
            with self._lock:
                self.stats.internal_errors += 1
            self.log(f"connection from {peer[0]} ended by an internal error: "
                     f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._pending.pop(raw, None)
                if counted:
                    self._sensors -= 1
            sock.close()

    def _refusal(self, identity: Identity, spool_id: str, host: str | None) -> str | None:
        """Why this sensor may not deliver this spool (called under the lock), or None."""
        if host is not None and not identity.speaks_for(host):
            self.stats.refused_hosts += 1
            return (f"this host is {host!r}, which certificate {identity.name!r} does not "
                    f"speak for (it names {', '.join(sorted(identity.hosts))}); issue the "
                    "sensor a certificate for its host name")
        try:
            self.owners.claim(identity, spool_id, self.admitted)
        except Refused as exc:
            return str(exc)
        return None

    def _frames(self, sock: ssl.SSLSocket, identity: Identity, spool_id: str) -> None:
        """Store a connection's frames and answer each, in order. A forwarder may send
        several frames before it reads an answer: while frames keep coming, up to IN_FLIGHT
        of them are handed to the writer before the first is answered, so that one is
        decoded and admitted while the one before it commits, and frames that wait together
        are committed together. A frame is still answered only after its commit; when
        nothing more is there to read, every frame handed over is answered (a forwarder that
        waits for each answer gets it)."""
        handed: deque[Pending] = deque()
        while True:
            while handed and (len(handed) >= IN_FLIGHT or not _more_to_read(sock)):
                self._answer(sock, identity.name, handed.popleft())
            kind, body = transport.receive(sock)
            if kind != b"F":
                raise transport.ProtocolError(f"unexpected message {kind!r}")
            first = claimed_first_seq(body)
            try:
                frame = decode_frame(body)
                events, documents = frame.events_and_documents()
                with self._memo_lock:
                    admission = admit(identity, frame.first_seq, frame.count, events,
                                      self.admitted, self.memo)
            except Exception as exc:  # noqa: BLE001 - any undecodable or refused frame
                while handed:  # answers go in the order of their frames
                    self._answer(sock, identity.name, handed.popleft())
                self._refuse(sock, identity.name, first, str(exc))
                continue
            # With the writer full (all connections together) this waits for room.
            # WriterClosed goes up: no answer, the connection closes, and the forwarder sends
            # the frames it has no answer for again.
            handed.append(self.writer.submit(Incoming(
                spool_id, frame.first_seq, events, identity.name,
                admission.received(documents), admission.canonical)))

    def _answer(self, sock: ssl.SSLSocket, sensor: str, pending: Pending) -> None:
        """ACK a frame once it is committed, or NACK the one the store refused."""
        frame = pending.frame
        try:
            result = pending.result()
        except Exception as exc:  # noqa: BLE001 - refused, never a silent resend loop
            self._refuse(sock, sensor, frame.first_seq, f"the store refused it: "
                         f"{type(exc).__name__}: {exc}")
            return
        transport.send(sock, b"A", transport.ACK.pack(frame.first_seq, len(frame.events),
                                                      result.new))

    def _stored(self, frame: Incoming, outcome: IngestResult | Exception) -> None:
        """The writer's report of each frame it stored (under the lock)."""
        if isinstance(outcome, Exception):
            return  # counted by _refuse, which answers the sender
        self.stats.frames += 1
        self.stats.events_new += outcome.new
        self.stats.events_duplicate += outcome.duplicates
        self.stats.by_sensor[frame.sensor] = (self.stats.by_sensor.get(frame.sensor, 0)
                                              + outcome.new)

    def _refuse(self, sock: ssl.SSLSocket, sensor: str, first: int, reason: str) -> None:
        """NACK a frame (the forwarder skips it, counted on both sides) and log why."""
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
            request_queue_size = LISTEN_BACKLOG

        self._server = Server((host, port), Handler)
        threading.Thread(target=self._reap, name="reaper", daemon=True).start()
        bound = self._server.server_address[1]
        # Frames of decoded events are what the process holds: Python's cyclic collector
        # would walk them all again and again (common/gcpolicy.py).
        with steady_gc():
            self.log(f"listening on {host}:{bound}")
            if ready is not None:
                ready(bound)
            self._server.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self._reaper_stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.writer.close()


def _more_to_read(sock: ssl.SSLSocket) -> bool:
    """Whether a message has begun to arrive (decrypted and waiting, or bytes on the socket):
    reading it will not wait on a peer that waits for an answer."""
    return sock.pending() > 0 or bool(select.select([sock], [], [], 0)[0])


def _drain_and_close(raw: socket.socket, seconds: float = 2.0) -> None:
    """End a connection whose peer is still sending (its first frame, written before it read
    our refusal): closing with unread data would reset the connection and lose the refusal, so
    stop writing, read (and drop, undecrypted) until the peer closes or ``seconds`` pass; the
    caller closes."""
    try:
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(seconds)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and raw.recv(1 << 16):
            pass
    except OSError:
        pass


def _kill(raw: socket.socket) -> None:
    """Close a connection another thread is blocked on (its recv then fails at once)."""
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _hello(body: bytes) -> tuple[str, str | None]:
    """The spool id and (from forwarders since issue 16) the host name a hello names."""
    try:
        hello = json.loads(body)
    except ValueError as exc:
        raise transport.ProtocolError(f"malformed hello: {exc}") from exc
    if not isinstance(hello, dict) or not isinstance(hello.get("spool"), str) \
            or not 0 < len(hello["spool"]) <= 64:
        raise transport.ProtocolError("malformed hello")
    host = hello.get("host")
    if host is not None and (not isinstance(host, str) or not 0 < len(host) <= 255):
        raise transport.ProtocolError("malformed hello: a host that is not a name")
    return hello["spool"], host
