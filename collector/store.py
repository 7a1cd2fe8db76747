"""The collector's store: events deduplicated by (spool, sequence), and the TTPHash baseline.

SQLite by default (the standard library's sqlite3), PostgreSQL when given a
``postgresql://`` URL (psycopg 3). One set of SQL statements serves both: they are written
for SQLite and translated for PostgreSQL (placeholders, ``INSERT OR IGNORE`` ->
``ON CONFLICT DO NOTHING``, two-argument ``max``/``min`` -> ``GREATEST``/``LEAST``). Ingesting the same frame twice changes nothing: events are keyed by the
spool id and sequence number the sensor's spool gave them, and the baseline counts an event
only when it was new.

Tables::

    events(spool, seq, sensor, host, ts, action, ttphash, complete, doc, ttphash_check,
           proc, parent)                                                  key (spool, seq)
                                          a new SQLite store's also (id, prev): see "chained"
    spools(spool, sensor, since)      which sensor (certificate name) owns each spool id
    baseline(ttphash, first_seen, last_seen, count, hosts, sample, canonical, executable,
             command_line, user_name, os)  sample: a document, as events.doc
                                          a chained store's also last_event
    baseline_hosts(ttphash, host)
    gaps(spool, sensor, first_seq, end_seq, events, reason, ts)
    allow(ttphash, reason, added)
    allow_log(ttphash, action, reason, who, ts)
    sigma_matches(spool, seq, rule, title, level, tags, host, ts, ttphash, allowed)
                                          key (spool, seq, rule): a Sigma rule an event matched
                                          at ingest; allowed: its TTPHash was allow-listed then
    doc_dictionaries(id, dictionary, samples, trained)
                                          the zstd dictionaries of the events' documents
                                          (collector/documents.py)

A new SQLite store is *chained*: its events have an integer ``id`` (the insertion order) and
each execution stored links to the one stored before it with the same TTPHash (``prev``), the
newest being the baseline's ``last_event``. That chain, not an index by TTPHash, finds a
TTPHash's latest events (``ttphash_events``). An index led by the TTPHash has its entries at as
many places as a commit has TTPHashes, and a commit rewrote one of its pages for each: in a
store of 300,000 events, that was a third of ingest. A store made before, and PostgreSQL,
keep the index ``events_hash_ts`` and find events through it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import (Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Protocol,
                    Sequence, TypeVar)

from collector.documents import TRAIN_DOCUMENTS, ZSTD_MAGIC, Documents
from collector.documents import train as documents_train
from common import ttphash
from common.ownership import open_private
from common.percent import percent_encode
from common.schema import ACTION_PROCESS_CREATE, Event, get_path, utc_timestamp

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    spool TEXT NOT NULL, seq INTEGER NOT NULL, sensor TEXT NOT NULL, host TEXT,
    ts TEXT, action TEXT, ttphash TEXT, complete INTEGER, doc BLOB NOT NULL,
    ttphash_check TEXT, PRIMARY KEY (spool, seq));
CREATE TABLE IF NOT EXISTS baseline (
    ttphash TEXT PRIMARY KEY, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
    count INTEGER NOT NULL, hosts INTEGER NOT NULL, sample BLOB NOT NULL, canonical TEXT);
CREATE TABLE IF NOT EXISTS baseline_hosts (
    ttphash TEXT NOT NULL, host TEXT NOT NULL, PRIMARY KEY (ttphash, host));
CREATE TABLE IF NOT EXISTS gaps (
    spool TEXT NOT NULL, sensor TEXT NOT NULL, first_seq INTEGER NOT NULL,
    end_seq INTEGER NOT NULL, events INTEGER NOT NULL, reason TEXT, ts TEXT,
    PRIMARY KEY (spool, first_seq, end_seq));
CREATE TABLE IF NOT EXISTS spools (
    spool TEXT PRIMARY KEY, sensor TEXT NOT NULL, since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS allow (
    ttphash TEXT PRIMARY KEY, reason TEXT NOT NULL, added TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS allow_log (
    ttphash TEXT NOT NULL, action TEXT NOT NULL, reason TEXT, who TEXT NOT NULL,
    ts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sigma_matches (
    spool TEXT NOT NULL, seq INTEGER NOT NULL, rule TEXT NOT NULL, title TEXT NOT NULL,
    level TEXT, tags TEXT, host TEXT, ts TEXT, ttphash TEXT, allowed INTEGER NOT NULL,
    PRIMARY KEY (spool, seq, rule));
CREATE TABLE IF NOT EXISTS doc_dictionaries (
    id INTEGER PRIMARY KEY, dictionary BLOB NOT NULL, samples INTEGER NOT NULL,
    trained TEXT NOT NULL);
"""

# A new SQLite store's events table (created before SCHEMA's, which then leaves it alone): the
# same columns, with proc and parent from the start, and the chain's id and prev (see the
# module's docstring). id is an INTEGER PRIMARY KEY, which VACUUM keeps (a plain rowid it may
# renumber).
CHAINED_EVENTS = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, spool TEXT NOT NULL, seq INTEGER NOT NULL, sensor TEXT NOT NULL,
    host TEXT, ts TEXT, action TEXT, ttphash TEXT, complete INTEGER, doc BLOB NOT NULL,
    ttphash_check TEXT, proc TEXT, parent TEXT, prev INTEGER, UNIQUE (spool, seq));
