"""The collector's store: events deduplicated by (spool, sequence), and the TTPHash baseline.

SQLite by default (the standard library's sqlite3), PostgreSQL when given a
``postgresql://`` URL (psycopg 3). One set of SQL statements serves both: they are written
for SQLite and translated for PostgreSQL (placeholders, ``INSERT OR IGNORE`` ->
``ON CONFLICT DO NOTHING``, two-argument ``max``/``min`` -> ``GREATEST``/``LEAST``). Ingesting the same frame twice changes nothing: events are keyed by the
spool id and sequence number the sensor's spool gave them, and the baseline counts an event
only when it was new.

Tables::

    events(spool, seq, sensor, host, ts, action, ttphash, complete, doc)   key (spool, seq)
    baseline(ttphash, first_seen, last_seen, count, hosts, sample, canonical)
    baseline_hosts(ttphash, host)
    gaps(spool, sensor, first_seq, end_seq, events, reason, ts)
    allow(ttphash, reason, added)
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from common import ttphash, wire
from common.schema import ACTION_PROCESS_CREATE, Event, get_path, utc_timestamp

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    spool TEXT NOT NULL, seq INTEGER NOT NULL, sensor TEXT NOT NULL, host TEXT,
    ts TEXT, action TEXT, ttphash TEXT, complete INTEGER, doc BLOB NOT NULL,
    PRIMARY KEY (spool, seq));
CREATE INDEX IF NOT EXISTS events_ttphash ON events (ttphash);
CREATE TABLE IF NOT EXISTS baseline (
    ttphash TEXT PRIMARY KEY, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
    count INTEGER NOT NULL, hosts INTEGER NOT NULL, sample BLOB NOT NULL, canonical TEXT);
CREATE TABLE IF NOT EXISTS baseline_hosts (
    ttphash TEXT NOT NULL, host TEXT NOT NULL, PRIMARY KEY (ttphash, host));
CREATE TABLE IF NOT EXISTS gaps (
    spool TEXT NOT NULL, sensor TEXT NOT NULL, first_seq INTEGER NOT NULL,
    end_seq INTEGER NOT NULL, events INTEGER NOT NULL, reason TEXT, ts TEXT,
    PRIMARY KEY (spool, first_seq, end_seq));
CREATE TABLE IF NOT EXISTS allow (
    ttphash TEXT PRIMARY KEY, reason TEXT NOT NULL, added TEXT NOT NULL);
"""


@dataclass
class IngestResult:
    new: int = 0
    duplicates: int = 0
    gaps: int = 0


_IGNORE = re.compile(r"INSERT OR IGNORE INTO (\w+) (VALUES \([?,]+\))")
_REPLACE_ALLOW = "INSERT OR REPLACE INTO allow VALUES (?,?,?)"


def _postgres_sql(sql: str) -> str:
    sql = _IGNORE.sub(r"INSERT INTO \1 \2 ON CONFLICT DO NOTHING", sql)
    if sql == _REPLACE_ALLOW:
        sql = ("INSERT INTO allow VALUES (?,?,?) ON CONFLICT (ttphash) DO UPDATE SET "
               "reason = EXCLUDED.reason, added = EXCLUDED.added")
    sql = sql.replace("max(last_seen, ?)", "GREATEST(last_seen, ?)").replace(
        "min(first_seen, ?)", "LEAST(first_seen, ?)")
    return sql.replace("?", "%s")


