"""``ttpsensor bench ingest``: the collector's store ingest rate (SQLite)."""

from __future__ import annotations

import os
import tempfile

import click

from collector.store import Store
from common import bench


@click.command("ingest")
@click.option("--events", "count", default=20000, show_default=True)
def bench_ingest(count: int) -> None:
    """Collector ingest into SQLite per event, from frames of 500, events as the spool bench's."""
    events = bench.varied_events(count)
    batches = [events[i:i + 500] for i in range(0, len(events), 500)]
    with tempfile.TemporaryDirectory(prefix="ttpsensor-bench-") as directory:
        def run() -> None:
            path = os.path.join(directory, f"{os.urandom(4).hex()}.sqlite")
            store = Store(path)
            for n, batch in enumerate(batches):
                store.ingest("bench", n * 500, batch, "bench")
            store.close()
        per_event = bench._median_us(run, len(events), repeats=3)
    bench.print_table([bench.Row("collector ingest, SQLite (frames of 500)", per_event)])
