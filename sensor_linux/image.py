"""The executed image from the identity the kernel reported: digests and on-disk state.

The eBPF probes read the identity of the file the kernel executed (device, inode, size, mtime,
ctime, link count) at the exec. That identity keys the digest cache directly, and a stat of the
path tells whether the file there is still the one that ran, so nothing races the process's
exit; a look that found it answers for execs of that very version for a second
(:class:`RecentLooks`). Only a file that is no longer at its path (deleted, replaced) and was
never hashed before is looked for through ``/proc/PID/exe``, and only while that process still
runs it. Audit's PATH records give the file's device and inode only: a stat of the path that
finds that inode stands in for the version (:meth:`RecentLooks.identity_at`).
"""

from __future__ import annotations

import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, NamedTuple

from common.filehash import FileDigests, FileHasher, FileKey, file_key
from sensor_linux.procfs import PROC


class FileIdentity(NamedTuple):
    """A file version as the kernel had it open. A named tuple: one is made per exec, and a
    frozen dataclass took 0.8 µs to make against 0.3."""

    dev: int            # st_dev as stat() reports it
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    nlink: int          # 0: deleted while (or before) it ran

    @property
    def key(self) -> FileKey:
        return (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)

    def matches(self, st: os.stat_result) -> bool:
        """``st`` (a stat taken now) is this very file version."""
        return file_key(st) == self.key


@dataclass
class ImageFacts:
    digests: FileDigests | None
    on_disk: bool
    read_proc: bool     # /proc/PID/exe was opened (counted: the probes should make it rare)


def _hash_if_same(path: str | bytes, identity: FileIdentity,
                  hasher: FileHasher, follow: bool) -> FileDigests | None:
    """Digests of the file at ``path`` if it is a regular file and the version that ran.
    Opened without blocking (a FIFO must not hang us) and without following a last-component
    link unless ``follow`` (``/proc/PID/exe`` is one)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not identity.matches(st):
            return None
        return hasher.digests_of_fd(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


# How long a look that found a file version at its path answers for later execs of that very
# version: at a thousand execs a second of one binary, one stat() a second instead of each.
LOOK_REUSE_SECONDS = 1.0


# What identity_at finds for a path not looked at in the pass (None is a look's answer).
_NOT_LOOKED = FileIdentity(-1, -1, -1, -1, -1, -1)


class RecentLooks:
    """Paths lately seen holding a file version, so that the execs of one binary in a burst
    share one stat(). Only a look that found the file is kept; the version (device, inode,
    size, mtime, ctime) is part of the key, so a replaced or rewritten file is another key
    and looked at anew. Bounded: the oldest look goes first."""

    def __init__(self, seconds: float = LOOK_REUSE_SECONDS, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._clock = clock
        self._found: OrderedDict[tuple[bytes, FileKey], float] = OrderedDict()
        self.reused = 0
        # Whether a build pass (:meth:`new_pass`) is on (else every exec is looked at), and
        # what each path's look in it found: a regular file's version, or None.
        self._passing = False
        self._in_pass: dict[bytes, FileIdentity | None] = {}
        self.shared = 0  # execs answered by a look taken for another exec of the same pass

    def new_pass(self) -> None:
        """A build pass starts: the events of a batch are built together (the live audit
        sources build every 500 ms, sensor_linux/batching.py), each looking at its file as it
        is at the build, not at its exec. Within one pass, :meth:`identity_at` looks at a path
        once and the pass's other execs of it share that look: the answer is the same one a
        few hundred microseconds apart (the file could change between the looks as well as
        between the exec and the build, up to 500 ms). One stat() a binary a pass instead
        of one an exec: 2.4 µs an exec on a warm CPU, more in the lab (docs/audit.md). Without
        a pass (a replay, a test) every exec is looked at."""
        self._passing = True
        self._in_pass.clear()

    def still_there(self, path: bytes, identity: FileIdentity) -> bool:
        """Whether the file at ``path`` is ``identity``, looked at at most ``seconds`` ago."""
        key = (path, identity.key)
        now = self._clock()
        seen = self._found.get(key)
        if seen is not None and now - seen < self.seconds:
            self.reused += 1
            return True
        try:
            there = identity.matches(os.stat(path, follow_symlinks=False))
        except OSError:
            there = False
        if there:
            self._keep(key, now)
        else:
            self._found.pop(key, None)
        return there

    def _keep(self, key: tuple[bytes, FileKey], now: float) -> None:
        """A look that found the file version ``key`` at its path, at ``now``."""
        self._found[key] = now
        self._found.move_to_end(key)  # the oldest look goes first
        if len(self._found) > self.max_entries:
            self._found.popitem(last=False)

    def identity_at(self, path: bytes,
                    inodes: frozenset[tuple[int, int]]) -> FileIdentity | None:
        """The version of the regular file at ``path`` if it is one of ``inodes`` (device and
        inode of the files an exec touched, from audit's PATH records), else None. Audit names
        the file but not its version; this look gives what the eBPF probes read from the
        kernel, so that audit execs of a known binary share its enrichment as theirs do. Taken
        at every exec (a file rewritten in place keeps its inode, not its version), and kept
        as a look for :meth:`still_there`."""
        identity = self._in_pass.get(path, _NOT_LOOKED) if self._passing else _NOT_LOOKED
        if identity is not _NOT_LOOKED:
            self.shared += 1
        else:
            identity = self._look(path)
            if self._passing:
                if len(self._in_pass) >= self.max_entries:
                    self._in_pass.clear()
                self._in_pass[path] = identity
        if identity is None or (identity.dev, identity.ino) not in inodes:
            return None
        self._keep((path, identity.key), self._clock())
        return identity

    @staticmethod
    def _look(path: bytes) -> FileIdentity | None:
        """The version of the regular file at ``path`` now (None: none there)."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        return FileIdentity(*file_key(st), st.st_nlink) if stat.S_ISREG(st.st_mode) else None

    def now(self) -> float:
        """The time on the clock the looks are kept by."""
        return self._clock()

    def found_at(self, path: bytes, identity: FileIdentity) -> float | None:
        """When the look that answers for ``identity`` at ``path`` found it (None: none
        does); it answers until ``seconds`` after that."""
        return self._found.get((path, identity.key))


def image_facts(executable: bytes, identity: FileIdentity, hasher: FileHasher,
                looks: RecentLooks, pid: int | None = None, proc: str = PROC,
                image: str | None = None) -> ImageFacts:
    """What ran at ``executable`` (the kernel's canonical path) with ``identity``; ``looks``
    remembers recent looks at the path. Without the file on disk, the running image is hashed
    through ``image`` (opened while the process ran) or ``/proc/PID/exe``."""
    on_disk = identity.nlink > 0 and looks.still_there(executable, identity)
    digests = hasher.cached(identity.key)
    if digests is None and on_disk:
        digests = _hash_if_same(executable, identity, hasher, follow=False)
    if digests is None and pid is not None:
        digests = _hash_if_same(image or f"{proc}/{pid}/exe", identity, hasher, follow=True)
        return ImageFacts(digests, on_disk, True)
    return ImageFacts(digests, on_disk, False)
