"""Many datagrams per system call (sensor_linux/audit/datagrams.py), against reading them one
at a time: the same bytes, in the same order, the same errors. The live comparison on the
kernel's own audit records is in tests/test_audit_live.py."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

import pytest

from sensor_linux.audit import netlink
from sensor_linux.audit.datagrams import DatagramBatch, _recvmmsg, open_batch
from sensor_linux.audit.lines import MAX_LINE
from sensor_linux.audit.netlink import AuditSocket, datagram_line


def _pair() -> tuple[socket.socket, socket.socket]:
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.setblocking(False)
    return sender, receiver


def test_a_batch_is_the_datagrams_in_order_cut_at_the_slot_and_then_empty() -> None:
    assert _recvmmsg() is not None, "glibc has recvmmsg: the batch path must be the one run"
    batch = DatagramBatch(_recvmmsg(), slots=4, slot_bytes=64)
    sender, receiver = _pair()
    sent = [b"a", b"", os.urandom(63), os.urandom(64), os.urandom(65), b"sixth", b"7"]
    for data in sent:
        sender.send(data)
    first = [bytes(d) for d in batch.receive(receiver.fileno())]
    assert first == [b"a", b"", sent[2], sent[3]]            # a full batch: four slots
    second = [bytes(d) for d in batch.receive(receiver.fileno())]
    assert second == [sent[4][:64], b"sixth", b"7"]          # 65 bytes cut at the slot's 64
    with pytest.raises(BlockingIOError):
        batch.receive(receiver.fileno())
    batch.close()


def _nlmsg(msg_type: int, body: bytes) -> bytes:
    # kauditd's quirk: nlmsg_len is the payload's length, not the message's.
    return struct.pack("=IHHII", len(body), msg_type, 0, 0, 0) + body


DATAGRAMS = [
    _nlmsg(1300, b'audit(1.5:7): arch=c000003e syscall=59 success=yes\0'),
    _nlmsg(2, b"\0" * 20),                                   # an ack: not a record
    _nlmsg(1309, b'audit(1.5:7): argc=2 a0="/bin/true" a1="x"\n'),
    b"short",                                                # shorter than a header
    _nlmsg(1320, b"audit(1.5:7): "),
    _nlmsg(1302, b"audit(1.5:7): item=0 name=" + b"41" * (MAX_LINE // 2 + 10)),  # over-long
    _nlmsg(9999, b"audit(1.5:8): unknown type"),
]


def _audit_socket_on(receiver: socket.socket) -> AuditSocket:
    sock = AuditSocket()
    sock.sock.close()
    sock.sock = receiver
    return sock


def _kept(lines: list[bytes]) -> list[object]:
    """What the pipeline makes of lines: an over-long one is a parse error that keeps its
    first MAX_LINE bytes (sensor_linux/audit/pipeline.py), however much longer it was."""
    return [line if len(line) <= MAX_LINE else ("over-long", line[:MAX_LINE]) for line in lines]


def _all(read) -> list[bytes]:  # noqa: ANN001 - a bound read_batch or read_records
    lines: list[bytes] = []
    while True:
        try:
            got = read()
        except BlockingIOError:
            return lines
        lines.extend(got[0])


@pytest.mark.parametrize("batched", [True, False], ids=["recvmmsg", "no-recvmmsg"])
def test_read_batch_gives_the_lines_of_one_datagram_at_a_time(batched: bool) -> None:
    sender, receiver = _pair()
    one_by_one = _audit_socket_on(receiver)
    for data in DATAGRAMS:
        sender.send(data)
    expected = _all(one_by_one.read_records)
    assert len(expected) == 5 and expected[0].startswith(b"type=SYSCALL msg=audit(1.5:7): ")
    assert expected[1] == b'type=EXECVE msg=audit(1.5:7): argc=2 a0="/bin/true" a1="x"\n'
    assert len(expected[3]) > MAX_LINE                       # the pipeline keeps it as an error

    sender2, receiver2 = _pair()
    batch = _audit_socket_on(receiver2)
    if not batched:
        batch._batch = False  # as where the C library has no recvmmsg
    for data in DATAGRAMS:
        sender2.send(data)
    lines, lost, more = batch.read_batch()
    assert lost == 0
    if batched:
        assert _kept(lines) == _kept(expected) and more is False   # all in one call
    else:
        assert more is True and lines == expected[:1]        # one datagram a call
        assert lines + _all(batch.read_batch) == expected   # the same reads as before
    with pytest.raises(BlockingIOError):
        batch.read_batch()
    for sock in (one_by_one, batch):
        sock.close()


def test_a_full_batch_says_more_may_wait() -> None:
    sender, receiver = _pair()
    sock = _audit_socket_on(receiver)
    batch = open_batch(netlink._NLMSGHDR.size + MAX_LINE + 1)
    assert batch is not None
    for i in range(batch.slots + 3):
        sender.send(_nlmsg(1309, b"audit(1.5:%d): argc=1 a0=\"x\"" % i))
    lines, _, more = sock.read_batch()
    assert len(lines) == batch.slots and more is True
    lines, _, more = sock.read_batch()
    assert len(lines) == 3 and more is False
    sock.close()
    batch.close()


def _failing(code: int):  # noqa: ANN202 - a stand-in for the C library's recvmmsg
    def recvmmsg(*_: object) -> int:
        ctypes.set_errno(code)
        return -1
    return recvmmsg


def test_an_overflow_is_counted_and_other_errors_are_raised() -> None:
    sender, receiver = _pair()
    sock = _audit_socket_on(receiver)
    sock._batch = DatagramBatch(_failing(errno.ENOBUFS), slots=2, slot_bytes=64)
    assert sock.read_batch() == ([], 1, True)                # lost, and read on
    sock._batch = DatagramBatch(_failing(errno.EAGAIN), slots=2, slot_bytes=64)
    with pytest.raises(BlockingIOError):
        sock.read_batch()
    sock._batch = DatagramBatch(_failing(errno.EBADF), slots=2, slot_bytes=64)
    with pytest.raises(OSError) as raised:
        sock.read_batch()
    assert raised.value.errno == errno.EBADF and not isinstance(raised.value, BlockingIOError)
    sock.close()


def test_datagram_line_is_what_read_records_made_of_it() -> None:
    assert datagram_line(memoryview(b"tiny")) is None
    assert datagram_line(memoryview(_nlmsg(3, b""))) is None
    assert datagram_line(memoryview(_nlmsg(1327, b"audit(1.5:7): proctitle=74727565\0\n"))) \
        == b"type=PROCTITLE msg=audit(1.5:7): proctitle=74727565\n"
