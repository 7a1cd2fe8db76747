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


def run_memfd_images(count: int, seconds: float = 0.04, gap: float = 0.13) -> dict[str, str]:
    """Run ``count`` copies of sleep, each from a memfd of its own with a new image (no
    digest cached anywhere), living ``seconds``, ``gap`` apart; returns each one's marker (its
    argv[0] and memfd name) and the SHA-256 of its image, as the events' hash shows it."""
    import hashlib
    import subprocess
    import time

    data = open("/usr/bin/sleep", "rb").read()
    images = {}
    for number in range(count):
        image = data + os.urandom(8)
        marker = f"memfd-{os.getpid()}-{number}"
        images[marker] = hashlib.sha256(image).hexdigest().upper()
        fd = os.memfd_create(marker, 0)
        try:
            os.write(fd, image)
            subprocess.run([marker, f"{seconds:g}"], executable=f"/proc/self/fd/{fd}",
                           pass_fds=(fd,), check=True)
        finally:
            os.close(fd)
        time.sleep(gap)
    return images
