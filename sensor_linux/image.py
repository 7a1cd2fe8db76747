"""The executed image from the identity the kernel reported: digests and on-disk state.

The eBPF probes read the identity of the file the kernel executed (device, inode, size, mtime,
ctime, link count) at the exec. That identity keys the digest cache directly, and one stat of the
path tells whether the file there is still the one that ran, so nothing races the process's
exit. Only a file that is no longer at its path (deleted, replaced) and was never hashed before
is looked for through ``/proc/PID/exe``, and only while that process still runs it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from common.filehash import FileDigests, FileHasher, FileKey, file_key
from sensor_linux.procfs import PROC


@dataclass(frozen=True)
class FileIdentity:
    """A file version as the kernel had it open."""

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


def image_facts(executable: bytes, identity: FileIdentity, hasher: FileHasher,
                pid: int | None = None, proc: str = PROC) -> ImageFacts:
    """What ran at ``executable`` (the kernel's canonical path) with ``identity``."""
    try:
        now = os.stat(executable, follow_symlinks=False)
        on_disk = identity.nlink > 0 and identity.matches(now)
    except OSError:
        on_disk = False
    digests = hasher.cached(identity.key)
    if digests is None and on_disk:
        digests = _hash_if_same(executable, identity, hasher, follow=False)
    if digests is None and pid is not None:
        digests = _hash_if_same(f"{proc}/{pid}/exe", identity, hasher, follow=True)
        return ImageFacts(digests, on_disk, True)
    return ImageFacts(digests, on_disk, False)
