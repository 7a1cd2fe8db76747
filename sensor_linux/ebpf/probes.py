"""Load the exec probes with BCC and read their records.

BCC comes from Debian's python3-bpfcc (PyPI's "bcc" is an unrelated project) and compiles the
program against a kernel header tree at start. The program uses no struct from those headers:
every kernel member it reads sits at an offset taken from the running kernel's BTF
(:mod:`sensor_linux.ebpf.offsets`), and a self-check exec at load compares what the probes
report with what this process knows about its own child before any event is trusted.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import secrets
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sensor_linux.batching import EARLY_FILL
from common.compiled import compiled
from sensor_linux.ebpf.btf import Btf, BtfError
from sensor_linux.ebpf.memory import Released, release_compiler_memory
from sensor_linux.ebpf.offsets import cflags as offset_cflags
from sensor_linux.ebpf.offsets import kernel_offsets
from sensor_linux.ebpf.ring import IN_PLACE, RingReader, RingWake
from sensor_linux.image import FileIdentity
from sensor_linux.procfs import kernel_tty_name, read_process

PROGRAM = Path(__file__).with_name("execsnoop.c")
TRACEFS = "/sys/kernel/tracing"

FLAG_TRUNC_ARGS = 1
FLAG_EXECVEAT = 4
FLAG_ARG_FAULT = 8
FLAG_CREATOR_KNOWN = 16
FLAG_EXE_TRUNC = 32
FLAG_CWD_TRUNC = 64
FLAG_FACT_FAULT = 128
FLAG_NO_EXE = 256
FLAG_NAME_TRUNC = 512
FLAG_FAILED = 1024
FLAG_NO_ENTRY = 2048
FLAG_UNAUDITED = 4096

CHUNK = 4096
NAME_BYTES = 4096
COMPONENT_BYTES = 256
DEFAULT_ARGV_SIZE = 32 * 1024
DEFAULT_PATH_BYTES = 4096         # per path (executable, working directory)
DEFAULT_PATH_DEPTH = 64           # components and mount crossings per path
DEFAULT_RINGBUF_PAGES = 1024      # 4 MiB shared by all CPUs
DEFAULT_PENDING_MAX = 1024        # threads between syscall entry and exec/exit, all CPUs
# With on_execs, records are handed over at the end of a poll or when this many were read: a
# ring of 4 MiB holds up to about 15,000 short records.
HANDOVER_RECORDS = 512

# struct exec_event up to data (see execsnoop.c)
_HEAD = struct.Struct("=QQQQqqqIIIIIIII8IIIiIIIIIII16s32s")


class PrerequisiteError(RuntimeError):
    """Something the eBPF source needs is missing; the message says what to do."""


@dataclass(slots=True)
class ExecRecord:
    """One exec as the kernel saw it. Every fact that could not be read exactly is None."""

    ktime: int
    pid: int
    tid: int
    ppid: int                       # real parent's tgid at the exec
    creator: int | None             # the process that forked it, when the probes saw the fork
    uids: tuple[int, int, int, int]  # real, effective, saved, filesystem
    gids: tuple[int, int, int, int]
    login_uid: int
    session: int
    retval: int
    argc: int
    args: list[bytes | None] | None
    flags: int
    comm: bytes
    tty: bytes | None
    executable: bytes | None        # absolute, as the kernel opened it (a script's interpreter)
    cwd: bytes | None
    filename: bytes | None          # failed exec: the name as passed
    identity: FileIdentity | None
    cgroup_id: int
    arg_faults: int = 0             # arguments lost to read faults (null elements in args)
    task_start: int = 0             # the exec'ing task's creation, CLOCK_MONOTONIC ns

    @property
    def truncated(self) -> bool:
        return bool(self.flags & FLAG_TRUNC_ARGS)

    @property
    def failed(self) -> bool:
        return self.retval < 0

    @property
    def unaudited(self) -> bool:
        """The exec'ing task had no audit context: syscall audit could not record this exec
        (always False on kernels without task_struct.audit_context)."""
        return self.flags & (FLAG_UNAUDITED | FLAG_FACT_FAULT) == FLAG_UNAUDITED


def _join_components(blob: bytes) -> bytes:
    """Path components leaf first, each NUL-terminated, as an absolute path."""
    parts = blob.split(b"\0")[:-1]
    parts.reverse()
    return b"/" + b"/".join(parts)


def _strings(blob: bytes, truncated: bool) -> list[bytes]:
    """NUL-terminated strings; a last one without its NUL (cut at the limit) is kept."""
    strings = blob.split(b"\0")
    if strings and strings[-1] == b"" and not truncated:
        strings.pop()
    return strings


def _split_args(area: bytes, argc: int, fault_mask: int,
                truncated: bool) -> tuple[list[bytes | None], int]:
    """The argument area as a list; arguments touching a chunk that could not be read are
    None (their bytes and even their boundaries are unknown). Returns (args, faulted)."""
    if not fault_mask:
        return list(_strings(area, truncated)), 0
    first = min(i for i in range(32) if fault_mask >> i & 1) * CHUNK
    last_end = (max(i for i in range(32) if fault_mask >> i & 1) + 1) * CHUNK
    head = area[:first]
    prefix = head.split(b"\0")[:-1]          # complete arguments before the first fault
    tail = area[last_end:]
    cut = tail.find(b"\0")
    suffix = _strings(tail[cut + 1:], truncated) if cut >= 0 and last_end < len(area) else []
    lost = max(argc - len(prefix) - len(suffix), 1)
    return [*prefix, *([None] * lost), *suffix], lost  # type: ignore[list-item]


_NSEC_MASK = (1 << 30) - 1


def _kernel_dev(dev: int) -> int:
    """Kernel dev_t (major << 20 | minor) as the st_dev number stat() reports."""
    return os.makedev(dev >> 20, dev & 0xFFFFF)


def decode_python(data: bytes) -> ExecRecord:
    """A ring-buffer record (bytes) as an :class:`ExecRecord`. The reference for the C
    version (sensor_linux/ebpf/_decode.c), and what runs where it is not built."""
    (ktime, cgroup_id, task_start, ino, size, mtime_sec, ctime_sec, mtime_nsec, ctime_nsec,
     dev, nlink, pid, tid, ppid, creator, uid, gid, suid, sgid, euid, egid, fsuid, fsgid,
     login_uid, session, retval, argc, flags, fault_mask, exe_size, cwd_size, name_size,
     args_size, comm, tty) = _HEAD.unpack_from(data)
    pos = _HEAD.size
    exe_blob = data[pos:pos + exe_size]
    pos += exe_size
    cwd_blob = data[pos:pos + cwd_size]
    pos += cwd_size
    name = data[pos:pos + name_size]
    pos += name_size
    area = data[pos:pos + args_size]
    failed = bool(flags & FLAG_FAILED)
    unreliable = bool(flags & FLAG_FACT_FAULT)
    executable = None
    identity = None
    if not failed and not flags & (FLAG_EXE_TRUNC | FLAG_NO_EXE) and not unreliable:
        executable = _join_components(exe_blob)
        # Nanoseconds fit in 30 bits; kernels with multigrain times (6.13+) keep a flag in
        # bit 31 of i_ctime_nsec (I_CTIME_QUERIED).
        identity = FileIdentity(_kernel_dev(dev), ino, size,
                                mtime_sec * 10**9 + (mtime_nsec & _NSEC_MASK),
                                ctime_sec * 10**9 + (ctime_nsec & _NSEC_MASK), nlink)
    cwd = None if flags & FLAG_CWD_TRUNC or unreliable else _join_components(cwd_blob)
    args: list[bytes | None] | None = None
    faulted = 0
    if not failed:
        args, faulted = _split_args(area, argc, fault_mask if flags & FLAG_ARG_FAULT else 0,
                                    bool(flags & FLAG_TRUNC_ARGS))
    tty_name = tty.split(b"\0", 1)[0] or None
    return ExecRecord(
        ktime=ktime, pid=pid, tid=tid, ppid=ppid,
        creator=creator if flags & FLAG_CREATOR_KNOWN else None,
        uids=(uid, euid, suid, fsuid), gids=(gid, egid, sgid, fsgid),
        login_uid=login_uid, session=session, retval=retval, argc=argc, args=args,
        flags=flags, comm=comm.split(b"\0", 1)[0], tty=tty_name, executable=executable,
        cwd=cwd, filename=name.split(b"\0", 1)[0] if failed and name_size else None,
        identity=identity, cgroup_id=cgroup_id, arg_faults=faulted, task_start=task_start)


_DECODE = compiled("sensor_linux.ebpf._decode")
# (data, record type, identity type) -> the record, or None for what decode_python takes.
decode_c: Callable[[bytes, type, type], ExecRecord | None] | None = \
    _DECODE.decode if _DECODE is not None else None


def decode_path() -> str:
    """Which decoding :func:`decode` takes, for the benchmarks to say what they measured."""
    return "C" if decode_c is not None else "pure Python"


def decode(data: bytes) -> ExecRecord:
    """A ring-buffer record (bytes) as an :class:`ExecRecord`: by the C decoding where it is
    built, which leaves the rare records (arguments the probes could not read, a record
    shorter than its head, file times past 64 bits of nanoseconds) to :func:`decode_python`,
    as it does everywhere else."""
    if decode_c is not None:
        record = decode_c(data, ExecRecord, FileIdentity)
        if record is not None:
            return record
    return decode_python(data)


def check_prerequisites() -> None:
    """Raise :class:`PrerequisiteError` naming what to install or enable."""
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        raise PrerequisiteError(
            "BCC is not importable: apt-get install python3-bpfcc, and run with Debian's "
            "python3 (or a venv made with --system-site-packages). PyPI's 'bcc' is not BCC."
        ) from exc
    release = os.uname().release
    build = Path(f"/lib/modules/{release}/build")
    if not build.exists() and not Path("/sys/kernel/kheaders.tar.xz").exists():
        raise PrerequisiteError(
            f"no kernel headers for {release}: apt-get install linux-headers-amd64, then link "
            f"/lib/modules/{release}/build to /usr/src/linux-headers-<version>-amd64 "
            f"(packaging/dev/bootstrap.sh does both)")
    if not Path(TRACEFS, "events", "sched").is_dir():
        raise PrerequisiteError(
            f"tracefs is not mounted at {TRACEFS}: mount -t tracefs nodev {TRACEFS}")
    if os.geteuid() != 0:
        raise PrerequisiteError("loading BPF programs needs root (CAP_BPF and CAP_PERFMON)")


def data_size(argv_size: int, path_bytes: int) -> int:
    """Bytes of the record's data area: two paths, a file name and the argument area."""
    need = 2 * (path_bytes + COMPONENT_BYTES) + NAME_BYTES + argv_size
    size = 4096
    while size < need:
        size *= 2
    return size


