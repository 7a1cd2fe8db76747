"""``ttpsensor bench fuzz``: mutated audit streams and JSON events against the parsers.

Each input is a seed (a real audit log, our own generators of hostile shapes, or an event as
JSON) with a few random mutations: bit flips, inserted, deleted and duplicated bytes and lines,
shuffled lines, spliced lines from other seeds, numbers of thousands of digits, absurd ``argc``,
huge hex values, very long lines, EOE records removed, a thousand node names, control bytes.
Audit inputs go through the whole pipeline as ``audisp`` runs it (parse, assemble, build,
render, with a replay's enrichment: no file of this host is opened); JSON inputs through what
``ttpsensor hash`` runs (documents, schema, TTPHash).

Every input must hold: no exception escapes, no internal error, every non-blank line is a
record or a counted parse error, at most ``--max-seconds`` per input, and the process's peak
memory stays under ``--max-rss-mib``. An input that fails is kept in ``--keep`` with the reason
and the run exits 1. The mutation engine is written here: it is small, and the checks are ours.
"""

from __future__ import annotations

import io
import json
import random
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click

from common import ttphash
from common.jsonin import load_event, read_documents
from common.pipeline import Pipeline
from common.render import RENDERERS
from common.sinks import StreamSink, TextOutput
from sensor_linux.audit.lines import LineSplitter
from sensor_linux.audit.records import (SPLIT_TYPES, ParseError, parse, split_record_c,
                                        split_record_python)
from sensor_linux.audit.pipeline import audit_pipeline
from sensor_linux.enrich import Enricher

MAX_INPUT = 2 * 1024 * 1024
DEFAULT_MAX_SECONDS = 10.0
DEFAULT_MAX_RSS_MIB = 1024


class _Timeout(Exception):
    pass


class _Discard(io.TextIOBase):
    """A text stream that keeps nothing (for the pipeline's output, error log and messages)."""

    def write(self, text: str) -> int:
        return len(text)


@dataclass
class FuzzStats:
    inputs: int = 0
    audit_inputs: int = 0
    json_inputs: int = 0
    lines: int = 0
    parse_errors: int = 0
    failures: int = 0
    slowest_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


# --- seeds --------------------------------------------------------------------------------------

_EXEC = (b'type=SYSCALL msg=audit(1700000000.100:{n}): arch=c000003e syscall=59 success=yes '
         b'exit=0 a0=55 a1=66 ppid=1 pid=42{n} auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 '
         b'egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="ls" exe="/usr/bin/ls" key=(null)\n'
         b'type=EXECVE msg=audit(1700000000.100:{n}): argc=3 a0="ls" a1_len=4 a1[0]="-l" '
         b'a1[1]="ah" a2=2F746D70\n'
         b'type=CWD msg=audit(1700000000.100:{n}): cwd="/root"\n'
         b'type=PATH msg=audit(1700000000.100:{n}): item=0 name="/usr/bin/ls" inode=1 '
         b'dev=fd:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL\n'
         b'type=PROCTITLE msg=audit(1700000000.100:{n}): proctitle=6C73002D6C\n'
         b'type=EOE msg=audit(1700000000.100:{n}): \n')


def _generated_seeds() -> list[bytes]:
    execs = b"".join(_EXEC.replace(b"{n}", str(n).encode()) for n in range(1, 40))
    return [execs, execs.replace(b"type=EOE", b"type=PATH"),
            b"".join(_EXEC.replace(b"{n}", str(n).encode()).replace(
                b"type=", b"node=n%d type=" % (n % 17)) for n in range(1, 60))]


def _json_seeds(audit_seeds: list[bytes]) -> list[bytes]:
    """Events as our pipeline writes them, from the audit seeds (real shapes)."""
    out: list[bytes] = []
    for seed in audit_seeds[:20]:
        rendered = io.StringIO()
        pipeline = _pipeline(StreamSink(rendered))
        for line in LineSplitter().feed(seed) + LineSplitter().finish():
            pipeline.feed(line)
        pipeline.close()
        lines = rendered.getvalue().splitlines(keepends=True)
        if lines:
            out.append("".join(lines[:50]).encode())
    return out or [b'{"schema": 1}\n']


# --- mutations ----------------------------------------------------------------------------------

