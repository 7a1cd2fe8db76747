"""Whose files the sensor may write into: its own, root's, and its service account's.

The Linux sensor starts as root and drops to a service account (``ttpsensor`` unless
``--user`` says otherwise) after opening what it needs, handing that account its output
files; at the next start root opens them again. Anything owned by another user is refused:
that user could read the events, or swap the file for a link.
"""

from __future__ import annotations

import errno
import os
import stat

SERVICE_USER = "ttpsensor"

# Flags some platforms lack (Windows: no links to refuse this way, no exec inheritance, and a
# text mode that must be off).
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
BINARY = getattr(os, "O_BINARY", 0)
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC | BINARY


def trusted_owners() -> set[int]:
    """User ids whose files and directories the sensor writes into (empty on Windows, where
    ownership is a matter of ACLs the installer sets)."""
    if not hasattr(os, "geteuid"):
        return set()
    owners = {os.geteuid(), 0}
    try:
        import pwd
        owners.add(pwd.getpwnam(SERVICE_USER).pw_uid)
    except (ImportError, KeyError):
        pass  # no such account
    return owners


def private_directory_problem(path: str) -> str | None:
    """Why ``path`` is not a directory the sensor may write secrets or events into: not a real
    directory (a link), owned by another user, or writable by group or others; None when fine
    (and always on Windows)."""
    owners = trusted_owners()
    if not owners:
        return None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory (a symbolic link?)"
    if st.st_uid not in owners:
        return (f"{path} belongs to uid {st.st_uid}, neither this user ({os.geteuid()}), root, "
                f"nor the service account {SERVICE_USER!r}")
    if st.st_mode & 0o022:
        return (f"{path} is writable by group or others ({stat.filemode(st.st_mode)}); "
                "chmod go-w it")
    return None


def open_private(path: str, regular_only: bool = False) -> int:
    """Open ``path`` for appending, as the sensor's own 0600 file. Refused (OSError with a
    message naming the path): a symbolic link (root would write through it), and an existing
    file of another user (who could read what is written). A FIFO or device is used as it is,
    never chmodded, unless ``regular_only`` refuses it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW | CLOEXEC
                     | BINARY, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{path} is a symbolic link: refusing to write "
                          "through it (give the real path)") from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        if regular_only:
            os.close(fd)
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        return fd
    owners = trusted_owners()
    if owners and st.st_uid not in owners:
        os.close(fd)
        raise OSError(errno.EPERM, f"{path} belongs to uid {st.st_uid}: refusing to write "
                      "events into another user's file")
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o600)  # an existing file may have been created with other bits
    return fd
