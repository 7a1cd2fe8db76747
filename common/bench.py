"""Benchmarks of the hot paths, printed as tables (``ttpsensor bench ...``).

Each figure is the median of several timed repetitions, reported per event, next to a reference
measured in the same run on the same machine (these machines are shared and noisy, so absolute
numbers move; ratios move much less). Nothing here asserts a speed: tests never time things.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import os
import socket
import statistics
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import msgpack
from rich.console import Console
from rich.table import Table

from common import ecs, qlog, ttphash, wire
from common.filehash import FileHasher
from common.schema import new_event

REPEATS = 5
T = TypeVar("T")


@dataclass
class Row:
    name: str
    per_item_us: float
    reference: str = ""
    ratio: float | None = None
    # CPU per item, where a bench measures it (time is wall time: on a shared machine it
    # moves with the neighbours' load, CPU much less).
    cpu_us: float | None = None


@dataclass
class Timing:
    """A median over rounds: wall µs per item, and CPU µs per item (None: not measured)."""
    wall_us: float
    cpu_us: float | None


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 is index 0), read
    after its last ``)`` so that a name with spaces or parentheses cannot shift them; None
    once the process is gone or unreadable. (The lab's and the collector benches' reader.)"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].decode().split()


def comm(pid: int) -> str | None:
    """A process's command name (``/proc/PID/comm``), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds of a process of this host so far (None: gone)."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _median_us(func: Callable[[], object], items: int, repeats: int = REPEATS) -> float:
    return median_us_fresh(lambda: None, lambda _: func(), items, repeats)


def median_us_fresh(prepare: Callable[[], T], run: Callable[[T], object], items: int,
                    repeats: int = REPEATS) -> float:
    """µs per item of ``run``, median of ``repeats`` rounds, each on what an untimed
    ``prepare`` made for it (a fresh store, records no earlier round has cached into)."""
    return timing_fresh(prepare, run, items, repeats).wall_us


def timing_fresh(prepare: Callable[[], T], run: Callable[[T], object], items: int,
                 repeats: int = REPEATS,
                 other_cpu: Callable[[T], float | None] | None = None) -> Timing:
    """As :func:`median_us_fresh`, with the CPU of each round: this process's, and what
    ``other_cpu(prepared)`` says another process spent on it (seconds: a database server's
    backend), read after the round; no CPU figure when it says None."""
    times: list[float] = []
    cpus: list[float] = []
    known = True  # every round's CPU is known
    for _ in range(repeats):
        prepared = prepare()
        # As timeit does: no cyclic collection inside a timed round. A harness holds every
        # item of a round at once, and a collection's cost grows with that heap, which a
        # running sensor does not hold (it passes each event on): the audit path's decode
        # and build stages measured about twice their cost with it, while a replay through
        # the whole pipeline costs the same with the collector on or off.
        gc.collect()
        gc.disable()
        try:
            cpu, start = time.process_time(), time.perf_counter()
            run(prepared)
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
        finally:
            gc.enable()
        if other_cpu is not None:
            other = other_cpu(prepared)
            if other is None:
                known = False
            else:
                cpus[-1] += other
    scale = 1e6 / max(items, 1)
    return Timing(statistics.median(times) * scale,
                  statistics.median(cpus) * scale if known else None)


def sample_linux_event() -> dict:
    """A typical exec event: shell parent, a handful of arguments, full enrichment."""
    event = new_event("process_create", "auditd",
                      host={"name": "bench", "id": "0" * 32, "os": {"type": "linux"}},
                      original_id="1764410400.123:4242")
    proc = {
        "pid": 4242, "name": "curl", "executable": "/usr/bin/curl",
        "args": ["curl", "-fsSL", "-o", "/tmp/install.sh", "https://example.org/install.sh"],
        "command_line": "curl -fsSL -o /tmp/install.sh https://example.org/install.sh",
        "working_directory": "/home/alice", "start": "2026-11-29T10:00:00.000000Z",
        "user": {"id": "1000", "name": "alice"}, "real_user": {"id": "1000", "name": "alice"},
        "saved_user": {"id": "1000", "name": "alice"}, "group": {"id": "1000", "name": "alice"},
        "hash": {"md5": "A" * 32, "sha1": "B" * 40, "sha256": "C" * 64}, "on_disk": True,
        "package": {"name": "curl", "version": "7.88.1-10+deb12u8", "verified": True},
        "audit": {"login_user": {"id": "1000", "name": "alice"}, "session": 3},
        "tty": {"name": "pts/0"}, "interactive": True,
    }
    parent = copy.deepcopy(proc)
    parent.update(pid=4100, name="bash", executable="/usr/bin/bash", args=["-bash"],
                  command_line="-bash", running=True)
    proc["parent"] = parent
    event["process"] = proc
    ttphash.attach(event)
    return event


