"""Linux commands of ``ttpsensor`` (registered as entry points, loaded lazily by common.cli)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import click

from common.config import config_option
from common.filehash import FileHasher
from common.render import RENDERERS
from common.sinks import (DEFAULT_GENERATIONS, DEFAULT_MAX_BYTES, emit, open_sinks,
                          output_files, spools)
from sensor_linux.batching import BATCH_SECONDS
from sensor_linux.privileges import PrivilegeError, drop_to, sensor_dirs
from sensor_linux.status import StatusReporter


SOURCES = ["auto", "audit", "audit-multicast", "ebpf", "hybrid", "cross-check", "procfs"]
DATA_DIR = "ttpsensor-data"
DEFAULT_OUTPUTS = ["-", f"jsonl:{DATA_DIR}/events.jsonl", f"spool:{DATA_DIR}/spool"]
DEFAULT_STORE = f"{DATA_DIR}/store.sqlite"
DEFAULT_STATUS_FILE = f"{DATA_DIR}/status.json"


@click.command("run")
@config_option("packaging/linux/config.toml")
@click.option("--source", type=click.Choice(SOURCES), default="auto", show_default=True,
              help="auto: audit unicast when no audit daemon is registered, else multicast. "
                   "audit: be the audit daemon (enables audit, loads exec rules, restores "
                   "everything on exit). audit-multicast: read-only beside auditd. ebpf: BCC "
                   "tracepoint probes on exec. hybrid: exec from eBPF, the rest of the --rules "
                   "from audit (exec rules left out). cross-check: both exec streams; every "
                   "exec seen by one and not the other is reported. procfs: scan /proc (an "
                   "inventory of running processes, ECS event.kind 'state').")
@click.option("--format", "fmt", type=click.Choice(sorted(RENDERERS) + ["laurel"]),
              default="ecs", show_default=True, help="Output format of each JSON line.")
@click.option("--output", "outputs", multiple=True, default=DEFAULT_OUTPUTS, show_default=True,
              help="'-'/'stdout', or 'jsonl:PATH' / PATH for a file rotated by size (0600). "
                   "Repeatable; giving one replaces the defaults.")
@click.option("--max-bytes", default=DEFAULT_MAX_BYTES, show_default=True,
              help="Rotate output files before they would grow past this size.")
@click.option("--generations", default=DEFAULT_GENERATIONS, show_default=True,
              help="Rotated files to keep (FILE.1 is the newest).")
@click.option("--store", default=DEFAULT_STORE, show_default=True,
              help="Embedded local collector: events from a spool output are delivered into "
                   "this SQLite store every second, so 'ttpsensor hunt' works right away. "
                   "'' disables it (a fleet forwards the spool to a collector instead).")
@click.option("--status-file", default=DEFAULT_STATUS_FILE, show_default=True,
              help="Where the sensor keeps its counters (read by 'ttpsensor status').")
@click.option("--status-interval", default=60.0, show_default=True,
              help="Seconds between status events in the output (and status-file updates).")
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False),
              help="Extra audit rules in auditctl syntax (unicast), loaded after the exec "
                   "rules.")
@click.option("--state-file", default="/run/ttpsensor/audit-state.json", show_default=True,
              help="Where unicast mode writes the audit state it found, to restore it on exit "
                   "or, after a crash, on the next start.")
@click.option("--parse-error-log", default=None,
              help="Where unparseable audit lines are kept verbatim (see 'audisp --help').")
@click.option("--user", default="ttpsensor", show_default=True,
              help="After opening its audit sockets the sensor becomes this user, keeping only "
                   "CAP_AUDIT_CONTROL, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH. 'root' keeps "
                   "root.")
@click.option("--ebpf-argv-bytes", default=32768, show_default=True,
              help="ebpf: bytes of the argument vector copied per exec (a power of two from "
                   "4096 to 131072); longer ones are cut there and flagged args_truncated, "
                   "with the real argument count.")
@click.option("--ebpf-ringbuf-pages", default=1024, show_default=True,
              help="ebpf: ring buffer size in 4 KiB pages (a power of two).")
@click.option("--keep-exec-attempts", is_flag=True,
              help="Write every failed exec as an event of its own. By default the ENOENT/"
                   "ENOTDIR misses of a PATH walk are folded into the exec that follows them "
                   "(process.exec_attempts: count, errors, paths); denied and never-followed "
                   "attempts are always events.")
@click.option("--interval", default=1.0, show_default=True,
              help="procfs: seconds between scans.")
@click.option("--once", is_flag=True, help="procfs: scan once, report, and exit.")
def run(source: str, fmt: str, outputs: tuple[str, ...], max_bytes: int, generations: int,
        store: str, status_file: str, status_interval: float, rules_file: str | None,
        state_file: str,
        parse_error_log: str | None, user: str, ebpf_argv_bytes: int,
        ebpf_ringbuf_pages: int, keep_exec_attempts: bool, interval: float,
        once: bool) -> None:
    """Run the Linux sensor: enriched process events with their TTPHash, as JSON lines.

    Every exec becomes an event with the executable's digests (of the image as it ran), its
    owning package and whether the file still matches the package, the user names, the
    parent's context from the process table, and the TTPHash; other audit events pass through
    as generic events with their original records. Stop with Ctrl-C or SIGTERM: unicast mode
    then restores the audit state it found. A summary goes to stderr.
    """
    if fmt != "ecs" and any(o.startswith("spool:") for o in outputs):
        raise click.UsageError("a spool output stores ecs events: use --format ecs, or give "
                               "--output explicitly without spool:")
    try:
        sink = open_sinks(outputs, max_bytes, generations)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot open output: {exc}") from exc
    collector = _local_collector(sink, store)
    try:
        _run_source(source, fmt, sink, collector, rules_file, state_file, parse_error_log,
                    max_bytes, generations, status_file, status_interval, user, outputs,
                    ebpf_argv_bytes, ebpf_ringbuf_pages, keep_exec_attempts, interval, once)
    finally:
        if collector is not None:
            collector.deliver()
            collector.store.close()


def _local_collector(sink: Any, store: str) -> Any:
    """The embedded collector for the first spool output, or None."""
    found = spools(sink)
    if not store or not found:
        return None
    import socket

    from collector.deliver import LocalDelivery
    from collector.store import Store
    return LocalDelivery(found[0], Store(store), socket.gethostname())


def _run_source(source: str, fmt: str, sink: Any, collector: Any, rules_file: str | None,
                state_file: str, parse_error_log: str | None, max_bytes: int,
                generations: int, status_file: str, status_interval: float, user: str,
                outputs: tuple[str, ...], ebpf_argv_bytes: int,
                ebpf_ringbuf_pages: int, keep_exec_attempts: bool, interval: float,
                once: bool) -> None:
    # Periodic work, and the files the sensor still writes after dropping root.
    ticks = [collector.deliver] if collector is not None else []
    written = output_files(outputs) + ([collector.store.path] if collector else [])
    if source == "procfs":
        if fmt == "laurel":
            raise click.UsageError("--format laurel needs an audit source")
        _run_procfs(sink, RENDERERS[fmt], interval, once, collector)
    elif source in ("hybrid", "cross-check"):
        if fmt != "ecs":
            raise click.UsageError(f"--source {source} writes ecs events only")
        _run_combined(source, sink, rules_file, state_file, parse_error_log, max_bytes,
                      generations, status_file, status_interval, user, written,
                      ebpf_argv_bytes, ebpf_ringbuf_pages, keep_exec_attempts, ticks)
    elif source == "ebpf":
        if fmt == "laurel":
            raise click.UsageError("--format laurel needs an audit source")
        _run_ebpf(RENDERERS[fmt], sink, status_file, status_interval, user, written,
                  ebpf_argv_bytes, ebpf_ringbuf_pages, keep_exec_attempts, ticks)
    else:
        _run_audit(source, fmt, sink, rules_file, state_file, parse_error_log, max_bytes,
                   generations, status_file, status_interval, user, written, ticks,
                   keep_exec_attempts)


def _run_procfs(sink: Any, render: Any, interval: float, once: bool, collector: Any) -> None:
    from sensor_linux.enrich import Enricher
    from sensor_linux.procscan import ProcScan

    enricher = Enricher()
    scanner = ProcScan(enricher)
    stop = _install_stop_handlers()
    events = 0
    started = time.monotonic()
    try:
        while True:
            for event in scanner.scan():
                emit(sink, event, render(event))
                events += 1
            sink.flush()
            if collector is not None:
                collector.deliver()
            if once or stop.wait(interval):
                break
    except BrokenPipeError:
        # The reader went away (`ttpsensor run | head`): stop quietly, like other filters.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        sink.close()
        stats = {"source": "procfs", "events": events,
                 "seconds": round(time.monotonic() - started, 3),
                 "hash_cache_hits": enricher.hasher.hits,
                 "hash_cache_misses": enricher.hasher.misses,
                 "hash_errors": enricher.hasher.errors,
                 "process_table": len(enricher.table),
                 "pid_reuse_rejected": enricher.table.reuse_rejected}
        click.echo(f"ttpsensor: stopped: {json.dumps(stats)}", err=True)


def _run_ebpf(render: Any, sink: Any, status_file: str, status_interval: float, user: str,
              written: list[str], argv_bytes: int,
              ringbuf_pages: int, keep_attempts: bool, ticks: list[Any]) -> None:
    from sensor_linux.ebpf.events import EbpfEventBuilder
    from sensor_linux.ebpf.probes import ExecProbes, PrerequisiteError
    from sensor_linux.ebpf.source import EbpfPipeline, EbpfSession, pump
    from sensor_linux.enrich import Enricher

    stop = _install_stop_handlers()
    enricher = Enricher()
    pipeline = EbpfPipeline(EbpfEventBuilder(enricher), render, sink,
                            keep_exec_attempts=keep_attempts)
    probes = ExecProbes(on_exec=pipeline.feed, argv_size=argv_bytes,
                        ringbuf_pages=ringbuf_pages)
    pipeline.probes = probes
    try:
        probes.load()
    except (PrerequisiteError, ValueError) as exc:
        sink.close()
        raise click.ClickException(str(exc)) from exc
    click.echo(f"ttpsensor: source: eBPF exec probes, compiled and loaded in "
               f"{probes.load_seconds:.2f} s", err=True)
    session = EbpfSession(probes)
    try:
        reporter = _start_serving(session, pipeline, enricher, user, status_file,
                                  status_interval, written + [status_file])
        pump(probes, pipeline, stop, on_tick=lambda: _tick([reporter.tick, *ticks]))
    except PrivilegeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        try:
            probes.poll(0)  # what is already in the ring buffer
            pipeline.finish()
            summary = {"source": "ebpf", **pipeline.summary()}
        finally:
            probes.close()
            sink.close()
        if "reporter" in locals():
            reporter.final(summary)
        click.echo(f"ttpsensor: stopped: {json.dumps(summary)}", err=True)


def _run_combined(mode: str, sink: Any, rules_file: str | None, state_file: str,
                  parse_error_log: str | None, max_bytes: int, generations: int,
                  status_file: str, status_interval: float, user: str,
                  written: list[str], argv_bytes: int,
                  ringbuf_pages: int, keep_attempts: bool, ticks: list[Any]) -> None:
    from sensor_linux.audit.netlink import AuditNetlinkError
    from sensor_linux.audit.pipeline import AuditPipeline
    from sensor_linux.audit.session import AuditBusy, AuditLocked, UnicastSession
    from sensor_linux.combined import Combined, CombinedSession
    from sensor_linux.crosscheck import CrossCheck
    from sensor_linux.ebpf.events import EbpfEventBuilder
    from sensor_linux.ebpf.probes import ExecProbes, PrerequisiteError
    from sensor_linux.ebpf.source import EbpfPipeline
    from sensor_linux.enrich import Enricher

    render = RENDERERS["ecs"]
    stop = _install_stop_handlers()
    enricher = Enricher()
    ebpf_pipeline = EbpfPipeline(EbpfEventBuilder(enricher), render, sink,
                                 keep_exec_attempts=keep_attempts)
    probes = ExecProbes(on_exec=ebpf_pipeline.feed, argv_size=argv_bytes,
                        ringbuf_pages=ringbuf_pages)
    ebpf_pipeline.probes = probes
    # hybrid: only the user's rules, exec rules removed; cross-check: audit's exec rules too.
    audit = UnicastSession(rules=[] if mode == "hybrid" else None, rules_file=rules_file,
                           state_file=state_file, without_exec=mode == "hybrid")
    try:
        probes.load()
        audit.open()
    except (PrerequisiteError, ValueError, AuditBusy, AuditLocked, AuditNetlinkError) as exc:
        probes.close()
        audit.close()
        sink.close()
        raise click.ClickException(str(exc)) from exc
    click.echo(f"ttpsensor: source: {mode}: eBPF exec probes (loaded in "
               f"{probes.load_seconds:.2f} s) and audit netlink unicast", err=True)
    error_log = _error_log(parse_error_log, max_bytes, generations)
    audit_pipeline = AuditPipeline("ecs", sink, enricher=enricher, error_log=error_log)
    # Both sources listen from now on: a miss of an earlier exec is no miss.
    crosscheck = CrossCheck(enricher.host, start=time.time()) if mode == "cross-check" \
        else None
    combined = Combined(mode, audit_pipeline, ebpf_pipeline, audit, render, sink, crosscheck)
    session = CombinedSession(mode, audit, probes)
    lost = 0
    try:
        reporter = _start_serving(session, combined, enricher, user, status_file,
                                  status_interval, written + [
                                      status_file, state_file, error_log.path])
        combined.pump(stop, on_tick=lambda: _tick([reporter.tick, *ticks]))
    except PrivilegeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        try:
            lost = session.lost()
        finally:
            audit.close()
        try:
            combined.finish()
            summary = {"source": mode, "lost": lost, **combined.summary()}
        finally:
            probes.close()
            sink.close()
            error_log.close()
        if "reporter" in locals():
            reporter.final(summary)
        click.echo(f"ttpsensor: stopped: {json.dumps(summary)}", err=True)


def _run_audit(source: str, fmt: str, sink: Any, rules_file: str | None, state_file: str,
               parse_error_log: str | None, max_bytes: int, generations: int,
               status_file: str, status_interval: float, user: str,
               written: list[str], ticks: list[Any], keep_attempts: bool) -> None:
    from sensor_linux.audit.netlink import AuditNetlinkError
    from sensor_linux.audit.pipeline import AuditPipeline
    from sensor_linux.audit.session import (AuditBusy, AuditLocked, UnicastSession,
                                            choose_session)
    from sensor_linux.audit.source import pump
    from sensor_linux.enrich import Enricher

    stop = _install_stop_handlers()
    try:
        session, why = choose_session(source)
        if isinstance(session, UnicastSession):
            session.rules_file = rules_file
            session.state_file = state_file
        click.echo(f"ttpsensor: source: {why}", err=True)
        session.open()
    except (AuditBusy, AuditLocked) as exc:
        sink.close()
        raise click.ClickException(str(exc)) from exc
    except AuditNetlinkError as exc:
        sink.close()
        hint = (" (run as root: audit needs CAP_AUDIT_CONTROL, and CAP_AUDIT_READ for "
                "multicast)" if exc.errno in (1, 13) else "")
        raise click.ClickException(f"{exc}{hint}") from exc
    if getattr(session, "repaired", False):
        click.echo("ttpsensor: restored the audit state left by a sensor that did not exit "
                   "cleanly", err=True)
    for warning in getattr(session, "warnings", []):
        click.echo(f"ttpsensor: warning: {warning}", err=True)
    enricher = Enricher() if fmt != "laurel" else None
    error_log = _error_log(parse_error_log, max_bytes, generations)
    pipeline = AuditPipeline(fmt, sink, enricher=enricher, error_log=error_log,
                             keep_exec_attempts=keep_attempts)
    lost = 0
    try:
        reporter = _start_serving(session, pipeline, enricher, user, status_file,
                                  status_interval, written + [
                                      status_file, state_file, error_log.path],
                                  emit=fmt == "ecs")
        pump(session, pipeline, stop, on_tick=lambda: _tick([reporter.tick, *ticks]))
    except PrivilegeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        # The audit state is restored first and whatever else fails: it is the whole machine's.
        try:
            lost = session.lost()
        finally:
            session.close()
        try:
            pipeline.close()
        finally:
            sink.close()
            error_log.close()
        summary = {"source": session.mode, "kernel_lost": lost, **pipeline.summary()}
        if "reporter" in locals():
            reporter.final(summary)
        click.echo(f"ttpsensor: stopped: {json.dumps(summary)}", err=True)


def _start_serving(session: Any, pipeline: Any, enricher: Any, user: str, status_file: str,
                   status_interval: float, files: list[str], emit: bool = True) -> Any:
    """Once the source is open: learn the running processes, drop root, start reporting."""
    if enricher is not None:
        _seed_process_table(enricher)
    click.echo(f"ttpsensor: {drop_to(user, sensor_dirs(files))}", err=True)
    return StatusReporter(session, pipeline, enricher, status_file, status_interval, emit=emit)


def _tick(functions: list[Any]) -> None:
    """Periodic work (status, local delivery); one failing must not stop the sensor."""
    for function in functions:
        try:
            function()
        except Exception as exc:  # noqa: BLE001 - reported, and tried again next tick
            click.echo(f"ttpsensor: periodic task failed: {type(exc).__name__}: {exc}",
                       err=True)


class _StopFlag:
    """Set by SIGINT/SIGTERM; ``wait`` sleeps until the timeout or the signal."""

    def __init__(self) -> None:
        import threading
        self._event = threading.Event()

    def set(self, *_: Any) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def is_set(self) -> bool:
        return self._event.is_set()


def _install_stop_handlers() -> _StopFlag:
    flag = _StopFlag()
    signal.signal(signal.SIGTERM, flag.set)
    signal.signal(signal.SIGINT, flag.set)
    return flag


@click.command("whatis")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(dir_okay=False, allow_dash=False))
@click.option("--root", default="/", show_default=True,
              help="Root whose dpkg database to consult; PATHS are then files under it.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def whatis(paths: tuple[str, ...], root: str, as_json: bool) -> None:
    """Digests, owning package and package verification of files.

    'verified' means the file's digest equals the one its package manager recorded at install
    (dpkg: MD5, rpm: usually SHA-256); 'MODIFIED' means it differs; 'unpackaged' means no
    package owns the path.
    Exit code 1 when a file could not be read.
    """
    from sensor_linux.packages import PackageIndex

    index = PackageIndex(root)
    hasher = FileHasher()
    failed = False
    root_abs = os.path.abspath(root)
    for path in paths:
        report: dict[str, Any] = {"path": path}
        try:
            digests = hasher.digests(path)
        except OSError as exc:
            click.echo(f"{path}: cannot read: {exc.strerror or exc}", err=True)
            failed = True
            continue
        report.update(digests.as_field())
        inside = os.path.abspath(path)
        if root_abs != "/":
            inside = "/" + os.path.relpath(inside, root_abs)
        found = index.provenance(inside, digests) if index.available else None
        if not index.available:
            report["package"] = None
            status = "no package database"
        elif found is None:
            report["package"] = ""
            status = "unpackaged"
        else:
            report["package"] = found.package
            report["manager"] = found.manager
            report["version"] = found.version
            report["verified"] = found.verified
            status = {True: "verified", False: "MODIFIED",
                      None: "no recorded digest"}[found.verified]
        report["status"] = status
        if as_json:
            click.echo(json.dumps(report))
        else:
            owner = (f"{report['package']} {report.get('version') or ''}".strip()
                     if report.get("package") else "-")
            click.echo(f"{path}\n  sha256 {report['sha256']}\n  sha1   {report['sha1']}\n"
                       f"  md5    {report['md5']}\n  package {owner}: {status}")
    if failed:
        sys.exit(1)


DEFAULT_ERROR_LOG = "/var/log/ttpsensor/parse-errors.log"


@click.command("audisp")
@config_option("packaging/audit/audisp.toml")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["ecs", "laurel", "qlog"]), default="ecs",
              show_default=True,
              help="ecs: enriched events with TTPHash. laurel: LAUREL's JSON lines (its goldens' "
                   "settings). qlog: process events with QLOG's field names.")
@click.option("--output", "outputs", multiple=True, default=["-"], show_default=True,
              help="'-'/'stdout', or 'jsonl:PATH' / PATH for a rotated file. Repeatable.")
@click.option("--max-bytes", default=DEFAULT_MAX_BYTES, show_default=True)
@click.option("--generations", default=DEFAULT_GENERATIONS, show_default=True)
@click.option("--parse-error-log", default=None,
              help=f"Where lines that cannot be parsed are kept verbatim (created on the first "
                   f"one). Default: {DEFAULT_ERROR_LOG} as root, else "
                   f"./ttpsensor-parse-errors.log.")
@click.option("--keep-exec-attempts", is_flag=True,
              help="Write every failed exec as an event of its own (by default PATH-walk "
                   "misses are folded into the exec that follows, as 'run' does).")
@click.option("--from-this-host", is_flag=True,
              help="FILE was recorded on this machine: hash the executables it names and look "
                   "up their packages here. Without it a replay opens no file the log names "
                   "(digests, on_disk and package stay unknown), because a log from another "
                   "machine says nothing about this one's files.")
def audisp(file: str | None, fmt: str, outputs: tuple[str, ...], max_bytes: int,
           generations: int, parse_error_log: str | None, keep_exec_attempts: bool,
           from_this_host: bool) -> None:
    """Read audit records in auditd's plugin (string) format and write events.

    Without FILE, reads stdin as an auditd plugin: configure it under /etc/audit/plugins.d/
    (see packaging/audit/ttpsensor.conf); it coexists with auditd's own log and other plugins.
    With FILE, replays a recorded log (auditd's audit.log has the same format); a replay does
    not look at this host's /proc, because the log's PIDs are not this host's processes, nor
    (without --from-this-host) at the files the log names.

    Unparseable lines are kept verbatim in the parse-error log and reported on stderr; they
    never stop the stream. A summary goes to stderr at the end.
    """
    from sensor_linux.audit.lines import read_lines
    from sensor_linux.audit.pipeline import AuditPipeline
    from sensor_linux.enrich import Enricher

    if fmt != "ecs" and any(o.startswith("spool:") for o in outputs):
        raise click.UsageError("a spool output stores ecs events: use --format ecs")
    try:
        sink = open_sinks(outputs, max_bytes, generations)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot open output: {exc}") from exc
    live = file is None
    enricher = Enricher(live=live, host_files=live or from_this_host) \
        if fmt != "laurel" else None
    if enricher is not None and live:
        _seed_process_table(enricher)
    error_log = _error_log(parse_error_log, max_bytes, generations)
    pipeline = AuditPipeline(fmt, sink, enricher=enricher, error_log=error_log,
                             keep_exec_attempts=keep_exec_attempts)
    stop = _install_stop_handlers()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # auditd may send it on reconfiguration
    try:
        if live:
            _enlarge_pipe(sys.stdin.fileno())
            for line in _read_lines(sys.stdin.fileno(), stop, tick_seconds=1.0):
                if line is None:
                    pipeline.tick()
                    pipeline.sink.flush()
                else:
                    pipeline.feed(line)
        else:
            with open(file, "rb") as f:  # type: ignore[arg-type]
                for line in read_lines(f):
                    pipeline.feed(line)
                    if stop.is_set():
                        break
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        pipeline.close()
        sink.close()
        error_log.close()
        summary = pipeline.summary()
        if error_log.opened:
            summary["parse_error_log"] = error_log.path
        click.echo(f"ttpsensor audisp: {json.dumps(summary)}", err=True)


def _error_log(path: str | None, max_bytes: int, generations: int) -> Any:
    """The parse-error log, created on its first line."""
    from common.sinks import LazySink, RotatingFileSink
    chosen = path or (DEFAULT_ERROR_LOG if os.geteuid() == 0 else "ttpsensor-parse-errors.log")

    def open_log() -> RotatingFileSink:
        os.makedirs(os.path.dirname(os.path.abspath(chosen)), mode=0o750, exist_ok=True)
        return RotatingFileSink(chosen, max_bytes, generations)

    return LazySink(open_log, chosen)


def _seed_process_table(enricher: Any) -> None:
    """Learn the running processes first, so the first execs already have their parents."""
    from sensor_linux.procscan import ProcScan
    for _ in ProcScan(enricher).scan():
        pass


DRAIN_SECONDS = 2.0
PIPE_BYTES = 1 << 20
READ_BYTES = 1 << 20


def _enlarge_pipe(fd: int) -> None:
    """Room for a batch of auditd's events while the plugin waits (see batching.py)."""
    import fcntl
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # not a pipe (a file, a terminal): nothing to enlarge


def _read_lines(fd: int, stop: "_StopFlag", tick_seconds: float):  # type: ignore[no-untyped-def]
    """Lines from ``fd`` as they arrive; ``None`` whenever ``tick_seconds`` pass without input.

    After ``stop`` (auditd sends SIGTERM before closing the pipe), whatever is already in the
    pipe is still read, until EOF or until it stays empty for a moment: records auditd has
    handed over are never dropped on shutdown.
    """
    import select

    from sensor_linux.audit.lines import LineSplitter
    splitter = LineSplitter()
    drain_until = None
    while True:
        if stop.is_set() and drain_until is None:
            drain_until = time.monotonic() + DRAIN_SECONDS
        wait = tick_seconds if drain_until is None else 0.2
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            if drain_until is not None:
                break
            yield None
            continue
        if drain_until is not None and time.monotonic() > drain_until:
            break
        chunk = os.read(fd, READ_BYTES)
        if not chunk:
            break
        yield from splitter.feed(chunk)
        if drain_until is None and len(chunk) < READ_BYTES:
            # The pipe is empty: let auditd's next events gather (see batching.py). A full
            # read means more is waiting, and a plugin that is behind must not pause.
            stop.wait(BATCH_SECONDS)
    yield from splitter.finish()


@click.command("status")
@click.option("--status-file", default=DEFAULT_STATUS_FILE, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The raw counters as JSON.")
def status(status_file: str, as_json: bool) -> None:
    """Show a running (or the last) sensor's counters: events, and everything lost.

    Reads the status file that 'ttpsensor run' updates every --status-interval seconds.
    """
    from sensor_linux.status import flatten, read_status

    try:
        stats = read_status(status_file)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"no status in {status_file}: {exc}; is the sensor "
                                   f"running with --status-file {status_file}?") from exc
    alive = stats.get("running") and os.path.exists(f"/proc/{stats.get('pid')}")
    if as_json:
        click.echo(json.dumps(dict(stats, alive=bool(alive))))
        return
    from rich.console import Console
    from rich.table import Table

    age = time.time() - stats.get("updated", 0)
    state = "running" if alive else ("stopped" if not stats.get("running") else "not running "
                                     "(it did not exit cleanly)")
    table = Table(title=f"ttpsensor {state}, source {stats.get('source')}, "
                        f"updated {age:.0f} s ago")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in flatten(stats):
        if name in ("pid", "running", "source", "started", "updated"):
            continue
        table.add_row(name, str(value))
    Console().print(table)
