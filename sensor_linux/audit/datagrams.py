"""Many datagrams per system call: ``recvmmsg(2)`` through ctypes.

kauditd sends one record per datagram, about eight per exec. Read one ``recv`` at a time, the
audit sensor spent about 4 µs of CPU per record in the call (a fifth of its time at 1,000 execs/s,
``docs/overhead.md``); ``recvmmsg`` takes a batch's worth of waiting datagrams in one call. The
socket module has no ``recvmmsg`` and no maintained binding offers it, so this is written by hand
against the C library's; :func:`open_batch` returns None where the C library lacks it and the
caller reads one datagram at a time as before.

Each datagram lands in a slot of its own in one anonymous mapping (only the pages datagrams
touch become memory). A slot holds any audit record (the kernel keeps them under 9 KB); a
datagram longer than a slot is cut at the slot's end, as the text reader cuts an over-long line
(sensor_linux/audit/lines.py), so the pipeline keeps it as a parse error.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from typing import Any

MSG_DONTWAIT = 0x40
SLOTS = 128


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_IoVec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("length", ctypes.c_uint)]


def _recvmmsg() -> Any | None:
    """The C library's recvmmsg, or None (no C library to load, or one without it)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                         ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


class DatagramBatch:
    """Up to ``slots`` datagrams of at most ``slot_bytes`` each, received by one call."""

    def __init__(self, recvmmsg: Any, slots: int = SLOTS, slot_bytes: int = 1 << 16) -> None:
        self._recvmmsg = recvmmsg
        self.slots = slots
        self.slot_bytes = slot_bytes
        self._memory = mmap.mmap(-1, slots * slot_bytes,
                                 flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._memory)
        # Held while the kernel may write there: the mapping cannot be closed under it.
        self._anchor = ctypes.c_char.from_buffer(self._memory)
        base = ctypes.addressof(self._anchor)
        self._iovecs = (_IoVec * slots)(*[_IoVec(base + i * slot_bytes, slot_bytes)
                                          for i in range(slots)])
        self._headers = (_MMsgHdr * slots)()
        for i, header in enumerate(self._headers):
            header.hdr.iov = ctypes.pointer(self._iovecs[i])
            header.hdr.iovlen = 1
        self._address = ctypes.addressof(self._headers)

    def receive(self, fd: int) -> list[memoryview]:
        """The datagrams waiting on ``fd`` (at most ``slots``), each a view of its slot, valid
        until the next call. Raises BlockingIOError when none waits, OSError for an error the
        socket reports (ENOBUFS: it dropped datagrams)."""
        count = self._recvmmsg(fd, self._address, self.slots, MSG_DONTWAIT, None)
        if count < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise BlockingIOError(code, os.strerror(code))
            raise OSError(code, os.strerror(code))
        size = self.slot_bytes
        headers = self._headers
        return [self.view[i * size:i * size + headers[i].length] for i in range(count)]

    def close(self) -> None:
        self._anchor = None
        try:
            self.view.release()
            self._memory.close()
        except BufferError:
            pass  # a datagram's view is still held: the mapping goes with the last of them


def open_batch(slot_bytes: int) -> DatagramBatch | None:
    """A batch reader, or None where the C library has no recvmmsg (read one at a time)."""
    function = _recvmmsg()
    return None if function is None else DatagramBatch(function, slot_bytes=slot_bytes)
