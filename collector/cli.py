"""``ttpsensor hunt``: questions to the TTPHash baseline of a collector's store."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from collector.store import SIGMA_LEVELS
from common.config import config_option

DEFAULT_STORE = "ttpsensor-data/store.sqlite"


def _open(path: str, write: bool = False):  # type: ignore[no-untyped-def]
    """The store, read-only unless ``write`` (the allow-list), or a clear error."""
    import os

    if "://" not in path and not os.path.exists(path):
        raise click.ClickException(f"no store at {path} (run the sensor or a collector first, "
                                   "or give --store)")
    return _store(path, readonly=not write)


def _store(path: str, **options: Any) -> Any:
    """Store(path, **options), or a clear error (a file that is not a store, a PostgreSQL
    server that cannot be reached). The collector's store is made if new."""
    from collector.store import Store, StoreError
    try:
        return Store(path, **options)
    except (StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _utc_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """An ISO 8601 time as the store writes times (UTC, microseconds, Z), so that comparing
    text compares moments: '2026-12-01T10:00:01Z' would sort after '...10:00:01.5Z'. A time
    without an offset is UTC."""
    if value is None:
        return None
    import datetime as dt

    from common.schema import utc_timestamp
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time "
                                 "(e.g. 2026-11-29T00:00:00Z)") from exc
    return utc_timestamp(moment)


def _print(rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"{title} ({len(rows)})")
    columns = list(rows[0]) if rows else ["ttphash"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("count", "hosts") else "left")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row[c]) for c in columns))
    Console().print(table)