# The self-check child's ids: distinct from each other and from root's, so that reading a
# neighbouring member (or nothing, zero) cannot pass for the right one.
CHECK_UIDS = (61011, 61012, 61013)
CHECK_GIDS = (61021, 61022, 61023)


def _check_child_ids() -> None:
    os.setresgid(*CHECK_GIDS)
    os.setresuid(*CHECK_UIDS)


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def _expected(pid: int, true: bytes, marker: bytes, cwd: str) -> dict[str, object]:
    """What the probes must report of the self-check child (which inherits our terminal)."""
    st = os.stat(true)
    own = read_process(os.getpid())
    expected: dict[str, object] = {
        "pid": pid, "ppid": os.getpid(), "creator": os.getpid(),
        "executable": true, "args": [true, marker], "argc": 2,
        "cwd": os.path.realpath(cwd).encode(), "comm": b"true",
        "uids": (CHECK_UIDS[0], CHECK_UIDS[1], CHECK_UIDS[1], CHECK_UIDS[1]),
        "gids": (CHECK_GIDS[0], CHECK_GIDS[1], CHECK_GIDS[1], CHECK_GIDS[1]),
        "login_uid": _read_int("/proc/self/loginuid"),
        "session": _read_int("/proc/self/sessionid"),
        "tty": own.tty if own is not None else None,
        "identity": (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)}
    if isinstance(expected["tty"], str) and expected["tty"].startswith("char:"):
        del expected["tty"]  # a kind of terminal whose kernel name /proc does not give
    return expected


