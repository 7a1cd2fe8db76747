"""The in-place ring buffer reader (sensor_linux/ebpf/ring.py) against the layout libbpf reads,
laid out in a file by a stand-in producer: records that wrap around the end of the data area
(which the kernel maps twice in a row; here the stand-in writes both copies), a record still
being written, discarded records, and a delivery that raises. The live tests read the real
kernel's ring the same way (tests/test_ebpf_live.py, a one-page ring included). Then the ring
input's gathering (sensor_linux/ebpf/source.py, batching.Gather) with stand-in probes; the
runner's loop with inputs that are due or woken is in tests/test_runner_pump.py."""

from __future__ import annotations

import mmap
import os
import struct
import time

import pytest

from sensor_linux.ebpf.ring import RingReader
from sensor_linux.batching import BATCH_SECONDS

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
        first = min(len(raw), SIZE - start)   # what fits before the end, then the wrapped rest
        for copy in (2 * PAGE, 2 * PAGE + SIZE):  # both copies: what the double mapping shows
            self.mem[copy + start:copy + start + first] = raw[:first]
            self.mem[copy:copy + len(raw) - first] = raw[first:]
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


def test_the_consumer_position_is_never_seen_to_go_back(ring) -> None:
    """The kernel's producers read the consumer position at any moment, from other CPUs. A
    store that passes through another value on its way (struct.pack_into zeroes its
    destination first) let a producer see 0, take an empty ring for a full one and refuse the
    record: here a watching process reads the position while the reader consumes, and must
    never see it below a value it saw before."""
    producer, reader = ring
    seen = os.pipe()
    child = os.fork()
    if child == 0:  # the watcher: reads the shared page until the parent is done
        try:
            os.close(seen[0])
            view = memoryview(producer.mem)[:8].cast("Q")
            highest = backwards = reads = 0
            deadline = time.monotonic() + 60     # should the parent never say it is done
            while producer.mem[PAGE + 8] == 0 and time.monotonic() < deadline:
                for _ in range(1000):
                    value = view[0]
                    if value < highest:
                        backwards += 1
                    highest = max(highest, value)
                reads += 1000
            os.write(seen[1], f"{backwards} {reads}".encode())
        finally:
            os._exit(0)
    os.close(seen[1])
    try:
        for _ in range(1500):
            for _ in range(SIZE // 16):   # a full ring of the smallest records, read at once
                producer.put(b"12345678")
            reader.read(lambda data: None)
    finally:
        producer.mem[PAGE + 8] = 1    # the parent's "done" byte
        os.waitpid(child, 0)
    backwards, reads = map(int, os.read(seen[0], 100).split())
    os.close(seen[0])
    assert reads > 0
    assert backwards == 0, f"the consumer position went back {backwards} times in {reads} reads"


def test_the_position_counts_the_bytes_taken_as_the_kernel_counts_them(ring) -> None:
    """The probes are told it (ring_bytes[1]) to know how full the ring is."""
    producer, reader = ring
    assert reader.position == 0
    producer.put(b"x" * 120)          # 8 bytes of header, 120 of data
    producer.put(b"y" * 250)          # 8 of header, 250 of data, 6 of alignment
    reader.read(lambda data: None)
    assert reader.position == 128 + 264


class _Probes:
    """ExecProbes as RingInput sees them: the wake-up descriptor (a pipe here), and reads."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.wake_read, self.wake_write = os.pipe()

    def wake_fd(self) -> int:
        return self.wake_read

    @property
    def reads(self) -> int:
        return self.calls.count("read")

    def clear_wake(self) -> None:
        self.calls.append("clear")

    def poll(self, timeout_ms: int) -> None:
        self.calls.append("read")

    def close(self) -> None:
        os.close(self.wake_read)
        os.close(self.wake_write)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_ring_input_is_due_after_the_gather_time_and_a_read_takes_the_wake_up() -> None:
    from sensor_linux.batching import Gather
    from sensor_linux.ebpf.source import RingInput
    probes, clock = _Probes(), _Clock()
    try:
        ring = RingInput(probes, Gather(0.1, clock))  # type: ignore[arg-type]
        assert ring.fileno() == probes.wake_read
        assert ring.due_in() == pytest.approx(0.1)
        clock.now += 0.06
        assert ring.due_in() == pytest.approx(0.04)
        clock.now += 0.06
        assert ring.due_in() == 0                # late: due now, never negative
        assert ring.drain() == BATCH_SECONDS and probes.reads == 1
        assert probes.calls == ["clear", "read"]   # the wake-up taken before the read
        assert ring.due_in() == pytest.approx(0.1)   # and the gather time starts again
    finally:
        probes.close()


def test_a_gather_time_must_be_positive() -> None:
    from sensor_linux.batching import Gather
    for seconds in (0, -0.1):
        with pytest.raises(ValueError, match="positive"):
            Gather(seconds)


def test_the_hybrid_sources_read_the_gathering_ring_before_each_audit_batch() -> None:
    """An audit event of a process needs its exec, which the ring may still hold."""
    from sensor_linux.batching import Gather
    from sensor_linux.combined import RingFirst
    from sensor_linux.ebpf.source import RingInput
    order: list[str] = []

    class Probes(_Probes):
        def poll(self, timeout_ms: int) -> None:
            order.append("ring")

    class Audit:
        def fileno(self) -> int:
            return 7

        def drain(self) -> float:
            order.append("audit")
            return 0.0

    clock = _Clock()
    probes = Probes()
    try:
        ring = RingInput(probes, Gather(0.1, clock))  # type: ignore[arg-type]
        audit = RingFirst(Audit(), ring)  # type: ignore[arg-type]
        clock.now += 0.02                 # the ring is not due
        assert audit.fileno() == 7 and audit.due_in() is None and audit.drain() == 0.0
        assert order == ["ring", "audit"]
        assert ring.due_in() == pytest.approx(0.1)  # read: its gather time starts again
    finally:
        probes.close()