def varied_events(count: int, seed: int = 7) -> list[dict]:
    """Events that differ where real ones do: ids, pids, times, digests, executables, argv,
    users. (Identical events would compress a hundredfold and flatter any spool figure.)"""
    import random
    rng = random.Random(seed)
    words = [hashlib.sha1(str(i).encode()).hexdigest()[:rng.randint(3, 12)] for i in range(500)]
    programs = [f"/usr/bin/{w}" for w in words[:150]]
    users = ["root", "alice", "bob", "www-data", "postgres"]
    base = sample_linux_event()
    out = []
    for i in range(count):
        e = copy.deepcopy(base)
        e["event"]["id"] = f"{rng.getrandbits(128):032x}"
        e["@timestamp"] = f"2026-11-29T10:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i:06d}Z"
        exe = rng.choice(programs)
        p = e["process"]
        p.update(pid=rng.randint(300, 4_000_000), executable=exe, name=exe.rsplit("/", 1)[1],
                 args=[exe] + rng.sample(words, rng.randint(0, 6)))
        p["hash"] = {k: hashlib.new(k, exe.encode()).hexdigest().upper()
                     for k in ("md5", "sha1", "sha256")}
        name = rng.choice(users)
        p["user"] = p["real_user"] = {"id": str(users.index(name) * 1000), "name": name}
        ttphash.attach(e)
        out.append(e)
    return out


