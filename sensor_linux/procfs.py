"""Facts about live processes, read from ``/proc``.

Everything here is best effort: a process can exit between two reads, so every reader returns
``None`` for what it could not see instead of raising. Paths and argv are read as bytes and kept
as ``str`` only when they are valid UTF-8 (:func:`common.percent.as_text`).
"""

from __future__ import annotations

import os
import re
import select
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.filehash import FileDigests, FileHasher, file_key
from common.percent import as_text, to_bytes

if TYPE_CHECKING:
    from sensor_linux.image import FileIdentity

PROC = "/proc"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_DELETED = b" (deleted)"
_CONTAINER_ID = re.compile(rb"[0-9a-f]{64}")
UNSET_ID = 4294967295  # (uid_t)-1: loginuid and sessionid of processes outside a login session


@dataclass(slots=True)
class ProcessFacts:
    """What a source knows about one process; every field may be unknown (``None``).

    The audit and eBPF sources fill the same structure from their records, so enrichment and
    event building do not care where the facts came from.
    """

    pid: int
    ppid: int | None = None
    start_ticks: int | None = None     # clock ticks since boot (stat field 22): PID-reuse guard
    start_time: float | None = None    # seconds since the epoch
    executable: str | bytes | None = None
    exe_deleted: bool = False          # the exe link says "(deleted)" or is a memfd
    args: list[str | bytes] | None = None
    cwd: str | bytes | None = None
    comm: str | bytes | None = None
    uids: tuple[int, int, int, int] | None = None  # real, effective, saved, filesystem
    gids: tuple[int, int, int, int] | None = None
    tty: str | None = None
    login_uid: int | None = None
    session: int | None = None
    container_id: str | None = None
    # (st_dev, st_ino) of the files the exec touched (audit PATH records): lets enrichment tell
    # whether the file now at ``executable`` is the one that ran.
    image_inodes: frozenset[tuple[int, int]] | None = None
    # The executed file's version as the kernel had it open (eBPF): digests come from it.
    image_identity: FileIdentity | None = None
    # /proc/PID/exe as read_exe gave it when the facts were taken from a live record, so that
    # enrichment does not read the link again; None when it was not read.
    exe_link: tuple[str | bytes | None, bool] | None = None
    # What was read from /proc as soon as the exec was read, for an event built later.
    live: LiveFacts | None = None


@dataclass
class LiveFacts:
    """What only a live process shows, read as soon as its exec was read: the audit sources
    build their events in batches, later (sensor_linux/batching.py), and a short-lived
    process may be gone by then. ``close`` when the event is built."""

    pid: int
    exe_link: tuple[str | bytes | None, bool]  # read_exe's answer
    container_id: str | None = None
    # The running image opened while the process ran, when it has no path to open later (a
    # deleted file, a memfd): it stays readable through the descriptor.
    image_fd: int | None = None
    # A parent the process table did not know, read then (``parent_read``): its start time
    # and process map, or None when it was gone already.
    parent: tuple[float | None, dict[str, Any]] | None = None
    parent_read: bool = False

    @property
    def image_path(self) -> str | None:
        """A path that opens the running image (None: not opened)."""
        return None if self.image_fd is None else f"/proc/self/fd/{self.image_fd}"

    def close(self) -> None:
        if self.image_fd is not None:
            os.close(self.image_fd)
            self.image_fd = None


