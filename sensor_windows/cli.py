"""Commands of the Windows twin that run on any OS."""

from __future__ import annotations

import json
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

    from common.render import RENDERERS
    from sensor_windows.pe import load_roots
    from sensor_windows.replay import replay
    host = {"name": socket.gethostname(), "os": {"type": "windows"}}
    failed = False
    for number, result in replay(file, host, load_roots(ca_file) if ca_file else None):
        if isinstance(result, str):
            click.echo(f"line {number}: {result}", err=True)
            failed = True
        else:
            click.echo(RENDERERS[fmt](result))
    if failed:
        sys.exit(2)


@windows.command("run")
def windows_run() -> None:
    """Run the ETW sensor in the console (Windows only)."""
    if sys.platform != "win32":
        raise click.ClickException("the ETW session needs Windows; on this OS use "
                                   "'ttpsensor windows replay' to exercise the pipeline")
    raise click.ClickException("the ETW session is not implemented yet (issue 6)")
