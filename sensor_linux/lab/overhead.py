"""``ttpsensor bench overhead``: every collection mode, started, loaded, measured and stopped.

For each mode: start it, wait until a probe exec shows up in its output, then for each rate run
a short warm-up load and the measured load (``loadgen``), wait until the run's execs have
arrived (or stopped arriving), and take the deltas of: user and system CPU of every collector
process and of ``kauditd``, the run time of the collector's BPF programs, the audit ``lost``
counter; the load generator reports its own CPU, its children's (where kernel-side cost lands)
and its exec latency. CPU is given as a percentage of one CPU over the load's duration, so the
cost of draining a backlog after the load ends is counted too.

With several rounds the whole sequence runs again, each round in the opposite order to the one
before (a mode that runs early in one round runs late in the next): on a shared machine the same
mode moves by a fifth or more between runs, so a comparison is judged on its rounds' median, each
round's pair measured minutes apart at most (report.py).

The audit state (enabled flag, rules, settings, registered pid) is saved before the first mode
and restored after every mode, and ``kernel.bpf_stats_enabled`` is put back, even on failure.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from sensor_linux.audit.netlink import AuditSocket
from sensor_linux.audit.session import SavedState, process_name, restore
from sensor_linux.lab import measure
from sensor_linux.lab.loadgen import DEFAULT_PROGRAM, MARKER, marker_argv
from sensor_linux.lab.modes import START_TIMEOUT, MarkerCounter, Mode, ModeError

DRAIN_QUIET_SECONDS = 10.0   # no new events for this long: the rest are lost
DRAIN_TIMEOUT = 900.0        # a collector far behind still delivers: wait for it, and say so


@dataclass
class Measurement:
    mode: str
    rate: int
    ours: bool
    started: int = 0
    achieved_rate: float = 0.0
    received: int | None = None      # None: the mode has no output (the baseline)
    audit_lost: int = 0
    window_s: float = 0.0
    collectors: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> user/system %
    # name -> the collector's resident memory in MiB after this rate's load ("rss") and its
    # peak so far ("peak": the mode's earlier rates and its start included)
    memory_mib: dict[str, dict[str, float]] = field(default_factory=dict)
    collector_cpu_pct: float = 0.0
    kauditd_cpu_pct: float = 0.0
    bpf_run_pct: float = 0.0         # in the exec'ing tasks: also inside workload_cpu_pct
    bpf_ns_per_run: float = 0.0
    workload_cpu_pct: float = 0.0    # the spawned programs (kernel exec work included)
    loadgen_cpu_pct: float = 0.0
    latency_p50_us: float = 0.0
    latency_p99_us: float = 0.0
    drain_s: float = 0.0             # after the load, until the last event arrived
    error: str | None = None
    round: int = 1                   # which pass over the modes (run_lab's rounds)

    @property
    def lost(self) -> int | None:
        return None if self.received is None else max(0, self.started - self.received)


@dataclass
class LabSettings:
    rates: list[int]
    duration: float
    warmup: float
    program: str = DEFAULT_PROGRAM
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ttplab-")))


def run_load(rate: int, duration: float, token: str, program: str) -> dict[str, Any]:
    """The load generator as its own process (its CPU and its children's are then its own)."""
    done = subprocess.run([sys.executable, "-m", "sensor_linux.lab.loadgen", str(rate),
                           str(duration), token, program], capture_output=True, text=True,
                          timeout=duration * 10 + 60)
    if done.returncode != 0:
        raise ModeError(f"load generator failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def counter(mode: Mode, token: str) -> MarkerCounter | None:
    """A counter of the run ``token``'s execs in the mode's output (None: no output)."""
    output = mode.output()
    if output is None:
        return None
    return MarkerCounter(output[0], f"{MARKER}-{token}".encode(), output[1])


def wait_until_ready(mode: Mode, program: str) -> None:
    """Spawn probe execs until one reaches the mode's output (BCC may be compiling)."""
    token = f"ready{secrets.token_hex(4)}"
    probes = counter(mode, token)
    if probes is None:
        return
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        mode.check_alive()
        subprocess.run(marker_argv(program, token), check=False)
        time.sleep(0.5)
        if probes.count():
            return
    raise ModeError(f"{mode.name}: no event reached the output in {START_TIMEOUT:.0f} s")


def wait_drained(mode: Mode, events: MarkerCounter | None, started: int) -> int | None:
    """Events of a run that arrived: waits for all, or until they stop arriving."""
    if events is None:
        return None
    seen = events.count()
    quiet_since, deadline = time.monotonic(), time.monotonic() + DRAIN_TIMEOUT
    while seen < started and time.monotonic() < deadline:
        time.sleep(0.5)
        mode.check_alive()
        now = events.count()
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since > DRAIN_QUIET_SECONDS:
            break
    return seen


def _cpu_of(pids: dict[str, int]) -> dict[str, measure.Cpu]:
    found = {}
    for name, pid in pids.items():
        cpu = measure.process_cpu(pid)
        if cpu is not None:
            found[name] = cpu
    return found


def measure_rate(mode: Mode, rate: int, settings: LabSettings,
                 control: AuditSocket, round_: int = 1) -> Measurement:
    result = Measurement(mode.name, rate, mode.ours, round=round_)
    run_load(rate, settings.warmup, f"warm{secrets.token_hex(4)}", settings.program)
    token = f"{mode.name.replace('+', '-')}-{rate}-{secrets.token_hex(4)}"
    kauditd = {f"kauditd/{pid}": pid for pid in measure.pids_named("kauditd")}
    lost_before = control.status().lost
    cpu_before = _cpu_of({**mode.collectors(), **kauditd})
    bpf_before = measure.bpf_total(mode.bpf_pid())
    events = counter(mode, token)
    load = run_load(rate, settings.duration, token, settings.program)
    load_done = time.monotonic()
    result.received = wait_drained(mode, events, load["started"])
    result.drain_s = time.monotonic() - load_done
    collectors_after = mode.collectors()
    cpu_after = _cpu_of({**collectors_after, **kauditd})
    bpf_after = measure.bpf_total(mode.bpf_pid())
    result.audit_lost = max(0, control.status().lost - lost_before)

    window = result.window_s = load["elapsed"]
    pct = lambda seconds: 100.0 * seconds / window  # noqa: E731
    for name, after in cpu_after.items():
        if name not in cpu_before:
            continue  # a process that appeared mid-run (a restarted plugin): not comparable
        delta = after - cpu_before[name]
        if name.startswith("kauditd"):
            result.kauditd_cpu_pct += pct(delta.total_s)
        else:
            result.collectors[name] = {"user": pct(delta.user_s), "system": pct(delta.system_s)}
            result.collector_cpu_pct += pct(delta.total_s)
            memory = measure.memory_mib(collectors_after[name])
            if memory is not None:
                result.memory_mib[name] = memory
    runs = bpf_after.run_cnt - bpf_before.run_cnt
    result.bpf_run_pct = pct((bpf_after.run_time_ns - bpf_before.run_time_ns) / 1e9)
    result.bpf_ns_per_run = (bpf_after.run_time_ns - bpf_before.run_time_ns) / runs \
        if runs else 0.0
    result.started, result.achieved_rate = load["started"], load["achieved_rate"]
    result.workload_cpu_pct = pct(load["children_cpu_s"])
    result.loadgen_cpu_pct = pct(load["self_cpu_s"])
    result.latency_p50_us, result.latency_p99_us = load["latency_p50_us"], \
        load["latency_p99_us"]
    return result


def preflight(control: AuditSocket) -> SavedState:
    """The audit state to restore; refuses when another audit daemon owns audit."""
    if os.geteuid() != 0:
        raise ModeError("the overhead lab needs root (audit, BPF and auditd)")
    status = control.status()
    if status.enabled == 2:
        raise ModeError("audit is locked (enabled=2) until reboot: the lab cannot load rules")
    if status.pid and process_name(status.pid):
        raise ModeError(f"an audit daemon is registered ({process_name(status.pid)}, pid "
                        f"{status.pid}): stop it first, the lab runs its own auditd")
    return SavedState(os.getpid(), status.as_dict(), control.list_rules())


def round_order(modes: list[Mode], round_: int) -> list[Mode]:
    """The modes in the order round ``round_`` (from 1) runs them: as given, then reversed,
    alternately, so that no mode always runs at the same point of the sequence."""
    return list(modes) if round_ % 2 else list(reversed(modes))


def run_lab(modes: list[Mode], settings: LabSettings,
            progress: Callable[[str, int], None], rounds: int = 1) -> list[Measurement]:
    """Every mode at every rate, ``rounds`` times (:func:`round_order`); ``progress(text,
    steps_done)`` is called as it goes."""
    control = AuditSocket()
    saved = preflight(control)
    stats_before = measure.read_bpf_stats_enabled()
    results: list[Measurement] = []
    try:
        measure.write_bpf_stats_enabled("1")
        for round_ in range(1, rounds + 1):
            for mode in round_order(modes, round_):
                results += _run_mode(mode, settings, control, saved, progress, round_, rounds)
    finally:
        measure.write_bpf_stats_enabled(stats_before)
        restore(control, saved)
    return results


def _run_mode(mode: Mode, settings: LabSettings, control: AuditSocket, saved: SavedState,
              progress: Callable[[str, int], None], round_: int, rounds: int
              ) -> list[Measurement]:
    """One mode started, measured at every rate and stopped; a failure is its rates' rows."""
    label = f"round {round_}/{rounds}: {mode.name}" if rounds > 1 else mode.name
    work = mode.name.replace("+", "-") + (f"-round{round_}" if round_ > 1 else "")
    results: list[Measurement] = []
    progress(f"{label}: starting", 0)
    try:
        mode.start(settings.work / work)
        wait_until_ready(mode, settings.program)
        for rate in settings.rates:
            progress(f"{label}: {rate} execs/s for {settings.duration:g} s", 0)
            results.append(measure_rate(mode, rate, settings, control, round_))
            progress(f"{label}: {rate} execs/s done", 1)
    except (ModeError, OSError, subprocess.SubprocessError) as exc:
        done_rates = {r.rate for r in results}
        for rate in settings.rates:
            if rate not in done_rates:
                results.append(Measurement(mode.name, rate, mode.ours, error=str(exc),
                                           round=round_))
                progress(f"{label}: failed", 1)
    finally:
        mode.stop()
        restore(control, saved)
    return results


def as_dicts(results: list[Measurement]) -> list[dict[str, Any]]:
    return [dict(asdict(r), lost=r.lost) for r in results]