@click.group("hunt")
@click.option("--store", default=DEFAULT_STORE, show_default=True,
              help="The collector's store: a SQLite file or a postgresql:// URL. Opened "
                   "read-only except by 'allow add' and 'allow remove'.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.pass_context
def hunt(ctx: click.Context, store: str, as_json: bool) -> None:
    """Ask the TTPHash baseline: what is new, rare, frequent, or not allow-listed.

    \b
      ttpsensor hunt new --since 2026-11-29T00:00:00Z
      ttpsensor hunt rare --max-hosts 1
      ttpsensor hunt show <TTPHASH>
      ttpsensor hunt allow add <TTPHASH> --reason "backup job"
    """
    ctx.obj = {"store": store, "json": as_json}


@hunt.command("new")
@click.option("--since", required=True, callback=_utc_time,
              help="ISO 8601 time, e.g. 2026-11-29T00:00:00Z (UTC without an offset).")
@click.pass_obj
def hunt_new(obj: dict[str, Any], since: str) -> None:
    """TTPHashes first seen at or after SINCE."""
    _print(_open(obj["store"]).new_since(since), obj["json"], f"new since {since}")


@hunt.command("rare")
@click.option("--max-hosts", default=1, show_default=True)
@click.pass_obj
def hunt_rare(obj: dict[str, Any], max_hosts: int) -> None:
    """TTPHashes seen on at most N hosts."""
    _print(_open(obj["store"]).rare(max_hosts), obj["json"], f"on <= {max_hosts} hosts")


@hunt.command("top")
@click.option("--limit", default=20, show_default=True)
@click.pass_obj
def hunt_top(obj: dict[str, Any], limit: int) -> None:
    """The most frequent TTPHashes."""
    _print(_open(obj["store"]).top(limit), obj["json"], "most frequent")


@hunt.command("unlisted")
@click.pass_obj
def hunt_unlisted(obj: dict[str, Any]) -> None:
    """TTPHashes that are not on the allow-list."""
    _print(_open(obj["store"]).not_allowed(), obj["json"], "not allow-listed")


@hunt.command("show")
@click.argument("value")
@click.pass_obj
def hunt_show(obj: dict[str, Any], value: str) -> None:
    """A TTPHash's baseline entry, its sample event and its canonical input."""
    row = _open(obj["store"]).show(value)
    if row is None:
        raise click.ClickException(f"no TTPHash {value} in the store")
    from common import ecs
    if obj["json"]:
        row["sample"] = json.loads(ecs.render(row["sample"]))
        click.echo(json.dumps(row, default=str))
        return
    for key in ("ttphash", "first_seen", "last_seen", "count", "hosts", "host_names",
                "allowed"):
        click.echo(f"{key:11} {row[key]}")
    check = (row["sample"].get("ttphash") or {}).get("check")
    if check:  # set by a remote collector: see docs/security.md
        click.echo(f"{'checked':11} {check} by the collector")
    click.echo(f"canonical   {row['canonical']}")
    click.echo(f"sample      {ecs.render(row['sample'])}")


@hunt.group("allow")
def hunt_allow() -> None:
    """The allow-list: known-good TTPHashes, each with a reason."""


def _who() -> str:
    """Who changes the allow-list from a terminal, for its log."""
    import getpass
    try:
        return f"{getpass.getuser()} (hunt)"
    except (KeyError, OSError):
        return "hunt"


@hunt_allow.command("add")
@click.argument("value")
@click.option("--reason", required=True)
@click.pass_obj
def allow_add(obj: dict[str, Any], value: str, reason: str) -> None:
    _open(obj["store"], write=True).allow(value, reason, _who())


@hunt_allow.command("remove")
@click.argument("value")
@click.pass_obj
def allow_remove(obj: dict[str, Any], value: str) -> None:
    if not _open(obj["store"], write=True).disallow(value, who=_who()):
        click.echo(f"{value} was not on the allow-list", err=True)
        sys.exit(1)


@hunt_allow.command("list")
@click.pass_obj
def allow_list(obj: dict[str, Any]) -> None:
    _print(_open(obj["store"]).allowed(), obj["json"], "allow-list")


@hunt.command("sigma")
@click.option("--level", type=click.Choice(SIGMA_LEVELS),
              help="Only matches of rules at this level or above.")
@click.option("--rule", help="Only matches of this rule (its id or its title).")
@click.option("--host", help="Only matches on this host.")
@click.option("--since", callback=_utc_time,
              help="Only events at or after this ISO 8601 time (UTC without an offset).")
@click.option("--limit", default=1000, show_default=True)
@click.pass_obj
def hunt_sigma(obj: dict[str, Any], level: str | None, rule: str | None, host: str | None,
               since: str | None, limit: int) -> None:
    """Events that matched a Sigma rule at ingest (a collector or 'run' given --sigma),
    newest first, with the rule's level and ATT&CK tags and the event's TTPHash; 'allowed'
    is 1 when that TTPHash is allow-listed. 'hunt show TTPHASH' shows the execution.

    \b
      ttpsensor hunt sigma --level high --since 2026-12-01T00:00:00Z
      ttpsensor hunt --json sigma --host web-3
    """
    rows = _open(obj["store"]).sigma_matches(level, rule, host, since, limit)
    if not obj["json"]:   # a terminal's width: the rule id, tags and event key are in --json
        rows = [{k: r[k] for k in ("ts", "host", "level", "title", "ttphash", "allowed")}
                for r in rows]
    _print(rows, obj["json"], "Sigma matches")


@hunt.command("gaps")
@click.pass_obj
def hunt_gaps(obj: dict[str, Any]) -> None:
    """Events sensors lost before delivery (spool full, disk full), as they reported."""
    _print(_open(obj["store"]).gaps(), obj["json"], "reported gaps")


@click.command("collect")
@config_option("packaging/linux/collector.toml")
@click.option("--listen", default="127.0.0.1:7531", show_default=True, help="HOST:PORT.")
@click.option("--cert", help="The collector's certificate (PEM).")
@click.option("--key", help="Its private key (PEM).")
@click.option("--ca", help="Only sensors with a certificate from this CA get in.")
@click.option("--store", default=DEFAULT_STORE, show_default=True,
              help="A SQLite file, or a postgresql:// URL.")
@click.option("--nats", "nats_url", default=None,
              help="Consume from NATS JetStream at this URL instead of listening.")
@click.option("--durable", default="ttpsensor-collector", show_default=True,
              help="--nats: the durable consumer's name (collector workers share it).")
@click.option("--console", "console_listen", default=None,
              help="Also serve the hunting console over the store on this loopback "
                   "HOST:PORT (e.g. 127.0.0.1:8731).")
@click.option("--sigma", "sigma_rules", multiple=True, type=click.Path(exists=True),
              help="Sigma rules (a YAML file or a directory of them; repeatable): each new "
                   "process creation is evaluated at ingest and its matches stored "
                   "('hunt sigma'). Rules that cannot be evaluated are reported at start.")
@click.option("--plain-documents", is_flag=True,
              help="Store each event as plain msgpack. By default a store trains a zstd "
                   "dictionary on its first 4,000 events and compresses every later one with "
                   "it (a tenth of the size, and a cheaper insert); either kind is read back.")
def collect(listen: str, cert: str | None, key: str | None, ca: str | None, store: str,
            nats_url: str | None, durable: str, console_listen: str | None,
            sigma_rules: tuple[str, ...], plain_documents: bool) -> None:
    """Receive events from forwarders (mutual TLS) or JetStream, deduplicate, store, and keep
    the TTPHash baseline.

    Plain TCP, a missing client certificate and a certificate from another CA are refused
    and logged. Stops on SIGTERM/SIGINT.
    """
    import signal
    import threading
    from dataclasses import asdict

    from collector.server import Collector
    from common.transport import server_context
    if not nats_url and not (cert and key and ca):
        raise click.UsageError("give --cert, --key and --ca (or --nats)")
    rules = None
    if sigma_rules:
        from collector.sigma.rules import load_rule_set
        rules = load_rule_set(list(sigma_rules),
                              lambda m: click.echo(f"ttpsensor collect: {m}", err=True))
    opened = _store(store, rules=rules, compress_documents=not plain_documents)
    console = None
    if console_listen:
        from collector.console.cli import serve_beside
        console = serve_beside(store, console_listen)
    if nats_url:
        try:
            _consume(nats_url, durable, opened)
        finally:
            if console is not None:
                console.should_exit = True
        return
    host, _, port = listen.rpartition(":")
    collector = Collector(opened, server_context(cert, key, ca))
    stopping = threading.Event()

    def stop(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=collector.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        collector.serve(host.strip("[]") or "127.0.0.1", int(port or 7531))
    finally:
        if console is not None:
            console.should_exit = True
    click.echo("ttpsensor collect: stopped: " + json.dumps(
        asdict(collector.stats) | asdict(collector.writer.stats) | asdict(collector.admitted)
        | _sigma_summary(rules)), err=True)


def _consume(url: str, durable: str, store: Any) -> None:
    """The JetStream consumer loop (a collector worker): the sensor is the subject it
    published on, its spools and host names bound to it as over TLS (collector/admit.py)."""
    import asyncio
    import signal
    import threading
    from dataclasses import asdict

    from collector.consume import StreamIngest, consume
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ingest = StreamIngest(store)

    click.echo(f"ttpsensor collect: consuming {url} as {durable}", err=True)
    asyncio.run(consume(url, durable, ingest, stop.is_set,
                        lambda m: click.echo(f"ttpsensor collect: {m}", err=True)))
    click.echo("ttpsensor collect: stopped: " + json.dumps(
        asdict(ingest.counts) | asdict(ingest.admitted) | _sigma_summary(store.rules)), err=True)


def _sigma_summary(rules: Any) -> dict[str, Any]:
    """The stop line's Sigma part: evaluations that raised, by rule (none without rules)."""
    return {"sigma_errors": rules.errors} if rules is not None else {}


@click.group("store")
def store_group() -> None:
    """Upkeep of a collector's store (SQLite or PostgreSQL)."""


@store_group.command("compress")
@click.option("--store", default=DEFAULT_STORE, show_default=True,
              help="A SQLite file, or a postgresql:// URL.")
@click.option("--batch", default=5000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Documents a transaction: a collector writing beside it waits at most one.")
@click.option("--vacuum", is_flag=True,
              help="SQLite: then rewrite the file, giving the freed space back to the file "
                   "system (needs about the store's size free, and no collector running).")
def store_compress(store: str, batch: int, vacuum: bool) -> None:
    """Compress the events stored as plain msgpack with the store's zstd dictionary (a store
    trains one on its first 4,000 events; an older store, or one written with
    --plain-documents, gets one trained now). A store of 100,000 fleet events went from 2,433
    to 860 bytes an event. Safe to run again, and beside a running collector.

    \b
      ttpsensor store compress --store /var/lib/ttpsensor-collector/store.sqlite --vacuum
    """
    from collector.store import StoreError
    opened = _open(store, write=True)
    try:
        def progress(seen: int, compressed: int) -> None:
            click.echo(f"ttpsensor store: {seen:,} documents looked at, {compressed:,} "
                       "compressed", err=True)

        try:
            compressed, before, after = opened.compress_stored(batch, progress)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(json.dumps({"compressed": compressed, "bytes_before": before,
                               "bytes_after": after,
                               "dictionary": opened.documents.dictionary_id}))
        if vacuum and not opened.postgres:
            click.echo("ttpsensor store: vacuuming", err=True)
            opened.db.execute("VACUUM")
    finally:
        opened.close()
