"""``ttpsensor bench audit``: replay a recorded audit stream through LAUREL and through us.

1. Record: this sensor's unicast session (audit state restored afterwards) captures the records
   of N real execs on this kernel into a file, exactly as they came from netlink.
2. Replay the same file, each engine in a child process, and take each child's CPU time (user +
   system) and its own peak RSS (under GNU time): LAUREL (Debian's laurel 0.5.1, enrichment off as
   in its goldens; it reads stdin only), ``ttpsensor audisp --format laurel FILE`` (the same
   output) and ``ttpsensor audisp FILE`` (``ecs`` with enrichment and TTPHash), our replay command.
   Then again on the same records as auditd writes them to disk, without EOE records (each engine
   against LAUREL on that input). For reference, ``ecs`` also as auditd's plugin runs: the records
   on stdin, each exec's /proc looked at as it is read (here the log's processes are gone, so each
   look finds nothing), and on the recording's first half: the difference is its cost beyond its
   start (process table seeding, the package index). Our engines run from bytecode compiled once
   into the work directory, as an installed package runs (its postinst compiles it); a source tree
   with PYTHONDONTWRITEBYTECODE would compile every module at each start.
3. Memory: the recording repeated with renumbered event ids up to ``--memory-events``, replayed
   through the default pipeline, peak RSS printed.

CPU is reported per 10,000 exec events with the ratio to LAUREL measured in the same run: each
engine replays ``--rounds`` times, every engine once a round in turn, and the medians compare.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from common.cli import self_command
from sensor_linux.audit.laurel import PEER_CONFIG
from sensor_linux.audit.netlink import default_exec_rules
from sensor_linux.audit.records import split_path
from sensor_linux.audit.session import UnicastSession


_ID = re.compile(rb"msg=audit\((\d+)\.(\d+):(\d+)\)")


PLUGIN = "ttpsensor audisp (ecs) as the plugin, on stdin"
PLUGIN_HALF = "ttpsensor audisp (ecs) as the plugin, the first half on stdin"
# An engine to replay through: name, argv, stdin, output (None: LAUREL's own log), environment
# (None: this one's).
Engine = tuple[str, list[str], Path, Path | None, dict[str, str] | None]


@dataclass
class Result:
    engine: str
    cpu_seconds: float
    peak_rss_mib: float
    events: int
    output_lines: int


def record(path: Path, execs: int) -> int:
    """Capture the records of ``execs`` real execs; returns how many exec events were seen."""
    session = UnicastSession(rules=default_exec_rules(b"ttpsensor-bench"),
                             state_file=str(path.with_suffix(".state.json")))
    session.open()
    assert session.records is not None
    sock = session.records.sock
    sock.settimeout(2.0)
    seen = 0
    try:
        with open(path, "wb") as out:
            child = subprocess.Popen([sys.executable, "-c", _SPAWNER, str(execs)])
            while True:
                try:
                    lines, _ = session.records.read_records()
                except TimeoutError:
                    if child.poll() is not None:
                        break
                    continue
                for line in lines:
                    out.write(line)
                    if line.startswith(b"type=EXECVE "):
                        seen += 1
            child.wait()
    finally:
        session.close()
    return seen


_SPAWNER = """
import os, sys
for i in range(int(sys.argv[1])):
    pid = os.posix_spawn("/bin/true", ["/bin/true", "bench-%d" % i, "--flag", "value %d" % i],
                         {})
    os.waitpid(pid, 0)
"""


def repeat(source: Path, target: Path, events: int) -> None:
    """The recording repeated until ``events`` exec events, with fresh event ids each time."""
    data = source.read_bytes()
    per_copy = data.count(b"type=EXECVE ")
    copies = max(1, -(-events // max(1, per_copy)))
    serials = [int(m.group(3)) for m in _ID.finditer(data)]
    # Each copy continues the serial sequence, so the replay shows no artificial gaps.
    serial_span = max(serials) - min(serials) + 1 if serials else 0
    with open(target, "wb") as out:
        for n in range(copies):
            def renumber(m: re.Match[bytes]) -> bytes:
                return b"msg=audit(%d.%s:%d)" % (int(m.group(1)) + 3600 * n, m.group(2),
                                                 int(m.group(3)) + serial_span * n)
            out.write(_ID.sub(renumber, data))


def strip_eoe(source: Path, target: Path) -> None:
    """The recording as auditd's log on disk has it: without EOE records."""
    with open(source, "rb") as fin, open(target, "wb") as out:
        out.writelines(line for line in fin if not line.startswith(b"type=EOE "))


