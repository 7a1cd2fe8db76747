"""``ttpsensor bench collect``: the collector end to end, with one sensor and with many at once.

``bench ingest`` measures the store alone. A collector also reads TLS, decompresses and decodes
each frame, recomputes every TTPHash (collector/admit.py) and answers each frame; and with
many sensors, frames that arrive while a commit runs are committed together
(collector/writer.py). This runs a real ``ttpsensor collect`` (its own process, a fresh SQLite
store and a throw-away PKI) and sensor processes that send frames of 500 fleet events as a
forwarder does (up to its window of frames before it reads the first answer), first one
sensor, then ``--sensors`` at once, each round against a fresh collector (and a store with
its documents' dictionary already trained).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import click

from collector.bench import fleet_events
from collector.documents import TRAIN_DOCUMENTS
from collector.store import Store
from common import bench, pki, transport, wire
from common.cli import self_command
from common.forward import WINDOW
from common.spool import encode_frame

FRAME_EVENTS = 500
START_SECONDS = 60.0


@dataclass
class Round:
    """What one round measured."""

    events: int
    wall: float          # seconds from the start signal until every sensor had its answers
    cpu: float           # seconds of CPU the collector process spent meanwhile
    commits: int
    frames: int


def _process_cpu(pid: int) -> float:
    """The collector process's CPU seconds so far (bench.process_cpu_seconds); it must run."""
    spent = bench.process_cpu_seconds(pid)
    if spent is None:
        raise click.ClickException(f"the collector (pid {pid}) is gone")
    return spent


def _sensor(issued: Any, name: str, port: int, spool: str, frames: list[bytes],
            go: Any) -> None:
    """One sensor process: connect, say hello, wait for the start, send every frame as the
    forwarder does (up to its WINDOW before reading the first answer) and read every
    acknowledgement (a refusal or anything else exits non-zero)."""
    files = issued[name]
    context = transport.client_context(files.cert, files.key, issued["ca"].cert)
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=120),
                             server_hostname="localhost") as tls:
        transport.send(tls, b"H", json.dumps({"spool": spool, "version": 1}).encode())
        go.wait()
        unanswered = 0
        for frame in frames:
            transport.send(tls, b"F", frame)
            unanswered += 1
            if unanswered == WINDOW:
                _acknowledged(tls, name)
                unanswered -= 1
        for _ in range(unanswered):
            _acknowledged(tls, name)


def _acknowledged(tls: Any, name: str) -> None:
    kind, body = transport.receive(tls)
    if kind != b"A":
        raise SystemExit(f"{name}: the collector answered {kind!r}: {body[:200]!r}")


def _round(directory: str, issued: Any, names: list[str], frames: list[bytes],
           training: list[bytes]) -> Round:
    """One fresh collector, ``names`` sending ``frames`` each at once. Its store starts empty
    but for the documents' dictionary, trained beforehand on ``training``: a store trains one
    on its first 4,000 events, once (0.2 s, which a round of 40,000 events would otherwise
    count as 5 µs an event)."""
    port = bench.free_port()
    store = os.path.join(directory, f"store-{len(names)}.sqlite")
    with Store(store) as prepared:
        prepared.train_dictionary(training)
    log_path = os.path.join(directory, f"collector-{len(names)}.log")
    files = issued["collector"]
    with open(log_path, "w") as log:
        collector = subprocess.Popen(
            [*self_command(), "collect", "--listen", f"127.0.0.1:{port}", "--cert", files.cert,
             "--key", files.key, "--ca", issued["ca"].cert, "--store", store],
            stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_SECONDS
        while "listening on" not in _text(log_path):
            if collector.poll() is not None or time.monotonic() > deadline:
                raise click.ClickException(f"the collector did not start: {_text(log_path)}")
            time.sleep(0.05)
        go = multiprocessing.Event()
        senders = [multiprocessing.Process(target=_sensor, args=(
            issued, name, port, f"bench-{name}", frames, go)) for name in names]
        for sender in senders:
            sender.start()
        time.sleep(1.0)  # every hello answered: the round times frames only
        cpu, start = _process_cpu(collector.pid), time.perf_counter()
        go.set()
        for sender in senders:
            sender.join()
        wall, cpu = time.perf_counter() - start, _process_cpu(collector.pid) - cpu
        if any(sender.exitcode != 0 for sender in senders):
            raise click.ClickException(f"a sensor failed; the collector's log:\n"
                                       f"{_text(log_path)[-2000:]}")
    finally:
        collector.terminate()
        collector.wait(60)
    stopped = [line for line in _text(log_path).splitlines() if "stopped: " in line]
    if not stopped:
        raise click.ClickException(f"the collector left no stop line: {_text(log_path)}")
    counts = json.loads(stopped[-1].split("stopped: ", 1)[1])
    events = len(names) * len(frames) * FRAME_EVENTS
    if counts["events_new"] != events:
        raise click.ClickException(f"the collector stored {counts['events_new']} of {events} "
                                   "events")
    return Round(events, wall, cpu, counts["commits"], counts["committed_frames"])


def _text(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


@click.command("collect")
@click.option("--sensors", default=8, show_default=True,
              help="Sensors that send at once in the second round.")
@click.option("--frames", "frame_count", default=10, show_default=True,
              help="Frames of 500 events each sensor sends (the single sensor of the first "
                   "round sends as many events as all of the second round's).")
def bench_collect(sensors: int, frame_count: int) -> None:
    """Collector throughput end to end: TLS, frame decoding, TTPHash recomputation, the
    store and its commits, with one sensor and with several at once (events/s wall, and the
    collector's CPU per event; how many frames each commit held).

    \b
      ttpsensor bench collect --sensors 8 --frames 10
    """
    if sensors < 1 or frame_count < 1:
        raise click.BadParameter("--sensors and --frames must be at least 1")
    host = socket.gethostname()
    names = [f"bench-{i}" for i in range(sensors)]
    events = fleet_events(FRAME_EVENTS * frame_count * sensors)
    for event in events:
        event["host"]["name"] = host  # the sensors' certificates speak for this host
    frames = [encode_frame(n * FRAME_EVENTS, events[n * FRAME_EVENTS:(n + 1) * FRAME_EVENTS])[0]
              for n in range(frame_count * sensors)]
    training = [wire.pack_event(e) for e in fleet_events(TRAIN_DOCUMENTS, seed=13)]
    with tempfile.TemporaryDirectory(prefix="ttpsensor-bench-") as directory:
        issued = pki.init(os.path.join(directory, "pki"), [f"{name}={host}" for name in names])
        click.echo(f"one sensor, {len(frames)} frames ...", err=True)
        alone = _round(directory, issued, names[:1], frames, training)
        click.echo(f"{sensors} sensors, {frame_count} frames each ...", err=True)
        together = _round(directory, issued, names, frames[:frame_count], training)
    per_event = [1e6 * r.wall / r.events for r in (alone, together)]
    cpu = [1e6 * r.cpu / r.events for r in (alone, together)]
    bench.print_table([
        bench.Row(f"one sensor (wall; {alone.frames / alone.commits:.1f} frames a commit)",
                  per_event[0]),
        bench.Row(f"{sensors} sensors at once (wall; {together.frames / together.commits:.1f} "
                  "frames a commit)", per_event[1], "one sensor", per_event[1] / per_event[0]),
        bench.Row("collector CPU, one sensor", cpu[0]),
        bench.Row(f"collector CPU, {sensors} sensors at once", cpu[1], "one sensor",
                  cpu[1] / cpu[0]),
    ], f"per event, {alone.events:,} events a round (fleet mix, frames of {FRAME_EVENTS})")
