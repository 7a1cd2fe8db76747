"""``ttpsensor console``: the hunting console over a collector's store, served by uvicorn."""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import uvicorn

from collector.cli import DEFAULT_STORE

DEFAULT_LISTEN = "127.0.0.1:8731"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets: [::1]:8731)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter(f"{text!r} is not HOST:PORT", param_hint="--listen")
    return host.strip("[]"), int(port)


def token_for(store: str, token_file: str | None) -> tuple[str | None, str | None]:
    """The login token (read, or created 0600) and its file: by default console.token beside
    a SQLite store; no token for a PostgreSQL store without --token-file."""
    from collector.console.security import read_or_create_token
    if token_file is None and "://" not in store:
        token_file = os.path.join(os.path.dirname(os.path.abspath(store)), "console.token")
    if token_file is None:
        return None, None
    try:
        token, created = read_or_create_token(token_file)
    except OSError as exc:
        raise click.ClickException(f"cannot read or create the token file: {exc}") from exc
    if created:
        click.echo(f"ttpsensor console: a new login token is in {token_file} (0600)", err=True)
    return token, token_file


def serve_beside(store: str, listen: str) -> "uvicorn.Server":
    """The console on a loopback address in a thread of this process (``collect --console``),
    over its own connection to ``store``; returns the uvicorn server (``should_exit`` stops
    it). Beyond loopback, with TLS, it is `ttpsensor console`'s job."""
    import threading

    import uvicorn

    from collector.cli import _open
    from collector.console.app import make_app
    from collector.console.security import access_for, is_loopback
    host, port = parse_listen(listen)
    if not is_loopback(host):
        raise click.UsageError("--console listens on loopback only; beyond it, run "
                               "'ttpsensor console' with --tls-cert, --tls-key and a token")
    token, _ = token_for(store, None)
    access = access_for(host, tls_cert=None, tls_key=None, client_ca=None, token=token)
    server = uvicorn.Server(uvicorn.Config(make_app(_open(store, write=True), access),
                                           host=host, port=port, log_level="warning",
                                           server_header=False))
    threading.Thread(target=server.run, name="console", daemon=True).start()
    click.echo(f"ttpsensor collect: the console is on http://{listen}", err=True)
    return server


@click.command("console")
@click.option("--store", default=DEFAULT_STORE, show_default=True,
              help="The collector's store: a SQLite file or a postgresql:// URL.")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True,
              help="HOST:PORT. Beyond loopback it needs --tls-cert/--tls-key and --token-file "
                   "or --client-ca, and every page then needs authentication.")
@click.option("--token-file", default=None,
              help="The token a login must give (created, random, 0600 when missing). "
                   "Default: console.token beside a SQLite store.")
@click.option("--tls-cert", default=None, help="PEM certificate (e.g. from 'ttpsensor pki "
                                               "init').")
@click.option("--tls-key", default=None, help="Its PEM private key.")
@click.option("--client-ca", default=None,
              help="Ask browsers for client certificates of this CA (mutual TLS); a connected "
                   "client is then authenticated.")
def console(store: str, listen: str, token_file: str | None, tls_cert: str | None,
            tls_key: str | None, client_ca: str | None) -> None:
    """Serve the hunting console: what is new on the fleet, rare, top and not allow-listed,
    each TTPHash with its canonical input, hosts, parents and children, each host's process
    tree with the holes in its data, and the audited allow-list.

    \b
      ttpsensor console                       # http://127.0.0.1:8731 over the default store
      ttpsensor console --store postgresql://collector@db/ttp --listen 10.0.0.5:8731 \\
          --tls-cert console.pem --tls-key console.key --token-file /etc/ttpsensor/console.token
    """
    import uvicorn

    from collector.cli import _open
    from collector.console.app import make_app
    from collector.console.security import ConsoleSecurityError, access_for
    host, port = parse_listen(listen)
    token, token_file = token_for(store, token_file)
    try:
        access = access_for(host, tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca,
                            token=token)
    except ConsoleSecurityError as exc:
        raise click.UsageError(str(exc)) from exc
    app = make_app(_open(store, write=True), access)
    scheme = "https" if access.tls else "http"
    click.echo(f"ttpsensor console: {scheme}://{listen} over {store}", err=True)
    uvicorn.run(app, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                ssl_ca_certs=client_ca,
                ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
                log_level="warning", server_header=False)