def compiled_env(work: Path) -> dict[str, str]:
    """The environment for our engines: bytecode written once to a cache in ``work`` and read
    from there, as an installed package's is."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "bytecode")
    return env


TIME = "/usr/bin/time"


@dataclass
class Usage:
    """What a child took: its exit code, CPU seconds (user + system) and its own peak RSS."""
    exit_code: int
    cpu_seconds: float
    peak_rss_mib: float


def require_gnu_time() -> None:
    """A clear error when GNU time, which measures a child's own peak memory, is missing."""
    if not os.access(TIME, os.X_OK):
        raise click.ClickException(f"{TIME} is needed to measure a child's own peak memory: "
                                   f"apt-get install time")


def spawn_measured(argv: list[str], stdin: int, stdout: int, stderr: int,
                   env: dict[str, str]) -> Usage:
    """Run ``argv`` (looked up in PATH) with these descriptors as its 0, 1 and 2, wait, and
    measure it.

    Its peak RSS comes from GNU time, not from our own wait4: a process keeps the peak RSS of
    the memory it had before its exec as its own (the kernel folds the old mm's high-water mark
    into the process's maxrss at exec), and a child spawned by posix_spawn (vfork) had ours,
    a forked one a copy of it, so wait4 would give this process's peak whenever that is the
    larger. time is about 1 MiB when it forks. The CPU time is our wait4's: it holds
    time's and, time having waited for it, the command's.
    """
    require_gnu_time()
    with tempfile.TemporaryDirectory(prefix="ttpsensor-usage-") as private:
        report = os.path.join(private, "usage")
        pid = os.posix_spawn(TIME, [TIME, "--quiet", "--output", report, "--format", "%M",
                                    *argv], env, file_actions=[
            (os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2)])
        _, status, usage = os.wait4(pid, 0)
        try:
            with open(report) as f:
                peak_kib = int(f.read().split()[-1])
        except (OSError, ValueError, IndexError):
            peak_kib = 0  # time could not start the command (its message is on stderr)
    return Usage(os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime,
                 peak_kib / 1024)


def run_child(engine: str, argv: list[str], stdin: Path, stdout: Path | None,
              env: dict[str, str] | None = None, work: Path | None = None) -> Result:
    """Run one engine and take its CPU time and peak RSS (:func:`spawn_measured`)."""
    err_path = (work or stdin.parent) / f"{engine.split()[0]}.{os.getpid()}.stderr"
    with open(stdin, "rb") as fin, open(stdout or os.devnull, "wb") as fout, \
            open(err_path, "wb") as ferr:
        usage = spawn_measured(argv, fin.fileno(), fout.fileno(), ferr.fileno(),
                               env or dict(os.environ))
    err = err_path.read_text(errors="replace")
    err_path.unlink()
    if usage.exit_code != 0:
        raise click.ClickException(f"{engine} failed: {err[-2000:]}")
    return Result(engine, usage.cpu_seconds, usage.peak_rss_mib, 0, 0)