"""

# Columns and indexes that came after the first stores (the console's questions): added to a
# store that lacks them when it is opened for writing. proc and parent are a process's key,
# "PID@START", and its parent's: what links an exec to the exec of its parent.
ADDED_COLUMNS = (("events", "proc", "TEXT"), ("events", "parent", "TEXT"),
                 ("baseline", "executable", "TEXT"), ("baseline", "command_line", "TEXT"),
                 ("baseline", "user_name", "TEXT"), ("baseline", "os", "TEXT"))
INDEXES = """
CREATE INDEX IF NOT EXISTS events_host_ts ON events (host, ts);
CREATE INDEX IF NOT EXISTS events_hash_ts ON events (substr(ttphash, 1, 16), ts);
CREATE INDEX IF NOT EXISTS baseline_first ON baseline (first_seen);
CREATE INDEX IF NOT EXISTS baseline_last ON baseline (last_seen);
CREATE INDEX IF NOT EXISTS baseline_count ON baseline (count);
CREATE INDEX IF NOT EXISTS baseline_hosts_n ON baseline (hosts, count);
CREATE INDEX IF NOT EXISTS baseline_hosts_host ON baseline_hosts (host, ttphash);
CREATE INDEX IF NOT EXISTS allow_log_hash ON allow_log (ttphash, ts);
CREATE INDEX IF NOT EXISTS sigma_matches_ts ON sigma_matches (ts);
CREATE INDEX IF NOT EXISTS sigma_matches_hash ON sigma_matches (ttphash, ts);
"""
# A process's key and its parent's ("PID@START") sort by PID: in a B-tree on (host, key)
# each new event lands on a random leaf, and a grown store's commits wrote most of those
# indexes' pages again. SQLite orders them by the start first (ltrim takes the PID off, in
# SQLite and PostgreSQL alike), so new keys go where the newest are; the console's joins say
# so (same_process). PostgreSQL takes a hash index of the process's key alone, a quarter of
# the size: the console only asks for equality (host is checked on the rows), and each key is
# one exec's. Not of the parent's key: a parent has many children, and a hash index puts
# equal keys in one bucket, whose chain of overflow pages each insert walks; into a store of
# 100,000 events of the fleet mix, 16 frames a commit, two rounds: 51.2 and 53.2 µs an event
# with it, 25.3 and 21.7 with a B-tree (scratch harness /tmp/s82/pgdrop.py). A store made
# before keeps the indexes it has (same names), which the same joins use.
PROCESS_KEY_INDEXES = {
    "sqlite": (
        "CREATE INDEX IF NOT EXISTS events_proc ON events "
        "(host, ltrim(proc, '0123456789'), proc)",
        "CREATE INDEX IF NOT EXISTS events_parent ON events "
        "(host, ltrim(parent, '0123456789'), parent)"),
    "postgresql": (
        "CREATE INDEX IF NOT EXISTS events_proc ON events USING hash (proc)",
        "CREATE INDEX IF NOT EXISTS events_parent ON events (parent)"),
}


# Events are found by TTPHash through its first 16 characters (64 of its 256 bits): the full
# 64 made events_hash_ts the costliest index to keep, its keys landing at a fleet's thousands
# of insertion points (bench ingest's fleet, 16 frames a commit, scratch harness: into a
# store of 100,000 events 26.8 against 29.7 µs an event, into a fresh one 0.4-1.4 µs less;
# 897 against 952 bytes of store an event). A query by TTPHash says the prefix too
# (same_ttphash); a store made before keeps its index on the whole value (same name), which
# the query also uses.
TTPHASH_PREFIX = 16


def same_ttphash(column: str, postgres: bool) -> str:
    """SQL: ``column`` is the TTPHash given as the next two parameters (the value twice),
    said also of its first TTPHASH_PREFIX characters, so that events_hash_ts serves the
    look-up in a new store (the prefix) and in an old one (the whole value). SQLite would
    put the value in the column's place inside the prefix's expression (constant
    propagation), which then no longer names the index's; in unlikely() (a planner's hint,
    no cost) the equality stays whole. PostgreSQL has no unlikely() and needs none."""
    prefix = f"substr({column}, 1, {TTPHASH_PREFIX}) = substr(?, 1, {TTPHASH_PREFIX})"
    return f"{prefix} AND {column} = ?" if postgres else f"{prefix} AND unlikely({column} = ?)"


def same_process(key: str, other: str) -> str:
    """SQL: the process keys ``key`` and ``other`` (columns) are equal, said also of their
    start (the key without its PID), which is how SQLite's indexes of them are ordered."""
    return (f"{key} = {other} AND "
            f"ltrim({key}, '0123456789') = ltrim({other}, '0123456789')")


_EMPTY: Mapping[str, Any] = MappingProxyType({})
T = TypeVar("T")

# How much of a SQLite store the writer maps (SQLite takes at most its build's limit).
MMAP_BYTES = 2 << 30

# The most events one transaction of Store.ingest_frames is given (16 frames of 500): past a
# few frames the pages they share are already written once, and a set stays one bounded
# piece of memory and of WAL.
COMMIT_EVENTS = 8000


def commit_sets(items: Iterable[T], size: Callable[[T], int]) -> Iterator[list[T]]:
    """Consecutive ``items`` in sets of at most COMMIT_EVENTS events (``size`` of each; one
    larger than that is a set of its own)."""
    chunk: list[T] = []
    count = 0
    for item in items:
        events = size(item)
        if chunk and count + events > COMMIT_EVENTS:
            yield chunk
            chunk, count = [], 0
        chunk.append(item)
        count += events
    if chunk:
        yield chunk


def process_key(process: Mapping[str, Any]) -> str | None:
    """"PID@START" of a process map: a process on its host (pids are reused, starts differ);
    None without a pid."""
    pid = process.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    start = process.get("start")
    return f"{pid}@{start if isinstance(start, str) else ''}"


def display_text(value: Any) -> str | None:
    """A value as display text: non-UTF-8 bytes in percent form, argument lists joined."""
    if isinstance(value, bytes):
        return percent_encode(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(t for t in map(display_text, value) if t is not None)
    return None


def display_columns(event: Event) -> tuple[str | None, str | None, str | None, str | None]:
    """What the console shows and filters by for a TTPHash, from its sample event:
    executable, command line (or the arguments), user name, OS."""
    process = _member(event, "process")
    user = _member(process, "user")
    command = process.get("command_line")
    return (display_text(process.get("executable")),
            display_text(command if command is not None else process.get("args")),
            display_text(user.get("name")),
            display_text(_member(_member(event, "host"), "os").get("type")))


def _member(event: Event, name: str) -> Mapping[str, Any]:
    """``event[name]`` if it is a map, else an empty one (events from a wire are untrusted)."""
    value = event.get(name)
    return value if isinstance(value, dict) else _EMPTY


def event_rows(spool: str, first_seq: int, events: Sequence[Event], sensor: str,
               documents: Sequence[bytes]) -> list[tuple[Any, ...]]:
    """A frame's rows of the events table (EVENT_COLUMNS), each followed by its event.
    ``documents``: each event's stored document (Documents.pack_many)."""
    return list(iter_event_rows(spool, first_seq, events, sensor, documents))


def iter_event_rows(spool: str, first_seq: int, events: Sequence[Event], sensor: str,
                    documents: Sequence[bytes]) -> Iterator[tuple[Any, ...]]:
    """event_rows one at a time, each made when it is asked for."""
    seq = first_seq
    for event, document in zip(events, documents, strict=True):
        # The columns, read with plain look-ups (get_path per field was a fifth of ingest).
        fingerprint, host, header, process = (event.get("ttphash"), event.get("host"),
                                              event.get("event"), event.get("process"))
        if not isinstance(fingerprint, dict):
            fingerprint = _EMPTY
        if not isinstance(process, dict):
            process = _EMPTY
        parent = process.get("parent")
        complete = fingerprint.get("complete")
        yield (spool, seq, sensor,
               host.get("name") if isinstance(host, dict) else None,
               event.get("@timestamp"),
               header.get("action") if isinstance(header, dict) else None,
               fingerprint.get("value"),
               None if complete is None else int(bool(complete)),
               document, fingerprint.get("check"),
               process_key(process),
               process_key(parent) if isinstance(parent, dict) else None, event)
        seq += 1


class Incoming(NamedTuple):
    """A frame for :meth:`Store.ingest_frames`: ``ingest``'s arguments."""
    spool: str
    first_seq: int
    events: Sequence[Event]
    sensor: str
    documents: Sequence[Any] | None = None
    canonical: Mapping[str, bytes] | None = None


@dataclass
class _Chain:
    """A transaction's links of events by TTPHash, in a chained store: the id the next event
    stored gets, each TTPHash's newest event so far (None: it has none stored), and which of
    them have a baseline row."""
    next_id: int
    heads: dict[str, int | None] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)


# TTPHashes, and (TTPHash, host) pairs, a store remembers having in its baseline (each set
# about 25 MB when full: a pair is some 250 bytes of Python objects).
MAX_KNOWN = 100_000


