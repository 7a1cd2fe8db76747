"""Who may use the console, and how it must be served.

* Bound to a loopback address (the default, 127.0.0.1), anyone on the host may read; changing
  the allow-list needs a login with the token. Requests must name a loopback host (DNS
  rebinding).
* Bound to anything else, the console refuses to start without TLS and a way to authenticate
  (the token, or client certificates of a CA: mutual TLS), and every request must be
  authenticated: the pages show command lines and user names.

The token lives in a file of its own (0600, created with a random token when it is missing:
``ttpsensor console`` says where). A login proves the token and records a name for the audit
log of allow-list changes. Sessions are signed cookies (Starlette's SessionMiddleware, with a
key made at start: a restart logs everyone out). Every form carries the session's CSRF token,
checked on every POST. Pages carry no script at all, and the Content-Security-Policy forbids
one, so a command line that escaped escaping still could not run.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass

from common.ownership import open_private

TOKEN_BYTES = 32
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class ConsoleSecurityError(ValueError):
    """The console cannot be served as asked; the message says what is missing."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Access:
    """How this console is served: ``open_reading`` lets the unauthenticated read (loopback
    only); ``token`` is what a login must give (None: no token logins); ``client_ca`` asks
    clients for certificates of that CA (mutual TLS: a connected client is authenticated)."""

    open_reading: bool
    token: str | None
    tls: bool
    client_ca: str | None = None
    # The Host names a request may carry (None: any). On loopback only loopback names: a web
    # page elsewhere could otherwise rebind its own name to 127.0.0.1 and read the console
    # through the victim's browser (DNS rebinding).
    hosts: tuple[str, ...] | None = None

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), self.token.encode("utf-8"))


def read_or_create_token(path: str) -> tuple[str, bool]:
    """The token in ``path``; a new random one written there (0600) when the file is missing
    or empty. Returns (token, created)."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
        if token:
            return token, False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    fd = open_private(path, regular_only=True)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, (token + "\n").encode("ascii"))
    finally:
        os.close(fd)
    return token, True


def access_for(host: str, *, tls_cert: str | None, tls_key: str | None,
               client_ca: str | None, token: str | None) -> Access:
    """The access rules for a console bound to ``host``; ConsoleSecurityError when a
    non-loopback console would be served without TLS or without authentication."""
    tls = bool(tls_cert and tls_key)
    if bool(tls_cert) != bool(tls_key):
        raise ConsoleSecurityError("--tls-cert and --tls-key go together")
    if is_loopback(host):
        return Access(open_reading=True, token=token, tls=tls, client_ca=client_ca,
                      hosts=LOOPBACK_NAMES)
    if not tls:
        raise ConsoleSecurityError(
            f"the console would listen on {host}, beyond this host, without TLS: give "
            "--tls-cert and --tls-key (e.g. from 'ttpsensor pki init'), or listen on "
            "127.0.0.1")
    if token is None and client_ca is None:
        raise ConsoleSecurityError(
            f"the console would listen on {host} without authentication: give --token-file "
            "or --client-ca")
    return Access(open_reading=False, token=token, tls=True, client_ca=client_ca)


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_matches(session_value: str | None, given: str | None) -> bool:
    return bool(session_value and given) and hmac.compare_digest(
        str(session_value).encode(), str(given).encode())
