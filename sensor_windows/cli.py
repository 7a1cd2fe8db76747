"""Commands of the Windows twin that run on any OS."""

from __future__ import annotations

import json
import subprocess
import sys

import click


@click.command("pe")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
@click.option("--ca-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Trusted root certificates (PEM): signatures are then verified against "
                   "them. Without it, signatures are read and their digests checked only.")
def pe(files: tuple[str, ...], as_json: bool, ca_file: str | None) -> None:
    """What PE files say about themselves: digests, imphash, version resource, Authenticode.

    The Authenticode digest is computed from the file; for a signed file it is compared with
    the digest its signer signed ('digest matches'). Exit code 1 when a file cannot be read or
    is not a PE file.
    """
    from sensor_windows.pe import PEError, inspect_file, load_roots
    roots = load_roots(ca_file) if ca_file else None
    failed = False
    for path in files:
        try:
            facts = inspect_file(path, roots)
        except (OSError, PEError) as exc:
            click.echo(f"{path}: {exc}", err=True)
            failed = True
            continue
        if as_json:
            click.echo(json.dumps(dict(facts.as_dict(), path=path)))
            continue
        click.echo(path)
        for key in ("sha256", "imphash", "original_file_name", "company", "product",
                    "file_version", "authenticode_sha256"):
            click.echo(f"  {key:19} {getattr(facts, key) or '-'}")
        click.echo(f"  {'signature':19} {facts.status}")
        for sig in facts.signatures:
            click.echo(f"    {'nested ' if sig.nested else ''}signer {sig.subject}")
            click.echo(f"      issuer {sig.issuer}; thumbprint {sig.thumbprint}")
            click.echo(f"      valid {sig.not_before or '?'} to {sig.not_after or '?'}; "
                       f"signed at {sig.timestamp or '- (no timestamp)'}")
            for stamp in sig.timestamp_signatures:
                click.echo(f"      timestamped {stamp.timestamp or '?'} by {stamp.subject} "
                           f"({stamp.digest_algorithm})")
    if failed:
        sys.exit(1)


@click.group("windows")
def windows() -> None:
    """The Windows twin: ETW process starts enriched like QLOG."""


@windows.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["ecs", "qlog"]), default="ecs",
              show_default=True)
@click.option("--ca-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Trusted roots for verifying the images' signatures.")
def replay_command(file: str, fmt: str, ca_file: str | None) -> None:
    """Enrich a recorded stream of pywintrace events (runs on any OS).

    FILE holds JSON lines: the devices map, processes and files as Win32 calls and the disk
    would show them, and the ETW events (see sensor_windows/replay.py). Lines that fail are
    reported with their number on stderr; the exit code is then 2.
    """
    import socket

    from common.render import line_renderer
    from common.sinks import StreamSink, TextOutput
    from sensor_windows.pe import load_roots
    from sensor_windows.replay import replay
    host = {"name": socket.gethostname(), "os": {"type": "windows"}}
    result = replay(file, host, TextOutput(StreamSink(), line_renderer(fmt)),
                    load_roots(ca_file) if ca_file else None)
    for number, why in result.failed:
        click.echo(f"line {number}: {why}", err=True)
    if result.failed:
        sys.exit(2)


@windows.command("run")
@click.option("--format", "fmt", type=click.Choice(["ecs", "qlog"]), default="ecs",
              show_default=True)
@click.option("--output", "outputs", multiple=True, default=("-",), show_default=True,
              help="'-' for stdout, PATH or jsonl:PATH for a rotated file, spool:DIR. "
                   "Repeatable.")
@click.option("--error-log", default=None,
              help="Where events that cannot be used are kept verbatim (JSON lines).")
@click.option("--status-interval", default=60.0, show_default=True,
              help="Seconds between counter reports on stderr (ETW's lost events included).")
@click.option("--session", "session_name", default="ttpsensor-process-console",
              show_default=True,
              help="The ETW session's name. A session of this name left by a sensor that died "
                   "is stopped first, so two sensors must not share one: the service's is "
                   "'ttpsensor-process' (the .msi runs this command with it).")
def windows_run(fmt: str, outputs: tuple[str, ...], error_log: str | None,
                status_interval: float, session_name: str) -> None:
    """Run the ETW sensor in this console until Ctrl-C (Windows, as Administrator).

    Starts an ETW session (Microsoft-Windows-Kernel-Process, process starts; --session names
    it), stopping a stale one of that name first, and writes every process start enriched
    with its command line, user, integrity level, file digests, imphash, version resource and
    signature (Windows' own verdict, catalogs included), its parent's context and its TTPHash.
    """
    if sys.platform != "win32":
        raise click.ClickException("the ETW session needs Windows; on this OS use "
                                   "'ttpsensor windows replay' to exercise the pipeline")
    import socket
    import threading

    from common.sinks import OutputError, open_outputs, open_sink
    from sensor_windows.runner import SessionGone, run_sensor
    try:
        sink = open_outputs(outputs, fmt).output
        errors = open_sink(error_log) if error_log else None
    except (OutputError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        run_sensor(threading.Event(), sink, {"name": socket.gethostname(),
                                             "os": {"type": "windows"}},
                   error_log=errors, status_interval=status_interval,
                   messages=sys.stderr, session_name=session_name)
    except KeyboardInterrupt:
        pass
    except SessionGone as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        sink.close()
        if errors is not None:
            errors.close()


@windows.command("service")
@click.argument("action", type=click.Choice(["install", "remove", "start", "stop"]))
@click.option("--dry-run", is_flag=True, help="Print the sc.exe commands instead of running "
                                              "them (works on any OS).")
def windows_service(action: str, dry_run: bool) -> None:
    """Install, remove, start or stop the 'ttpsensor' Windows service (as Administrator).

    The service runs this Python with 'sensor_windows.service' (from a virtual environment:
    the base python.exe with the environment's packages, not the venv's launcher), starts
    automatically, is restarted after a crash or a reported failure, and writes to
    %ProgramData%\\ttpsensor (events.jsonl, rejected.jsonl, status.jsonl, and service.log
    when it fails), a folder readable by SYSTEM and Administrators only. This is for a
    pip-installed sensor; the .msi installs its own service of the same name (through NSSM,
    see packaging/README.md).
    """
    from sensor_windows.service import run_sc, sc_commands
    if dry_run:
        for argv in sc_commands(action):
            click.echo(subprocess.list2cmdline(argv))  # Windows quoting rules
        return
    if sys.platform != "win32":
        raise click.ClickException("services need Windows (--dry-run shows the commands)")
    errors = run_sc(action)
    for line in errors:
        click.echo(line, err=True)
    if errors:
        sys.exit(1)