class KnownBaseline:
    """What this store has committed to the baseline: TTPHashes with a row, and (TTPHash,
    host) pairs in ``baseline_hosts``. A fleet's frame sets repeat nearly all of both, and
    looking them up again at every set was a fifth of PostgreSQL's baseline time (1,500
    values an ``IN`` list; a tenth of its ingest of frames one a commit, docs/overhead.md).
    Neither table loses rows, so what is known once stays true, and other writers only add;
    each set is bounded and forgotten whole when full (a miss costs a look-up). What a
    transaction learns counts only once it commits (``learn``; Store._transaction then
    ``keep``s or ``drop``s it)."""

    def __init__(self, limit: int = MAX_KNOWN) -> None:
        self.limit = limit
        self.hashes: set[str] = set()
        self.pairs: set[tuple[str, str]] = set()
        self._learned: list[tuple[list[str], list[tuple[str, str]]]] = []

    def learn(self, hashes: list[str], pairs: list[tuple[str, str]]) -> None:
        """Rows the open transaction stored or found stored."""
        self._learned.append((hashes, pairs))

    def keep(self) -> None:
        """The transaction committed: what it learned is known."""
        for hashes, pairs in self._learned:
            if len(self.hashes) + len(hashes) > self.limit:
                self.hashes.clear()
            if len(self.pairs) + len(pairs) > self.limit:
                self.pairs.clear()
            self.hashes.update(hashes)
            self.pairs.update(pairs)
        self._learned.clear()

    def drop(self) -> None:
        """The transaction was undone: what it learned may not be stored."""
        self._learned.clear()


@dataclass
class IngestResult:
    new: int = 0
    duplicates: int = 0
    gaps: int = 0
    matches: int = 0     # Sigma rule matches stored


class MatchedRule(Protocol):
    """What the store keeps of a Sigma rule an event matched (collector.sigma.rules)."""
    id: str
    title: str
    level: str | None
    tags: list[str]


class Matcher(Protocol):
    """Rules evaluated on each new process creation at ingest (collector.sigma.rules.RuleSet).
    ``errors``: evaluations that raised, by rule (taken as no match)."""

    errors: dict[str, int]

    def match(self, event: Event) -> Sequence[MatchedRule]: ...


# For the statements read back with RETURNING: which parameter is the key returned.
EVENT_COLUMNS = ("spool, seq, sensor, host, ts, action, ttphash, complete, doc, ttphash_check, "
                 "proc, parent")
_INSERT_EVENTS = (f"INSERT OR IGNORE INTO events ({EVENT_COLUMNS}) "
                  "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) RETURNING seq")