def _median(results: list[Result]) -> Result:
    """The run of median CPU time, with the largest peak RSS of all the runs."""
    ordered = sorted(results, key=lambda r: r.cpu_seconds)
    middle = ordered[len(ordered) // 2]
    return Result(middle.engine, middle.cpu_seconds, max(r.peak_rss_mib for r in results),
                  middle.events, middle.output_lines)


def count_lines(path: Path) -> int:
    """Lines in the file at ``path`` (0 when there is none: an engine that wrote nothing)."""
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _laurel_ids(path: Path) -> dict[str, dict]:
    out = {}
    with open(path, errors="surrogateescape") as f:
        for line in f:
            doc = json.loads(line)
            out[doc["ID"]] = doc
    return out


@click.command("audit")
@click.option("--execs", default=20_000, show_default=True,
              help="Exec events to record from this kernel and replay.")
@click.option("--memory-events", default=100_000, show_default=True,
              help="Exec events in the memory replay (the recording, repeated).")
@click.option("--keep", type=click.Path(file_okay=False), default=None,
              help="Keep the recording and the outputs in this directory.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 50),
              help="Replays of each engine, in turn; the median of each is reported.")
def bench_audit(execs: int, memory_events: int, keep: str | None, rounds: int) -> None:
    """Audit replay: CPU per 10,000 exec events, ours against LAUREL, and peak memory.

    Needs root (it records through audit netlink) and Debian's laurel and time packages
    (LAUREL is the peer; GNU time measures each engine's own peak memory).
    """
    laurel = shutil.which("laurel")
    if laurel is None:
        raise click.ClickException("LAUREL is needed as the peer: apt-get install laurel")
    require_gnu_time()  # before the recording, not after it
    ours = self_command()
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="ttpsensor-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    from rich.console import Console
    from rich.table import Table
    console = Console(stderr=True)
    recording = work / "recording.log"
    with console.status(f"recording {execs} execs through audit netlink"):
        seen = record(recording, execs)
    console.print(f"recorded {seen} exec events ({recording.stat().st_size / 1e6:.1f} MB) "
                  f"in {recording}")
    no_eoe = work / "recording-no-eoe.log"
    strip_eoe(recording, no_eoe)
    env = compiled_env(work)
    errors = ["--parse-error-log", str(work / "errors.log")]
    with console.status("compiling our modules once, as an installed package has them"):
        head = work / "head.log"
        with open(recording, "rb") as fin:
            head.write_bytes(b"".join(line for _, line in zip(range(2000), fin)))
        for fmt in ("laurel", "ecs"):
            run_child("warm-up", [*ours, "audisp", "--format", fmt, *errors, str(head)],
                      Path(os.devnull), None, env, work)
    inputs: list[tuple[str, Path, list[Engine]]] = []
    for label, tag, source in (("", "", recording), (" (no EOE)", "-no-eoe", no_eoe)):
        laurel_dir = work / f"laurel{tag}"
        laurel_dir.mkdir(exist_ok=True)
        config = laurel_dir.with_suffix(".toml")
        config.write_text(PEER_CONFIG.format(directory=laurel_dir))
        engines: list[Engine] = [
            ("LAUREL 0.5.1", [laurel, "--config", str(config)], source, None, None),
            ("ttpsensor audisp --format laurel FILE",
             [*ours, "audisp", "--format", "laurel", *errors, str(source)], Path(os.devnull),
             work / f"ours-laurel{tag}.jsonl", env),
            ("ttpsensor audisp FILE (ecs + TTPHash)", [*ours, "audisp", *errors, str(source)],
             Path(os.devnull), work / f"ours-ecs{tag}.jsonl", env),
        ]
        if not tag:
            engines.append((PLUGIN, [*ours, "audisp", *errors], source,
                            work / "ours-plugin.jsonl", env))
            # The same on the recording's first half: the difference is what the plugin's
            # events cost beyond its start (the process table seeded from /proc, the package
            # index built at the first look-up), which a running plugin pays once.
            half = work / "recording-half.log"
            lines = recording.read_bytes().splitlines(keepends=True)
            half.write_bytes(b"".join(lines[:len(lines) // 2]))
            engines.append((PLUGIN_HALF, [*ours, "audisp", *errors], half,
                            work / "ours-plugin-half.jsonl", env))
            if split_path() == "C":
                # The C split path's gain, measured beside it (and its output compared below).
                engines.append(("ttpsensor audisp --format laurel FILE, pure-Python split path",
                                [*ours, "audisp", "--format", "laurel", *errors, str(source)],
                                Path(os.devnull),
                                work / "ours-laurel-pure.jsonl",
                                {**env, "TTPSENSOR_PURE_PYTHON": "1"}))
        inputs.append((label, laurel_dir, engines))
    # Rounds in turn, every engine once a round: a busy machine's slow minute falls on all of
    # them, and the median of each is compared with LAUREL's.
    runs: dict[str, list[Result]] = {}
    for n in range(rounds):
        for label, laurel_dir, engines in inputs:
            for name, argv, stdin, out, engine_env in engines:
                if out is None:  # LAUREL appends to its log: each run writes a new one
                    for old in laurel_dir.glob("laurel.log*"):
                        old.unlink()
                with console.status(f"round {n + 1} of {rounds}: replaying{label} through "
                                    f"{name}"):
                    result = run_child(name + label, argv, stdin, out, engine_env, work)
                result.events = seen
                result.output_lines = count_lines(out or laurel_dir / "laurel.log")
                runs.setdefault(name + label, []).append(result)
    results: list[tuple[Result, Result, list[float]]] = []  # (median, LAUREL's, all CPU s)
    for label, _, engines in inputs:
        peer = _median(runs["LAUREL 0.5.1" + label])
        for name, *_ in engines:
            if name == PLUGIN_HALF:
                continue  # another input: its use is the marginal cost printed below
            results.append((_median(runs[name + label]), peer,
                            [r.cpu_seconds for r in runs[name + label]]))
    memory_file = work / "memory.log"
    repeat(recording, memory_file, memory_events)
    with console.status(f"replaying {memory_events} exec events for peak memory"):
        memory = run_child("memory", [*ours, "audisp", *errors, str(memory_file)],
                           Path(os.devnull), None, env, work)
    # Compared last: loading the outputs makes this process large, and a child forked from a
    # large parent reports the parent's size as its own peak RSS until it execs.
    # Same input, same output content: LAUREL's and our laurel lines describe the same events.
    theirs, mine = _laurel_ids(work / "laurel" / "laurel.log"), _laurel_ids(
        work / "ours-laurel.jsonl")
    same = theirs.keys() == mine.keys() and all(
        theirs[k].get(t) == mine[k].get(t) for k in theirs for t in ("EXECVE", "PATH", "CWD"))
    # Without EOE records our output must not change at all, nor with the pure-Python split.
    laurel_bytes = (work / "ours-laurel.jsonl").read_bytes()
    same_no_eoe = laurel_bytes == (work / "ours-laurel-no-eoe.jsonl").read_bytes()
    pure = work / "ours-laurel-pure.jsonl"
    same_pure = not pure.exists() or laurel_bytes == pure.read_bytes()
    table = Table(title=f"audit replay of {seen} recorded exec events (same input for all; "
                        f"median of {rounds} rounds; split path: {split_path()})")
    for column in ("engine", "CPU s", "each round", "CPU s / 10k events", "vs LAUREL",
                   "peak RSS MiB", "output lines"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for r, peer, each in results:
        table.add_row(r.engine, f"{r.cpu_seconds:.2f}", " ".join(f"{c:.2f}" for c in each),
                      f"{r.cpu_seconds / seen * 1e4:.2f}",
                      f"{r.cpu_seconds / peer.cpu_seconds:.2f}×", f"{r.peak_rss_mib:.0f}",
                      str(r.output_lines))
    Console(width=132).print(table)
    whole, half = _median(runs[PLUGIN]), _median(runs[PLUGIN_HALF])
    if whole.output_lines > half.output_lines:
        # LAUREL's start (a few milliseconds) stays in its figure.
        marginal = (whole.cpu_seconds - half.cpu_seconds) / (
            whole.output_lines - half.output_lines)
        peer = _median(runs["LAUREL 0.5.1"])
        Console().print(f"the plugin beyond its start (the recording against its first half): "
                        f"{marginal * 1e4:.2f} s per 10k events, "
                        f"{marginal * seen / peer.cpu_seconds:.2f}× LAUREL")
    Console().print(f"LAUREL and ttpsensor laurel output describe the same events: "
                    f"{'yes' if same else 'NO'}")
    Console().print(f"ttpsensor laurel output without EOE records is byte-identical: "
                    f"{'yes' if same_no_eoe else 'NO'}")
    if pure.exists():
        Console().print(f"ttpsensor laurel output with the pure-Python split path is "
                        f"byte-identical: {'yes' if same_pure else 'NO'}")
    Console().print(f"peak RSS over a {memory_events}-event replay (ecs + TTPHash): "
                    f"{memory.peak_rss_mib:.0f} MiB, CPU {memory.cpu_seconds:.1f} s")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    if not same:
        raise click.ClickException("the two laurel outputs differ")
    if not same_no_eoe:
        raise click.ClickException("our laurel output changes without EOE records")
    if not same_pure:
        raise click.ClickException("our laurel output differs with the pure-Python split path")

