"""Forwarder <-> collector protocol over mutual TLS.

Every message is ``length u32 (big-endian) | type u8 | body``:

* ``H`` hello, sensor -> collector: JSON ``{"spool": <spool id>, "host": <host name>,
  "version": 1}`` (``host`` since issue 16; older forwarders leave it out);
* ``F`` frame, sensor -> collector: one spool frame exactly as on disk (its CRC is checked);
* ``A`` ack, collector -> sensor: ``first seq u64 | count u32 | new u32`` once stored;
* ``N`` nack, collector -> sensor: ``first seq u64 | reason`` for a frame it refused (the
  forwarder skips that frame);
* ``R`` refused, collector -> sensor: ``reason``, in place of the first ack, for a hello the
  collector will not serve (a spool id another sensor owns, a host name the certificate does
  not cover); the connection closes and the forwarder keeps its spool.

The sensor is who its client certificate says (CN, and DNS names as further host names); the
hello only names its spool and host, which the collector checks against that identity
(collector/admit.py). A frame is acknowledged only after the store committed it, and storing
is idempotent by (spool, seq), so resending after any failure is safe: at least once on the
wire, exactly once in the store.
"""

from __future__ import annotations

import socket
import ssl
import struct

PORT = 7531
MAX_MESSAGE = 128 << 20
_LEN = struct.Struct(">I")
ACK = struct.Struct(">QII")


class ProtocolError(ConnectionError):
    pass


class RefusedError(ProtocolError):
    """The collector refused to serve this sensor; the message is its reason."""


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    context.verify_mode = ssl.CERT_REQUIRED  # no certificate from our CA, no connection
    return context


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    return context


def send(sock: socket.socket, kind: bytes, body: bytes) -> None:
    sock.sendall(_LEN.pack(len(body) + 1) + kind + body)


def _exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ProtocolError("connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> tuple[bytes, bytes]:
    (length,) = _LEN.unpack(_exactly(sock, 4))
    if not 1 <= length <= MAX_MESSAGE:
        raise ProtocolError(f"bad message length {length}")
    data = _exactly(sock, length)
    return data[:1], data[1:]
