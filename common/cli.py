"""The ``ttpsensor`` command.

Platform-independent commands live here; platform commands (``run``, ``whatis``, later
``windows``, ``collect``) are found through the ``ttpsensor.commands`` entry-point group and
imported only when invoked, so ``common`` never imports a platform package and a Linux-only
dependency cannot break ``ttpsensor hash`` on Windows.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TextIO

import click

from common import __version__, ttphash
from common.jsonin import load_event, read_documents
from common.schema import ACTION_PROCESS_CREATE, SchemaError, get_path

ENTRY_POINT_GROUP = "ttpsensor.commands"
BENCH_ENTRY_POINT_GROUP = "ttpsensor.bench"


def self_command() -> list[str]:
    """How to run this installation's ``ttpsensor`` as a child process (benchmarks, the lab,
    tests): the script beside this interpreter, else ``python -m common.cli``."""
    import shutil
    from pathlib import Path
    script = shutil.which("ttpsensor", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "common.cli"]


def _plugins(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


class PluginGroup(click.Group):
    """A click group that adds commands registered by the installed platform packages under
    the entry-point group ``plugin_group``."""

    plugin_group = ENTRY_POINT_GROUP

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_plugins(self.plugin_group)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        entry = _plugins(self.plugin_group).get(cmd_name)
        if entry is None:
            return None
        try:
            return entry.load()
        except ImportError as exc:
            # e.g. a Linux-only module on another OS: say so instead of a traceback.
            message = f"'{cmd_name}' is not available here: {exc}"

            @click.command(cmd_name, help=message)
            def unavailable() -> None:
                raise click.ClickException(message)
            return unavailable


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ttpsensor")
def main() -> None:
    """Endpoint process telemetry with a deterministic fingerprint (TTPHash) per event.

    \b
    Start here:
      ttpsensor run                 run the Linux sensor with its defaults
      ttpsensor hash events.jsonl   TTPHash of ECS or QLOG events
      ttpsensor whatis /usr/bin/ls  digests and owning package of files
    """


# --- hash ---------------------------------------------------------------------------------------

@main.command("hash")
@click.argument("source", type=click.File("r", encoding="utf-8", errors="surrogateescape"),
                default="-")
@click.option("--explain", is_flag=True,
              help="Also print the canonical bytes (RFC 8785 JSON) that were hashed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, for scripts.")
def hash_command(source: TextIO, explain: bool, as_json: bool) -> None:
    """Print the TTPHash of each process-create event in SOURCE (a file or - for stdin).

    SOURCE holds JSON lines of our ECS events or QLOG events; indented documents (as QLOG prints
    them) work too. Each output line is: the hash, 'complete' or 'incomplete' (some field was
    unknown), and the line where the event starts. Check a hash by hand:

    \b
      ttpsensor hash --explain ev.json | sed -n 2p | tr -d '\\n' | sha256sum

    Lines that are not JSON or not events are reported on stderr and the exit code is 2; every
    other event is still hashed.
    """
    failed = False
    for doc in read_documents(source):
        if doc.error is not None:
            click.echo(f"line {doc.line}: {doc.error}", err=True)
            failed = True
            continue
        try:
            event = load_event(doc.value)
        except SchemaError as exc:
            click.echo(f"line {doc.line}: not an event: {exc}", err=True)
            failed = True
            continue
        action = get_path(event, "event.action")
        if action != ACTION_PROCESS_CREATE:
            click.echo(f"line {doc.line}: skipped: event.action {action!r} has no TTPHash "
                       "(only process_create events have one)", err=True)
            continue
        try:
            result = ttphash.compute(event)
        except ttphash.TTPHashError as exc:
            click.echo(f"line {doc.line}: cannot hash: {exc}", err=True)
            failed = True
            continue
        _print_hash(doc.line, result, explain, as_json)
    if failed:
        sys.exit(2)


def _print_hash(line: int, result: ttphash.TTPHash, explain: bool, as_json: bool) -> None:
    completeness = "complete" if result.complete else "incomplete"
    if as_json:
        out: dict[str, Any] = {"line": line, "ttphash": result.value,
                               "version": result.version, "complete": result.complete}
        if explain:
            out["canonical"] = result.canonical.decode("utf-8")
        click.echo(json.dumps(out, ensure_ascii=False))
        return
    click.echo(f"{result.value}  {completeness}  line {line}")
    if explain:
        # JCS output has no raw newline (control characters are escaped), so one line is exact.
        click.echo(result.canonical.decode("utf-8"))


# --- bench --------------------------------------------------------------------------------------

class BenchGroup(PluginGroup):
    plugin_group = BENCH_ENTRY_POINT_GROUP


@main.group("bench", cls=BenchGroup)
def bench() -> None:
    """Benchmarks of the hot paths; each prints figures and a ratio against a reference."""


@bench.command("filehash")
@click.option("--files", "count", default=200, show_default=True,
              help="How many executables from --dir to hash.")
@click.option("--dir", "directory", default="/usr/bin", show_default=True)
@click.option("--rounds", default=5, show_default=True, help="Warm-cache lookups per file.")
def bench_filehash(count: int, directory: str, rounds: int) -> None:
    """Cost per event of file identity with a cold and a warm digest cache."""
    from common import bench as benchmarks
    benchmarks.print_table(benchmarks.filehash(directory, count, rounds))


@bench.command("spool")
@click.option("--events", "count", default=20000, show_default=True)
def bench_spool(count: int) -> None:
    """Spool write rate and compression ratio (see also 'bench ingest')."""
    import tempfile

    from common import bench as benchmarks
    with tempfile.TemporaryDirectory(prefix="ttpsensor-bench-") as directory:
        benchmarks.print_table(benchmarks.spool(count, directory + "/spool"))


@bench.command("encode")
@click.option("--events", "count", default=20000, show_default=True)
def bench_encode(count: int) -> None:
    """Cost per event of TTPHash, msgpack and the JSON renderers."""
    from common import bench as benchmarks
    benchmarks.print_table(benchmarks.encode(count))


# --- spool --------------------------------------------------------------------------------------

@main.group("spool")
def spool_group() -> None:
    """Look into a spool directory (the sensor's durable local queue)."""


def _open_spool(directory: str):  # type: ignore[no-untyped-def]
    """The spool, read-only: looking must never change it (no recovery, no new identity),
    even beside a sensor that is writing to it."""
    from common.spool import Spool, SpoolError
    try:
        return Spool(directory, readonly=True)
    except SpoolError as exc:
        raise click.ClickException(str(exc)) from exc


@spool_group.command("inspect")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def spool_inspect(directory: str, as_json: bool) -> None:
    """Segments, frames, sequence ranges, what is acknowledged, compression."""
    spool = _open_spool(directory)
    rows = []
    for segment in spool.segments():
        frames = list(spool.frames(segment))
        if frames:
            rows.append({"segment": segment, "frames": len(frames),
                         "first_seq": frames[0].first_seq,
                         "end_seq": frames[-1].first_seq + frames[-1].count,
                         "bytes": sum(len(f.payload) for f in frames)})
        else:
            rows.append({"segment": segment, "frames": 0})
    summary = spool.summary()
    if as_json:
        click.echo(json.dumps({"summary": summary, "segments": rows}))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"spool {summary['spool_id']}: acked < {summary['acked']}, "
                        f"next {summary['next_seq']}, {summary['bytes']} bytes")
    for column in ("segment", "frames", "first_seq", "end_seq", "bytes"):
        table.add_column(column, justify="left" if column == "segment" else "right")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in ("segment", "frames", "first_seq",
                                                       "end_seq", "bytes")))
    Console().print(table)


