"""``ttpsensor pki init`` and ``ttpsensor forward``: a lab PKI, and a spool shipped to
collectors."""

from __future__ import annotations

import json

import click


@click.group("pki")
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


@click.command("forward")
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
