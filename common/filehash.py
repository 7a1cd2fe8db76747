"""File identity: md5, sha1 and sha256 of an executable, computed once per file version.

A file version is ``(device, inode, size, mtime_ns, ctime_ns)``: any write changes mtime and
ctime, so a cached digest is never served for changed content, and a replaced file (new inode)
is hashed anew. The cache is a bounded LRU. Hashing reads from an open descriptor and takes the
identity from ``fstat`` of that same descriptor, so a file swapped between stat and read cannot
pair one file's identity with another's digest. Platform code decides *what* to open (on Linux
``/proc/PID/exe``, which reaches a deleted binary as it ran).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass

DEFAULT_CACHE_ENTRIES = 4096
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024  # larger files are not hashed (reported as such)
_CHUNK = 1024 * 1024

FileKey = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class FileDigests:
    md5: str
    sha1: str
    sha256: str
    size: int

    def as_field(self) -> dict[str, str]:
        """The ``process.hash`` map: upper-case hex, as QLOG and Sysmon print digests."""
        return {"md5": self.md5, "sha1": self.sha1, "sha256": self.sha256}



class FileTooLarge(OSError):
    """The file exceeds the hashing size limit."""


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def digest_fd(fd: int, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> FileDigests:
    """Hash everything readable from ``fd`` (from its current offset)."""
    md5, sha1, sha256 = hashlib.md5(), hashlib.sha1(), hashlib.sha256()
    total = 0
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLarge(f"file larger than {max_bytes} bytes")
        md5.update(chunk)
        sha1.update(chunk)
        sha256.update(chunk)
    return FileDigests(md5.hexdigest().upper(), sha1.hexdigest().upper(),
                       sha256.hexdigest().upper(), total)


class FileHasher:
    """Digests of files with a bounded cache keyed by file version.

    Counters (``hits``, ``misses``, ``errors``) are plain attributes for stats reporting.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self.max_file_bytes = max_file_bytes
        self._cache: OrderedDict[FileKey, FileDigests] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def __len__(self) -> int:
        return len(self._cache)

    def digests(self, path: str | bytes) -> FileDigests:
        """Digests of the file at ``path``; raises ``OSError`` when it cannot be read."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.errors += 1
            raise
        try:
            return self.digests_of_fd(fd)
        finally:
            os.close(fd)

    def cached(self, key: FileKey) -> FileDigests | None:
        """The digests of file version ``key`` if they were computed before (no I/O): a
        source that knows the identity of what ran (the eBPF probes) needs no open()."""
        found = self._cache.get(key)
        if found is not None:
            self.hits += 1
            self._cache.move_to_end(key)
        return found

    def digests_of_fd(self, fd: int) -> FileDigests:
        key = file_key(os.fstat(fd))
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return cached
        self.misses += 1
        try:
            result = digest_fd(fd, self.max_file_bytes)
        except OSError:
            self.errors += 1
            raise
        self._cache[key] = result
        if len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return result

    def clear(self) -> None:
        self._cache.clear()
