"""``ttpsensor bench plugin``: our auditd plugin and LAUREL fed the same recorded execs at a
steady rate, without auditd or the kernel.

The overhead lab (``ttpsensor bench overhead``) compares the two behind a real auditd, where
each total also holds auditd's and kauditd's CPU (the same for both) and the load's noise: a
change of a few microseconds an exec in the plugin does not show there. Here the plugins alone
are measured, as they run: a process reading auditd's string format on its stdin at a rate,
its reads and wake-ups included (``bench audit`` replays a file at once instead, which shows
the work and not the wake-ups).

Each exec event of the recording is written to the plugin's stdin in one write, at its time,
with a fresh event id (the time of the write and a serial counting up, so that neither plugin
sees a duplicate) and this process as the parent (it runs, as the lab's load generator does);
its process is gone, as a short command's is when auditd hands its records over. After a
warm-up, each plugin's CPU (all its threads, from ``/proc/PID/task/*/schedstat``, in
nanoseconds) is taken over the window, and how many times the scheduler put it on a CPU
(``runs/s``: its wakes, and its returns after being preempted; on these VMs the audit
pipeline does some 400 µs more work for each wake, ``ttpsensor bench wake``, and that
decides our plugin's CPU, docs/overhead.md); then its input is closed and its output
counted: one line an event (ours also counts the failed PATH-walk execs it folds into the
exec that follows them), none lost. Rounds alternate which plugin goes first, and the
medians compare.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click

from common.cli import self_command
from sensor_linux.audit.bench import compiled_env
from sensor_linux.audit.laurel import PEER_CONFIG
from sensor_linux.lab.measure import TaskRuns, memory_mib, task_runs
from sensor_linux.lab.modes import plugin_settings
from sensor_linux.stages import audit_log_or_record, recording_options

OURS = "ttpsensor-audisp"
PEER = "LAUREL"
WARMUP_SECONDS = 3.0
EXIT_SECONDS = 60.0          # for a plugin to write what it holds after its input closes
_STAMP = re.compile(rb"msg=audit\((\d+\.\d+:\d+)\)")
_PPID = re.compile(rb" ppid=\d+ ")

# An event as written: its text split at its id (``SEC.MSEC:SERIAL``), to be joined by a new
# one. Every record of an event carries the id, so the split has one more part than records.
Template = list[bytes]


@dataclass
class Run:
    """One plugin fed at one rate in one round."""
    engine: str
    rate: int
    round: int
    fed: int = 0                 # events written, warm-up and window
    window_events: int = 0       # events written within the window
    window_seconds: float = 0.0
    cpu_seconds: float = 0.0     # the plugin's CPU within the window
    slices: int = 0              # times it was put on a CPU within the window (its wakes)
    output: int = 0              # events it wrote out
    rss_mib: float = 0.0         # its resident memory at the window's end (0: not read)
    peak_rss_mib: float = 0.0    # and its peak so far

    @property
    def us_per_event(self) -> float:
        return self.cpu_seconds / self.window_events * 1e6 if self.window_events else 0.0

    @property
    def slices_per_second(self) -> float:
        return self.slices / self.window_seconds if self.window_seconds else 0.0

    @property
    def achieved_rate(self) -> float:
        return self.window_events / self.window_seconds if self.window_seconds else 0.0


def templates(lines: list[bytes], parent: int) -> list[Template]:
    """The recording's events in order, each as a :data:`Template`, with ``parent`` as every
    exec's parent. Lines without an id (blank, cut) are left out."""
    events: dict[bytes, list[bytes]] = {}
    for line in lines:
        found = _STAMP.search(line)
        if found is not None:
            events.setdefault(found.group(1), []).append(line)
    out = []
    for stamp, records in events.items():
        text = _PPID.sub(b" ppid=%d " % parent, b"".join(
            line if line.endswith(b"\n") else line + b"\n" for line in records))
        out.append(text.split(stamp))
    return out


def event_id(serial: int, now: float) -> bytes:
    """An audit event id at ``now`` (seconds since the epoch)."""
    whole = int(now)
    return b"%d.%03d:%d" % (whole, int((now - whole) * 1000), serial)


