"""Does a ring reader lose records? Load the exec probes with an ``on_exec`` that does nothing
(so the consumer keeps up at once), spawn the overhead lab's load, and count what the kernel
refused to put in the ring (``probe_drops``), once per reader, alternating:

    python -m tests.ring_stress --rate 2000 --seconds 30 --runs 3     # as root

A reader that keeps up must never make the kernel refuse a record; any count under
``ringbuf_full`` is a loss the reader caused or allowed. Prints one line per run and exits 1
when any run lost a record.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time

import click

from sensor_linux.batching import BATCH_SECONDS, GATHER_SECONDS, Gather
from sensor_linux.ebpf import probes
from sensor_linux.ebpf.source import RingInput
from sensor_linux.lab.loadgen import DEFAULT_PROGRAM

# Reader: (in place, seconds between reads: the eBPF source's, see source.RingInput, or
# the audit sources' pause).
READERS = {"bcc-callback": (False, BATCH_SECONDS), "in-place": (True, BATCH_SECONDS),
           "in-place-gathering": (True, GATHER_SECONDS)}


def one_run(reader: tuple[bool, float], rate: int,
            seconds: float) -> tuple[int, dict[str, int]]:
    """(records delivered, the probes' drop counters) for one loaded run of one reader."""
    probes.IN_PLACE, gather = reader
    delivered = [0]

    def count(record: probes.ExecRecord) -> None:
        delivered[0] += 1

    loaded = probes.ExecProbes(on_exec=count)
    loaded.load()
    try:
        load = subprocess.Popen([sys.executable, "-m", "sensor_linux.lab.loadgen", str(rate),
                                 str(seconds), "ringstress", DEFAULT_PROGRAM],
                                stdout=subprocess.DEVNULL)
        ring = RingInput(loaded, Gather(gather))
        while load.poll() is None:  # the sensor's loop: read when due or woken
            if select.select([ring.fileno()], [], [], ring.due_in())[0] or not ring.due_in():
                ring.drain()
        time.sleep(0.5)
        loaded.poll(0)
        return delivered[0], loaded.drops()
    finally:
        loaded.close()


@click.command()
@click.option("--rate", default=2000, show_default=True, help="Execs per second.")
@click.option("--seconds", default=30.0, show_default=True, help="Length of each run.")
@click.option("--runs", default=3, show_default=True, help="Runs of each reader.")
@click.option("--reader", "readers", multiple=True, type=click.Choice(list(READERS)),
              help="Readers to run (default: all, alternating).")
def main(rate: int, seconds: float, runs: int, readers: tuple[str, ...]) -> None:
    """Records the kernel refused, per ring reader, under the lab's exec load."""
    lost = 0
    for number in range(1, runs + 1):
        for name in readers or tuple(READERS):
            delivered, drops = one_run(READERS[name], rate, seconds)
            lost += drops["ringbuf_full"]
            click.echo(f"run {number} {name}: {delivered} records, refused "
                       f"{drops['ringbuf_full']}")
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