class Store:
    """A store in SQLite (a path) or PostgreSQL (a ``postgresql://`` URL). One writer at a
    time; readers (hunt) may run beside it."""

    def __init__(self, location: str) -> None:
        self.path = location
        self.postgres = location.startswith(("postgresql://", "postgres://"))
        if self.postgres:
            import psycopg
            self.db: Any = psycopg.connect(location, autocommit=True)
            for statement in SCHEMA.replace("BLOB", "BYTEA").replace(
                    "INTEGER", "BIGINT").split(";"):
                if statement.strip():
                    self.db.execute(statement)
            return
        directory = os.path.dirname(os.path.abspath(location))
        os.makedirs(directory, mode=0o750, exist_ok=True)
        fd = os.open(location, os.O_RDWR | os.O_CREAT, 0o600)  # events are sensitive: 0600
        os.close(fd)
        # Shared by the collector's connection threads, which serialize their use of it.
        self.db = sqlite3.connect(location, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self.db.execute(_postgres_sql(sql) if self.postgres else sql, args)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        if self.postgres:
            with self.db.transaction():
                yield
        else:
            with self.db:
                yield

    def close(self) -> None:
        self.db.close()

    def ingest(self, spool: str, first_seq: int, events: Iterable[Event],
               sensor: str) -> IngestResult:
        """Store a frame's events in one transaction; return how many were new."""
        result = IngestResult()
        with self._transaction():
            for offset, event in enumerate(events):
                seq = first_seq + offset
                action = get_path(event, "event.action")
                value = get_path(event, "ttphash.value")
                complete = get_path(event, "ttphash.complete")
                host = get_path(event, "host.name")
                ts = event.get("@timestamp")
                cursor = self._execute(
                    "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?)",
                    (spool, seq, sensor, host, ts, action, value,
                     None if complete is None else int(bool(complete)), wire.pack_event(event)))
                if cursor.rowcount == 0:
                    result.duplicates += 1
                    continue
                result.new += 1
                if action == ACTION_PROCESS_CREATE and value:
                    self._baseline(event, value, host or sensor, ts or utc_timestamp())
                elif action == "spool_gap":
                    self._gap(spool, sensor, event)
                    result.gaps += 1
        return result

    def _baseline(self, event: Event, value: str, host: str, ts: str) -> None:
        updated = self._execute(
            "UPDATE baseline SET last_seen = max(last_seen, ?), first_seen = min(first_seen, ?),"
            " count = count + 1 WHERE ttphash = ?", (ts, ts, value)).rowcount
        if not updated:
            try:
                canonical = ttphash.compute(event).canonical.decode("utf-8")
            except ttphash.TTPHashError:
                canonical = None
            self._execute("INSERT INTO baseline VALUES (?,?,?,?,?,?,?)",
                            (value, ts, ts, 1, 0, wire.pack_event(event), canonical))
        if self._execute("INSERT OR IGNORE INTO baseline_hosts VALUES (?,?)",
                           (value, host)).rowcount:
            self._execute("UPDATE baseline SET hosts = hosts + 1 WHERE ttphash = ?",
                            (value,))

    def _gap(self, spool: str, sensor: str, event: Event) -> None:
        gap = get_path(event, "ttpsensor.spool_gap") or {}
        self._execute("INSERT OR IGNORE INTO gaps VALUES (?,?,?,?,?,?,?)",
                        (spool, sensor, gap.get("first_seq", 0), gap.get("end_seq", 0),
                         gap.get("events", 0), gap.get("reason"), event.get("@timestamp")))

    # --- hunting ----------------------------------------------------------------------------

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cursor = self._execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    _SUMMARY = ("SELECT b.ttphash, b.first_seen, b.last_seen, b.count, b.hosts, "
                "a.reason AS allowed FROM baseline b LEFT JOIN allow a USING (ttphash)")

    def new_since(self, since: str) -> list[dict[str, Any]]:
        return self._rows(self._SUMMARY + " WHERE b.first_seen >= ? ORDER BY b.first_seen",
                          (since,))

    def rare(self, max_hosts: int) -> list[dict[str, Any]]:
        return self._rows(self._SUMMARY + " WHERE b.hosts <= ? ORDER BY b.hosts, b.count",
                          (max_hosts,))

    def top(self, limit: int) -> list[dict[str, Any]]:
        return self._rows(self._SUMMARY + " ORDER BY b.count DESC LIMIT ?", (limit,))

    def not_allowed(self) -> list[dict[str, Any]]:
        return self._rows(self._SUMMARY + " WHERE a.reason IS NULL ORDER BY b.first_seen")

    def show(self, value: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM baseline WHERE ttphash = ?", (value.upper(),))
        if not rows:
            return None
        row = rows[0]
        row["sample"] = wire.unpack_event(row["sample"])
        row["host_names"] = [r["host"] for r in self._rows(
            "SELECT host FROM baseline_hosts WHERE ttphash = ? ORDER BY host", (row["ttphash"],))]
        allowed = self._rows("SELECT reason FROM allow WHERE ttphash = ?", (row["ttphash"],))
        row["allowed"] = allowed[0]["reason"] if allowed else None
        return row

    def allow(self, value: str, reason: str) -> None:
        with self._transaction():
            self._execute(_REPLACE_ALLOW,
                            (value.upper(), reason, utc_timestamp(time.time())))

    def disallow(self, value: str) -> bool:
        with self._transaction():
            return self._execute("DELETE FROM allow WHERE ttphash = ?",
                                   (value.upper(),)).rowcount > 0

    def allowed(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM allow ORDER BY added")

    def gaps(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM gaps ORDER BY ts")

    def count_events(self) -> int:
        return int(self._execute("SELECT count(*) FROM events").fetchone()[0])

    def seqs(self) -> list[int]:
        return [int(r[0]) for r in self._execute("SELECT seq FROM events ORDER BY seq")]
