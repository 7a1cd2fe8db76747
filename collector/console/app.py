"""The console's web application (Starlette, Jinja2 templates, no script in any page).

``make_app(store, access)`` builds it over an open store; ``ttpsensor console`` serves it with
uvicorn (collector/console/cli.py), and a collector may mount the same app beside itself.
Routes: /today, /list/{rare,top,unlisted}, /search, /hash/{value} (+ /allow, /revoke),
/hosts, /host/{name}, /sigma, /login, /logout. Every value is escaped by Jinja2's
autoescaping; text that was not UTF-8 arrives in percent form (collector/store.py's display
columns, and the ECS renderer for whole events).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import time
from typing import Any, Callable
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from collector.console.hunting import LISTINGS, Filters, Hunt
from collector.console.security import (SECURITY_HEADERS, Access, csrf_matches, new_csrf)
from collector.store import SIGMA_LEVELS, Store, display_text
from common import ecs

HERE = os.path.dirname(os.path.abspath(__file__))
TITLES = {"rare": "Rare (one host)", "top": "Top", "unlisted": "Not allow-listed"}
MAX_REASON = 500
HOSTS_SECONDS = 10.0


def _filters(request: Request) -> Filters:
    q = request.query_params
    return Filters(**{name: q.get(name, "").strip()[:200] for name in (
        "host", "user", "executable", "argument", "os", "prefix", "since", "until")})


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def _iso(moment: _dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _moment(text: Any) -> _dt.datetime:
    """A stored time as a datetime; now when there is none or it is not ISO 8601 (times come
    from events, which a remote sensor wrote)."""
    try:
        moment = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return _dt.datetime.now(_dt.timezone.utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def _last_day(filters: Filters, newest: Callable[[], Any]) -> Filters:
    """The window a viewer did not give in full: the day up to ``newest()`` (the newest time
    of what the page shows), so a replayed or quiet store still shows its latest data."""
    if not filters.since or not filters.until:
        end = _moment(newest())
        filters.until = filters.until or _iso(end + _dt.timedelta(seconds=1))
        filters.since = filters.since or _iso(end - _dt.timedelta(hours=24))
    return filters


def _chart(hours: list[tuple[str, int]]) -> dict[str, Any]:
    """Bars of new TTPHashes per hour, as SVG geometry (drawn by the template)."""
    peak = max((n for _, n in hours), default=0)
    width = max(1, len(hours))
    bars = [{"hour": hour, "n": n, "x": i * 600 / width, "w": max(1.0, 600 / width - 2),
             "h": 0 if not peak else 100 * n / peak} for i, (hour, n) in enumerate(hours)]
    return {"bars": bars, "peak": peak}


class SecurityMiddleware(BaseHTTPMiddleware):
    """Headers on every answer; without open reading, nothing but the login unauthenticated."""

    def __init__(self, app: Any, access: Access) -> None:
        super().__init__(app)
        self.access = access

    async def dispatch(self, request: Request, call_next: Any) -> Response:
        open_paths = request.url.path in ("/login",) or request.url.path.startswith("/static/")
        if not self.access.open_reading and not open_paths and not _who(request, self.access):
            response: Response = RedirectResponse("/login", status_code=303) \
                if request.method == "GET" else Response("authentication required", 401)
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        return response


def _who(request: Request, access: Access) -> str | None:
    """Who is authenticated on this request (None: nobody)."""
    if access.client_ca is not None:
        return "client certificate"   # mutual TLS: no certificate, no connection
    return request.session.get("who") if "session" in request.scope else None


def make_app(store: Store, access: Access) -> Starlette:
    """The console over ``store``. Its handlers are coroutines that query synchronously: one
    query at a time on the store's one connection (sqlite3's may not be used by two threads at
    once), which a console with a few hunters can afford."""
    hunt = Hunt(store)
    templates = Environment(loader=FileSystemLoader(os.path.join(HERE, "templates")),
                            autoescape=select_autoescape(default=True, default_for_string=True))
    templates.filters["event_json"] = lambda event: json.dumps(
        json.loads(ecs.render(event)), indent=2, ensure_ascii=False)
    templates.filters["display"] = lambda value: display_text(value) or ""

    known_hosts: dict[str, Any] = {"at": 0.0, "names": []}

    def host_names() -> list[str]:
        """The host list of every page's filter, read at most every HOSTS_SECONDS (a scan of
        baseline_hosts: tens of milliseconds on a big store)."""
        if time.monotonic() - known_hosts["at"] > HOSTS_SECONDS:
            known_hosts["names"], known_hosts["at"] = hunt.hosts(), time.monotonic()
        return known_hosts["names"]

    def page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        if "csrf" not in request.session:
            request.session["csrf"] = new_csrf()
        html = templates.get_template(name).render(
            request=request, who=_who(request, access), csrf=request.session["csrf"],
            hosts=host_names(), query=dict(request.query_params), urlencode=urlencode,
            **values)
        return HTMLResponse(html, status_code=status)

    async def today(request: Request) -> HTMLResponse:
        filters = _last_day(_filters(request), lambda: store._execute(
            "SELECT max(first_seen) FROM baseline").fetchone()[0])
        result = hunt.today(filters, _page_number(request))
        return page(request, "today.html", result=result, filters=filters,
                    chart=_chart(hunt.new_per_hour(filters)))

    async def listing(request: Request) -> HTMLResponse:
        kind = request.path_params["kind"]
        if kind not in LISTINGS:
            return page(request, "error.html", 404, message=f"no list named {kind}")
        sort = request.query_params.get("sort", "")
        descending = request.query_params.get("order", "desc") != "asc"
        filters = _filters(request)
        result = hunt.listing(kind, _page_number(request), sort, descending, filters)

        def sort_link(key: str) -> str:
            order = "asc" if sort == key and descending else "desc"
            return "?" + urlencode({**request.query_params, "sort": key, "order": order,
                                    "page": 1})
        return page(request, "list.html", result=result, kind=kind, title=TITLES[kind],
                    sort_link=sort_link, filters=filters)

    async def search(request: Request) -> HTMLResponse:
        filters = _filters(request)
        asked = any(vars(filters).values())
        result = hunt.search(filters, _page_number(request)) if asked else None
        return page(request, "search.html", result=result, filters=filters)

    async def detail(request: Request) -> HTMLResponse:
        value = request.path_params["value"]
        found = hunt.detail(value)
        if found is None:
            return page(request, "error.html", 404, message="no such TTPHash in the baseline")
        return page(request, "hash.html", d=found)

    async def change(request: Request) -> Response:
        value = request.path_params["value"].upper()
        action = request.path_params["action"]
        if action not in ("allow", "revoke"):
            return page(request, "error.html", 404, message=f"no action named {action}")
        form = await request.form()
        if not csrf_matches(request.session.get("csrf"), str(form.get("csrf", ""))):
            return page(request, "error.html", 403, message="the form is stale: reload the "
                                                             "page and try again (CSRF)")
        who = _who(request, access)
        if who is None:
            return page(request, "error.html", 401,
                        message="log in with the console's token to change the allow-list")
        reason = str(form.get("reason", "")).strip()[:MAX_REASON]
        if not reason:
            return page(request, "error.html", 400, message="say why (a reason is required)")
        if not hunt.known(value):
            return page(request, "error.html", 404, message="no such TTPHash in the baseline")
        (hunt.allow if action == "allow" else hunt.revoke)(value, reason, who)
        return RedirectResponse(f"/hash/{value}", status_code=303)

    async def sigma(request: Request) -> HTMLResponse:
        asked = {name: request.query_params.get(name, "").strip()[:200]
                 for name in ("level", "rule", "host", "since")}
        if asked["level"] not in ("", *SIGMA_LEVELS):
            asked["level"] = ""
        result = hunt.sigma(asked["level"], asked["rule"], asked["host"], asked["since"],
                            _page_number(request))
        return page(request, "sigma.html", result=result, asked=asked, levels=SIGMA_LEVELS)

    async def hosts(request: Request) -> HTMLResponse:
        return page(request, "hosts.html")

    async def host(request: Request) -> HTMLResponse:
        name = request.path_params["name"]
        filters = _last_day(_filters(request), lambda: store._execute(
            "SELECT max(ts) FROM events WHERE host = ?", (name,)).fetchone()[0])
        view = hunt.host(name, filters.since, filters.until)
        return page(request, "host.html", view=view, filters=filters)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return page(request, "login.html")
        form = await request.form()
        if not csrf_matches(request.session.get("csrf"), str(form.get("csrf", ""))):
            return page(request, "login.html", 403, error="the form is stale: try again")
        if not access.token_matches(str(form.get("token", ""))):
            return page(request, "login.html", 401, error="that is not the console's token")
        name = str(form.get("name", "")).strip()[:80] or "token holder"
        request.session["who"] = f"{name} (token)"
        request.session["csrf"] = new_csrf()     # a new session, a new CSRF token
        return RedirectResponse("/today", status_code=303)

    async def logout(request: Request) -> Response:
        form = await request.form()
        if csrf_matches(request.session.get("csrf"), str(form.get("csrf", ""))):
            request.session.clear()
        return RedirectResponse("/today", status_code=303)

    async def root(request: Request) -> Response:
        return RedirectResponse("/today", status_code=303)

    routes = [
        Route("/", root), Route("/today", today), Route("/list/{kind}", listing),
        Route("/search", search), Route("/hash/{value}", detail),
        Route("/hash/{value}/{action:str}", change, methods=["POST"]),
        Route("/hosts", hosts), Route("/host/{name:path}", host), Route("/sigma", sigma),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(access.hosts or ["*"])),
                  Middleware(SessionMiddleware, secret_key=secrets.token_urlsafe(32),
                             session_cookie="ttpsensor_console", same_site="strict",
                             https_only=access.tls),
                  Middleware(SecurityMiddleware, access=access)]
    return Starlette(routes=routes, middleware=middleware)