@spool_group.command("verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
def spool_verify(directory: str) -> None:
    """Read every unacknowledged frame (read-only); report corrupt frames, garbage, an
    unreadable cursor, stray seg-… entries, and sequence ranges that no frame holds.

    Exit code 1 when anything is wrong: missing events count as wrong unless a spool_gap
    event of the sensor accounts for them (it dropped them knowingly: spool full, disk full).
    A torn tail of the newest segment is reported but not wrong: a writer may be at work,
    or crashed mid-frame, and the frame was never committed."""
    spool = _open_spool(directory)
    events = frames = 0
    explained: list[tuple[int, int]] = []
    for _, batch in spool.read():
        frames += 1
        events += len(batch)
        for event in batch:
            gap = (event.get("ttpsensor") or {}).get("spool_gap")
            if isinstance(gap, dict) and isinstance(gap.get("first_seq"), int) \
                    and isinstance(gap.get("end_seq"), int):
                explained.append((gap["first_seq"], gap["end_seq"]))
    stats = spool.stats
    unexplained = sum(_uncovered(r, explained) for r in spool.missing_ranges)
    # Past the first 1,000 ranges only the count is kept: none of that is explained.
    unexplained += stats.missing_events - sum(e - s for s, e in spool.missing_ranges)
    report = {"frames": frames, "events": events}
    report.update({k: getattr(stats, k) for k in (
        "corrupt_frames", "garbage_bytes", "torn_tails", "missing_events", "cursor_invalid",
        "stray_entries") if getattr(stats, k)})
    if unexplained:
        report["unexplained_missing_events"] = unexplained
    click.echo(json.dumps(report))
    if unexplained or stats.corrupt_frames or stats.garbage_bytes or stats.cursor_invalid \
            or stats.stray_entries:
        sys.exit(1)


def _uncovered(missing: tuple[int, int], covered: list[tuple[int, int]]) -> int:
    """How many sequence numbers of ``missing`` no ``covered`` range contains."""
    points = set(range(*missing)) if missing[1] - missing[0] <= 1_000_000 else None
    if points is None:
        return missing[1] - missing[0]  # too large to account for piece by piece
    for start, end in covered:
        points.difference_update(range(max(start, missing[0]), min(end, missing[1])))
    return len(points)


# --- pki and forward ----------------------------------------------------------------------------

@main.group("pki")
def pki_group() -> None:
    """A lab PKI for a test or small deployment."""


@pki_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--sensor", "sensors", multiple=True, default=["sensor"], show_default=True,
              help="A sensor certificate to issue: NAME, its identity and the host name "
                   "its events may carry, or NAME=HOST,HOST to allow further host names "
                   "(the collector refuses events of any other host). Use the sensor host's "
                   "name (hostname). Repeatable.")
