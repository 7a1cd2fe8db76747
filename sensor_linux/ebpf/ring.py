"""The probes' BPF ring buffer, read in place.

Hand-written because it is the hot path of the eBPF source: BCC hands each record to Python
through a ctypes callback, and with a callback that did nothing, beside the overhead lab's load
at 1000 execs/s, that path cost 15-17 µs of CPU per record. Here a batch is one Python loop over
the ring's pages, mapped as libbpf maps them (``tools/lib/bpf/ringbuf.c``):

* the consumer page at offset 0, read and written: ``consumer_pos``;
* the producer page after it, read-only: ``producer_pos``, then the data area mapped twice in a
  row, so that a record that wraps around the end reads as one piece.

Each record starts with an 8-byte header: its length (the low 30 bits), a *busy* bit while the
program still writes it and a *discard* bit for a record it gave up; records are 8-byte aligned.
Positions only grow (the data offset is a position modulo the size). The consumer position is
stored after each record, so the kernel can reuse the space at once; a record whose delivery
raised is consumed (as libbpf does), and the error is raised to the caller.

The protocol needs the positions and headers loaded with acquire and the consumer position
stored with release semantics, each whole. x86-64 gives plain loads and stores those orders.
The positions are read and the consumer position written through a ``memoryview`` cast to
unsigned 64-bit items: an item is stored with one aligned 8-byte store. Not with
``struct.pack_into``: CPython's packer zeroes its destination before it writes the value, and
a producer on another CPU that read the consumer position in between saw 0, took the ring for
full (its new position minus 0 past the size) and refused the record
(``probe_drops.ringbuf_full``) while the ring stood empty: the loss this reader showed until
2026-12-03 (``python -m tests.ring_stress``: 1 to 4 records refused in 13 of 15 runs).
``tests/test_ebpf_ring.py`` watches the position from another process for exactly that.

On x86-64 this reader is the default (:data:`IN_PLACE`); ``TTPSENSOR_RING_IN_PLACE=0`` takes
BCC's callback instead, which other architectures always use.
"""

from __future__ import annotations

import mmap
import os
import platform
import select
import struct
from typing import Callable

# Where the plain loads and stores of this module have the orders the ring needs, unless
# BCC's reader is asked for.
IN_PLACE = (os.environ.get("TTPSENSOR_RING_IN_PLACE") != "0"
            and platform.machine() in ("x86_64", "AMD64"))

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HEADER = 8
_LENGTH = struct.Struct("I")


class RingReader:
    """Records of the BPF ring buffer map ``map_fd`` of ``size`` bytes (a power of two, a
    multiple of the page size)."""

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1) or size % mmap.PAGESIZE:
            raise ValueError(f"a ring buffer's size is a power of two of pages, not {size}")
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._ring = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=page)
        except BaseException:
            self._consumer.close()
            raise
        # The positions as whole 64-bit items (see the module's docstring).
        self._consumed = memoryview(self._consumer).cast("Q")
        self._produced = memoryview(self._ring)[:8].cast("Q")
        self._data = page          # where the data area starts in self._ring
        self._mask = size - 1
        self._poller = select.poll()
        self._poller.register(map_fd, select.POLLIN)

    def read(self, deliver: Callable[[bytes], None], timeout_ms: int = 0) -> int:
        """Deliver, in order, the records committed when the read began (after waiting up to
        ``timeout_ms`` for one when there is none); returns how many were delivered. One pass:
        what arrives meanwhile waits for the next read, so a flood cannot keep the caller from
        its other work (ticks, flushes, a stop)."""
        ring, consumed = self._ring, self._consumed
        position = consumed[0]
        produced = self._produced[0]
        if timeout_ms and produced <= position:
            self._poller.poll(timeout_ms)
            produced = self._produced[0]
        delivered = 0
        while position < produced:
            offset = self._data + (position & self._mask)
            header = _LENGTH.unpack_from(ring, offset)[0]
            if header & _BUSY:
                break  # still being written; the next read takes it
            length = header & ~(_BUSY | _DISCARD)
            start = offset + _HEADER
            position += (length + _HEADER + 7) & ~7
            try:
                if not header & _DISCARD:
                    delivered += 1
                    deliver(ring[start:start + length])
            finally:
                consumed[0] = position
        return delivered

    @property
    def position(self) -> int:
        """Bytes taken out of the ring since it was made (headers and alignment included)."""
        return self._consumed[0]

    def close(self) -> None:
        self._consumed.release()
        self._produced.release()
        self._ring.close()
        self._consumer.close()


class RingWake:
    """A descriptor that turns readable when the probes wake their reader, whichever reader
    it is. The probes put their records in the ring without a wake-up and force one only for
    what must not wait (``execsnoop.c``: ``wake_flags``); the ring's own descriptor is
    readable whenever it holds a record, so it is watched edge-triggered, through an epoll
    instance of its own: readable from a wake-up until :meth:`clear`."""

    def __init__(self, map_fd: int) -> None:
        self._epoll = select.epoll()
        try:
            self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)
        except BaseException:
            self._epoll.close()
            raise

    def fileno(self) -> int:
        return self._epoll.fileno()

    def clear(self) -> None:
        """Take the wake-up, before the ring is read (one during the read stays)."""
        self._epoll.poll(0)

    def close(self) -> None:
        self._epoll.close()
