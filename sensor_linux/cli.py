"""Linux commands of ``ttpsensor`` (registered as entry points, loaded lazily by common.cli)."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
from typing import Any

import click

from common.config import config_option
from common.render import RENDERERS
from common.sinks import DEFAULT_GENERATIONS, DEFAULT_MAX_BYTES, OutputError, open_outputs
from sensor_linux import runner
from sensor_linux.audit.pipeline import DEFAULT_ERROR_LOG
from sensor_linux.runner import RunConfig, SourceError, install_stop_handlers
from sensor_linux.sources import SOURCES, sources_help


DATA_DIR = "ttpsensor-data"
DEFAULT_OUTPUTS = ["-", f"jsonl:{DATA_DIR}/events.jsonl", f"spool:{DATA_DIR}/spool"]
DEFAULT_STORE = f"{DATA_DIR}/store.sqlite"
DEFAULT_STATUS_FILE = f"{DATA_DIR}/status.json"


@click.command("run")
@config_option("packaging/linux/config.toml")
@click.option("--source", type=click.Choice(list(SOURCES)), default="auto", show_default=True,
              help=sources_help(SOURCES))
@click.option("--format", "fmt", type=click.Choice(sorted(RENDERERS) + ["laurel"]),
              default="ecs", show_default=True, help="Output format of each JSON line.")
@click.option("--output", "outputs", multiple=True, default=DEFAULT_OUTPUTS, show_default=True,
              help="'-'/'stdout', or 'jsonl:PATH' / PATH for a file rotated by size (0600), "
                   "each in --format; 'spool:DIR' keeps every event (ecs) whatever the "
                   "format (not with laurel: its lines are audit records). Repeatable; giving "
                   "one replaces the defaults.")
@click.option("--max-bytes", default=DEFAULT_MAX_BYTES, show_default=True,
              help="Rotate output files before they would grow past this size.")
@click.option("--generations", default=DEFAULT_GENERATIONS, show_default=True,
              help="Rotated files to keep (FILE.1 is the newest).")
@click.option("--store", default=DEFAULT_STORE, show_default=True,
              help="Embedded local collector: events from a spool output are delivered into "
                   "this SQLite store every second, so 'ttpsensor hunt' works right away. "
                   "'' disables it (a fleet forwards the spool to a collector instead).")
@click.option("--sigma", "sigma_rules", multiple=True, type=click.Path(exists=True),
              help="Sigma process_creation rules (a YAML file or a directory; repeatable), "
                   "evaluated as the embedded collector stores each event; matches are "
                   "listed by 'ttpsensor hunt sigma'. Needs --store.")
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
        state_file: str, parse_error_log: str | None, user: str, ebpf_argv_bytes: int,
        ebpf_ringbuf_pages: int, keep_exec_attempts: bool, interval: float,
        once: bool, sigma_rules: tuple[str, ...]) -> None:
    """Run the Linux sensor: enriched process events with their TTPHash, as JSON lines.

    Every exec becomes an event with the executable's digests (of the image as it ran), its
    owning package and whether the file still matches the package, the user names, the
    parent's context from the process table, and the TTPHash; other audit events pass through
    as generic events with their original records. Stop with Ctrl-C or SIGTERM: unicast mode
    then restores the audit state it found. A summary goes to stderr.
    """
    # A sensor that stops answering can be asked where it is: SIGABRT (or a crash) writes
    # every thread's Python stack to stderr before it dies.
    faulthandler.enable(all_threads=True)
    # Imported by the command that needs them, so that a replay or a short command starts
    # without them.
    from sensor_linux import app
    from sensor_linux.privileges import PrivilegeError
    config = RunConfig(source=source, fmt=fmt, rules_file=rules_file, state_file=state_file,
                       parse_error_log=parse_error_log, max_bytes=max_bytes,
                       generations=generations, status_file=status_file,
                       status_interval=status_interval, user=user,
                       ebpf_argv_bytes=ebpf_argv_bytes, ebpf_ringbuf_pages=ebpf_ringbuf_pages,
                       keep_exec_attempts=keep_exec_attempts, interval=interval, once=once)
    source_of = click.get_current_context().get_parameter_source("outputs")
    if fmt == "laurel" and source_of == click.core.ParameterSource.DEFAULT:
        # LAUREL's lines are audit records, not events: the default spool has nothing to keep.
        outputs = tuple(o for o in outputs if not o.startswith("spool:"))
    try:
        summary = app.run_sensor(config, outputs, store, _say, sigma=sigma_rules)
    except app.UsageProblem as exc:
        raise click.UsageError(str(exc)) from exc
    except (OutputError, SourceError, PrivilegeError) as exc:
        raise click.ClickException(str(exc)) from exc
    _say(f"stopped: {json.dumps(summary)}")


def _say(message: str) -> None:
    click.echo(f"ttpsensor: {message}", err=True)


def _open_outputs(fmt: str, outputs: tuple[str, ...], max_bytes: int, generations: int) -> Any:
    try:
        return open_outputs(outputs, fmt, max_bytes, generations).output
    except OutputError as exc:
        raise click.ClickException(str(exc)) from exc


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
    from common.filehash import FileHasher
    from sensor_linux.packages import PackageIndex, describe_file

    index = PackageIndex(root)
    hasher = FileHasher()
    failed = False
    for path in paths:
        try:
            report = describe_file(path, index, hasher, root)
        except OSError as exc:
            click.echo(f"{path}: cannot read: {exc.strerror or exc}", err=True)
            failed = True
            continue
        if as_json:
            click.echo(json.dumps(report))
            continue
        owner = (f"{report['package']} {report.get('version') or ''}".strip()
                 if report.get("package") else "-")
        click.echo(f"{path}\n  sha256 {report['sha256']}\n  sha1   {report['sha1']}\n"
                   f"  md5    {report['md5']}\n  package {owner}: {report['status']}")
    if failed:
        sys.exit(1)


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
    from sensor_linux.audit.replay import replay

    config = RunConfig(source="audisp", fmt=fmt, parse_error_log=parse_error_log,
                       max_bytes=max_bytes, generations=generations,
                       keep_exec_attempts=keep_exec_attempts)
    sink = _open_outputs(fmt, outputs, max_bytes, generations)
    stop = install_stop_handlers()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # auditd may send it on reconfiguration
    if file is None:
        from sensor_linux.audit.plugin import PluginSource  # the plugin's path only
        say = lambda message: click.echo(f"ttpsensor audisp: {message}", err=True)  # noqa
        summary = runner.run(PluginSource(config, sink, say), sink, config, stop,
                             written=[], periodic=[], say=say)
    else:
        summary = replay(file, config, sink, stop, from_this_host, then_exit=True)
    click.echo(f"ttpsensor audisp: {json.dumps(summary)}", err=True)


@click.command("status")
@click.option("--status-file", default=DEFAULT_STATUS_FILE, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The raw counters as JSON.")
def status(status_file: str, as_json: bool) -> None:
    """Show a running (or the last) sensor's counters: events, and everything lost.

    Reads the status file that 'ttpsensor run' updates every --status-interval seconds.
    """
    from sensor_linux.status import print_table, read_status

    try:
        stats = read_status(status_file)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"no status in {status_file}: {exc}; is the sensor "
                                   f"running with --status-file {status_file}?") from exc
    alive = bool(stats.get("running") and os.path.exists(f"/proc/{stats.get('pid')}"))
    if as_json:
        click.echo(json.dumps(dict(stats, alive=alive)))
    else:
        print_table(stats, alive)