def feed(argv: list[str], env: dict[str, str] | None, events: list[Template], run: Run,
         seconds: float, warmup: float, stderr: Path,
         progress: Callable[[str], None] = lambda _: None) -> None:
    """Start ``argv``, write ``events`` (in a cycle) to its stdin at ``run.rate`` events a
    second for ``warmup`` then ``seconds`` seconds, and take its CPU over the latter (in
    ``run``); then close its stdin and wait for it to finish."""
    with open(stderr, "wb") as err:
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=err, env=env)
    assert child.stdin is not None
    fd = child.stdin.fileno()
    start = time.monotonic()
    window = start + warmup
    end = window + seconds
    at_window: TaskRuns | None = None
    fed_at_window = None
    said = None
    try:
        while True:
            now = time.monotonic()
            if at_window is None and now >= window:
                at_window, fed_at_window, window = task_runs(child.pid), run.fed, now
            if now >= end:
                spent = task_runs(child.pid) - (at_window or TaskRuns())
                run.cpu_seconds, run.slices = spent.cpu_seconds, spent.slices
                memory = memory_mib(child.pid)
                if memory is not None:
                    run.rss_mib, run.peak_rss_mib = memory["rss"], memory["peak"]
                run.window_seconds = now - window
                run.window_events = run.fed - (fed_at_window or 0)
                break
            due = int((now - start) * run.rate)
            try:
                while run.fed < due:
                    template = events[run.fed % len(events)]
                    run.fed += 1
                    os.write(fd, event_id(run.fed, time.time()).join(template))
            except BrokenPipeError:
                child.wait()
            if child.poll() is not None:
                raise click.ClickException(f"{run.engine} stopped while fed: "
                                           f"{stderr.read_text(errors='replace')[-2000:]}")
            left = f"{max(0.0, end - now):.0f}"
            if left != said:  # once a second, not at each of the thousand turns
                progress(f"{run.engine}, {run.rate} events/s, round {run.round}: {left} s left")
                said = left
            time.sleep(0.001)
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise click.ClickException(f"{run.engine} did not finish within {EXIT_SECONDS:.0f} s "
                                       "of its input's end") from None
    if child.returncode != 0:
        raise click.ClickException(f"{run.engine} failed ({child.returncode}): "
                                   f"{stderr.read_text(errors='replace')[-2000:]}")


# How to start a plugin for a run: its argv, environment (None: this one's) and the file its
# events go to (made fresh for the run).
Engine = Callable[[Run], tuple[list[str], "dict[str, str] | None", Path]]


def engines(work: Path) -> dict[str, Engine]:
    """Our plugin (as the lab runs it) and LAUREL (as its goldens run: enrichment off), each
    run's files in ``work``."""
    laurel = shutil.which("laurel")
    if laurel is None:
        raise click.ClickException("LAUREL is needed as the peer: apt-get install laurel")
    ours = self_command()
    env = compiled_env(work)

    def ours_run(run: Run) -> tuple[list[str], dict[str, str] | None, Path]:
        tag = f"{run.rate}-{run.round}"
        output = work / f"ours-{tag}.jsonl"
        config = work / f"ours-{tag}.toml"
        config.write_text(plugin_settings(output, work / f"errors-{tag}.log"))
        script = shutil.which(OURS, path=str(Path(ours[0]).parent))
        argv = [script] if script else [*ours, "audisp"]
        return [*argv, "--config", str(config)], env, output

    def peer_run(run: Run) -> tuple[list[str], dict[str, str] | None, Path]:
        directory = work / f"laurel-{run.rate}-{run.round}"
        directory.mkdir()
        config = directory.with_suffix(".toml")
        config.write_text(PEER_CONFIG.format(directory=directory))
        return [laurel, "--config", str(config)], None, directory / "laurel.log"

    return {OURS: ours_run, PEER: peer_run}


def measure(events: list[Template], rates: list[int], rounds: int, seconds: float,
            warmup: float, plugins: dict[str, Engine], work: Path,
            progress: Callable[[str], None] = lambda _: None) -> list[Run]:
    """Every plugin at every rate, ``rounds`` times; each round in the other order."""
    order = list(plugins)
    runs = []
    for number in range(1, rounds + 1):
        for rate in rates:
            for name in (order if number % 2 else order[::-1]):
                run = Run(name, rate, number)
                argv, env, output = plugins[name](run)
                feed(argv, env, events, run, seconds, warmup,
                     work / f"{name}-{rate}-{number}.stderr", progress)
                run.output = count_events(output)
                runs.append(run)
    return runs


def count_events(path: Path) -> int:
    """The events in a plugin's output: one a line, and in ours also the failed execs of a
    PATH walk folded into the exec that followed them (``process.exec_attempts.count``),
    which LAUREL writes as events of their own (sensor_linux/attempts.py)."""
    if not path.exists():
        return 0
    count = 0
    with open(path, "rb") as f:
        for line in f:
            count += 1
            if b'"exec_attempts"' in line:  # parsed only then: most lines carry none
                try:
                    process = json.loads(line).get("process")
                except (ValueError, AttributeError):
                    continue  # a cut last line, or not a map: one line, one event
                attempts = process.get("exec_attempts") if isinstance(process, dict) else None
                if isinstance(attempts, dict) and isinstance(attempts.get("count"), int):
                    count += attempts["count"]
    return count


def lost(runs: list[Run]) -> list[Run]:
    """The runs whose plugin wrote fewer (or more) events than it was fed."""
    return [run for run in runs if run.output != run.fed]


