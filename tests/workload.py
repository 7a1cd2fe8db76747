"""A workload of real execs with known pids and argv, for the live source tests."""

from __future__ import annotations

import os
import uuid

HOSTILE = [b"\xff\xfe bytes", b"with space", b'q"uote\'s', b"back\\slash", b"new\nline",
           b"tab\there", b"", b"100%", b"caf\xc3\xa9"]


def run_execs(count: int, program: str = "/bin/true") -> tuple[str, dict[int, list[bytes]]]:
    """Spawn ``count`` processes, each with a unique argv (some hostile); wait for each.

    Returns the run's token and {pid: argv}.
    """
    token = uuid.uuid4().hex[:12]
    spawned: dict[int, list[bytes]] = {}
    for i in range(count):
        argv = [program.encode(), f"ttpw-{token}-{i}".encode()]
        if i % 10 == 0:
            argv += HOSTILE
        pid = os.posix_spawn(program, argv, {"PATH": "/usr/bin:/bin"})
        os.waitpid(pid, 0)
        spawned[pid] = argv
    return token, spawned
