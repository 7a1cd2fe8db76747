"""A benchmark's child is measured for its own peak memory, not its parent's.

At exec the kernel keeps the peak RSS of the memory a process had before as its own, and a child
spawned by posix_spawn (vfork) ran in its parent's memory until then; so a large parent's peak
shows up as the peak of every child it starts, through wait4. ``bench audit`` measured its
engines that way until 2026-12-06 (every engine, LAUREL too, at the bench's own size).
"""

from __future__ import annotations

import json
import subprocess
import sys

PARENT = r"""
import json, os, sys
from sensor_linux.audit.bench import spawn_measured

CHILD = [sys.executable, "-c", "x = bytearray(40 << 20); x[::4096] = b'1' * len(x[::4096])"]
big = bytearray(300 << 20)
big[::4096] = b"1" * len(big[::4096])  # touched: resident
del big                                 # gone, but this process's peak stays
with open(os.devnull, "wb") as null:
    measured = spawn_measured(CHILD, null.fileno(), null.fileno(), null.fileno(),
                              dict(os.environ))
pid = os.posix_spawn(sys.executable, CHILD, dict(os.environ))
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"measured": measured.peak_rss_mib, "exit": measured.exit_code,
                  "cpu": measured.cpu_seconds, "wait4": usage.ru_maxrss / 1024}))
"""


def test_a_child_is_measured_at_its_own_peak_not_its_parents() -> None:
    done = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, text=True,
                          timeout=120, check=True)
    figures = json.loads(done.stdout)
    # The trap is real on this kernel: wait4 of a spawned child gives the parent's 300 MiB.
    assert figures["wait4"] >= 300, figures
    # Measured under GNU time: the child's 40 MiB buffer and its interpreter, nothing more.
    assert 40 <= figures["measured"] < 120, figures
    assert figures["exit"] == 0 and figures["cpu"] > 0, figures


def test_a_failing_child_gives_its_exit_code() -> None:
    script = ("import os; from sensor_linux.audit.bench import spawn_measured; "
              "u = spawn_measured(['false'], 0, 1, 2, dict(os.environ)); print(u.exit_code)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "1"
