"""The overhead lab's load generator: a trivial program spawned at a fixed rate.

Run as its own process (``python -m sensor_linux.lab.loadgen RATE SECONDS TOKEN``) so that its
CPU, and that of its children, is its own: the kernel-side cost of a collector (audit record
formatting, BPF programs) is charged to the task that execs, which is a child of this process.
It prints one JSON object: started count, achieved rate, spawn-to-reap latency percentiles and
CPU seconds of itself and of its reaped children.

Pacing uses absolute deadlines (start + n / rate), so a late spawn does not shift the schedule;
when the machine cannot keep up, the achieved rate says so (like edr-loadgen's printed counts).
The reaper is a second thread in ``os.waitpid(-1)``. At high rates pids wrap around within a
run, so spawns and reaps are kept as lists and joined per pid in order: a pid is reused only
after it was reaped, so the n-th spawn of a pid pairs with its n-th reap.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass

DEFAULT_PROGRAM = "/bin/true"
MARKER = "ttplab"


def marker_argv(program: str, token: str) -> list[str]:
    """The argv of every spawned process: the token lets the lab count events per run."""
    return [program, f"{MARKER}-{token}"]


@dataclass
class LoadResult:
    rate: float               # requested execs per second
    duration: float           # requested seconds
    started: int
    elapsed: float            # seconds from the first spawn to the last reap
    achieved_rate: float
    spawn_failures: int
    latency_p50_us: float
    latency_p99_us: float
    self_cpu_s: float         # user + system of the generator itself
    children_cpu_s: float     # user + system of the spawned programs (kernel exec cost incl.)
    children_user_s: float
    children_system_s: float


def _cpu(who: int) -> tuple[float, float]:
    usage = resource.getrusage(who)
    return usage.ru_utime, usage.ru_stime


def _latencies_us(spawned: list[tuple[int, int]],
                  reaped: list[tuple[int, int]]) -> list[float]:
    reaps: dict[int, list[int]] = {}
    for pid, at in reaped:
        reaps.setdefault(pid, []).append(at)
    latencies = []
    seen: dict[int, int] = {}
    for pid, at in spawned:
        n = seen.get(pid, 0)
        seen[pid] = n + 1
        times = reaps.get(pid, [])
        if n < len(times):
            latencies.append((times[n] - at) / 1000)
    return latencies


def generate(rate: float, duration: float, token: str,
             program: str = DEFAULT_PROGRAM) -> LoadResult:
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    argv = marker_argv(program, token)
    env = {"PATH": "/usr/bin:/bin"}
    spawned: list[tuple[int, int]] = []   # (pid, perf_counter_ns at spawn), in order
    reaped: list[tuple[int, int]] = []    # (pid, perf_counter_ns at reap), in order
    spawning = threading.Event()
    spawning.set()

    def reap() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                if not spawning.is_set():
                    return
                time.sleep(0.0005)
                continue
            reaped.append((pid, time.perf_counter_ns()))

    self_before, children_before = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    reaper = threading.Thread(target=reap, name="reaper")
    reaper.start()
    total = int(rate * duration)
    failures = 0
    start = time.perf_counter()
    try:
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            before = time.perf_counter_ns()
            try:
                pid = os.posix_spawn(program, argv, env)
            except OSError:
                failures += 1
                continue
            spawned.append((pid, before))
    finally:
        spawning.clear()
        reaper.join()
    elapsed = time.perf_counter() - start
    self_after, children_after = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    latencies = sorted(_latencies_us(spawned, reaped))
    percentile = (statistics.quantiles(latencies, n=100, method="inclusive")
                  if len(latencies) > 1 else latencies * 99 or [0.0] * 99)
    user = children_after[0] - children_before[0]
    system = children_after[1] - children_before[1]
    return LoadResult(
        rate=rate, duration=duration, started=len(spawned), elapsed=elapsed,
        achieved_rate=len(spawned) / elapsed if elapsed else 0.0, spawn_failures=failures,
        latency_p50_us=percentile[49], latency_p99_us=percentile[98],
        self_cpu_s=sum(self_after) - sum(self_before), children_cpu_s=user + system,
        children_user_s=user, children_system_s=system)


def main(args: list[str]) -> int:
    if len(args) not in (3, 4):
        print("usage: python -m sensor_linux.lab.loadgen RATE SECONDS TOKEN [PROGRAM]",
              file=sys.stderr)
        return 2
    result = generate(float(args[0]), float(args[1]), args[2],
                      args[3] if len(args) == 4 else DEFAULT_PROGRAM)
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