_INSERT_CHAINED = (f"INSERT OR IGNORE INTO events (id, prev, {EVENT_COLUMNS}) "
                   "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_INSERT_HOSTS = "INSERT OR IGNORE INTO baseline_hosts VALUES (?,?) RETURNING ttphash"
_KEY_INDEX = {_INSERT_EVENTS: 1, _INSERT_HOSTS: 0}
# Their PostgreSQL types, for a binary COPY (the documents go as they are, not as hex text).
_EVENT_TYPES = ["text", "int8", "text", "text", "text", "text", "text", "int8", "bytea", "text",
                "text", "text"]
EVENT_FIELDS = 12   # a row's columns; the event itself follows them
_BASELINE_COLUMNS = ("ttphash, first_seen, last_seen, count, hosts, sample, canonical, "
                     "executable, command_line, user_name, os")

_IGNORE = re.compile(r"INSERT OR IGNORE INTO (\w+) (VALUES \([?,]+\))")
_REPLACE_ALLOW = "INSERT OR REPLACE INTO allow VALUES (?,?,?)"


def _uri_path(path: str) -> str:
    """A file path as the path of a SQLite ``file:`` URI."""
    from urllib.parse import quote
    return quote(os.path.abspath(path))


def _postgres_sql(sql: str) -> str:
    sql = _IGNORE.sub(r"INSERT INTO \1 \2 ON CONFLICT DO NOTHING", sql)
    if sql == _REPLACE_ALLOW:
        sql = ("INSERT INTO allow VALUES (?,?,?) ON CONFLICT (ttphash) DO UPDATE SET "
               "reason = EXCLUDED.reason, added = EXCLUDED.added")
    sql = sql.replace("max(last_seen, ?)", "GREATEST(last_seen, ?)").replace(
        "min(first_seen, ?)", "LEAST(first_seen, ?)")
    return sql.replace("?", "%s")


SIGMA_LEVELS = ["informational", "low", "medium", "high", "critical"]


def shown_location(location: str) -> str:
    """A store's location as it may be shown in a message: a URL without its password
    (given in the URL's user part or as a ``password`` parameter)."""
    from urllib.parse import parse_qsl, urlsplit
    if "://" not in location:
        return location
    parts = urlsplit(location)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = "&".join(f"{k}=***" if k == "password" else f"{k}={v}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


class StoreError(Exception):
    """The store cannot be opened as asked (not a ttpsensor store, not a database)."""


class Store:
    """A store in SQLite (a path) or PostgreSQL (a ``postgresql://`` URL). One writer at a
    time; readers (hunt) may run beside it, and with ``readonly`` never write (no schema, no
    migration, a SQLite file opened read-only)."""

    def __init__(self, location: str, readonly: bool = False,
                 rules: Matcher | None = None, compress_documents: bool = True) -> None:
        """``compress_documents``: once the store holds TRAIN_DOCUMENTS plain documents, train
        a zstd dictionary on them and compress every document stored after it
        (collector/documents.py); off, documents are stored as plain msgpack. Either way,
        documents of both kinds are read back."""
        self.path = location
        self.readonly = readonly
        self.rules = rules
        self.postgres = location.startswith(("postgresql://", "postgres://"))
        self._staging = False   # PostgreSQL: the session's COPY staging table exists
        self.chained = False    # SQLite: its events are linked by TTPHash (the docstring)
        self.known = KnownBaseline()  # (before _open: a migration is a transaction)
        self._open(location, readonly)
        self.documents = Documents(self._dictionaries,
                                   compress=compress_documents and not readonly)
        # Plain documents stored, counted up to TRAIN_DOCUMENTS (None: not counted yet).
        self._plain_documents: int | None = None

    def _open(self, location: str, readonly: bool) -> None:
        if self.postgres:
            import psycopg
            try:
                self.db: Any = psycopg.connect(location, autocommit=True)
            except psycopg.OperationalError as exc:
                raise StoreError(f"cannot open the PostgreSQL store "
                                 f"{shown_location(location)}: {exc}") from exc
            if readonly:
                self.db.read_only = True
            else:
                migrate = self._needs_migration()
                for statement in SCHEMA.replace("BLOB", "BYTEA").replace(
                        "INTEGER", "BIGINT").split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                if migrate:
                    self._migrate()
                self._add_columns_and_indexes()
            self._check_store()
            return
        if readonly:
            self.db = sqlite3.connect(f"file:{_uri_path(location)}?mode=ro", uri=True,
                                      timeout=30, check_same_thread=False)
            self._check_store()
            self.chained = self._answers("SELECT id, prev FROM events WHERE 0 = 1")
            return
        directory = os.path.dirname(os.path.abspath(location))
        os.makedirs(directory, mode=0o750, exist_ok=True)
        # Events are sensitive: the store is our own 0600 file, never written through a link
        # (SQLite gives its -wal and -shm files the database's mode).
        os.close(open_private(location))
        # Shared by the collector's connection threads, which serialize their use of it.
        self.db = sqlite3.connect(location, timeout=30, check_same_thread=False)
        try:
            # 8 KiB pages for a new store (an existing one keeps its own): fewer pages for
            # the events' five indexes to split and a commit to write. bench ingest's fleet
            # mix against 4 KiB, three rounds each: 19.4-19.7 against 21.6-22.0 µs/event
            # (16 frames a commit), 31.4-32.0 against 33.0-33.3 (one); into a store of
            # 100,000 events 27.1-27.3 against 29.0-29.4, and 49.8-50.2 against 50.0-50.4.
            # 16 KiB was faster still with 16 frames a commit (18.2-18.4) but slower with
            # one into the larger store (53.3-54.0).
            self.db.execute("PRAGMA page_size=8192")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA cache_size=-65536")
            # A checkpoint (which copies the WAL into the database and syncs it) every 40 MB of
            # WAL instead of 4: a frame of 500 events writes about 1 MB, so the default made
            # every fourth commit a checkpoint. Ingest of the fleet mix: 54-57 against 47-50
            # µs/event, alternating.
            self.db.execute("PRAGMA wal_autocheckpoint=10000")
            # Pages the cache lacks read from a map of the file instead of a read() each: a
            # store larger than the cache reads index pages at every commit. The fleet mix
            # into a chained store of 300,000 events (207 MiB), 16 frames a commit, three
            # rounds in turn: 27.9 against 34.4 µs an event (CPU 23.0 against 30.0); into a
            # fresh store no difference. SQLite caps the map (2 GiB in Debian's build); it is
            # the page cache's memory, shared and given back under pressure, not the heap's.
            self.db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            migrate = self._needs_migration()
            self.db.executescript(CHAINED_EVENTS + SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{location} is not a ttpsensor store: {exc}") from exc
        if migrate:
            self._migrate()
        self.chained = self._answers("SELECT id, prev FROM events WHERE 0 = 1")
        self._add_columns_and_indexes()

    def _add_columns_and_indexes(self) -> None:
        """The columns of ADDED_COLUMNS a store lacks (older stores: left NULL, the console
        falls back to the sample), and the indexes the console's pages use."""
        for table, column, kind in ADDED_COLUMNS:
            if not self._answers(f"SELECT {column} FROM {table} WHERE 0 = 1"):
                self._execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if self.chained and not self._answers("SELECT last_event FROM baseline WHERE 0 = 1"):
            self._execute("ALTER TABLE baseline ADD COLUMN last_event INTEGER")
        backend = "postgresql" if self.postgres else "sqlite"
        for statement in (*INDEXES.split(";"), *PROCESS_KEY_INDEXES[backend]):
            # A chained store finds a TTPHash's events by its chain, without the index.
            if statement.strip() and not (self.chained and " events_hash_ts " in statement):
                self._execute(statement)
        # (ttphash, ts) serves every look-up by TTPHash: one index less to keep at ingest.
        self._execute("DROP INDEX IF EXISTS events_ttphash")
        if not self.postgres:
            self.db.commit()

    def _answers(self, probe: str) -> bool:
        """Whether the store can run ``probe`` (a table or column it may lack); a failed
        probe leaves nothing behind (PostgreSQL runs in autocommit)."""
        try:
            self._execute(probe).fetchall()
        except Exception:  # noqa: BLE001 - sqlite3's and psycopg's errors alike
            return False
        return True

    def _needs_migration(self) -> bool:
        """An events table without the ``ttphash_check`` column: a store from before issue 16."""
        return self._answers("SELECT spool FROM events WHERE 0 = 1") and not self._answers(
            "SELECT ttphash_check FROM events WHERE 0 = 1")

    def _migrate(self) -> None:
        """Bring a store from before issue 16 up: the column for the collector's TTPHash check,
        and the owner of every spool already stored (its first sensor), once."""
        with self._transaction():
            self.db.execute("ALTER TABLE events ADD COLUMN ttphash_check TEXT")
            self.db.execute("INSERT INTO spools SELECT spool, min(sensor), "
                            "coalesce(min(ts), '') FROM events GROUP BY spool "
                            "ON CONFLICT DO NOTHING")

    def _check_store(self) -> None:
        try:
            self._execute("SELECT count(*) FROM baseline WHERE 0 = 1").fetchall()
        except Exception as exc:  # noqa: BLE001 - sqlite3 and psycopg errors alike
            self.db.close()
            raise StoreError(f"{self.path} is not a ttpsensor store "
                             f"({type(exc).__name__}: {exc})") from exc

    def claim_spool(self, spool: str, sensor: str) -> str:
        """Bind ``spool`` to ``sensor`` if nobody holds it yet; return its owner (``sensor``
        itself unless another sensor claimed the spool id first)."""
        with self._transaction():
            self._execute("INSERT OR IGNORE INTO spools VALUES (?,?,?)",
                          (spool, sensor, utc_timestamp(time.time())))
            return str(self._execute("SELECT sensor FROM spools WHERE spool = ?",
                                     (spool,)).fetchone()[0])

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self.db.execute(_postgres_sql(sql) if self.postgres else sql, args)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction (never nested); what it taught ``known`` counts once it commits."""
        try:
            if self.postgres:
                try:
                    with self.db.transaction():
                        yield
                except BaseException:
                    # A staging table created in a transaction that failed is gone with it.
                    self._staging = False
                    raise
            else:
                with self.db:
                    yield
        except BaseException:
            self.known.drop()
            raise
        self.known.keep()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def ingest(self, spool: str, first_seq: int, events: Sequence[Event],
               sensor: str, documents: Sequence[Any] | None = None,
               canonical: Mapping[str, bytes] | None = None) -> IngestResult:
        """Store a frame's events in one transaction; return how many were new.

        One batched insert per frame (PostgreSQL: a COPY and one insert of what is new), and
        the baseline updated once per TTPHash per frame, not once per event: round trips, not
        rows, are what a networked store pays for. ``documents``: each event's msgpack as
        it was received (None for one that was changed since), stored as its document
        instead of encoding the event again. ``canonical``: TTPHashes' canonical input as
        admission computed them (collector.admit.Admission), stored for a new TTPHash
        instead of computing it again."""
        with self._transaction():
            groups: dict[str, dict[str, Any]] = {}
            chain = self._start_chain()
            result = self._ingest(Incoming(spool, first_seq, events, sensor, documents,
                                           canonical), groups, chain)
            if groups:
                self._baseline(groups, chain)
        self._stored_documents(result.new)
        return result

    def ingest_frames(self, frames: Sequence[Incoming]) -> list[IngestResult | Exception]:
        """Store several frames in one transaction: each frame's result, in order.

        A commit writes every page the transaction dirtied, and the frames of a fleet dirty
        the same index pages (TTPHash, host, process): committed together, those pages are
        written once (the fleet mix into a store of 200,000 events: 16-19 against 28-38 µs per
        event for the commit alone, 16 frames a commit against one). If the set fails, each
        frame is stored again in a transaction of its own, so that only a frame the store
        refuses gets its exception (in its place in the list); the others still go in."""
        if len(frames) == 1:
            return [self._alone(frames[0])]
        try:
            with self._transaction():
                # The baseline once for the whole set: a TTPHash the set's frames share is
                # one statement, not one per frame.
                groups: dict[str, dict[str, Any]] = {}
                results: list[IngestResult | Exception]
                inserted = self._copy_set(frames) if self.postgres else None
                chain = self._start_chain()
                if inserted is None:
                    results = [self._ingest(frame, groups, chain) for frame in frames]
                else:
                    results = [self._fold(frame, rows, new, groups)
                               for frame, (rows, new) in zip(frames, inserted)]
                if groups:
                    self._baseline(groups, chain)
        except Exception:  # noqa: BLE001 - sqlite3's and psycopg's errors alike; retried alone
            return [self._alone(frame) for frame in frames]
        self._stored_documents(sum(r.new for r in results if isinstance(r, IngestResult)))
        return results

    def _alone(self, frame: Incoming) -> IngestResult | Exception:
        try:
            return self.ingest(*frame)
        except Exception as exc:  # noqa: BLE001 - handed to the frame's sender
            return exc

    def _ingest(self, frame: Incoming, groups: dict[str, dict[str, Any]],
                chain: _Chain | None) -> IngestResult:
        """A frame's events, inside the caller's transaction (linked in ``chain``, in a
        chained store); its new executions are folded into ``groups`` (by TTPHash: first and
        last seen, count, hosts, a sample), which the caller gives to _baseline (with the
        canonical input admission gave, if any)."""
        rows = event_rows(frame.spool, frame.first_seq, frame.events, frame.sensor,
                          self.documents.pack_many(frame.events, frame.documents))
        new = self._insert_new(rows) if chain is None else self._insert_chained(rows, chain)
        return self._fold(frame, rows, new, groups)

    def _fold(self, frame: Incoming, rows: list[tuple[Any, ...]], new: set[int],
              groups: dict[str, dict[str, Any]]) -> IngestResult:
        """A frame's result once its rows are stored (``new``: the sequence numbers that were
        not stored before): its new executions folded into ``groups``, its gaps recorded,
        the Sigma rules evaluated on what is new."""
        spool, sensor, known = frame.spool, frame.sensor, frame.canonical or _EMPTY
        result = IngestResult()
        result.new, result.duplicates = len(new), len(rows) - len(new)
        for row in rows:
            if row[1] not in new:
                continue
            event, action, value = row[EVENT_FIELDS], row[5], row[6]
            if action == ACTION_PROCESS_CREATE and value:
                ts = row[4] or utc_timestamp()
                group = groups.get(value)
                if group is None:  # (a group made only when it is new: a fleet repeats)
                    groups[value] = {"first": ts, "last": ts, "count": 1,
                                     "hosts": {row[3] or sensor}, "sample": event,
                                     "canonical": known.get(value)}
                    continue
                if ts < group["first"]:
                    group["first"] = ts
                elif ts > group["last"]:
                    group["last"] = ts
                group["count"] += 1
                group["hosts"].add(row[3] or sensor)
            elif action == "spool_gap":
                self._gap(spool, sensor, event)
                result.gaps += 1
        if self.rules is not None and result.new:
            result.matches = self._match(spool, sensor, new, rows)
        return result

    def _match(self, spool: str, sensor: str, new: set[int],
               rows: list[tuple[Any, ...]]) -> int:
        """The Sigma rules each new process creation matches, stored beside it (an event
        stored before is not evaluated again); a match on an allow-listed TTPHash is stored
        and marked."""
        assert self.rules is not None
        found = []
        for row in rows:
            if row[1] in new and row[5] == ACTION_PROCESS_CREATE:
                for rule in self.rules.match(row[EVENT_FIELDS]):
                    found.append((row, rule))
        if not found:
            return 0
        hashes = sorted({row[6] for row, _ in found if row[6]})
        allowed = {value for (value,) in self._execute(
            f"SELECT ttphash FROM allow WHERE ttphash IN ({','.join('?' * len(hashes))})",
            tuple(hashes)).fetchall()} if hashes else set()
        self._each("INSERT OR IGNORE INTO sigma_matches VALUES (?,?,?,?,?,?,?,?,?,?)",
                   "INSERT INTO sigma_matches SELECT * FROM {rows} ON CONFLICT DO NOTHING",
                   ("text", "int8", "text", "text", "text", "text", "text", "text", "text",
                    "int8"),
                   [(spool, row[1], rule.id or rule.title, rule.title, rule.level,
                     ",".join(rule.tags), row[3] or sensor, row[4], row[6],
                     int(row[6] in allowed)) for row, rule in found])
        return len(found)

    def _insert_new(self, rows: list[tuple[Any, ...]]) -> set[int]:
        """Insert the rows that are not stored yet; return their sequence numbers."""
        if self.postgres:
            return self._copy_new(rows)
        inserted = self._many(_INSERT_EVENTS, [r[:EVENT_FIELDS] for r in rows], returning=True)
        return {int(seq) for (seq,) in inserted}

    def _start_chain(self) -> _Chain | None:
        """A chained store's links for the transaction begun now (None in any other store).
        The transaction takes the write lock first (BEGIN IMMEDIATE), so that the ids given
        from the largest one stored are nobody else's."""
        if not self.chained:
            return None
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
        last = self.db.execute("SELECT max(id) FROM events").fetchone()[0]
        return _Chain(int(last or 0) + 1)

    def _insert_chained(self, rows: list[tuple[Any, ...]], chain: _Chain) -> set[int]:
        """A chained store: insert the rows not stored yet, each with the next id and, for an
        execution, a link to the newest stored before it with its TTPHash; return their
        sequence numbers. As _many, the whole frame goes in at once unless some of it was
        stored before; then the frame is undone and each row tried alone."""
        heads = chain.heads
        unseen = tuple({row[6] for row in rows
                        if row[6] and row[5] == ACTION_PROCESS_CREATE and row[6] not in heads})
        if unseen:
            for value in unseen:
                heads[value] = None
            for value, last in self.db.execute(
                    "SELECT ttphash, last_event FROM baseline WHERE ttphash IN "
                    f"({','.join('?' * len(unseen))})", unseen).fetchall():
                heads[value] = last
                chain.known.add(value)
        before: dict[str, int | None] = {}   # the heads this frame moves, as they were
        params = []
        next_id = chain.next_id
        for row in rows:
            prev, value = None, row[6]
            if value and row[5] == ACTION_PROCESS_CREATE:
                prev = heads[value]
                before.setdefault(value, prev)
                heads[value] = next_id
            params.append((next_id, prev, *row[:EVENT_FIELDS]))
            next_id += 1
        if self._all_or_none(_INSERT_CHAINED, params):
            chain.next_id = next_id
            return {row[1] for row in rows}
        heads.update(before)
        new = set()
        for row in rows:
            prev, value = None, row[6]
            linked = bool(value) and row[5] == ACTION_PROCESS_CREATE
            if linked:
                prev = heads[value]
            if self.db.execute(_INSERT_CHAINED, (chain.next_id, prev, *row[:EVENT_FIELDS])
                               ).rowcount:
                if linked:
                    heads[value] = chain.next_id
                chain.next_id += 1
                new.add(row[1])
            elif self.db.execute("SELECT 1 FROM events WHERE spool = ? AND seq = ?",
                                 row[:2]).fetchone() is None:
                # Ignored, yet not stored before: only an id taken by another writer could
                # do it, which the write lock rules out. Never dropped in silence.
                raise StoreError(f"event {row[0]}:{row[1]} was not stored (id {chain.next_id})")
        return new

    def _copy_new(self, rows: list[tuple[Any, ...]]) -> set[int]:
        """PostgreSQL: the frame goes in with one COPY, straight into the table or, when some
        of it is stored already, into a session's staging table and then by one INSERT of
        what is not stored yet: where a pipelined insert per row made the server parse and
        plan each one."""
        cursor = self.db.cursor()
        # Most frames are new: copied straight into the table. A frame sent again (a resend
        # after a lost acknowledgement) breaks the primary key; then it takes the staging
        # table. Fleet mix into an empty store: 67-78 against 82-85 µs/event (wall) through
        # the staging table alone.
        if self._copied_if_new(rows):
            return {row[1] for row in rows}
        if not self._staging:
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS events_in (LIKE events) "
                           "ON COMMIT DELETE ROWS")
            self._staging = True
        self.copy_rows(cursor, "events_in", rows)
        # The staging rows are taken out as they are inserted: the next frame of the same
        # transaction (Store.ingest_frames) finds the table empty.
        cursor.execute(f"WITH staged AS (DELETE FROM events_in RETURNING {EVENT_COLUMNS}) "
                       f"INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} "
                       "FROM staged ON CONFLICT DO NOTHING RETURNING seq")
        return {int(seq) for (seq,) in cursor.fetchall()}

    def _copy_set(self, frames: Sequence[Incoming]
                  ) -> list[tuple[list[tuple[Any, ...]], set[int]]] | None:
        """PostgreSQL: the frames of a set by one COPY, each row made as the COPY takes it;
        each frame's rows and the sequence numbers stored (all of them). None when a row was
        stored before (a frame sent again): nothing of the set is stored, and its frames go
        one by one (_copy_new).

        A binary COPY stores its rows 1,000 at a time, the last ones when it ends: a COPY
        per frame of 500 left the server idle while the frame's rows were made, then us
        idle while it stored them. In one COPY the server stores a thousand while the next
        are made (their documents compressed), on the other core."""
        taken: list[list[tuple[Any, ...]]] = [[] for _ in frames]

        def rows() -> Iterator[tuple[Any, ...]]:
            for frame, kept in zip(frames, taken):
                packed = self.documents.pack_many(frame.events, frame.documents)
                for row in iter_event_rows(frame.spool, frame.first_seq, frame.events,
                                           frame.sensor, packed):
                    kept.append(row)
                    yield row
        if not self._copied_if_new(rows()):
            return None
        return [(kept, {row[1] for row in kept}) for kept in taken]

    def _copied_if_new(self, rows: Iterable[tuple[Any, ...]]) -> bool:
        """PostgreSQL: ``rows`` copied straight into the events table in a savepoint; False,
        and nothing of them stored, when one was stored before (the primary key)."""
        import psycopg
        try:
            with self.db.transaction():  # a savepoint: a failed COPY leaves nothing behind
                self.copy_rows(self.db.cursor(), "events", rows)
        except psycopg.errors.UniqueViolation:
            return False
        return True

    @staticmethod
    def copy_rows(cursor: Any, table: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """PostgreSQL: the rows' event columns (EVENT_FIELDS of each; the event may follow)
        into ``table`` by one binary COPY."""
        with cursor.copy(f"COPY {table} ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_EVENT_TYPES)
            for row in rows:
                copy.write_row(row[:EVENT_FIELDS])

    def _many(self, sql: str, params: list[tuple[Any, ...]], returning: bool = False) -> Any:
        """SQLite: one batch of statements; with ``returning``, the rows the statements
        returned, all together. (PostgreSQL takes a batch as one statement: _copy_new,
        _each.)"""
        if not returning:
            self.db.executemany(sql, params)
            return None
        # SQLite pays no round trips but does pay for RETURNING, and a statement per row: the
        # whole batch goes at once, and when every row went in (no duplicate: the usual case)
        # the keys asked for are the batch's own. Otherwise the batch is undone and each row
        # is tried alone, to learn which ones were new.
        plain = sql.rsplit(" RETURNING ", 1)[0]
        key = _KEY_INDEX[sql]
        if self._all_or_none(plain, params):
            return [(p[key],) for p in params]
        return [(p[key],) for p in params if self.db.execute(plain, p).rowcount]

    def _all_or_none(self, sql: str, params: list[tuple[Any, ...]]) -> bool:
        """SQLite: ``sql`` (an INSERT OR IGNORE) for each of ``params`` by one executemany;
        whether every row went in. If one did not, none did: the batch is undone."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN")  # else the savepoint's release would commit the frame
        before = self.db.total_changes
        self.db.execute("SAVEPOINT batch")
        self.db.executemany(sql, params)
        if self.db.total_changes - before == len(params):
            self.db.execute("RELEASE batch")
            return True
        self.db.execute("ROLLBACK TO batch")
        self.db.execute("RELEASE batch")
        return False

    def _each(self, sqlite_sql: str, postgres_sql: str, types: tuple[str, ...],
              rows: list[tuple[Any, ...]], returning: bool = False) -> Any:
        """One statement for each of ``rows``. SQLite: ``sqlite_sql`` by executemany (it pays
        no round trips). PostgreSQL: ``postgres_sql`` once, its ``{rows}`` the rows as arrays
        of each column (``unnest``, of ``types``): a pipelined statement per row still made
        the server run each one, and a fleet's frame has hundreds."""
        if not self.postgres:
            return self._many(sqlite_sql, rows, returning=returning)
        if not rows:
            return [] if returning else None
        arrays = ", ".join(f"%b::{kind}[]" for kind in types)
        cursor = self.db.execute(postgres_sql.format(rows=f"unnest({arrays})"),
                                 [list(column) for column in zip(*rows)])
        return cursor.fetchall() if returning else None

    def _baseline(self, groups: dict[str, dict[str, Any]], chain: _Chain | None) -> None:
        """Fold a frame's new executions into the baseline: one insert of the (TTPHash,
        host) pairs not stored yet, then one batch of updates for the TTPHashes it knows
        (most of them, on a fleet) and one batch of upserts with sample and canonical input
        for the new ones, each with the hosts its pairs added; each one batch. In a chained
        store each also takes its newest event (``chain``, which knows the baseline rows
        already: it looked them up)."""
        values = list(groups)
        cache = self.known
        if chain is not None:
            known = chain.known
        else:
            known = {value for value in values if value in cache.hashes}
            known.update(self._stored_in("SELECT ttphash FROM baseline WHERE ttphash",
                                         [value for value in values if value not in known]))
        # (TTPHash, host) pairs already stored are not inserted again: on a fleet, nearly all.
        # The pairs go first, so that each TTPHash's row is written once, hosts and all
        # (a second update of the same rows for their hosts was a sixth of PostgreSQL's
        # baseline time on the fleet mix).
        wanted = [(value, host) for value, group in groups.items()
                  for host in sorted(group["hosts"])]
        unsure = [pair for pair in wanted if pair not in cache.pairs]
        stored = set(self._stored_in(
            "SELECT ttphash, host FROM baseline_hosts WHERE ttphash",
            sorted({value for value, _ in unsure}))) if known and unsure else set()
        pairs = [pair for pair in unsure if pair not in stored]
        added = self._each(_INSERT_HOSTS, "INSERT INTO baseline_hosts SELECT * FROM {rows} "
                           "ON CONFLICT DO NOTHING RETURNING ttphash", ("text", "text"), pairs,
                           returning=True) if pairs else []
        cache.learn(values, wanted)
        hosts: dict[str, int] = {}
        for (value,) in added:
            hosts[value] = hosts.get(value, 0) + 1
        least, greatest = ("LEAST", "GREATEST") if self.postgres else ("min", "max")
        # A chained store's rows also take their newest event (SQLite alone: PostgreSQL
        # stores are not chained, so its statements never have the column).
        column, assign = (", last_event", ", last_event = ?") if chain is not None else ("", "")

        def link(value: str) -> tuple[Any, ...]:
            return (chain.heads[value],) if chain is not None else ()

        if known:
            self._each(
                f"UPDATE baseline SET first_seen = {least}(first_seen, ?), "
                f"last_seen = {greatest}(last_seen, ?), count = count + ?, hosts = hosts + ?"
                f"{assign} WHERE ttphash = ?",
                "UPDATE baseline AS b SET first_seen = LEAST(b.first_seen, v.f), "
                "last_seen = GREATEST(b.last_seen, v.l), count = b.count + v.c, "
                "hosts = b.hosts + v.n FROM {rows} AS v(f, l, c, n, h) WHERE b.ttphash = v.h",
                ("text", "text", "bigint", "bigint", "text"),
                [(groups[v]["first"], groups[v]["last"], groups[v]["count"], hosts.get(v, 0),
                  *link(v), v) for v in values if v in known])
        entries = []
        for value in values:
            if value in known:
                continue
            group = groups[value]
            try:
                # As admission computed it, or computed now (the local delivery: a sensor's
                # own events are not admitted).
                canonical = (group["canonical"] or ttphash.compute(group["sample"]).canonical
                             ).decode("utf-8")
            except ttphash.TTPHashError:
                canonical = None
            # The sample packed as the events' documents are (compressed once the store has
            # its dictionary: 230 bytes instead of 1,600 on the fleet mix, which kept
            # PostgreSQL's rows under the size where it compresses them itself; their insert
            # took half the time).
            entries.append((value, group["first"], group["last"], group["count"],
                            hosts.get(value, 0), self.documents.pack(group["sample"]),
                            canonical, *display_columns(group["sample"]), *link(value)))
        if entries:
            # An upsert still: another connection may have added one since the look-up (not
            # to a chained store, whose writer holds the lock since then: harmless there).
            update = (f"ON CONFLICT (ttphash) DO UPDATE "
                      f"SET first_seen = {least}(baseline.first_seen, excluded.first_seen), "
                      f"last_seen = {greatest}(baseline.last_seen, excluded.last_seen), "
                      "count = baseline.count + excluded.count, "
                      "hosts = baseline.hosts + excluded.hosts")
            self._each(f"INSERT INTO baseline ({_BASELINE_COLUMNS}{column}) "
                       f"VALUES ({','.join('?' * len(entries[0]))}) " + update,
                       f"INSERT INTO baseline ({_BASELINE_COLUMNS}) SELECT * FROM {{rows}} "
                       + update, ("text", "text", "text", "bigint", "bigint", "bytea", "text",
                                  "text", "text", "text", "text"), entries)

    def _stored_in(self, select: str, values: list[str]) -> list[Any]:
        """The rows of ``select`` (a query ending in a column to match) for ``values``: one
        array parameter in PostgreSQL, which parsed and planned an ``IN`` list of 1,500
        placeholders in some 3 ms. Never a prepared statement: prepared (psycopg does after
        five runs), a round into a store of 100,000 events took 278 µs an event against
        81-116, most likely a generic plan made while the table was small (a store just
        made, a bench's round) and kept once it was not (not looked at with EXPLAIN)."""
        if not values:
            return []
        if self.postgres:
            return self.db.execute(f"{select} = ANY(%s::text[])", (values,),
                                   prepare=False).fetchall()
        return self.db.execute(f"{select} IN ({','.join('?' * len(values))})",
                               values).fetchall()

    # --- documents ----------------------------------------------------------------------------

    def _dictionaries(self) -> list[tuple[int, bytes]]:
        """The store's document dictionaries (none in a store from before them)."""
        if self.readonly and not self._answers("SELECT id FROM doc_dictionaries WHERE 0 = 1"):
            return []
        return [(int(i), bytes(d)) for i, d in self._execute(
            "SELECT id, dictionary FROM doc_dictionaries ORDER BY id").fetchall()]

    def _stored_documents(self, new: int) -> None:
        """Count ``new`` plain documents just committed; at TRAIN_DOCUMENTS, train the
        store's dictionary on them (once: a store trains one dictionary, about 0.2 s)."""
        documents = self.documents
        if not documents.compress or documents.dictionary_id is not None or not new:
            return
        if self._plain_documents is None:
            # Counted without reading the whole table of an old store: at most a bound's worth.
            self._plain_documents = int(self._execute(
                "SELECT count(*) FROM (SELECT 1 FROM events LIMIT ?) AS t",
                (TRAIN_DOCUMENTS,)).fetchone()[0])
        else:
            self._plain_documents += new
        if self._plain_documents >= TRAIN_DOCUMENTS:
            try:
                self.train_dictionary()
            except Exception:  # noqa: BLE001 - sqlite3's and psycopg's errors alike
                # The frames are committed; training waits for as many more. Most likely
                # another writer (a JetStream worker) stored a dictionary first: use it.
                self._plain_documents = 0
                self.documents.reload()

    def train_dictionary(self, samples: Sequence[bytes] | None = None) -> int | None:
        """Train a dictionary on ``samples`` (msgpack events; by default up to
        TRAIN_DOCUMENTS of the store's plain documents) and compress the documents stored
        from now on with it; its id, or None when the samples are too few, or too alike, to
        train on (the store tries again after as many more)."""
        if samples is None:
            samples = [bytes(doc) for (doc,) in self._execute(
                "SELECT doc FROM events LIMIT ?", (TRAIN_DOCUMENTS,)).fetchall()]
        samples = [doc for doc in samples if doc[:4] != ZSTD_MAGIC]
        last = self._execute("SELECT max(id) FROM doc_dictionaries").fetchone()[0]
        dict_id = int(last or 0) + 1
        # Trained outside any transaction (it takes a fraction of a second); another writer
        # that stored this id meanwhile makes the insert fail on the key.
        dictionary = documents_train(samples, dict_id)
        if dictionary is None:
            self._plain_documents = 0
            return None
        with self._transaction():
            self._execute("INSERT INTO doc_dictionaries VALUES (?,?,?,?)",
                          (dict_id, dictionary, len(samples), utc_timestamp(time.time())))
        self.documents.add(dict_id, dictionary)
        return dict_id

    def compress_stored(self, batch: int = 5000,
                        progress: Callable[[int, int], None] | None = None
                        ) -> tuple[int, int, int]:
        """Compress the documents stored plain (before the store had its dictionary, or by
        ``--plain-documents``) with the newest dictionary, training one first if there is
        none; ``batch`` documents a transaction, so that a collector can go on writing
        beside it. Returns (documents compressed, their bytes before, after); ``progress``
        is told the documents looked at and compressed so far. Raises StoreError when the
        store has too few documents to train on."""
        documents = self.documents
        documents.start_compressing()   # with the store's newest dictionary, if it has one
        if documents.dictionary_id is None:
            if self.train_dictionary() is None:
                raise StoreError(f"{self.path} has too few documents, or too alike, to train "
                                 "a dictionary on")
        seen = compressed = before = after = 0
        last: tuple[str, int] = ("", -1)
        while True:
            rows = self._execute("SELECT spool, seq, doc FROM events WHERE (spool, seq) > (?, ?) "
                                 "ORDER BY spool, seq LIMIT ?", (*last, batch)).fetchall()
            if not rows:
                return compressed, before, after
            last = (rows[-1][0], int(rows[-1][1]))
            seen += len(rows)
            changed = []
            for spool, seq, doc in rows:
                doc = bytes(doc)
                packed = documents.compress_plain(doc)
                if packed is not doc:
                    changed.append((packed, spool, seq))
                    before, after = before + len(doc), after + len(packed)
            if changed:
                with self._transaction():
                    self._each("UPDATE events SET doc = ? WHERE spool = ? AND seq = ?",
                               "UPDATE events AS e SET doc = v.d FROM {rows} AS v(d, s, q) "
                               "WHERE e.spool = v.s AND e.seq = v.q",
                               ("bytea", "text", "int8"), changed)
                compressed += len(changed)
            if progress is not None:
                progress(seen, compressed)

    def event_doc(self, document: bytes, check: str | None = None) -> Event:
        """A stored document's event (plain or compressed); documents.DocumentError if it
        cannot be read. ``check``: the row's ``ttphash_check``, put back into the event's
        ``ttphash`` (a document stored as the sensor sent it does not carry it)."""
        event = self.documents.unpack(bytes(document))
        fingerprint = event.get("ttphash")
        if check is not None and isinstance(fingerprint, dict):
            fingerprint["check"] = check
        return event

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

    def ttphash_events(self, value: str, limit: int) -> tuple[str, tuple[Any, ...]]:
        """SQL that selects the events table's columns of TTPHash ``value``'s latest
        ``limit`` events, and its parameters, to be used as a subquery. A chained store
        follows the TTPHash's chain from its newest event (the latest stored: a few hundred
        look-ups by id); any other store takes events_hash_ts (the latest by time)."""
        if self.chained:
            return ("WITH RECURSIVE chain(id, n) AS ("
                    "SELECT last_event, 1 FROM baseline WHERE ttphash = ? "
                    "AND last_event IS NOT NULL UNION ALL "
                    "SELECT e.prev, c.n + 1 FROM chain c JOIN events e ON e.id = c.id "
                    "WHERE e.prev IS NOT NULL AND c.n < ?) "
                    "SELECT e.* FROM chain c JOIN events e ON e.id = c.id", (value, limit))
        return (f"SELECT * FROM events WHERE {same_ttphash('ttphash', self.postgres)} "
                "ORDER BY ts DESC LIMIT ?", (value, value, limit))

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
        row.pop("last_event", None)   # (a chained store's link, not the baseline's content)
        row["sample"] = self.documents.unpack(bytes(row["sample"]))
        row["host_names"] = [r["host"] for r in self._rows(
            "SELECT host FROM baseline_hosts WHERE ttphash = ? ORDER BY host", (row["ttphash"],))]
        allowed = self._rows("SELECT reason FROM allow WHERE ttphash = ?", (row["ttphash"],))
        row["allowed"] = allowed[0]["reason"] if allowed else None
        return row

    def allow(self, value: str, reason: str, who: str = "hunt") -> None:
        """Allow-list ``value``; the change is logged (allow_log: who, when, why)."""
        now = utc_timestamp(time.time())
        with self._transaction():
            self._execute(_REPLACE_ALLOW, (value.upper(), reason, now))
            self._log_allow(value, "allow", reason, who, now)

    def disallow(self, value: str, reason: str | None = None, who: str = "hunt") -> bool:
        """Take ``value`` off the allow-list (logged when it was on it); whether it was."""
        with self._transaction():
            removed = self._execute("DELETE FROM allow WHERE ttphash = ?",
                                    (value.upper(),)).rowcount > 0
            if removed:
                self._log_allow(value, "revoke", reason, who, utc_timestamp(time.time()))
            return removed

    def _log_allow(self, value: str, action: str, reason: str | None, who: str,
                   now: str) -> None:
        self._execute("INSERT INTO allow_log VALUES (?,?,?,?,?)",
                      (value.upper(), action, reason, who, now))

    def allowed(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM allow ORDER BY added")

    def sigma_matches(self, min_level: str | None = None, rule: str | None = None,
                      host: str | None = None, since: str | None = None,
                      limit: int = 1000, offset: int = 0,
                      ttphash: str | None = None) -> list[dict[str, Any]]:
        """Stored Sigma matches, newest first: at or above ``min_level`` (SIGMA_LEVELS), of a
        rule (its id or title), of a host, at or after ``since``, of a TTPHash. ``allowed`` is
        1 when the TTPHash was allow-listed at ingest or is now. A store from before Sigma,
        opened read-only, has none."""
        if self.readonly and not self._answers("SELECT 1 FROM sigma_matches WHERE 0 = 1"):
            return []
        where, args = [], []
        if min_level:
            levels = SIGMA_LEVELS[SIGMA_LEVELS.index(min_level):]
            where.append(f"m.level IN ({','.join('?' * len(levels))})")
            args += levels
        for given, clause, values in ((rule, "(m.rule = ? OR m.title = ?)", [rule, rule]),
                                      (host, "m.host = ?", [host]),
                                      (since, "m.ts >= ?", [since]),
                                      (ttphash, "m.ttphash = ?", [ttphash])):
            if given:
                where.append(clause)
                args += values
        return self._rows(
            "SELECT m.ts, m.host, m.level, m.title, m.rule, m.tags, m.ttphash, "
            "CASE WHEN m.allowed = 1 OR a.ttphash IS NOT NULL THEN 1 ELSE 0 END AS allowed, "
            "m.spool, m.seq FROM sigma_matches m LEFT JOIN allow a USING (ttphash)"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY m.ts DESC, m.spool, m.seq, m.rule LIMIT ? OFFSET ?",
            (*args, limit, offset))

    def gaps(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM gaps ORDER BY ts")

    def events_of(self, spool: str) -> list[dict[str, Any]]:
        """A spool's stored events in sequence order: ``spool``, ``seq``, ``sensor``, ``host``,
        ``ts``, ``ttphash_check`` and the ``event`` itself."""
        rows = self._rows("SELECT spool, seq, sensor, host, ts, ttphash_check, doc FROM events "
                          "WHERE spool = ? ORDER BY seq", (spool,))
        for row in rows:
            row["event"] = self.event_doc(row.pop("doc"), row["ttphash_check"])
        return rows

    def count_events(self) -> int:
        return int(self._execute("SELECT count(*) FROM events").fetchone()[0])

    def seqs(self) -> list[int]:
        return [int(r[0]) for r in self._execute("SELECT seq FROM events ORDER BY seq")]
