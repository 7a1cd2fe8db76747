"""What the overhead lab reads from the kernel: process CPU and resident memory, BPF program
run time, audit loss.

CPU comes from ``/proc/PID/stat`` (utime and stime, all threads of the process including those
that already exited, in clock ticks; ``common.bench.stat_fields`` reads the fields after the
last ``)``, so a command name with spaces or parentheses cannot shift them). BPF run time comes
from the ``fdinfo`` of the collector's BPF program descriptors (``run_time_ns`` and
``run_cnt``, present while ``kernel.bpf_stats_enabled`` is 1), so only our programs are
counted, not systemd's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from common.bench import comm, stat_fields  # the readers of /proc/PID/stat and comm

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


@dataclass(frozen=True)
class Cpu:
    user_s: float
    system_s: float

    @property
    def total_s(self) -> float:
        return self.user_s + self.system_s

    def __sub__(self, other: "Cpu") -> "Cpu":
        return Cpu(self.user_s - other.user_s, self.system_s - other.system_s)


def process_cpu(pid: int) -> Cpu | None:
    fields = stat_fields(pid)
    if fields is None:
        return None
    return Cpu(int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS)


@dataclass(frozen=True)
class TaskRuns:
    """What the scheduler counted for a process's threads: CPU seconds, and how many times
    they were put on a CPU (``slices``: each wake from a sleep is one, and so is each return
    after being preempted). On a VM where work after a pause runs slower, the second says
    how often a collector pays for coming back (docs/overhead.md)."""
    cpu_seconds: float = 0.0
    slices: int = 0

    def __sub__(self, other: "TaskRuns") -> "TaskRuns":
        return TaskRuns(self.cpu_seconds - other.cpu_seconds, self.slices - other.slices)


def task_runs(pid: int) -> TaskRuns:
    """:class:`TaskRuns` of all the live threads of ``pid`` so far (zero once it is gone), from
    ``/proc/PID/task/*/schedstat`` (nanoseconds on a CPU, then time waiting for one, then
    slices): finer than :func:`process_cpu`'s clock ticks, for windows of a few seconds
    (``bench plugin``)."""
    nanoseconds = slices = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return TaskRuns()
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                fields = f.read().split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile: its time is in no file any more
        nanoseconds += int(fields[0])
        slices += int(fields[2])
    return TaskRuns(nanoseconds / 1e9, slices)


def memory_mib(pid: int) -> dict[str, float] | None:
    """The process's resident memory now and its peak so far, in MiB (``VmRSS`` and ``VmHWM``
    of /proc/PID/status: its own since its exec, unlike a spawned child's ``wait4`` figure);
    None once it is gone, or for a kernel thread, which has no memory of its own."""
    found = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    found["rss"] = int(line.split()[1]) / 1024
                elif line.startswith(b"VmHWM:"):
                    found["peak"] = int(line.split()[1]) / 1024
    except OSError:
        return None
    return found if len(found) == 2 else None


def pids_named(name: str) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and comm(int(p)) == name]


def children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and int(fields[1]) == parent:
                found.append(int(entry))
    return found


@dataclass(frozen=True)
class BpfRun:
    run_time_ns: int
    run_cnt: int


def bpf_programs(pid: int) -> dict[int, BpfRun]:
    """prog_id -> cumulative run statistics of every BPF program ``pid`` holds open."""
    programs: dict[int, BpfRun] = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return programs
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        prog_id = int(info.get("prog_id", "-1"))
        programs[prog_id] = BpfRun(int(info.get("run_time_ns", "0")),
                                   int(info.get("run_cnt", "0")))
    return programs


def bpf_total(pid: int | None) -> BpfRun:
    if pid is None:
        return BpfRun(0, 0)
    runs = bpf_programs(pid).values()
    return BpfRun(sum(r.run_time_ns for r in runs), sum(r.run_cnt for r in runs))


def read_bpf_stats_enabled() -> str:
    with open(BPF_STATS_SYSCTL) as f:
        return f.read().strip()


def write_bpf_stats_enabled(value: str) -> None:
    with open(BPF_STATS_SYSCTL, "w") as f:
        f.write(value)
