"""Where a live eBPF sensor's CPU goes: reading its source, or the pipeline behind it.

Runs ``ttpsensor run`` under the overhead lab's load, in turn, as it is (*whole*) and with the
pipeline's ``feed_many`` made a no-op (*reading*: the ring read and each record's decoding,
the loop, its ticks; everything before the pipeline), and prints each one's CPU in µs per
exec (user and system, from /proc/PID/stat) and the difference: what the pipeline costs live,
beside the rest of the process. ``ttpsensor bench stages`` times each stage alone over a list;
this is the same work interleaved in the running sensor, caches and all.

    python -m tests.live_floor --rate 1000 --seconds 30 --rounds 3          # as root
    python -m tests.live_floor --source hybrid --rounds 2

Needs what ``--source ebpf`` needs (root, BCC); hybrid also takes audit over, so no other
audit consumer may run then. One line per run, then the medians.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from sensor_linux.lab.measure import process_cpu

# The sensor, with what is handed to the pipeline counted and dropped in the "reading" mode
# (the summary's "events": items handed over, none built). The sources hand the pipeline's
# bound feed_many to their readers when they are built, after this patch.
_SENSOR = """\
import sys
import common.cli
import common.pipeline
def counted(self, raws):
    self.stats.events += len(raws)
if sys.argv[1] == "reading":
    common.pipeline.Pipeline.feed_many = counted
sys.argv = ["ttpsensor", "run", *sys.argv[2:]]
common.cli.main()
"""
MODES = ("whole", "reading")
WARM_SECONDS = 3.0


def _wait_for(path: Path, sensor: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if sensor.poll() is not None:
            raise click.ClickException(f"the sensor exited ({sensor.returncode}) before it ran")
        if time.monotonic() > deadline:
            raise click.ClickException(f"the sensor wrote no {path.name} in {timeout:.0f} s")
        time.sleep(0.2)


def one_run(mode: str, source: str, rate: int, seconds: float,
            work: Path) -> dict[str, float]:
    """User and system µs per exec of the sensor in ``mode``, the items its pipeline was
    handed and the lines it wrote (its summary's)."""
    status = work / f"{mode}-status.json"
    status.unlink(missing_ok=True)
    errors = open(work / f"{mode}-sensor.err", "wb")
    sensor = subprocess.Popen(
        [sys.executable, "-c", _SENSOR, mode, "--source", source, "--output",
         f"jsonl:{work / f'{mode}-events.jsonl'}", "--user", "root", "--status-file",
         str(status)], stdout=subprocess.DEVNULL, stderr=errors)
    try:
        _wait_for(status, sensor, 180)
        time.sleep(2)  # the start's last work (the first tick) out of the window
        load = subprocess.Popen(
            [sys.executable, "-m", "sensor_linux.lab.loadgen", str(rate),
             str(WARM_SECONDS + seconds), "livefloor"], stdout=subprocess.PIPE)
        time.sleep(WARM_SECONDS)
        before = process_cpu(sensor.pid)
        time.sleep(seconds)
        after = process_cpu(sensor.pid)
        out, _ = load.communicate(timeout=seconds + 60)
        achieved = json.loads(out)["achieved_rate"]
    finally:
        sensor.send_signal(signal.SIGTERM)
        sensor.wait(timeout=120)
        errors.close()
    execs = achieved * seconds
    stopped = [line for line in (work / f"{mode}-sensor.err").read_text().splitlines()
               if "stopped: " in line]
    summary = json.loads(stopped[-1].split("stopped: ", 1)[1]) if stopped else {}
    if before is None or after is None:
        raise click.ClickException(f"the sensor ({mode}) exited while it was measured")
    used = after - before
    return {"user": used.user_s * 1e6 / execs, "system": used.system_s * 1e6 / execs,
            "lines": float(summary.get("output_lines", -1)),
            "handed": float(summary.get("events", -1))}


@click.command()
@click.option("--source", type=click.Choice(["ebpf", "hybrid"]), default="ebpf",
              show_default=True)
@click.option("--rate", default=1000, show_default=True, help="Execs per second.")
@click.option("--seconds", default=30.0, show_default=True, help="The measured window.")
@click.option("--rounds", default=3, show_default=True, help="Runs of each mode, in turn.")
def main(source: str, rate: int, seconds: float, rounds: int) -> None:
    """The sensor's CPU per exec, whole and with nothing behind its reading."""
    if os.geteuid() != 0:
        raise click.ClickException("the eBPF sources need root")
    totals: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="ttpsensor-floor-") as work:
        for number in range(1, rounds + 1):
            # Each round in the opposite order to the one before (a mode run early once is
            # run late the next time).
            for mode in MODES if number % 2 else MODES[::-1]:
                got = one_run(mode, source, rate, seconds, Path(work))
                totals[mode].append(got["user"] + got["system"])
                click.echo(f"round {number} {mode:7s}: {got['user']:5.1f} user + "
                           f"{got['system']:4.1f} system = "
                           f"{got['user'] + got['system']:5.1f} µs/exec "
                           f"({got['handed']:.0f} items handed to the pipeline, "
                           f"{got['lines']:.0f} lines written)")
    whole, reading = (statistics.median(totals[mode]) for mode in MODES)
    click.echo(f"median: whole {whole:.1f} µs/exec, reading {reading:.1f}, "
               f"so the pipeline {whole - reading:.1f} ({source}, {rate}/s)")


if __name__ == "__main__":
    main()