class PinnedProcess:
    """The process ``pid`` held by a pidfd (Linux 5.3), which stays bound to that process
    when the number goes to another: :meth:`exited` asks the kernel whether *it* has
    exited, without a look-up under ``/proc``.

    Why: the first look-up of a new pid's ``/proc`` directory costs the kernel some 15-20 µs
    (it makes the directory's inode), and for a process that has exited it finds nothing to
    read: in the lab most execs have exited by the first look (docs/audit.md). And a process
    that has not exited after the reads cannot have given its number to another before them,
    so what they read was its own. ``unknown`` when the kernel cannot pin it (no pidfd_open,
    or refused): the caller reads as before."""

    def __init__(self, pid: int) -> None:
        self.fd: int | None = None
        self.gone = False
        try:
            self.fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.gone = True  # exited and reaped
        except (OSError, AttributeError):  # ENOSYS, EPERM (seccomp), EMFILE; Python < 3.9
            pass

    @property
    def unknown(self) -> bool:
        """The kernel could not pin the process (nor said it was gone)."""
        return self.fd is None and not self.gone

    def exited(self) -> bool:
        """Whether the process has exited (a zombie, or reaped): its pidfd is readable."""
        if self.fd is None:
            return self.gone
        # poll, not select: the sensor may hold more than FD_SETSIZE descriptors.
        waiting = select.poll()
        waiting.register(self.fd, select.POLLIN)
        if waiting.poll(0):
            self.gone = True
        return self.gone

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "PinnedProcess":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_image(pid: int, proc: str = PROC) -> int | None:
    """A descriptor of the image ``pid`` runs, or None (gone, or not ours to open)."""
    try:
        return os.open(f"{proc}/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def boot_time(proc: str = PROC) -> float:
    with open(f"{proc}/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def anon_huge_pages_kib(pid: int | str = "self", proc: str = PROC) -> int:
    """The anonymous memory of ``pid`` in transparent huge pages, KiB (0 where unknown)."""
    rollup = _read(f"{proc}/{pid}/smaps_rollup") or b""
    for line in rollup.splitlines():
        if line.startswith(b"AnonHugePages:"):
            return int(line.split()[1])
    return 0


def kernel_command_line(proc: str = PROC) -> str:
    """The kernel's boot parameters ("" when they cannot be read)."""
    return (_read(f"{proc}/cmdline") or b"").decode("utf-8", "replace")


def list_pids(proc: str = PROC) -> list[int]:
    return sorted(int(name) for name in os.listdir(proc) if name.isdigit())


def _read(path: str) -> bytes | None:
    """A file's bytes (None: it cannot be read). Plain descriptor reads, not a Python file
    object: the live audit sources read each exec's cgroup at once, and a file object costs
    4-5 us a read more (10 against 14-16 us for /proc/PID/cgroup, measured alone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:  # to the end: a /proc file may come in pieces (cmdline, a page a read)
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_exe(pid: int, proc: str = PROC) -> tuple[str | bytes | None, bool]:
    """``(path, deleted)`` of the running executable; path ``None`` for kernel threads."""
    try:
        link = os.readlink(f"{proc}/{pid}/exe".encode())
    except OSError:
        return None, False
    deleted = link.endswith(_DELETED)
    if deleted:
        link = link[: -len(_DELETED)]
    if link.startswith(b"/memfd:"):
        deleted = True
    return as_text(link), deleted


def tty_name(tty_nr: int) -> str | None:
    """Name of a controlling terminal from stat's tty_nr (``None`` when there is none)."""
    if tty_nr == 0:
        return None
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    return f"char:{major}:{minor}"


def kernel_tty_name(name: bytes | None) -> str | None:
    """A terminal as the kernel names it (tty_struct.name, audit's ``tty=``: ``pts3``) in the
    form /proc and our events use (``pts/3``); ``(none)`` and empty are no terminal."""
    if not name or name == b"(none)":
        return None
    text = name.decode("ascii", "replace")
    if text.startswith("pts") and text[3:].isdigit():
        return f"pts/{text[3:]}"
    return text


def read_process(pid: int, proc: str = PROC, btime: float | None = None) -> ProcessFacts | None:
    """Facts about ``pid``, or ``None`` when it no longer exists."""
    base = f"{proc}/{pid}"
    stat = _read(f"{base}/stat")
    if stat is None:
        return None
    # comm may hold spaces and parentheses: split at the last ')'.
    close = stat.rfind(b")")
    comm = stat[stat.find(b"(") + 1:close]
    rest = stat[close + 2:].split()
    facts = ProcessFacts(pid=pid, comm=as_text(comm))
    facts.ppid = int(rest[1])
    facts.tty = tty_name(int(rest[4]))
    facts.start_ticks = int(rest[19])
    if btime is not None:
        facts.start_time = btime + facts.start_ticks / _CLK_TCK
    facts.executable, facts.exe_deleted = read_exe(pid, proc)
    cmdline = _read(f"{base}/cmdline")
    if cmdline is not None:
        parts = cmdline.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        facts.args = [as_text(p) for p in parts]
    try:
        facts.cwd = as_text(os.readlink(f"{base}/cwd".encode()))
    except OSError:
        pass
    status = _read(f"{base}/status")
    if status is not None:
        for line in status.splitlines():
            if line.startswith(b"Uid:"):
                facts.uids = tuple(int(x) for x in line.split()[1:5])  # type: ignore[assignment]
            elif line.startswith(b"Gid:"):
                facts.gids = tuple(int(x) for x in line.split()[1:5])  # type: ignore[assignment]
    for name, attr in (("loginuid", "login_uid"), ("sessionid", "session")):
        raw = _read(f"{base}/{name}")
        if raw is not None and raw.strip().isdigit():
            setattr(facts, attr, int(raw))
    facts.container_id = container_id(_read(f"{base}/cgroup"))
    return facts


def container_id(cgroup: bytes | None) -> str | None:
    """The first 64-hex path fragment of /proc/PID/cgroup (Docker, containerd, CRI-O, Podman)."""
    if not cgroup:
        return None
    match = _CONTAINER_ID.search(cgroup)
    return match.group().decode() if match else None


def live_container_id(pid: int, executable: str | bytes | None, proc: str = PROC,
                      exe_link: tuple[str | bytes | None, bool] | None = None) -> str | None:
    """The container id of a live process, if it is still running ``executable``
    (``exe_link``: read_exe's answer, when the caller has it)."""
    link, _ = read_exe(pid, proc) if exe_link is None else exe_link
    if link is None or link != executable:
        return None
    return container_id(_read(f"{proc}/{pid}/cgroup"))


def exe_identity(pid: int, executable: str | bytes | None, hasher: FileHasher,
                 proc: str = PROC, *, use_proc: bool = True,
                 image_inodes: frozenset[tuple[int, int]] | None = None,
                 cwd: str | bytes | None = None,
                 exe_link: tuple[str | bytes | None, bool] | None = None,
                 image: str | None = None,
                 ) -> tuple[FileDigests | None, bool | None]:
    """Digests of the image ``pid`` ran, and whether that image is still on disk as it ran.

    First choice is ``/proc/PID/exe`` (only with ``use_proc``, and only while it still shows
    ``executable``): it reaches the running image even when the file was deleted or replaced.
    Otherwise the file at ``executable`` is hashed, but only if it is the file that ran (its
    inode is among ``image_inodes`` when those are known); a different file there gives no
    digests and ``on_disk`` False. ``on_disk`` is None when nothing could be checked.
    ``exe_link``: read_exe's answer for ``pid``, when the caller has read it already;
    ``image``: a path that opens the running image instead of ``/proc/PID/exe``
    (:attr:`LiveFacts.image_path`).
    """
    if use_proc and executable is not None:
        result = _proc_exe_identity(pid, executable, hasher, proc, exe_link, image)
        if result is not None:
            return result
    if executable is None:
        return None, None
    path = _absolute(executable, cwd)
    if path is None:
        return None, None  # a relative name and no working directory: nothing to check
    try:
        # stat first: an image hashed before needs no open() (it is checked again after one).
        st = os.stat(path)
    except OSError:
        return None, False
    if not _may_be_image(st, image_inodes):
        return None, False
    known = hasher.cached(file_key(st))
    if known is not None:
        return known, True
    try:
        # Without blocking: a FIFO put at that path since must not hang the sensor.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None, False
    try:
        if not _may_be_image(os.fstat(fd), image_inodes):  # swapped since the stat
            return None, False
        try:
            return hasher.digests_of_fd(fd), True
        except OSError:
            return None, True
    finally:
        os.close(fd)


def _may_be_image(st: os.stat_result, image_inodes: frozenset[tuple[int, int]] | None) -> bool:
    """A regular file, and the one the exec touched when its inodes are known."""
    return stat.S_ISREG(st.st_mode) and (
        image_inodes is None or (st.st_dev, st.st_ino) in image_inodes)


def _absolute(path: str | bytes, cwd: str | bytes | None) -> bytes | None:
    """``path`` as the process meant it: a relative name is relative to *its* working
    directory, never to the sensor's."""
    raw = to_bytes(path)
    if raw.startswith(b"/"):
        return raw
    return None if cwd is None else os.path.join(to_bytes(cwd), raw)


def _proc_exe_identity(pid: int, executable: str | bytes, hasher: FileHasher, proc: str,
                       exe_link: tuple[str | bytes | None, bool] | None,
                       image: str | None = None) -> tuple[FileDigests | None, bool] | None:
    link, deleted = read_exe(pid, proc) if exe_link is None else exe_link
    if link is None or link != executable:
        return None  # gone, or it has exec'd something else since
    image = image or f"{proc}/{pid}/exe"
    try:
        ran = os.stat(image)  # the running image itself, as an open() of the link reaches it
    except OSError:
        return None
    digests: FileDigests | None = hasher.cached(file_key(ran))
    if digests is None:
        # A version not hashed yet: through an open file, whose fstat is the identity
        # compared below.
        try:
            fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            ran = os.fstat(fd)
            try:
                digests = hasher.digests_of_fd(fd)
            except OSError:
                digests = None
        finally:
            os.close(fd)
    if deleted:
        return digests, False
    try:
        now = os.stat(executable)
    except OSError:
        return digests, False
    return digests, (now.st_dev, now.st_ino) == (ran.st_dev, ran.st_ino)