def summary(runs: list[Run]) -> list[dict[str, float | int]]:
    """Per rate: the median µs an event of each plugin and the median of the rounds' ratios
    (ours over LAUREL, both of one round)."""
    out = []
    for rate in sorted({r.rate for r in runs}):
        mine = {r.round: r for r in runs if r.rate == rate and r.engine == OURS}
        theirs = {r.round: r for r in runs if r.rate == rate and r.engine == PEER}
        ratios = [mine[n].us_per_event / theirs[n].us_per_event for n in mine
                  if n in theirs and theirs[n].us_per_event > 0]
        out.append({"rate": rate,
                    "ours_us": statistics.median(r.us_per_event for r in mine.values()),
                    "peer_us": statistics.median(r.us_per_event for r in theirs.values()),
                    "ratio": statistics.median(ratios) if ratios else 0.0,
                    "lowest": min(ratios, default=0.0), "highest": max(ratios, default=0.0)})
    return out


@click.command("plugin")
@recording_options("Audit records to feed (auditd's log format).")
@click.option("--rates", default="500,1000", show_default=True,
              help="Events a second to feed, comma-separated (the lab's rates).")
@click.option("--seconds", default=15.0, show_default=True,
              help="The measured window of each run, after a warm-up of 3 s.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 50),
              help="Runs of each plugin at each rate, in alternating order.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the outputs and configurations in this directory.")
def bench_plugin(audit_log: Path | None, execs: int, rates: str, seconds: float, rounds: int,
                 keep: Path | None) -> None:
    """The auditd plugin against LAUREL, both fed the same recorded execs at a steady rate on
    their stdin (no auditd, no kernel): CPU µs an event of each, the ratio, and each one's
    resident memory.

    \b
        ttpsensor bench plugin --audit-log recording.log --rates 500,1000 --rounds 3

    Each event is written in one write with a fresh id; the plugins' own reads, wake-ups and
    builds are in the figure, auditd's and kauditd's are not (the lab has those). ``runs/s``:
    how often the scheduler put each plugin on a CPU in the window (its wakes, mostly). Needs
    Debian's laurel package.
    """
    try:
        wanted = [int(rate) for rate in rates.split(",") if rate.strip()]
    except ValueError:
        raise click.BadParameter(f"{rates!r} is not a list of numbers", param_hint="--rates")
    if not wanted or min(wanted) <= 0:
        raise click.BadParameter("give one or more positive rates", param_hint="--rates")
    if seconds <= 0:
        raise click.BadParameter("the window is a positive number of seconds",
                                 param_hint="--seconds")
    from rich.console import Console
    from rich.table import Table
    console = Console(stderr=True)
    work = keep or Path(tempfile.mkdtemp(prefix="ttpsensor-bench-plugin-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        recording = audit_log_or_record(audit_log, execs, str(work))
        with open(recording, "rb") as f:
            events = templates(f.read().splitlines(keepends=True), os.getpid())
        if not events:
            raise click.ClickException(f"{recording} holds no audit events")
        with console.status("starting") as status:
            runs = measure(events, wanted, rounds, seconds, WARMUP_SECONDS, engines(work),
                           work, lambda text: status.update(text))
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    table = Table(title=f"plugins fed {len(events):,} recorded events in a cycle "
                        f"({recording.name}), {seconds:.0f} s windows")
    for column in ("round", "rate/s", "plugin", "achieved/s", "CPU µs/event", "runs/s",
                   "RSS MiB", "peak MiB", "fed", "written", "lost"):
        table.add_column(column, justify="left" if column == "plugin" else "right")
    for run in runs:
        table.add_row(str(run.round), str(run.rate), run.engine, f"{run.achieved_rate:,.0f}",
                      f"{run.us_per_event:.1f}", f"{run.slices_per_second:,.0f}",
                      f"{run.rss_mib:.1f}",
                      f"{run.peak_rss_mib:.1f}", f"{run.fed:,}", f"{run.output:,}",
                      f"{run.fed - run.output:,}")
    Console(width=max(Console().width, 132)).print(table)
    totals = Table(title=f"{OURS} against {PEER}, medians of {rounds} round(s)")
    for column in ("rate/s", f"{OURS} µs/event", f"{PEER} µs/event", "ratio (range)"):
        totals.add_column(column, justify="right")
    for row in summary(runs):
        totals.add_row(str(row["rate"]), f"{row['ours_us']:.1f}", f"{row['peer_us']:.1f}",
                       f"{row['ratio']:.2f}× ({row['lowest']:.2f}–{row['highest']:.2f})")
    Console().print(totals)
    short = lost(runs)
    if short:
        raise click.ClickException(
            "events were lost: " + ", ".join(f"{r.engine} at {r.rate}/s round {r.round} wrote "
                                             f"{r.output} of {r.fed}" for r in short))
