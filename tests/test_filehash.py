"""File identity against coreutils' digests, the cache's keying, and live /proc/PID/exe cases."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from common.filehash import FileHasher, FileTooLarge
from sensor_linux.procfs import exe_identity, read_exe
from tests.conftest import require


def _coreutils_digest(tool: str, path: str) -> str:
    return subprocess.run([tool, path], capture_output=True, check=True,
                          text=True).stdout.split()[0].upper()


def test_digests_equal_coreutils(tmp_path) -> None:
    for path in ("/usr/bin/ls", sys.executable, str(tmp_path / "empty")):
        if path.endswith("empty"):
            open(path, "wb").close()
        d = FileHasher().digests(path)
        assert d.md5 == _coreutils_digest("md5sum", path)
        assert d.sha1 == _coreutils_digest("sha1sum", path)
        assert d.sha256 == _coreutils_digest("sha256sum", path)


def test_cache_hits_for_same_version_and_rehashes_changed_or_replaced_file(tmp_path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"one")
    hasher = FileHasher()
    first = hasher.digests(str(path))
    assert hasher.digests(str(path)) == first
    assert (hasher.hits, hasher.misses) == (1, 1)
    # Same size, new content: mtime/ctime change the key, so it is hashed again.
    time.sleep(0.01)
    path.write_bytes(b"two")
    second = hasher.digests(str(path))
    assert second != first and hasher.misses == 2
    # Replaced by rename (new inode).
    other = tmp_path / "new"
    other.write_bytes(b"two")
    os.replace(other, path)
    assert hasher.digests(str(path)) == second and hasher.misses == 3


def test_exe_identity_takes_a_known_version_from_the_cache_and_checks_what_ran(tmp_path) -> None:
    """The image's identity is stat()ed first and found in the cache without an open(): a
    rewritten file is hashed again, a file put in its place (another inode than the exec's)
    gives no digests and not on disk, and a FIFO there neither hangs nor hashes."""
    path = tmp_path / "tool"
    path.write_bytes(b"one")
    hasher = FileHasher()
    ran = frozenset({(path.stat().st_dev, path.stat().st_ino)})
    first, on_disk = exe_identity(1, str(path), hasher, use_proc=False, image_inodes=ran)
    assert on_disk is True and first is not None and hasher.misses == 1
    assert exe_identity(1, str(path), hasher, use_proc=False, image_inodes=ran) == (first, True)
    assert (hasher.hits, hasher.misses) == (1, 1)
    time.sleep(0.01)
    path.write_bytes(b"two")  # same inode, new content
    second, _ = exe_identity(1, str(path), hasher, use_proc=False, image_inodes=ran)
    assert second is not None and second != first and hasher.misses == 2
    other = tmp_path / "other"
    other.write_bytes(b"two")
    os.replace(other, path)  # another file where the one that ran was
    assert exe_identity(1, str(path), hasher, use_proc=False, image_inodes=ran) == (None, False)
    path.unlink()
    os.mkfifo(path)
    assert exe_identity(1, str(path), hasher, use_proc=False) == (None, False)


def test_cache_is_bounded(tmp_path) -> None:
    hasher = FileHasher(max_entries=3)
    for i in range(10):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([i]))
        hasher.digests(str(p))
    assert len(hasher) == 3


def test_size_limit_and_unreadable_file_are_errors(tmp_path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 100)
    hasher = FileHasher(max_file_bytes=10)
    with pytest.raises(FileTooLarge):
        hasher.digests(str(big))
    with pytest.raises(OSError):
        hasher.digests(str(tmp_path / "missing"))
    assert hasher.errors == 2


def _spawn_sleeper(exe: str) -> subprocess.Popen:
    proc = subprocess.Popen([exe, "30"])
    for _ in range(200):  # wait until the exec has happened
        if read_exe(proc.pid)[0] == exe:
            break
        time.sleep(0.01)
    return proc


def test_deleted_binary_is_hashed_as_it_ran_and_marked_not_on_disk(tmp_path) -> None:
    exe = str(tmp_path / "sleeper")
    shutil.copy("/usr/bin/sleep", exe)
    expected = _coreutils_digest("sha256sum", exe)
    proc = _spawn_sleeper(exe)
    try:
        hasher = FileHasher()
        digests, on_disk = exe_identity(proc.pid, exe, hasher)
        assert on_disk is True and digests.sha256 == expected
        # The running image again: its identity (a stat of /proc/PID/exe) finds it hashed.
        assert exe_identity(proc.pid, exe, hasher) == (digests, True)
        assert (hasher.hits, hasher.misses) == (1, 1)
        os.unlink(exe)
        path, deleted = read_exe(proc.pid)
        assert (path, deleted) == (exe, True)
        digests, on_disk = exe_identity(proc.pid, path, hasher)
        assert digests.sha256 == expected and on_disk is False
        # A different file now at the same path is not the file that ran.
        with open(exe, "wb") as f:
            f.write(b"impostor")
        assert exe_identity(proc.pid, path, hasher)[1] is False
    finally:
        proc.kill()
        proc.wait()


def test_memfd_executable_is_not_on_disk() -> None:
    require(hasattr(os, "memfd_create"), "memfd_create is needed")
    fd = os.memfd_create("payload", 0)
    with open("/usr/bin/sleep", "rb") as f:
        os.write(fd, f.read())
    proc = subprocess.Popen([f"/proc/self/fd/{fd}", "30"], pass_fds=(fd,))
    try:
        for _ in range(200):
            path, deleted = read_exe(proc.pid)
            if path and str(path).startswith("/memfd:"):
                break
            time.sleep(0.01)
        assert str(path).startswith("/memfd:payload") and deleted is True
        digests, on_disk = exe_identity(proc.pid, path, FileHasher())
        assert on_disk is False
        assert digests.sha256 == _coreutils_digest("sha256sum", "/usr/bin/sleep")
    finally:
        proc.kill()
        proc.wait()
        os.close(fd)