def encode(count: int) -> list[Row]:
    """TTPHash, msgpack and JSON per event; the reference is plain ``json.dumps``."""
    event = sample_linux_event()
    windows = qlog.read_event(_seed_like_qlog())
    batch = [event] * count
    packed = [wire.pack_event(event) for _ in range(count)]
    line = ecs.render(event)

    def loop(func: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(count):
                func()
        return run

    reference = _median_us(loop(lambda: json.dumps(event)), count)
    rows = [Row("json.dumps (reference)", reference)]
    for name, func in [
        ("ttphash.compute (linux)", lambda: ttphash.compute(event)),
        ("ttphash.compute (windows)", lambda: ttphash.compute(windows)),
        ("ecs.render", lambda: ecs.render(event)),
        ("ecs.parse(json.loads)", lambda: ecs.parse(json.loads(line))),
        ("qlog render", lambda: qlog.render(event)),
        ("wire.pack_event", lambda: wire.pack_event(event)),
        ("wire.unpack_event", lambda: wire.unpack_event(packed[0])),
    ]:
        us = _median_us(loop(func), count)
        rows.append(Row(name, us, "json.dumps", us / reference))
    per_batch = _median_us(lambda: wire.pack_batch(batch), count)
    rows.append(Row(f"wire.pack_batch ({count} events)", per_batch, "json.dumps",
                    per_batch / reference))
    return rows


def filehash(directory: str, count: int, rounds: int) -> list[Row]:
    """Per-event cost of file identity: cold cache (hash the file) and warm (stat + lookup).

    The reference is one SHA-256 of the same files with hashlib: the floor of any cold path.
    """
    files = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and not os.path.islink(path):
            files.append(path)
        if len(files) == count:
            break
    if not files:
        raise ValueError(f"no regular files in {directory}")
    for path in files:  # warm the page cache so both sides measure CPU, not the disk
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass

    def sha256_only() -> None:
        for path in files:
            with open(path, "rb") as f:
                hashlib.sha256(f.read()).hexdigest()

    def cold() -> None:
        hasher = FileHasher()
        for path in files:
            hasher.digests(path)

    hasher = FileHasher()
    for path in files:
        hasher.digests(path)

    def warm() -> None:
        for _ in range(rounds):
            for path in files:
                hasher.digests(path)

    reference = _median_us(sha256_only, len(files))
    cold_us = _median_us(cold, len(files))
    warm_us = _median_us(warm, len(files) * rounds)
    size = sum(os.path.getsize(p) for p in files) / len(files)
    return [
        Row(f"hashlib sha256 only (reference; {len(files)} files, mean {size / 1024:.0f} KiB)",
            reference),
        Row("cold cache: md5+sha1+sha256", cold_us, "sha256 only", cold_us / reference),
        Row("warm cache: open+fstat+lookup", warm_us, "cold cache", warm_us / cold_us),
    ]


def _seed_like_qlog() -> dict:
    return {"QType": "Process Create", "StartTime": "2021-12-30T09:13:38.0867746+01:00",
            "UsernameSID": "S-1-5-21-1-2-3-1001", "KernelImagefilename": "NOTEPAD.EXE",
            "OriginalFilename": "NOTEPAD.EXE", "Fullpath": "C:\\Windows\\notepad.exe",
            "Commandline": "notepad.exe ", "Imphash": "ca88689695b1e2b1e2a85fc73742e524",
            "sha256": "D" * 64, "ProcessIntegrityLevel": "Medium", "isOndisk": True,
            "AuthenticodeHash": "", "ParentProcess": {
                "UsernameSID": "S-1-5-21-1-2-3-1001", "Imagefilename": "", "Fullpath":
                "\\Device\\HarddiskVolume3\\Windows\\explorer.exe", "Commandline": "explorer",
                "isOndisk": True, "isRunning": True, "AuthenticodeHash": "E" * 64}}


def print_table(rows: list[Row], title: str | None = None, item: str = "event") -> None:
    """``rows`` as a table of µs per ``item``, ``item``s a second and ratio."""
    table = Table(title=title or "per event, median of %d runs" % REPEATS)
    cpu = any(row.cpu_us is not None for row in rows)
    table.add_column("what")
    table.add_column(f"µs/{item}", justify="right")
    if cpu:
        table.add_column(f"CPU µs/{item}", justify="right")
    table.add_column(f"{item}s/s", justify="right")
    table.add_column("ratio", justify="right")
    for row in rows:
        ratio = f"{row.ratio:.2f}× {row.reference}" if row.ratio is not None else ""
        # A figure that is a difference of two timings (admission: with and without) can come
        # out at zero on a noisy machine: below what the run resolves, not infinitely fast.
        rate = f"{1e6 / row.per_item_us:,.0f}" if row.per_item_us > 0 else "–"
        cells = [row.name, f"{row.per_item_us:.2f}"]
        if cpu:
            cells.append(f"{row.cpu_us:.2f}" if row.cpu_us is not None else "–")
        table.add_row(*cells, rate, ratio)
    Console().print(table)


def spool(count: int, directory: str) -> list[Row]:
    """Spool write rate and compression on realistic events; the reference is msgpack alone."""
    from common.spool import LEVEL, Spool
    events = varied_events(count)

    def pack_only() -> None:
        # The peer: msgpack-python, the library the spool format was made with.
        for e in events:
            msgpack.packb(e, use_bin_type=True)

    spools: list[Spool] = []

    def write() -> None:
        spool = Spool(f"{directory}-{len(spools)}", batch_events=500, fsync="frame")
        for e in events:
            spool.append(e)
        spool.close()
        spools.append(spool)

    reference = _median_us(pack_only, count, repeats=3)
    written = _median_us(write, count, repeats=3)
    stats = spools[-1].stats
    ratio = stats.uncompressed_bytes / max(1, stats.bytes_written)
    return [Row("msgpack-python packb only (reference)", reference),
            Row(f"spool append (500/frame, zstd {LEVEL}, fsync/frame; ratio {ratio:.1f}x, "
                f"{stats.bytes_written / stats.events_written:.0f} B/event)", written,
                "packb only", written / reference)]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a benchmark or a
    test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