@dataclass
class ExecProbes:
    """The loaded program. ``poll`` delivers :class:`ExecRecord` objects one by one to
    ``on_exec``, or, when ``on_execs`` is given instead, a poll's records together (a
    pipeline's feed_many, which builds them in runs: common/pipeline.py)."""

    on_exec: Callable[[ExecRecord], None] | None = None
    on_execs: Callable[[list[ExecRecord]], None] | None = None
    argv_size: int = DEFAULT_ARGV_SIZE
    ringbuf_pages: int = DEFAULT_RINGBUF_PAGES
    pending_max: int = DEFAULT_PENDING_MAX
    path_bytes: int = DEFAULT_PATH_BYTES
    path_depth: int = DEFAULT_PATH_DEPTH
    load_seconds: float = 0.0
    released: Released | None = None   # what the load gave back (sensor_linux/ebpf/memory.py)
    received: int = 0
    offsets: dict[str, int] = field(default_factory=dict)
    bpf: object = field(default=None, repr=False)
    _check_exec: tuple[int, bytes] | None = field(default=None, repr=False)
    _failure: BaseException | None = field(default=None, repr=False)
    _ring: RingReader | None = field(default=None, repr=False)  # None: BCC's callback
    _wake: RingWake | None = field(default=None, repr=False)
    _consumed: int = field(default=0, repr=False)   # bytes BCC's reader took from the ring
    _reported: int = field(default=0, repr=False)   # what the probes were last told of it
    _batch: list[ExecRecord] | None = field(default=None, repr=False)  # a poll's, for on_execs

    def __post_init__(self) -> None:
        if (self.on_exec is None) == (self.on_execs is None):
            raise ValueError("the probes deliver to on_exec or to on_execs, one of them")

    def load(self) -> None:
        """Compile with this kernel's offsets, attach, and run the self-check."""
        check_prerequisites()
        if self.argv_size & (self.argv_size - 1) or not CHUNK <= self.argv_size <= 32 * CHUNK:
            raise ValueError("argv size must be a power of two from 4096 to 131072")
        if self.ringbuf_pages & (self.ringbuf_pages - 1):
            raise ValueError("ring buffer pages must be a power of two")
        started = time.monotonic()
        try:
            self.offsets = kernel_offsets(Btf.load())
        except BtfError as exc:
            raise PrerequisiteError(f"the eBPF source needs the running kernel's BTF: {exc}"
                                    ) from exc
        from bcc import BPF
        flags = [f"-DARGV_SIZE={self.argv_size}",
                 f"-DDATA_SIZE={data_size(self.argv_size, self.path_bytes)}",
                 f"-DPATH_BYTES={self.path_bytes}", f"-DPATH_DEPTH={self.path_depth}",
                 f"-DPENDING_MAX={self.pending_max}", f"-DRINGBUF_PAGES={self.ringbuf_pages}",
                 f"-DEARLY_WAKE_BYTES={int(self.ringbuf_pages * mmap.PAGESIZE * EARLY_FILL)}",
                 "-DPARENTS_MAX=65536", f"-DNR_CPUS={os.cpu_count() or 1}",
                 "-Wno-visibility", *offset_cflags(self.offsets)]
        try:
            self.bpf = BPF(text=PROGRAM.read_bytes(), cflags=flags,
                           debug=int(os.environ.get("TTPSENSOR_BPF_DEBUG", "0")))
        except Exception as exc:  # BCC raises plain Exception for compile and load errors
            raise PrerequisiteError(f"the exec probes did not compile or load: {exc}") from exc
        events = self.bpf[b"events"]
        try:
            self._wake = RingWake(events.map_fd)
            if IN_PLACE:
                self._ring = RingReader(events.map_fd, events.max_entries)
            else:
                events.open_ring_buffer(self._callback)
            self._self_check()
        except BaseException:
            self.close()
            raise
        self.load_seconds = time.monotonic() - started
        # The compile is over: its heap and the compiler's code pages need not stay resident.
        self.released = release_compiler_memory()

    def _callback(self, _ctx: int, data: int, size: int) -> int:
        # An exception must not reach ctypes, which prints it and goes on: a failed output
        # (a rotation refused, a full disk) lost every later event without stopping the run.
        # It is kept, the poll stops (a negative return), and poll() raises it.
        self._consumed += (size + 8 + 7) & ~7  # as the ring's position counts
        try:
            self._deliver(ctypes.string_at(data, size))
        except BaseException as exc:  # noqa: BLE001 - raised again by poll()
            self._failure = exc
            return -1
        return 0

    def _deliver(self, raw: bytes) -> None:
        record = decode(raw)
        if self._check_exec is not None and (record.pid, record.args and record.args[-1]) \
                == self._check_exec:
            self._check_exec = None  # the self-check's own exec: no event of the host
            return
        self.received += 1
        batch = self._batch
        if batch is None:
            self.on_exec(record)  # type: ignore[misc] # set: there is no batch
            return
        batch.append(record)
        if len(batch) >= HANDOVER_RECORDS:  # a full ring is not held whole (memory)
            self._batch = []
            self.on_execs(batch)  # type: ignore[misc] # set: there is a batch

    def _self_check(self) -> None:
        """Exec a child whose facts this process knows and compare them with the record the
        probes make of it; refuse to run when any differs (wrong offsets read wrong values)."""
        true = os.path.realpath(shutil.which("true") or "/bin/true").encode()
        marker = f"ttpsensor-self-check-{secrets.token_hex(4)}".encode()
        table = self.bpf[b"check_parent"]  # type: ignore[index]
        table[table.Key(0)] = table.Leaf(os.getpid())
        try:
            with tempfile.TemporaryDirectory(prefix="ttpsensor-check-") as cwd:
                os.chmod(cwd, 0o755)
                forked = time.monotonic_ns()
                child = subprocess.Popen([true, marker], cwd=cwd, preexec_fn=_check_child_ids,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
                child.wait()
                reaped = time.monotonic_ns()
                record = self._check_record(child.pid)
                expected = _expected(child.pid, true, marker, cwd)
        finally:
            table[table.Key(0)] = table.Leaf(0)
        # The check's own exec is no event of the host: keep it out of the stream.
        self._check_exec = (child.pid, marker)
        if record is None:
            raise PrerequisiteError(
                f"the exec probes did not see the self-check exec (pid {child.pid}); "
                "they are loaded but not attached to sched_process_exec")
        ident = record.identity
        got: dict[str, object] = {
            name: getattr(record, name) for name in expected if name not in ("identity", "tty")}
        got["tty"] = kernel_tty_name(record.tty)
        got["identity"] = None if ident is None else (
            ident.dev, ident.ino, ident.size, ident.mtime_ns, ident.ctime_ns)
        wrong = [f"{name}: expected {expected[name]!r}, read {got[name]!r}"
                 for name in expected if expected[name] != got[name]]
        if not forked <= record.task_start <= reaped:
            wrong.append(f"task_start: expected between {forked} and {reaped} (monotonic ns), "
                         f"read {record.task_start}")
        if wrong:
            raise PrerequisiteError(
                "the exec probes read wrong facts on this kernel (offsets from its BTF do not "
                "match what it does), so their events cannot be trusted; use --source audit. "
                "Self-check: " + "; ".join(wrong))

    def _check_record(self, pid: int) -> ExecRecord | None:
        """The record the program kept of the check child's exec (it is written before the
        child's execve returns, so it is there once the child has exited)."""
        table = self.bpf[b"check_record"]  # type: ignore[index]
        value = table[table.Key(0)]
        raw = ctypes.string_at(ctypes.addressof(value), ctypes.sizeof(value))
        record = decode(raw)
        return record if record.pid == pid else None

    def poll(self, timeout_ms: int) -> None:
        """Deliver what the ring holds (waiting up to ``timeout_ms`` for something); what
        ``on_exec`` raised is raised here (its record counts as read, as with libbpf). With
        ``on_execs``, the records read are delivered together, HANDOVER_RECORDS at most at a
        time, the last of them after the read, also when it failed part way (those before
        the failure)."""
        if self.on_execs is None:
            self._read(timeout_ms)
            return
        self._batch = []
        try:
            self._read(timeout_ms)
        finally:
            batch, self._batch = self._batch, None
            if batch:
                self.on_execs(batch)

    def _read(self, timeout_ms: int) -> None:
        if self._ring is not None:
            try:
                self._ring.read(self._deliver, timeout_ms)
            finally:
                self._taken(self._ring.position)
            return
        if timeout_ms:
            # libbpf's own wait (ring_buffer_poll) hears only wake-ups, which the probes
            # leave out for most records: wait on the ring itself, then take all it holds.
            waiter = select.poll()
            waiter.register(self.bpf[b"events"].map_fd, select.POLLIN)  # type: ignore[index]
            waiter.poll(timeout_ms)
        self.bpf.ring_buffer_consume()  # type: ignore[attr-defined]
        self._taken(self._consumed)
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _taken(self, position: int) -> None:
        """Tell the probes how far the ring has been read: they wake the reader early when
        it holds more than a part of its size since (execsnoop.c: wake_flags)."""
        if position != self._reported:
            table = self.bpf[b"ring_bytes"]  # type: ignore[index]
            table[table.Key(1)] = table.Leaf(position)
            self._reported = position

    def wake_fd(self) -> int:
        """A descriptor readable once the probes woke their reader (:class:`RingWake`)."""
        assert self._wake is not None, "the probes are not loaded"
        return self._wake.fileno()

    def clear_wake(self) -> None:
        if self._wake is not None:
            self._wake.clear()

    def drops(self) -> dict[str, int]:
        """Counters of what the probes could not deliver (summed over CPUs)."""
        table = self.bpf[b"drops"]  # type: ignore[index]
        names = ("ringbuf_full", "pending_full")
        return {name: int(sum(table[table.Key(i)])) for i, name in enumerate(names)}

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._wake is not None:
            self._wake.close()
            self._wake = None
        if self.bpf is not None:
            self.bpf.cleanup()  # type: ignore[attr-defined]
            self.bpf = None
