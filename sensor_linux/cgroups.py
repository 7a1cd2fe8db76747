"""cgroup v2 ids (what ``bpf_get_current_cgroup_id`` returns) to container ids.

A cgroup v2 id is the inode number of the cgroup's directory in the cgroup2 file system, so a
walk of that tree maps ids to paths; the container id is the 64-hex component of the path, as
in ``/proc/PID/cgroup``. The map is cached and refreshed at most once per ``refresh_seconds``
when an unknown id shows up, so a burst of execs in a new cgroup costs one walk.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

CGROUP2 = "/sys/fs/cgroup"
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
MAX_DIRECTORIES = 100_000   # a walk stops here: a pathological tree must not stall the sensor


@dataclass
class CgroupNames:
    root: str = CGROUP2
    refresh_seconds: float = 1.0
    walks: int = 0
    _containers: dict[int, str | None] = field(default_factory=dict)
    _last_walk: float = field(default=float("-inf"))

    def container_id(self, cgroup_id: int) -> str | None:
        if not cgroup_id:
            return None
        if cgroup_id not in self._containers:
            now = time.monotonic()
            if now - self._last_walk < self.refresh_seconds:
                return None
            self._last_walk = now
            self._walk()
        return self._containers.get(cgroup_id)

    def _walk(self) -> None:
        self.walks += 1
        found: dict[int, str | None] = {}
        stack = [(self.root, None)]
        while stack and len(found) < MAX_DIRECTORIES:
            path, inherited = stack.pop()
            try:
                entries = os.scandir(path)
            except OSError:
                continue
            with entries:
                try:
                    found[os.stat(path).st_ino] = inherited
                except OSError:
                    continue
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        match = _CONTAINER_ID.search(entry.name)
                        stack.append((entry.path, match.group() if match else inherited))
        self._containers = found
