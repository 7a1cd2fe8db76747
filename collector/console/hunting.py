"""The hunting console's questions to a store, one method per page.

Every query is bounded: pages of PAGE_ROWS, indexed columns only in WHERE and ORDER BY
(store.INDEXES), and a process tree or a sample of a hash read from at most a fixed number of
events, so that a page of a store of a million events answers in well under a second. Text
searches (executable, argument substring) run over the baseline, one row per TTPHash, not
over every event.

The SQL is written once for SQLite and PostgreSQL (``?`` placeholders, translated by the
store); LIKE is made case-insensitive the same way on both with ``lower()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.store import Store, display_columns, same_process
from common import ttphash

PAGE_ROWS = 50
TREE_EVENTS = 2000            # a host's process tree: at most this many events of the window
RELATIVES_FROM = 500          # parents and children of a hash: from its latest N events
SAMPLES = 10

# Listing pages: their filter and default order, and the columns a viewer may sort by.
LISTINGS = {
    "rare": ("b.hosts <= 1", "b.hosts ASC, b.count ASC"),
    "top": ("1 = 1", "b.count DESC"),
    "unlisted": ("a.reason IS NULL", "b.first_seen DESC"),
}
SORTABLE = {"first_seen": "b.first_seen", "last_seen": "b.last_seen", "count": "b.count",
            "hosts": "b.hosts", "executable": "b.executable"}
_ROW = ("SELECT b.ttphash, b.first_seen, b.last_seen, b.count, b.hosts, b.executable, "
        "b.command_line, b.user_name, b.os, b.sample, a.reason AS allowed "
        "FROM baseline b LEFT JOIN allow a ON a.ttphash = b.ttphash")


@dataclass
class Filters:
    """What a viewer narrowed a list to (empty: everything)."""

    host: str = ""
    user: str = ""
    executable: str = ""          # substring, any case
    argument: str = ""            # substring of the command line, any case
    os: str = ""                  # linux | windows
    prefix: str = ""              # of the TTPHash
    since: str = ""               # ISO 8601 UTC: seen at or after
    until: str = ""               # seen before

    def where(self, first_seen: bool = False) -> tuple[list[str], list[Any]]:
        """SQL conditions on baseline ``b``. The window: TTPHashes seen in it, or with
        ``first_seen`` those first seen in it (what is new)."""
        like = " ESCAPE '\\'"
        window = "first_seen" if first_seen else "last_seen"
        wanted = [
            (self.host, "EXISTS (SELECT 1 FROM baseline_hosts h WHERE h.host = ? "
                        "AND h.ttphash = b.ttphash)", self.host),
            (self.user, "b.user_name = ?", self.user),
            (self.executable, "lower(b.executable) LIKE ?" + like,
             f"%{_like(self.executable.lower())}%"),
            (self.argument, "lower(b.command_line) LIKE ?" + like,
             f"%{_like(self.argument.lower())}%"),
            (self.os, "b.os = ?", self.os),
            (self.prefix, "b.ttphash LIKE ?" + like, f"{_like(self.prefix.upper())}%"),
            (self.since, f"b.{window} >= ?", self.since),
            (self.until, "b.first_seen < ?", self.until),
        ]
        asked = [(clause, arg) for given, clause, arg in wanted if given]
        return [clause for clause, _ in asked], [arg for _, arg in asked]


def _like(text: str) -> str:
    """What a viewer typed, taken literally inside a LIKE pattern (ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass
class Page:
    rows: list[dict[str, Any]]
    number: int
    more: bool


@dataclass
class HashDetail:
    row: dict[str, Any]
    canonical: str | None
    hosts: list[str]
    samples: list[dict[str, Any]]
    parents: list[dict[str, Any]]
    children: list[dict[str, Any]]
    log: list[dict[str, Any]] = field(default_factory=list)
    sigma: list[dict[str, Any]] = field(default_factory=list)   # rules its events matched


@dataclass
class TreeNode:
    event: dict[str, Any]
    ts: str
    ttphash: str | None
    proc: str | None
    children: list["TreeNode"] = field(default_factory=list)


@dataclass
class HostView:
    host: str
    roots: list[TreeNode]
    events: int
    truncated: bool
    status: list[dict[str, Any]]        # sensor status events: lost counts over time
    gaps: list[dict[str, Any]]          # spool gaps of the sensors that sent this host's events


class Hunt:
    """The console's read side over one store, and the audited allow-list."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _rows(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        return self.store._rows(sql, tuple(args))

    def _display(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of stores from before the display columns: filled from their sample."""
        for row in rows:
            sample = row.pop("sample", None)
            if row.get("executable") is None and sample is not None:
                try:
                    event = self.store.event_doc(sample)
                except ValueError:
                    continue
                row["executable"], row["command_line"], row["user_name"], row["os"] = \
                    display_columns(event)
        return rows

    def _page(self, where: list[str], args: list[Any], order: str, page: int) -> Page:
        page = max(1, page)
        sql = (_ROW + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY {order}, b.ttphash LIMIT ? OFFSET ?")
        rows = self._rows(sql, args + [PAGE_ROWS + 1, (page - 1) * PAGE_ROWS])
        return Page(self._display(rows[:PAGE_ROWS]), page, len(rows) > PAGE_ROWS)

    # --- pages ---------------------------------------------------------------------------

    def today(self, filters: Filters, page: int = 1) -> Page:
        """TTPHashes first seen in the window (filters.since .. until), newest first."""
        where, args = filters.where(first_seen=True)
        return self._page(where, args, "b.first_seen DESC", page)

    def new_per_hour(self, filters: Filters) -> list[tuple[str, int]]:
        """New TTPHashes per hour of first sight in the window: (hour "YYYY-MM-DDTHH", n)."""
        where, args = filters.where(first_seen=True)
        rows = self._rows("SELECT substr(b.first_seen, 1, 13) AS hour, count(*) AS n "
                          "FROM baseline b" + (" WHERE " + " AND ".join(where) if where else "")
                          + " GROUP BY substr(b.first_seen, 1, 13) ORDER BY hour", args)
        return [(str(r["hour"]), int(r["n"])) for r in rows]

    def listing(self, kind: str, page: int = 1, sort: str = "", descending: bool = True,
                filters: Filters | None = None) -> Page:
        if kind not in LISTINGS:
            raise KeyError(kind)
        condition, order = LISTINGS[kind]
        if sort in SORTABLE:
            order = f"{SORTABLE[sort]} {'DESC' if descending else 'ASC'}"
        where, args = (filters or Filters()).where()
        return self._page([condition] + where, args, order, page)

    def search(self, filters: Filters, page: int = 1) -> Page:
        where, args = filters.where()
        return self._page(where, args, "b.last_seen DESC", page)

    def hosts(self) -> list[str]:
        return [str(r["host"]) for r in self._rows(
            "SELECT DISTINCT host FROM baseline_hosts ORDER BY host")]

    def detail(self, value: str) -> HashDetail | None:
        value = value.upper()
        rows = self._rows(_ROW.replace("SELECT ", "SELECT b.canonical, ", 1)
                          + " WHERE b.ttphash = ?", (value,))
        if not rows:
            return None
        row = rows[0]
        sample = self.store.event_doc(row["sample"])
        canonical = row.pop("canonical")
        row = self._display([row])[0]
        if canonical is None:
            try:
                canonical = ttphash.compute(sample).canonical.decode("utf-8")
            except ttphash.TTPHashError:
                canonical = None
        hosts = [str(r["host"]) for r in self._rows(
            "SELECT host FROM baseline_hosts WHERE ttphash = ? ORDER BY host", (value,))]
        samples = []
        # Its latest events (store.ttphash_events): the samples are the newest of them.
        recent, args = self.store.ttphash_events(value, RELATIVES_FROM)
        for r in self._rows("SELECT host, ts, doc, ttphash_check FROM "
                            f"({recent}) AS r ORDER BY ts DESC LIMIT ?", (*args, SAMPLES)):
            samples.append({"host": r["host"], "ts": r["ts"],
                            "event": self.store.event_doc(r["doc"], r["ttphash_check"])})
        if not samples:
            samples.append({"host": None, "ts": row["first_seen"], "event": sample})
        parents = self._rows(
            f"SELECT p.ttphash, count(*) AS n FROM ({recent}) c JOIN events p "
            f"ON p.host = c.host AND {same_process('p.proc', 'c.parent')} "
            "WHERE p.ttphash IS NOT NULL "
            "GROUP BY p.ttphash ORDER BY n DESC, p.ttphash", args)
        children = self._rows(
            f"SELECT c.ttphash, count(*) AS n FROM ({recent}) p JOIN events c "
            f"ON c.host = p.host AND {same_process('c.parent', 'p.proc')} "
            "WHERE c.ttphash IS NOT NULL "
            "GROUP BY c.ttphash ORDER BY n DESC, c.ttphash", args)
        log = self._rows("SELECT action, reason, who, ts FROM allow_log WHERE ttphash = ? "
                         "ORDER BY ts DESC", (value,))
        sigma = self._rows("SELECT title, level, rule, count(*) AS n, max(ts) AS last "
                           "FROM sigma_matches WHERE ttphash = ? GROUP BY title, level, rule "
                           "ORDER BY n DESC, title", (value,))
        return HashDetail(row, canonical, hosts, samples, parents, children, log, sigma)

    def sigma(self, level: str, rule: str, host: str, since: str, page: int = 1) -> Page:
        """Sigma matches, newest first, narrowed as `hunt sigma` narrows them."""
        page = max(1, page)
        rows = self.store.sigma_matches(level or None, rule or None, host or None,
                                        since or None, PAGE_ROWS + 1, (page - 1) * PAGE_ROWS)
        return Page(rows[:PAGE_ROWS], page, len(rows) > PAGE_ROWS)

    def host(self, name: str, since: str, until: str) -> HostView:
        """The host's process tree over the window: each exec under the exec of its parent
        when that is in the window too, else at the top."""
        rows = self._rows("SELECT ts, action, ttphash, proc, parent, doc, ttphash_check, "
                          "spool FROM events "
                          "WHERE host = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                          (name, since, until, TREE_EVENTS + 1))
        truncated = len(rows) > TREE_EVENTS
        rows = rows[:TREE_EVENTS]
        nodes: dict[str, TreeNode] = {}
        roots: list[TreeNode] = []
        status: list[dict[str, Any]] = []
        spools = set()
        for r in rows:
            spools.add(r["spool"])
            event = self.store.event_doc(r["doc"], r["ttphash_check"])
            if r["action"] == "sensor_status":
                status.append({"ts": r["ts"], "event": event})
                continue
            if r["action"] != "process_create":
                continue
            node = TreeNode(event, str(r["ts"]), r["ttphash"], r["proc"])
            parent = nodes.get(r["parent"]) if r["parent"] else None
            (parent.children if parent is not None else roots).append(node)
            if r["proc"]:
                nodes[r["proc"]] = node
        gaps = []
        for spool in sorted(spools):
            gaps += self._rows("SELECT * FROM gaps WHERE spool = ? ORDER BY ts", (spool,))
        return HostView(name, roots, len(rows), truncated, status, gaps)

    # --- the allow-list, audited ---------------------------------------------------------

    def allow(self, value: str, reason: str, who: str) -> None:
        self.store.allow(value, reason, who)

    def revoke(self, value: str, reason: str, who: str) -> None:
        self.store.disallow(value, reason, who)

    def known(self, value: str) -> bool:
        """Whether ``value`` is a TTPHash of the baseline."""
        return bool(self._rows("SELECT 1 AS found FROM baseline WHERE ttphash = ?",
                               (value.upper(),)))
