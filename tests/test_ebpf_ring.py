"""The in-place ring buffer reader (sensor_linux/ebpf/ring.py) against the layout libbpf reads,
laid out in a file by a stand-in producer: records that wrap around the end of the data area
(which the kernel maps twice in a row; here the stand-in writes both copies), a record still
being written, discarded records, and a delivery that raises. The live tests read the real
kernel's ring the same way (tests/test_ebpf_live.py, a one-page ring included)."""

from __future__ import annotations

import mmap
import os
import struct

import pytest

from sensor_linux.ebpf.ring import RingReader

PAGE = mmap.PAGESIZE
SIZE = PAGE  # one page of data: records wrap often
BUSY, DISCARD = 1 << 31, 1 << 30


class Producer:
    """Writes records as the kernel does: header (length and flags) then data, 8-aligned, at
    producer position modulo the size, into both copies of the data area."""

    def __init__(self, path: str) -> None:
        with open(path, "wb") as f:
            f.truncate(2 * PAGE + 2 * SIZE)
        self.fd = os.open(path, os.O_RDWR)
        self.mem = mmap.mmap(self.fd, 2 * PAGE + 2 * SIZE)
        self.position = 0

    def consumer(self) -> int:
        return struct.unpack_from("Q", self.mem, 0)[0]

    def put(self, data: bytes, flags: int = 0) -> None:
        length = len(data)
        total = (length + 8 + 7) & ~7
        assert self.position + total - self.consumer() <= SIZE, "the ring is full"
        raw = struct.pack("I", length | flags) + b"\0" * 4 + data + b"\0" * (total - 8 - length)
        start = self.position % SIZE
        for i, byte in enumerate(raw):  # both copies: what the double mapping shows
            at = (start + i) % SIZE
            self.mem[2 * PAGE + at] = byte
            self.mem[2 * PAGE + SIZE + at] = byte
        self.position += total
        struct.pack_into("Q", self.mem, PAGE, self.position)

    def commit(self, at: int, length: int) -> None:
        """Clear the busy bit of the record at producer position ``at``."""
        offset = 2 * PAGE + at % SIZE
        struct.pack_into("I", self.mem, offset, length)
        struct.pack_into("I", self.mem, 2 * PAGE + SIZE + at % SIZE, length)

    def close(self) -> None:
        self.mem.close()
        os.close(self.fd)


@pytest.fixture
def ring(tmp_path):
    producer = Producer(str(tmp_path / "ring"))
    reader = RingReader(producer.fd, SIZE)
    yield producer, reader
    reader.close()
    producer.close()


def test_records_come_out_whole_and_in_order_across_many_wraps(ring) -> None:
    producer, reader = ring
    got: list[bytes] = []
    sent: list[bytes] = []
    for n in range(2000):
        data = os.urandom(1 + (n * 37) % 700)   # sizes that end anywhere in the ring
        producer.put(data)
        sent.append(data)
        if n % 3 == 2:
            reader.read(got.append)
    reader.read(got.append)
    assert got == sent
    assert producer.consumer() == producer.position


def test_a_record_being_written_stops_the_read_and_discarded_ones_are_skipped(ring) -> None:
    producer, reader = ring
    got: list[bytes] = []
    producer.put(b"first")
    producer.put(b"dropped by the program", DISCARD)
    busy_at = producer.position
    producer.put(b"not yet", BUSY)
    producer.put(b"after it")
    assert reader.read(got.append) == 1 and got == [b"first"]
    assert producer.consumer() == busy_at   # the discarded one is consumed, the busy one not
    assert reader.read(got.append) == 0
    producer.commit(busy_at, len(b"not yet"))
    assert reader.read(got.append) == 2 and got == [b"first", b"not yet", b"after it"]


def test_a_delivery_that_raises_consumes_its_record_and_leaves_the_rest(ring) -> None:
    producer, reader = ring
    for data in (b"one", b"two", b"three"):
        producer.put(data)

    def refuse_two(data: bytes) -> None:
        if data == b"two":
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        reader.read(refuse_two)
    got: list[bytes] = []
    reader.read(got.append)
    assert got == [b"three"]


def test_a_size_that_is_not_a_power_of_two_of_pages_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError):
        RingReader(0, 3 * PAGE)


def test_one_read_takes_what_was_there_when_it_began(ring) -> None:
    """Records committed during a read wait for the next one: a flood must not keep the
    sensor's loop from ticking, flushing and stopping."""
    producer, reader = ring
    got: list[bytes] = []

    def deliver_and_produce(data: bytes) -> None:
        got.append(data)
        producer.put(b"during " + data)

    producer.put(b"a")
    producer.put(b"b")
    assert reader.read(deliver_and_produce) == 2 and got == [b"a", b"b"]
    assert reader.read(got.append) == 2 and got[2:] == [b"during a", b"during b"]
