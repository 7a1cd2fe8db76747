"""``ttpsensor bench filehash|spool|encode``: the benchmarks of common/bench.py."""

from __future__ import annotations

import click


@click.command("filehash")
@click.option("--files", "count", default=200, show_default=True,
              help="How many executables from --dir to hash.")
@click.option("--dir", "directory", default="/usr/bin", show_default=True)
@click.option("--rounds", default=5, show_default=True, help="Warm-cache lookups per file.")
def bench_filehash(count: int, directory: str, rounds: int) -> None:
    """Cost per event of file identity with a cold and a warm digest cache."""
    from common import bench as benchmarks
    benchmarks.print_table(benchmarks.filehash(directory, count, rounds))


@click.command("spool")
@click.option("--events", "count", default=20000, show_default=True)
def bench_spool(count: int) -> None:
    """Spool write rate and compression ratio (see also 'bench ingest')."""
    import tempfile

    from common import bench as benchmarks
    with tempfile.TemporaryDirectory(prefix="ttpsensor-bench-") as directory:
        benchmarks.print_table(benchmarks.spool(count, directory + "/spool"))


@click.command("encode")
@click.option("--events", "count", default=20000, show_default=True)
def bench_encode(count: int) -> None:
    """Cost per event of TTPHash, msgpack and the JSON renderers."""
    from common import bench as benchmarks
    benchmarks.print_table(benchmarks.encode(count))
