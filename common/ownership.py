"""Whose files the sensor may write into: its own, root's, and its service account's.

The Linux sensor starts as root and drops to a service account (``ttpsensor`` unless
``--user`` says otherwise) after opening what it needs, handing that account its output
files; at the next start root opens them again. Anything owned by another user is refused:
that user could read the events, or swap the file for a link.
"""

from __future__ import annotations

import os

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