def _split(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _mutate(data: bytes, seeds: list[bytes], rng: random.Random) -> bytes:
    def flip(d: bytes) -> bytes:
        if not d:
            return d
        b = bytearray(d)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)

    def insert(d: bytes) -> bytes:
        at = rng.randint(0, len(d))
        blob = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        return d[:at] + rng.choice([blob, b"\x00", b"\r", b"\x1d", b"=", b" ", b'"', b"{ "]) + d[at:]

    def delete(d: bytes) -> bytes:
        if not d:
            return d
        at = rng.randrange(len(d))
        return d[:at] + d[at + rng.randint(1, 200):]

    def lines_op(d: bytes) -> bytes:
        lines = _split(d)
        if len(lines) < 2:
            return d
        op = rng.randrange(4)
        if op == 0:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
        elif op == 1:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 2:
            start = rng.randrange(len(lines))
            block = lines[start:start + 50]
            rng.shuffle(block)
            lines[start:start + 50] = block
        else:
            lines = [line for line in lines if b"type=EOE" not in line]
        return b"\n".join(lines)

    def splice(d: bytes) -> bytes:
        other = _split(rng.choice(seeds))
        lines = _split(d)
        lines.insert(rng.randint(0, len(lines)), rng.choice(other))
        return b"\n".join(lines)

    def number(d: bytes) -> bytes:
        digits = [i for i, c in enumerate(d) if 48 <= c <= 57]
        if not digits:
            return d
        at = rng.choice(digits)
        return d[:at] + b"9" * rng.choice([21, 4301, 5000, 20000]) + d[at + 1:]

    def claims(d: bytes) -> bytes:
        return rng.choice([
            lambda: d.replace(b"argc=", b"argc=2000000000 x=", 1),
            lambda: d.replace(b"a1=", b"a999999999=", 1),
            lambda: d.replace(b"a2=", b"a2=" + b"41" * rng.choice([50_000, 400_000]) + b" y=", 1),
            lambda: d + b"type=EXECVE msg=audit(1700000000.100:1): a0=" + b"x" * 200_000 + b"\n",
            lambda: d.replace(b"node=", b"node=n%d" % rng.randrange(1000), 1),
        ])()

    ops: list[Callable[[bytes], bytes]] = [flip, insert, delete, lines_op, splice, number,
                                           claims]
    for _ in range(rng.randint(1, 6)):
        data = rng.choice(ops)(data)[:MAX_INPUT]
    return data


# --- runs ---------------------------------------------------------------------------------------

def _pipeline(sink: StreamSink) -> Pipeline:
    """The pipeline as a replay runs it: no file of this host is opened."""
    return audit_pipeline("ecs", TextOutput(sink, RENDERERS["ecs"]),
                          enricher=Enricher(live=False, host_files=False),
                          error_log=StreamSink(_Discard()), messages=_Discard())


def _parsed(line: bytes, fast: bool) -> object:
    try:
        record = parse(line, fast=fast)
    except ParseError as exc:
        return ("parse error", exc.kind)
    try:
        # get() before body: a plain record answers it from its text, typing one field.
        keys = [key for key, _ in parse(line, fast=False).body]
    except ParseError:
        keys = []  # the general parser refuses the line: the results differ anyway
    got = [(key, type(value).__name__, value) for key in keys for value in (record.get(key),)]
    # values() of a fresh record: a plain one answers many keys from its fields by name.
    many = [(key, type(value).__name__, value) for key, value in
            zip(keys, parse(line, fast=fast).values(tuple(keys)))]
    return (record.node, record.rtype, record.sec, record.msec, record.serial, got, many,
            [(key, type(value).__name__, value) for key, value in record.body])


def parsers_disagree(line: bytes) -> str | None:
    """Why the split path and the general parser read ``line`` differently, or the split
    path in C and its pure-Python reference (where the C one is built); None if they agree."""
    if split_record_c is not None:
        compiled = split_record_c(line, SPLIT_TYPES)
        python = split_record_python(line, SPLIT_TYPES)
        if compiled != python:
            return f"split paths disagree: C {compiled!r} != Python {python!r}"
    fast, general = _parsed(line, True), _parsed(line, False)
    return None if fast == general else f"parsers disagree: {fast!r} != {general!r}"


def _run_audit(data: bytes, stats: FuzzStats) -> str | None:
    pipeline = _pipeline(StreamSink(_Discard()))
    splitter = LineSplitter()
    nonblank = 0
    disagreement = None
    for line in splitter.feed(data) + splitter.finish():
        nonblank += bool(line.strip())
        pipeline.feed(line)
        if disagreement is None:
            disagreement = parsers_disagree(line)
    pipeline.close()
    if disagreement is not None:
        return disagreement
    s = pipeline.decoder.stats  # type: ignore[attr-defined]
    stats.lines += s.lines
    stats.parse_errors += s.parse_errors
    if pipeline.stats.internal_errors:
        return "internal error"
    if s.records + s.parse_errors != nonblank:
        return f"records {s.records} + parse errors {s.parse_errors} != lines {nonblank}"
    return None


