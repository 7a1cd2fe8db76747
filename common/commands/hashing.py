"""``ttpsensor hash``: the TTPHash of events in a file."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import click

from common import ttphash
from common.jsonin import load_event, read_documents
from common.schema import ACTION_PROCESS_CREATE, SchemaError, get_path


@click.command("hash")
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
