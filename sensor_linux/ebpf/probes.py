"""Load the exec probes with BCC and read their records.

BCC comes from Debian's python3-bpfcc (PyPI's "bcc" is an unrelated project) and compiles the
program against a kernel header tree at start; tracepoint arguments are generated from the
running kernel's tracefs format files, so mismatched headers are harmless for what we use.
"""

from __future__ import annotations

import ctypes
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PROGRAM = Path(__file__).with_name("execsnoop.c")
TRACEFS = "/sys/kernel/tracing"

FLAG_TRUNC_ARGS = 1
FLAG_TRUNC_BYTES = 2
FLAG_EXECVEAT = 4
FLAG_ARG_FAULT = 8
FLAG_PPID_FROM_FORK = 16

DEFAULT_MAX_ARGS = 128
DEFAULT_ARGV_SIZE = 32 * 1024
DEFAULT_RINGBUF_PAGES = 1024      # 4 MiB shared by all CPUs
DEFAULT_PENDING_MAX = 256         # execs between syscall entry and exec/exit, all CPUs

# struct exec_event up to args (see execsnoop.c)
_HEAD = struct.Struct("=QIIIIIiIIIII16s256s")


class PrerequisiteError(RuntimeError):
    """Something the eBPF source needs is missing; the message says what to do."""


@dataclass
class ExecRecord:
    """One exec as the probes saw it."""

    ktime: int
    pid: int
    tid: int
    ppid: int
    uid: int
    gid: int
    retval: int
    argc: int
    args: list[bytes]
    flags: int
    comm: bytes
    filename: bytes

    @property
    def truncated(self) -> bool:
        return bool(self.flags & (FLAG_TRUNC_ARGS | FLAG_TRUNC_BYTES))


def decode(data: bytes) -> ExecRecord:
    """A ring-buffer record (bytes) as an :class:`ExecRecord`."""
    (ktime, pid, tid, ppid, uid, gid, retval, argc, args_count, args_size, flags,
     _filename_size, comm, filename) = _HEAD.unpack_from(data)
    # args_count NUL-terminated strings; the last one may be cut at the byte limit (flagged).
    blob = data[_HEAD.size:_HEAD.size + args_size]
    args = blob.split(b"\0")[:args_count]
    return ExecRecord(ktime, pid, tid, ppid, uid, gid, retval, argc, args, flags,
                      comm.split(b"\0", 1)[0], filename.split(b"\0", 1)[0])


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


@dataclass
class ExecProbes:
    """The loaded program. ``poll`` delivers :class:`ExecRecord` objects to ``on_exec``."""

    on_exec: Callable[[ExecRecord], None]
    max_args: int = DEFAULT_MAX_ARGS
    argv_size: int = DEFAULT_ARGV_SIZE
    ringbuf_pages: int = DEFAULT_RINGBUF_PAGES
    pending_max: int = DEFAULT_PENDING_MAX
    load_seconds: float = 0.0
    received: int = 0
    bpf: object = field(default=None, repr=False)

    def load(self) -> None:
        check_prerequisites()
        if self.argv_size & (self.argv_size - 1) or self.argv_size < 4096:
            raise ValueError("argv size must be a power of two, at least 4096")
        if self.ringbuf_pages & (self.ringbuf_pages - 1):
            raise ValueError("ring buffer pages must be a power of two")
        from bcc import BPF
        cflags = [f"-DMAX_ARGS={self.max_args}", f"-DARGV_SIZE={self.argv_size}",
                  f"-DPENDING_MAX={self.pending_max}", f"-DRINGBUF_PAGES={self.ringbuf_pages}",
                  "-DPARENTS_MAX=65536", f"-DNR_CPUS={os.cpu_count() or 1}",
                  "-Wno-visibility"]
        started = time.monotonic()
        try:
            self.bpf = BPF(text=PROGRAM.read_text(), cflags=cflags, debug=int(os.environ.get("TTPSENSOR_BPF_DEBUG", "0")))
        except Exception as exc:  # BCC raises plain Exception for compile and load errors
            raise PrerequisiteError(f"the exec probes did not compile or load: {exc}") from exc
        self.load_seconds = time.monotonic() - started
        self.bpf["events"].open_ring_buffer(self._callback)

    def _callback(self, _ctx: int, data: int, size: int) -> int:
        self.received += 1
        self.on_exec(decode(ctypes.string_at(data, size)))
        return 0

    def poll(self, timeout_ms: int) -> None:
        self.bpf.ring_buffer_poll(timeout_ms)  # type: ignore[attr-defined]

    def drops(self) -> dict[str, int]:
        """Counters of what the probes could not deliver (summed over CPUs)."""
        table = self.bpf["drops"]  # type: ignore[index]
        names = ("ringbuf_full", "pending_full", "exec_without_entry")
        return {name: int(sum(table[table.Key(i)])) for i, name in enumerate(names)}

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()  # type: ignore[attr-defined]
            self.bpf = None