def _run_json(data: bytes, stats: FuzzStats) -> str | None:
    from common.schema import SchemaError
    text = data.decode("utf-8", "replace")
    for doc in read_documents(text.splitlines(keepends=True)):
        stats.lines += 1
        if doc.error is not None:
            stats.parse_errors += 1
            continue
        try:
            event = load_event(doc.value)
            ttphash.compute(event)
        except (SchemaError, ttphash.TTPHashError):
            stats.parse_errors += 1
    return None


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fuzz(seeds: list[bytes], seconds: float, seed: int, keep: Path | None,
         max_seconds: float, max_rss_mib: float, progress: Callable[[FuzzStats], None]
         ) -> FuzzStats:
    rng = random.Random(seed)
    json_seeds = _json_seeds(seeds)
    stats = FuzzStats()
    deadline = time.monotonic() + seconds

    def alarm(_signum: int, _frame: Any) -> None:
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        next_report = time.monotonic() + 10
        while time.monotonic() < deadline:
            audit = rng.random() < 0.7
            data = _mutate(rng.choice(seeds if audit else json_seeds),
                           seeds if audit else json_seeds, rng)
            stats.inputs += 1
            stats.audit_inputs += audit
            stats.json_inputs += not audit
            started = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, max_seconds)
            try:
                reason = (_run_audit if audit else _run_json)(data, stats)
            except _Timeout:
                reason = f"took more than {max_seconds} s"
            except RecursionError:
                reason = "RecursionError"
            except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
                reason = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            took = time.monotonic() - started
            stats.slowest_seconds = max(stats.slowest_seconds, took)
            stats.peak_rss_mib = _peak_rss_mib()
            if reason is None and stats.peak_rss_mib > max_rss_mib:
                reason = f"peak memory {stats.peak_rss_mib:.0f} MiB"
            if reason is not None:
                stats.failures += 1
                kind = reason.split(":")[0]
                stats.reasons[kind] = stats.reasons.get(kind, 0) + 1
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    name = f"{'audit' if audit else 'json'}-{stats.inputs:07d}"
                    (keep / name).write_bytes(data)
                    (keep / f"{name}.why").write_text(reason + "\n")
            if time.monotonic() >= next_report:
                progress(stats)
                next_report = time.monotonic() + 10
    finally:
        signal.signal(signal.SIGALRM, previous)
    return stats


def default_seeds() -> list[bytes]:
    """The corpus next to the project (``../shared/corpus``) when present, and generators."""
    seeds = _generated_seeds()
    here = Path(__file__).resolve().parents[3] / "shared" / "corpus"
    if here.is_dir():
        for path in sorted(here.rglob("*")):
            if path.is_file() and path.suffix in ("", ".txt", ".log") and \
                    path.stat().st_size <= MAX_INPUT:
                data = path.read_bytes()
                if b"msg=audit(" in data:
                    seeds.append(data)
    return seeds


@click.command("fuzz")
@click.option("--seconds", default=60.0, show_default=True, help="How long to fuzz.")
@click.option("--seed", default=0, show_default=True, help="Random seed (runs repeat exactly).")
@click.option("--corpus", "corpus", multiple=True, type=click.Path(exists=True),
              help="Audit logs to mutate (files or directories); default: the shared corpus "
                   "and built-in hostile shapes.")
@click.option("--keep", type=click.Path(file_okay=False), default="ttpsensor-fuzz-failures",
              show_default=True, help="Where a failing input is kept, with its reason.")
@click.option("--max-seconds", default=DEFAULT_MAX_SECONDS, show_default=True,
              help="An input taking longer is a failure (a hang).")
@click.option("--max-rss-mib", default=DEFAULT_MAX_RSS_MIB, show_default=True,
              help="Peak memory of the process above this is a failure.")
@click.option("--json", "as_json", is_flag=True, help="The final counters as JSON.")
def bench_fuzz(seconds: float, seed: int, corpus: tuple[str, ...], keep: str,
               max_seconds: float, max_rss_mib: float, as_json: bool) -> None:
    """Fuzz the audit parser, assembler and event builder, and the JSON/TTPHash reader, with
    mutated inputs; exit 1 if any input crashed, hung, broke the line accounting or blew the
    memory limit (failing inputs are kept in --keep)."""
    seeds = _generated_seeds() if corpus else default_seeds()
    for given in corpus:
        path = Path(given)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        seeds += [f.read_bytes()[:MAX_INPUT] for f in files]

    def progress(stats: FuzzStats) -> None:
        click.echo(f"fuzz: {stats.inputs} inputs, {stats.failures} failures, slowest "
                   f"{stats.slowest_seconds:.2f} s, peak {stats.peak_rss_mib:.0f} MiB", err=True)

    stats = fuzz(seeds, seconds, seed, Path(keep), max_seconds, max_rss_mib, progress)
    report = {"seeds": len(seeds), "seconds": seconds, **stats.__dict__}
    if as_json:
        click.echo(json.dumps(report))
    else:
        for key, value in report.items():
            click.echo(f"{key:18} {value}")
    if stats.failures:
        raise SystemExit(1)

