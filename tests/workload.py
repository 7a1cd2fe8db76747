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


def memfd_image(name: str, program: str = "/usr/bin/sleep") -> tuple[int, str]:
    """A memfd named ``name`` holding a copy of ``program`` made new (eight random bytes at
    its end: no digest of it is cached anywhere), and its SHA-256 as the events' hash shows
    it. The caller closes the descriptor (run it as /proc/self/fd/FD)."""
    import hashlib

    with open(program, "rb") as f:
        image = f.read() + os.urandom(8)
    fd = os.memfd_create(name, 0)
    os.write(fd, image)
    return fd, hashlib.sha256(image).hexdigest().upper()


def run_memfd_images(count: int, seconds: float = 0.04, gap: float = 0.13) -> dict[str, str]:
    """Run ``count`` copies of sleep, each from a memfd image of its own (memfd_image), living
    ``seconds``, ``gap`` apart; returns each one's marker (its argv[0] and memfd name) and the
    SHA-256 of its image."""
    import subprocess
    import time

    images = {}
    for number in range(count):
        marker = f"memfd-{os.getpid()}-{number}"
        fd, images[marker] = memfd_image(marker)
        try:
            subprocess.run([marker, f"{seconds:g}"], executable=f"/proc/self/fd/{fd}",
                           pass_fds=(fd,), check=True)
        finally:
            os.close(fd)
        time.sleep(gap)
    return images
