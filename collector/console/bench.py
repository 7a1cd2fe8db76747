"""``ttpsensor bench console``: p50/p99 latency of each console page over a big store.

The store is filled as a fleet fills it (collector.bench.fleet_events: a few thousand
TTPHashes repeating, each event its own id and time, spread over hosts, with parents linked
to their children's events), through Store.ingest in frames of 500, then `ttpsensor console`
serves it and each page is asked for REQUESTS times over loopback. A kept store (--keep) is
reused by the next run, so the million events are made once.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import tempfile
import time
from typing import Iterator

import click

from collector.bench import fleet_events
from collector.store import Store
from common import bench
from common.cli import self_command

HOSTS = 50
REQUESTS = 50


def fill(path: str, events: int, progress: bool = True) -> None:
    """``events`` fleet events into a new store at ``path``, in frames of 500."""
    store = Store(path)
    started = time.monotonic()
    frame: list[dict] = []
    for n, event in enumerate(_fleet(events)):
        frame.append(_placed(event, n))
        if len(frame) == 500 or n + 1 == events:
            store.ingest("bench", n + 1 - len(frame), frame, "bench")
            frame = []
            if progress and ((n + 1) % 100_000 == 0 or n + 1 == events):
                rate = (n + 1) / max(1e-9, time.monotonic() - started)
                click.echo(f"  stored {n + 1:,} of {events:,} events ({rate:,.0f}/s)",
                           err=True)
    store.close()


def _fleet(events: int) -> Iterator[dict]:
    """Fleet events, made in chunks (each chunk makes the fleet's kinds once)."""
    chunk = 20_000
    for first in range(0, events, chunk):
        yield from fleet_events(min(chunk, events - first), seed=first)


def _placed(event: dict, n: int) -> dict:
    """Event ``n`` on its host and time; each host's events chained so that every tenth exec
    is a shell whose next nine are its children (trees have depth)."""
    event["host"]["name"] = f"host-{n % HOSTS:02d}"
    event["@timestamp"] = _stamp(n)
    process = event["process"]
    process["pid"], process["start"] = 10_000 + n, event["@timestamp"]
    shell = n - (n // HOSTS % 10) * HOSTS        # the same host's latest "shell"
    if shell != n:
        process["parent"]["pid"], process["parent"]["start"] = 10_000 + shell, _stamp(shell)
    return event


def _stamp(n: int) -> str:
    """Times over about a week: 0.6 s apart."""
    seconds = n * 0.6
    day, rest = divmod(int(seconds), 86400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"2026-11-{20 + day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{n % 1_000_000:06d}Z"


def pages(store: Store) -> list[tuple[str, str]]:
    """The pages measured: (name, path) with values taken from the store itself."""
    frequent = store._execute("SELECT ttphash FROM baseline ORDER BY count DESC LIMIT 1"
                              ).fetchone()[0]
    prefix = frequent[:4]
    return [("today", "/today"), ("today, one host", "/today?host=host-07"),
            ("rare", "/list/rare"), ("top", "/list/top"), ("not allow-listed", "/list/unlisted"),
            ("not allow-listed, page 20", "/list/unlisted?page=20"),
            ("top sorted by first seen", "/list/top?sort=first_seen&order=asc"),
            ("a TTPHash (the most frequent)", f"/hash/{frequent}"),
            ("a host's tree (a day)", "/host/host-07"),
            ("search: argument substring", "/search?argument=a1b"),
            ("search: TTPHash prefix", f"/search?prefix={prefix}"),
            ("hosts", "/hosts")]


@click.command("console")
@click.option("--events", default=1_000_000, show_default=True,
              help="Events in the store measured.")
@click.option("--keep", default=None, type=click.Path(file_okay=False),
              help="Keep the store in this directory and reuse it next time.")
@click.option("--requests", "count", default=REQUESTS, show_default=True,
              help="Requests per page.")
def bench_console(events: int, keep: str | None, count: int) -> None:
    """p50 and p99 latency of each console page over a store of EVENTS events."""
    import httpx
    from rich.console import Console
    from rich.table import Table
    directory = keep or tempfile.mkdtemp(prefix="ttpsensor-bench-console-")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"store-{events}.sqlite")
    if not os.path.exists(path):
        click.echo(f"filling {path} with {events:,} events", err=True)
        fill(path, events)
    store = Store(path)
    measured = pages(store)
    stored = store.count_events()
    store.close()
    port = bench.free_port()
    server = subprocess.Popen(self_command() + ["console", "--store", path, "--listen",
                                                f"127.0.0.1:{port}", "--token-file",
                                                os.path.join(directory, "token")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    table = Table(title=f"console page latency over {stored:,} events ({count} requests each)")
    for column in ("page", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "page" else "right")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise click.ClickException(f"the console did not start: "
                                               f"{server.stderr.read().decode()}")
                time.sleep(0.2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as web:
            for name, target in measured:
                web.get(target)                                   # warm the page cache
                times = []
                for _ in range(count):
                    started = time.perf_counter()
                    answer = web.get(target)
                    times.append((time.perf_counter() - started) * 1000)
                    if answer.status_code != 200:
                        raise click.ClickException(f"{target}: HTTP {answer.status_code}")
                times.sort()
                p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
                table.add_row(name, f"{statistics.median(times):.1f}", f"{p99:.1f}",
                              f"{times[-1]:.1f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    Console(width=110).print(table)
