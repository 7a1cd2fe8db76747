"""The audit netlink protocol: status, rules, registration, and reading records.

Written against ``linux/audit.h`` and ``linux/netlink.h`` with the socket module and struct;
there is no maintained Python binding for audit netlink (libaudit's Python bindings are not
packaged for Debian's Python, and go-audit and auditbeat also speak the protocol themselves).

Two sockets are used: the *record* socket, which registers as the audit daemon (unicast) or joins
the read-only log group (multicast) and only receives; and a *control* socket for requests that
wait for an acknowledgement, so that no record is ever read and dropped while waiting for one.
Rules are saved and restored as the kernel's own ``audit_rule_data`` bytes: a restore puts back
exactly what was there.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import socket
import struct
import time
from dataclasses import asdict, dataclass
from typing import Iterator

from sensor_linux.audit.datagrams import DatagramBatch, open_batch
from sensor_linux.audit.lines import MAX_LINE
from sensor_linux.audit.msgtypes import NAMES
from sensor_linux.audit.syscalls import ARCH_CODES, exec_syscalls

NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

AUDIT_GET = 1000
AUDIT_SET = 1001
AUDIT_ADD_RULE = 1011
AUDIT_DEL_RULE = 1012
AUDIT_LIST_RULES = 1013
AUDIT_FIRST_RECORD = 1100  # below are control messages

AUDIT_STATUS_ENABLED = 0x1
AUDIT_STATUS_FAILURE = 0x2
AUDIT_STATUS_PID = 0x4
AUDIT_STATUS_RATE_LIMIT = 0x8
AUDIT_STATUS_BACKLOG_LIMIT = 0x10
AUDIT_STATUS_BACKLOG_WAIT_TIME = 0x20

AUDIT_FILTER_EXIT = 0x04
AUDIT_ALWAYS = 2
AUDIT_ARCH = 11
AUDIT_FILTERKEY = 210
AUDIT_EQUAL = 0x40000000
AUDIT_BITMASK_SIZE = 64
AUDIT_MAX_FIELDS = 64

ARCH_X86_64 = ARCH_CODES["x86_64"]
ARCH_I386 = ARCH_CODES["i386"]

_NLMSGHDR = struct.Struct("=IHHII")
_NLMSG_TYPE = struct.Struct("=4xH")
_STATUS_FIELDS = ("mask", "enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost",
                  "backlog", "feature_bitmap", "backlog_wait_time", "backlog_wait_time_actual")
_RULE_HEAD = struct.Struct("=III")
_RULE_ARRAYS = 4 * (AUDIT_BITMASK_SIZE + 3 * AUDIT_MAX_FIELDS)
RECV_BUFFER = 1 << 20
SOCKET_BUFFER = 16 << 20
# How long a request waits for the kernel's answer. The kernel answers at once; a missing
# answer (a reply dropped by the kernel) must end in an error, never in a sensor that stops
# reading its records while the machine's execs wait on the audit backlog.
REPLY_SECONDS = 10.0


class AuditNetlinkError(OSError):
    """The kernel refused a request (errno set), or answered nonsense."""


@dataclass
class AuditStatus:
    enabled: int
    failure: int
    pid: int
    rate_limit: int
    backlog_limit: int
    lost: int
    backlog: int
    backlog_wait_time: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _align(n: int) -> int:
    return (n + 3) & ~3


class AuditSocket:
    """One NETLINK_AUDIT socket."""

    def __init__(self, groups: int = 0, reply_seconds: float = REPLY_SECONDS) -> None:
        self.reply_seconds = reply_seconds
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                      NETLINK_AUDIT)
        except OSError as exc:
            raise AuditNetlinkError(exc.errno, f"cannot open audit netlink socket: {exc}") from exc
        try:
            self.sock.bind((0, groups))
        except OSError as exc:
            self.sock.close()
            raise AuditNetlinkError(exc.errno, f"cannot bind audit netlink socket "
                                    f"(groups={groups}): {exc}") from exc
        self._seq = 0
        # Records are read into one buffer, made at the first read (control sockets never
        # read records): recv() of RECV_BUFFER allocates that much for each datagram of a few
        # hundred bytes, which cost 16 us a read where the C library maps such a block anew
        # each time (1.5 us where it does not).
        self._records: memoryview | None = None
        # Made at the first read_batch; False where the C library has no recvmmsg.
        self._batch: DatagramBatch | None | bool = None

    def close(self) -> None:
        self.sock.close()
        if isinstance(self._batch, DatagramBatch):
            self._batch.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def enlarge_buffer(self, size: int = SOCKET_BUFFER) -> None:
        """A big receive buffer absorbs bursts; SO_RCVBUFFORCE passes rmem_max as root."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def send(self, msg_type: int, payload: bytes = b"", flags: int = NLM_F_REQUEST) -> int:
        self._seq += 1
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, flags, self._seq, 0)
        self.sock.send(header + payload)
        return self._seq

    def messages(self, data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
        """``(type, flags, seq, payload)`` of each netlink message in one datagram."""
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, msg_type, flags, seq, _ = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size:
                break
            yield msg_type, flags, seq, data[offset + _NLMSGHDR.size:offset + length]
            offset += _align(length)

    def request(self, msg_type: int, payload: bytes = b"", *, dump: bool = False,
                reply: bool = False) -> list[bytes]:
        """Send a request and collect its replies until the ack, or DONE for dumps, or the
        first reply with ``reply`` (the kernel sends AUDIT_GET's and the rule list's replies
        from a thread, so they can arrive after the ack)."""
        seq = self.send(msg_type, payload, NLM_F_REQUEST | (0 if reply else NLM_F_ACK))
        replies: list[bytes] = []
        deadline = time.monotonic() + self.reply_seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise AuditNetlinkError(errno.ETIMEDOUT, f"audit request {msg_type}: no answer "
                                        f"from the kernel within {self.reply_seconds:g} s")
            data = self.sock.recv(RECV_BUFFER)
            for reply_type, flags, reply_seq, body in self.messages(data):
                if reply_seq != seq:
                    continue
                if reply_type == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        raise AuditNetlinkError(code, f"audit request {msg_type}: "
                                                f"{os.strerror(code)}")
                    if not dump:
                        return replies
                    continue
                if reply_type == NLMSG_DONE:
                    return replies
                replies.append(body)
                if reply:
                    return replies

    # --- status ---------------------------------------------------------------------------

    def status(self) -> AuditStatus:
        [body] = self.request(AUDIT_GET, reply=True)
        values = dict(zip(_STATUS_FIELDS, struct.unpack_from(
            "=%dI" % min(len(_STATUS_FIELDS), len(body) // 4), body)))
        if "backlog_wait_time" not in values:
            values["backlog_wait_time"] = 0
        return AuditStatus(**{k: values.get(k, 0) for k in AuditStatus.__dataclass_fields__})

    def set_status(self, mask: int, *, enabled: int = 0, failure: int = 0, pid: int = 0,
                   rate_limit: int = 0, backlog_limit: int = 0,
                   backlog_wait_time: int = 0) -> None:
        payload = struct.pack("=11I", mask, enabled, failure, pid, rate_limit, backlog_limit,
                              0, 0, 0, backlog_wait_time, 0)
        self.request(AUDIT_SET, payload)

    def register(self) -> None:
        """Become the audit daemon: records are unicast to this socket from now on."""
        self.set_status(AUDIT_STATUS_PID, pid=os.getpid())

    # --- rules ----------------------------------------------------------------------------

    def list_rules(self) -> list[bytes]:
        return self.request(AUDIT_LIST_RULES, dump=True)

    def add_rule(self, rule: bytes) -> None:
        self.request(AUDIT_ADD_RULE, rule)

    def delete_rule(self, rule: bytes) -> None:
        self.request(AUDIT_DEL_RULE, rule)

    def replace_rules(self, rules: list[bytes]) -> None:
        """Delete every rule, then add ``rules`` in order."""
        for rule in self.list_rules():
            self.delete_rule(rule)
        for rule in rules:
            self.add_rule(rule)

    # --- records --------------------------------------------------------------------------

    def read_records(self) -> tuple[list[bytes], int]:
        """Records of one datagram as auditd's text lines, and how many datagrams the socket
        lost before it (ENOBUFS: the receive buffer overflowed)."""
        if self._records is None:
            self._records = memoryview(bytearray(RECV_BUFFER))
        try:
            size = self.sock.recv_into(self._records)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return [], 1
            raise
        line = datagram_line(self._records[:size])
        return ([] if line is None else [line]), 0

    def read_batch(self) -> tuple[list[bytes], int, bool]:
        """The records of the datagrams waiting, up to a batch of them in one system call
        (sensor_linux/audit/datagrams.py; one datagram where the C library cannot), how many
        datagrams the socket lost before them, and whether more may be waiting. Raises
        BlockingIOError when none waits, as a read of a non-blocking socket does."""
        if self._batch is None:
            self._batch = open_batch(_NLMSGHDR.size + MAX_LINE + 1) or False
        if not isinstance(self._batch, DatagramBatch):
            lines, lost = self.read_records()
            return lines, lost, True
        try:
            datagrams = self._batch.receive(self.sock.fileno())
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return [], 1, True
            raise
        lines = []
        for datagram in datagrams:
            line = datagram_line(datagram)
            if line is not None:
                lines.append(line)
        return lines, 0, len(datagrams) == self._batch.slots


def datagram_line(datagram: memoryview) -> bytes | None:
    """The record of one datagram as auditd's text line; None for what is not a record."""
    if len(datagram) < _NLMSGHDR.size:
        return None
    msg_type = _NLMSG_TYPE.unpack_from(datagram)[0]
    if msg_type < AUDIT_FIRST_RECORD:
        return None  # acks and replies to control requests
    # kauditd sends one record per datagram and sets nlmsg_len to the payload length only
    # (a long-standing kernel quirk), so the record is the rest of the datagram.
    return record_line(msg_type, bytes(datagram[_NLMSGHDR.size:]))


def record_line(msg_type: int, body: bytes) -> bytes:
    """A netlink record payload as the line auditd would write (``type=NAME msg=...``)."""
    return b"%s%s\n" % (_line_start(msg_type), body.rstrip(b"\0\n"))


@functools.lru_cache(maxsize=512)
def _line_start(msg_type: int) -> bytes:
    name = NAMES.get(msg_type)
    kind = name.encode() if name else b"UNKNOWN[%d]" % msg_type
    return b"type=" + kind + b" msg="


def exec_rule(arch: int, syscalls: tuple[int, ...], key: bytes) -> bytes:
    """``-a always,exit -F arch=ARCH -S <syscalls> -k KEY`` as ``audit_rule_data``."""
    mask = [0] * AUDIT_BITMASK_SIZE
    for number in syscalls:
        mask[number // 32] |= 1 << (number % 32)
    fields = [0] * AUDIT_MAX_FIELDS
    values = [0] * AUDIT_MAX_FIELDS
    flags = [0] * AUDIT_MAX_FIELDS
    fields[0], values[0], flags[0] = AUDIT_ARCH, arch, AUDIT_EQUAL
    fields[1], values[1], flags[1] = AUDIT_FILTERKEY, len(key), AUDIT_EQUAL
    return (_RULE_HEAD.pack(AUDIT_FILTER_EXIT, AUDIT_ALWAYS, 2)
            + struct.pack("=%dI" % AUDIT_BITMASK_SIZE, *mask)
            + struct.pack("=%dI" % AUDIT_MAX_FIELDS, *fields)
            + struct.pack("=%dI" % AUDIT_MAX_FIELDS, *values)
            + struct.pack("=%dI" % AUDIT_MAX_FIELDS, *flags)
            + struct.pack("=I", len(key)) + key)


EXEC_KEY = b"ttpsensor-exec"


ARCH_AARCH64 = ARCH_CODES["aarch64"]
# The ABIs of each machine whose execs a default rule set audits (x86_64: 64-bit and 32-bit
# compat).
_MACHINE_ARCHES = {"x86_64": (ARCH_X86_64, ARCH_I386), "aarch64": (ARCH_AARCH64,)}


def default_exec_rules(key: bytes = EXEC_KEY, machine: str | None = None) -> list[bytes]:
    """execve and execveat for every ABI of this machine (x86_64: 64-bit and 32-bit compat)."""
    machine = machine or os.uname().machine
    if machine in _MACHINE_ARCHES:
        return [exec_rule(arch, exec_syscalls(arch), key) for arch in _MACHINE_ARCHES[machine]]
    raise AuditNetlinkError(errno.ENOTSUP, f"no default exec rules for {machine}; "
                            "give rules with --rules")


_EXEC_SYSCALLS = {arch: exec_syscalls(arch)
                  for arches in _MACHINE_ARCHES.values() for arch in arches}


def is_exec_rule(rule: bytes) -> bool:
    """True when an ``audit_rule_data`` rule audits execve/execveat and nothing else (for its
    arch, or any known arch when it names none). File watches cover every syscall and rules
    that mix exec with other syscalls are not exec rules: removing them would lose the rest."""
    if len(rule) < _RULE_HEAD.size + _RULE_ARRAYS:
        return False
    _, _, field_count = _RULE_HEAD.unpack_from(rule)
    offset = _RULE_HEAD.size
    mask = struct.unpack_from("=%dI" % AUDIT_BITMASK_SIZE, rule, offset)
    fields = struct.unpack_from("=%dI" % AUDIT_MAX_FIELDS, rule, offset + 4 * AUDIT_BITMASK_SIZE)
    values = struct.unpack_from("=%dI" % AUDIT_MAX_FIELDS, rule,
                                offset + 4 * (AUDIT_BITMASK_SIZE + AUDIT_MAX_FIELDS))
    arches = [values[i] for i in range(min(field_count, AUDIT_MAX_FIELDS))
              if fields[i] == AUDIT_ARCH]
    candidates = [_EXEC_SYSCALLS.get(a, ()) for a in arches] or list(_EXEC_SYSCALLS.values())
    audited = {32 * word + bit for word, value in enumerate(mask) for bit in range(32)
               if value & (1 << bit)}
    return any(audited and audited <= set(numbers) for numbers in candidates)
