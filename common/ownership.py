"""Whose files the sensor may write into: its own, root's, and its service account's.

The Linux sensor starts as root and drops to a service account (``ttpsensor`` unless
``--user`` says otherwise) after opening what it needs, handing that account its output
files; at the next start root opens them again. Anything owned by another user is refused:
that user could read the events, or swap the file for a link.
"""

from __future__ import annotations

import os
import stat

SERVICE_USER = "ttpsensor"


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
