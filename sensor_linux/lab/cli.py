"""``ttpsensor bench overhead``: the command line of the overhead lab."""

from __future__ import annotations

import importlib.util
import os
import platform
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import click

from sensor_linux.lab.loadgen import DEFAULT_PROGRAM
from sensor_linux.lab.modes import all_modes

DEFAULT_RATES = "100,500,1000,2000"
QUICK_RATES = [100, 500]
QUICK_SECONDS = 3.0
HOST_PAUSE_SECONDS = 0.2  # the eBPF sources' read interval (sensor_linux/batching.py)


def _rates(text: str) -> list[int]:
    try:
        rates = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"not a list of integers: {text!r}") from exc
    if not rates or any(r <= 0 for r in rates):
        raise click.BadParameter("rates must be positive integers, e.g. 100,500,1000")
    return rates


@click.command("overhead")
@click.option("--rates", default=DEFAULT_RATES, show_default=True,
              help="Exec rates (per second) to measure each mode at.")
@click.option("--duration", default=30.0, show_default=True,
              help="Seconds of measured load per mode and rate.")
@click.option("--modes", "mode_names", default=",".join(all_modes()), show_default=True,
              help="Modes to run, in this order (none is the baseline for 'total').")
@click.option("--out", default="overhead-results", show_default=True,
              type=click.Path(file_okay=False), help="Where the report files are written.")
@click.option("--program", default=DEFAULT_PROGRAM, show_default=True,
              help="The program the load generator spawns.")
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1, 20),
              help="Run every mode this many times, each round in the opposite order to the "
                   "one before; the report adds each comparison's median over the rounds. "
                   "On a shared machine one run of a pair moves by a fifth or more: judge a "
                   "ratio on 3 rounds or more.")
@click.option("--quick", is_flag=True,
              help=f"Check the lab end to end: rates {QUICK_RATES[0]} and {QUICK_RATES[1]}, "
                   f"{QUICK_SECONDS:g} s each.")
def bench_overhead(rates: str, duration: float, mode_names: str, out: str, program: str,
                   rounds: int, quick: bool) -> None:
    """What each way of collecting costs on this machine, side by side.

    Runs each mode in turn (nothing; auditd alone with RAW and ENRICHED logs; auditd with
    LAUREL; auditd with 'ttpsensor audisp'; 'ttpsensor run' with --source audit, ebpf and
    hybrid), loads it with a program spawned at each rate, and reports per mode and rate: CPU
    of every collector process and of kauditd, BPF run time, what the watched processes spent
    above the baseline, exec latency p50/p99, events received against processes started, and
    the audit lost counter. Writes results.md, results.csv, results.json and cpu.png to --out.

    Needs root and no other audit daemon running; audit and BPF settings are restored
    afterwards. The exit code is 1 when a mode failed or a ttpsensor mode lost events.

    \b
      ttpsensor bench overhead --rates 500,1000 --rounds 3   # the cost goals, judged
      ttpsensor bench overhead --modes none,auditd-raw,ebpf --rates 500 --duration 20
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from sensor_linux.lab.modes import ModeError
    from sensor_linux.lab.overhead import LabSettings, Measurement, run_lab
    from sensor_linux.lab.report import markdown, processes, ratios, rows, summary, write_report
    from sensor_linux.wake import (interpreter_costs, interpreter_line, page_costs,
                                   page_costs_line)

    if importlib.util.find_spec("matplotlib") is None:
        raise click.ClickException("the plot needs matplotlib: pip install 'ttpsensor[lab]'")
    known = all_modes()
    names = [n.strip() for n in mode_names.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise click.BadParameter(f"unknown modes {', '.join(unknown)}; choose from "
                                 f"{', '.join(known)}", param_hint="--modes")
    rate_list = QUICK_RATES if quick else _rates(rates)
    seconds = QUICK_SECONDS if quick else duration
    if seconds <= 0:
        raise click.BadParameter("must be positive", param_hint="--duration")
    settings = LabSettings(rate_list, seconds, warmup=min(2.0, seconds / 3), program=program)
    console = Console(stderr=True)
    # What kind of host this is: on some VMs a page touched after a pause costs microseconds,
    # which multiplies what every collector that sleeps pays (docs/overhead.md).
    # And how fast it runs an interpreter's work: our sensors are Python, their peers are not.
    console.print("measuring the host's page reads after a pause and its interpreter …")
    host = page_costs(HOST_PAUSE_SECONDS, rounds=5)
    interpreter = interpreter_costs()
    console.print(f"overhead lab: {len(names)} modes x {len(rate_list)} rates"
                  + (f" x {rounds} rounds" if rounds > 1 else "")
                  + f", {seconds:g} s each; work files in {settings.work}")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("starting", total=len(names) * len(rate_list) * rounds)

        def progress(text: str, done: int) -> None:
            bar.update(task, description=text, advance=done)

        try:
            results = run_lab([known[n] for n in names], settings, progress, rounds)
        except ModeError as exc:
            raise click.ClickException(str(exc)) from exc
    # And again after the modes: a shared host's cost moves within a run (doubled in forty
    # minutes once, with every sleeping collector's), and a run whose host moved says so.
    console.print("measuring the host's page reads and its interpreter again …")
    host_after = page_costs(HOST_PAUSE_SECONDS, rounds=5)
    interpreter_after = interpreter_costs()
    host_line = (page_costs_line(host, host_after) + "\n\n"
                 + interpreter_line(interpreter, interpreter_after))
    paths = write_report(Path(out), results, shlex.join(["ttpsensor", *sys.argv[1:]]), {
        "rates": rate_list, "duration": seconds, "modes": names, "program": program,
        "rounds": rounds, "kernel": platform.release(), "cpus": os.cpu_count(),
        "host_pages": asdict(host), "host_pages_after": asdict(host_after),
        "host_interpreter": asdict(interpreter),
        "host_interpreter_after": asdict(interpreter_after)},
        host=host_line)
    table = rows(results)
    compared = ratios(table)
    click.echo(markdown(table, compared, processes(table), summary(compared)))
    click.echo(host_line)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    failed = [r for r in results if r.error]
    lossy = [r for r in results if r.ours and not r.error and r.lost]

    def which(r: Measurement) -> str:
        return f"{r.mode} at {r.rate}/s" + (f" (round {r.round})" if rounds > 1 else "")

    for r in failed:
        console.print(f"[red]{which(r)} failed: {r.error}")
    for r in lossy:
        console.print(f"[red]{which(r)} lost {r.lost} of {r.started} execs")
    if failed or lossy:
        sys.exit(1)