@click.option("--collector-name", "names", multiple=True,
              help="Names and addresses the collector is reached by (default: localhost, "
                   "127.0.0.1, ::1). Repeatable.")
def pki_init(directory: str, sensors: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Make a CA, a collector certificate and sensor certificates in DIRECTORY (keys 0600).

    \b
      ttpsensor pki init /etc/ttpsensor/pki --sensor web-01 --sensor db-01=db-01.example.com
    """
    from common import pki
    try:
        issued = pki.init(directory, list(sensors), collector_names=list(names) or None)
    except pki.PkiError as exc:
        raise click.ClickException(str(exc)) from exc
    for name, files in issued.items():
        click.echo(f"{name:12} {files.cert}  {files.key}")


def _address(value: str) -> tuple[str, int]:
    from common.transport import PORT
    host, _, port = value.rpartition(":")
    if not host:
        return value, PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError as exc:
        raise click.BadParameter(f"{value}: HOST:PORT") from exc


@main.command("forward")
@click.option("--spool", "spool_dir", required=True, type=click.Path(file_okay=False))
@click.option("--collector", "collectors", multiple=True,
              help="HOST:PORT of a collector; repeat for failover, in order of preference.")
@click.option("--cert", help="This sensor's certificate (PEM).")
@click.option("--key", help="Its private key (PEM).")
@click.option("--ca", help="The CA that signed the collectors' certificates.")
@click.option("--server-name", default=None,
              help="The name in the collectors' certificates, if not their address.")
@click.option("--nats", "nats_url", default=None,
              help="Publish to NATS JetStream at this URL instead (nats://host:4222), one "
                   "message per frame with a Nats-Msg-Id for deduplication.")
@click.option("--sensor", default=None, help="--nats: this sensor's name (default: hostname).")
def forward(spool_dir: str, collectors: tuple[str, ...], cert: str | None, key: str | None,
            ca: str | None, server_name: str | None, nats_url: str | None,
            sensor: str | None) -> None:
    """Ship a spool to collectors over mutual TLS (or to NATS JetStream); the spool's cursor
    moves only on acknowledgements.

    Runs until SIGTERM/SIGINT, retrying with backoff and failing over between collectors.
    """
    import signal as _signal
    import threading
    from dataclasses import asdict

    stop = threading.Event()
    _signal.signal(_signal.SIGTERM, lambda *_: stop.set())
    _signal.signal(_signal.SIGINT, lambda *_: stop.set())
    log = lambda m: click.echo(f"ttpsensor forward: {m}", err=True)  # noqa: E731
    if nats_url:
        import asyncio
        import socket

        from common.jetstream import PublishStats, publish_spool
        stats = PublishStats()
        asyncio.run(publish_spool(nats_url, spool_dir, sensor or socket.gethostname(),
                                  stop.is_set, stats, log))
        click.echo(f"ttpsensor forward: stopped: {json.dumps(asdict(stats))}", err=True)
        return
    if not (collectors and cert and key and ca):
        raise click.UsageError("give --collector, --cert, --key and --ca (or --nats)")
    from common.forward import Forwarder
    from common.transport import client_context
    forwarder = Forwarder(spool_dir, [_address(c) for c in collectors],
                          client_context(cert, key, ca), server_name, log=log)
    forwarder.run(stop.is_set)
    click.echo(f"ttpsensor forward: stopped: {json.dumps(asdict(forwarder.stats))}", err=True)


if __name__ == "__main__":  # `python -m common.cli`, as self_command() falls back to
    sys.exit(main())
