"""``ttpsensor bench ingest``: the collector's store ingest rate (SQLite)."""

from __future__ import annotations

import copy
import os
import tempfile

import click

from collector.admit import AdmitCounts, Identity, admit
from collector.store import Store
from common import bench


@click.command("ingest")
@click.option("--events", "count", default=20000, show_default=True)
@click.option("--postgres", default=None,
              help="A postgresql:// URL of a scratch database, to measure PostgreSQL too "
                   "(its tables are filled; use an empty database).")
def bench_ingest(count: int, postgres: str | None) -> None:
    """Collector ingest per event, from frames of 500, into SQLite (and PostgreSQL), and what
    admitting a remote sensor's frame adds (its TTPHashes recomputed)."""
    events = bench.varied_events(count)
    batches = [events[i:i + 500] for i in range(0, len(events), 500)]

    def timed(location: str) -> float:
        def run() -> None:
            store = Store(location)
            spool = os.urandom(8).hex()  # fresh keys each round: every event is new
            for n, batch in enumerate(batches):
                store.ingest(spool, n * 500, batch, "bench")
            store.close()
        return bench._median_us(run, len(events), repeats=3)

    def admitted() -> None:
        # What a remote sensor's frame costs before the store: host names checked against
        # its certificate, every TTPHash recomputed (collector/admit.py).
        host = events[0]["host"]["name"]
        identity = Identity("bench", frozenset({host.casefold()}))
        counts = AdmitCounts()
        for n, batch in enumerate(batches):
            admit(identity, n * 500, len(batch), [copy.deepcopy(e) for e in batch], counts)
        if counts.verified != len(events):
            raise click.ClickException(f"admission did not verify every event: {counts}")

    def copies() -> None:
        for batch in batches:
            [copy.deepcopy(e) for e in batch]

    admission = max(bench._median_us(admitted, len(events), repeats=3)
                    - bench._median_us(copies, len(events), repeats=3), 0.0)
    with tempfile.TemporaryDirectory(prefix="ttpsensor-bench-") as directory:
        sqlite = timed(os.path.join(directory, "bench.sqlite"))
    rows = [bench.Row("collector admission (hosts, TTPHash recomputed)", admission,
                      "SQLite ingest", admission / sqlite),
            bench.Row("collector ingest, SQLite (frames of 500)", sqlite)]
    if postgres:
        pg = timed(postgres)
        rows.append(bench.Row("collector ingest, PostgreSQL (frames of 500)", pg, "SQLite",
                              pg / sqlite))
    bench.print_table(rows)
