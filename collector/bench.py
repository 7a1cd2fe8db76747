"""``ttpsensor bench ingest``: the collector's store ingest rate (SQLite)."""

from __future__ import annotations

import copy
import itertools
import os
import tempfile
from typing import Any, Sequence

import click

from collector.admit import AdmitCounts, Identity, admit
from collector.documents import TRAIN_DOCUMENTS, Documents, train
from collector.store import (COMMIT_EVENTS, EVENT_COLUMNS, EVENT_FIELDS, Incoming, Store,
                             StoreError, event_rows)
from common import bench, ttphash, wire


FLEET_HASHES = 2000
PER_COMMIT = COMMIT_EVENTS // 500  # frames of 500 in one transaction
_FLOOR_INSERT = (f"INSERT OR IGNORE INTO events ({EVENT_COLUMNS}) "
                 f"VALUES ({','.join('?' * EVENT_FIELDS)})")


def fleet_events(count: int, seed: int = 11, hour: int = 11) -> list[dict]:
    """Events as a fleet sends them: the same executions again and again (a few thousand
    TTPHashes, some much more common than others), each event its own id and time, in
    order within ``hour`` (of 2026-11-29)."""
    import random
    rng = random.Random(seed)
    kinds = bench.varied_events(FLEET_HASHES, seed=seed)
    weights = [1 / (rank + 1) for rank in range(len(kinds))]  # Zipf-like
    out = []
    for i, kind in enumerate(rng.choices(kinds, weights, k=count)):
        event = copy.deepcopy(kind)
        event["event"]["id"] = f"{rng.getrandbits(128):032x}"
        event["@timestamp"] = (f"2026-11-29T{hour:02d}:{i // 6000 % 60:02d}:"
                               f"{i // 100 % 60:02d}.{i:06d}Z")
        # Each exec a process of its own, as on a real host: its key ("PID@START", indexed
        # for the console) is new with every event, and lands anywhere in the index.
        event["process"]["pid"] = rng.randrange(300, 1 << 22)
        event["process"]["start"] = event["@timestamp"]
        out.append(event)
    return out


def _dictionary(samples: list[bytes]) -> bytes:
    dictionary = train(samples, 1)
    if dictionary is None:
        raise click.ClickException("zstd could not train a dictionary on the fleet's events")
    return dictionary


def _sigma_as_sql(directory: str, frames: list[list[dict]]) -> tuple[float, int] | None:
    """The alternative to our evaluator, measured on the same frames: each frame inserted into
    a table, each rule's SQL (pySigma's SQLite backend) run over it. None without the backend
    (a test dependency)."""
    try:
        from collector.sigma import sqlpath
        from collector.sigma.rules import rule_files
        texts = []
        for path in rule_files([directory]):
            with open(path, encoding="utf-8") as f:
                texts.append(f.read())
        queries = [sql for _, sql in sqlpath.queries(texts)]
    except ImportError:
        click.echo("(pySigma-backend-sqlite is not installed: the SQL path is not measured)",
                   err=True)
        return None
    db = sqlpath.event_table()
    found = [0]

    def run() -> None:
        found[0] = 0
        for frame in frames:
            sqlpath.fill(db, frame)
            for sql in queries:
                found[0] += len(sqlpath.selected(db, sql))
    return bench._median_us(run, sum(map(len, frames)), repeats=3), found[0]


def _remote_identity(frames: list[list[dict]]) -> Identity:
    """What the bench's remote sensor is admitted as: the host its frames name."""
    return Identity("bench", frozenset({frames[0][0]["host"]["name"].casefold()}))


def _arrival(batch: list[dict], memo: ttphash.Memo
             ) -> tuple[Sequence[Any] | None, dict[str, bytes]]:
    """A frame as the store gets it from a remote sensor: its events' bytes as they came,
    then the frame admitted in place (each TTPHash recomputed, ``ttphash.check`` added),
    with the canonical inputs admission computed."""
    documents = wire.unpack_batch_documents(wire.pack_batch(batch))[1]
    admission = admit(_remote_identity([batch]), 0, len(batch), batch, AdmitCounts(), memo)
    return admission.received(documents), admission.canonical


def _reachable(url: str) -> None:
    """A clear error now, not after the SQLite rounds, when ``url`` is no PostgreSQL store
    this can open."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise click.BadParameter(f"{url!r} is not a postgresql:// URL",
                                 param_hint="--postgres")
    try:
        Store(url).close()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def _row(name: str, timing: bench.Timing, reference: str = "",
         against: bench.Timing | None = None) -> bench.Row:
    """A row of store rounds: their wall time, set against ``against``'s, and their CPU."""
    ratio = timing.wall_us / against.wall_us if against is not None else None
    return bench.Row(name, timing.wall_us, reference, ratio, cpu_us=timing.cpu_us)


class ServerCpu:
    """The CPU a store's PostgreSQL server backend spends in a bench round, read from
    ``/proc`` when the server runs on this host (a Unix socket or loopback connection): a
    round's wall time on a shared machine moves with the neighbours' load, CPU much less.
    A SQLite store has no server: nothing to add."""

    def __init__(self) -> None:
        self._started: dict[int, tuple[int, float] | None] = {}
        self._spent: dict[int, float | None] = {}

    def start(self, store: Store) -> None:
        """The round into ``store`` begins (before the timed part)."""
        if store.postgres:
            self._started[id(store)] = _backend_cpu(store)

    def stop_and_close(self, store: Store) -> None:
        """The round's work is done: the backend's CPU read, then the store closed (which
        ends the backend)."""
        spent: float | None = 0.0  # (SQLite: no server)
        if store.postgres:
            spent = None
            started = self._started.pop(id(store), None)
            if started is not None:
                now = bench.process_cpu_seconds(started[0])
                spent = None if now is None else now - started[1]
        self._spent[id(store)] = spent
        store.close()

    def spent(self, store: Store) -> float | None:
        """Seconds the server spent on the round into ``store`` (None: not known)."""
        return self._spent.pop(id(store), None)


def _backend_cpu(store: Store) -> tuple[int, float] | None:
    """The pid of the backend serving ``store`` and the CPU seconds it has spent, when it runs
    on this host; else None (a remote server's pid means nothing here, nor does one of a
    server in a container of its own: that pid here is some other process, or none)."""
    host = store.db.info.host
    if not (host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")):
        return None
    pid = int(store.db.execute("SELECT pg_backend_pid()").fetchone()[0])
    if bench.comm(pid) != "postgres":
        return None
    spent = bench.process_cpu_seconds(pid)
    return None if spent is None else (pid, spent)


@click.command("ingest")
@click.option("--events", "count", default=20000, show_default=True)
@click.option("--sigma", "sigma_dir", default=None, type=click.Path(exists=True),
              help="Sigma rules (e.g. from 'ttpsensor sigma generate DIR'): also measure the "
                   "ingest with them evaluated, against the same ingest without.")
@click.option("--postgres", default=None,
              help="A postgresql:// URL of a scratch database, to measure PostgreSQL too "
                   "(its tables are emptied before each round and filled; use a database "
                   "of its own).")
@click.option("--prefill", default=0, show_default=True,
              help="Events of the fleet stored in each store before it is timed: a store "
                   "that has run a while has larger indexes, and each commit writes more of "
                   "them (e.g. 200000).")
def bench_ingest(count: int, postgres: str | None, sigma_dir: str | None,
                 prefill: int) -> None:
    """Collector ingest per event, from frames of 500, into SQLite (and PostgreSQL), and what
    admitting a remote sensor's frame adds (its TTPHashes recomputed); with --sigma, what
    evaluating Sigma rules at ingest adds. A fleet's frames are measured one a commit (one
    sensor) and 16 a commit (frames that waited together: many sensors, a JetStream fetch, a
    local backlog). Each store's row has its wall time and its CPU: this process's, and the
    PostgreSQL server backend's when the server runs on this host (on a shared machine wall
    time moves with the neighbours' load, CPU much less).

    \b
      ttpsensor bench ingest --prefill 200000
      ttpsensor sigma generate /tmp/rules --count 200
      ttpsensor bench ingest --sigma /tmp/rules
    """
    if postgres:
        _reachable(postgres)
    rules = None
    if sigma_dir:
        from collector.sigma.rules import load_rule_set
        rules = load_rule_set([sigma_dir], lambda m: click.echo(m, err=True))
    if prefill:
        click.echo(f"(each store is first filled with {prefill:,} events of the fleet, "
                   "untimed)", err=True)
    # The hour before the timed events: a store that has run a while holds older events, and
    # new ones go after them in the indexes by time (host, TTPHash) and start (process keys).
    # Prefilled at the same hour, the timed events went into the middle of those indexes,
    # which a running collector does not see (the figure moved less than this VM's noise).
    prefilled = fleet_events(prefill, seed=12, hour=10) if prefill else []
    events = bench.varied_events(count)
    batches = [events[i:i + 500] for i in range(0, len(events), 500)]
    fleet = fleet_events(count)
    fleet_batches = [fleet[i:i + 500] for i in range(0, len(fleet), 500)]

    # The documents' dictionary a store trains on its first events, trained beforehand
    # (untimed) on another sample of the fleet: each round measures a store that has one.
    training = [wire.pack_event(e) for e in fleet_events(TRAIN_DOCUMENTS, seed=13)]

    def timed(location: str, frames: list[list[dict]] = batches,
              with_rules: Any = None, per_commit: int = 1, floor: bool = False,
              compress: bool = True) -> bench.Timing:
        """Median of three rounds, each into a store that holds only the --prefill events: a
        store that also held the baseline of the round before would measure the cheaper path
        of known TTPHashes. ``per_commit``: frames a transaction (Store.ingest_frames).
        ``floor``: the database alone, each frame's rows of the events table built
        beforehand (untimed) and stored by one executemany and a commit (PostgreSQL: one
        COPY and a commit per ``per_commit`` frames): no baseline, no Python of ours per
        event; what ingest cannot go below with this schema. ``compress``: documents
        compressed with the store's dictionary (else plain msgpack). Its CPU: ours, and a
        PostgreSQL server backend's when it runs on this host (ServerCpu)."""
        rounds = iter(range(3))
        server = ServerCpu()

        def empty_store() -> Store:
            round_ = next(rounds)
            postgres = location.startswith("postgresql")
            store = Store(location if postgres else f"{location}.{round_}", rules=with_rules,
                          compress_documents=compress)
            if store.postgres:
                with store.db.transaction():
                    store.db.execute("TRUNCATE events, baseline, baseline_hosts, spools, gaps, "
                                     "sigma_matches, doc_dictionaries")
            if compress:
                store.train_dictionary(training)
            for n in range(0, len(prefilled), 500):
                store.ingest("prefill", n, prefilled[n:n + 500], "bench")
            if prefilled and not store.postgres:
                # The prefill's WAL copied into the store now, untimed: else the timed rounds
                # start with WAL files of different fill, and whether a round pays for a
                # checkpoint of the prefill depends on that (into a store of 100,000 events,
                # rounds of the same code read 26-37 µs an event).
                store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            server.start(store)
            return store

        def ingest(store: Store) -> None:
            if floor and store.postgres:
                # One COPY a set, as Store._copy_set sends it (each its own transaction: the
                # store's connection is in autocommit).
                for start in range(0, len(floor_rows), per_commit):
                    Store.copy_rows(store.db.cursor(), "events",
                                    itertools.chain(*floor_rows[start:start + per_commit]))
                server.stop_and_close(store)
                return
            if floor:
                for rows in floor_rows:
                    store.db.executemany(_FLOOR_INSERT, rows)
                    store.db.commit()
                server.stop_and_close(store)
                return
            spool = os.urandom(8).hex()
            incoming = [Incoming(spool, n * 500, batch, "bench", *arrivals[id(batch)])
                        for n, batch in enumerate(frames)]
            for start in range(0, len(incoming), per_commit):
                for result in store.ingest_frames(incoming[start:start + per_commit]):
                    if isinstance(result, Exception):
                        raise click.ClickException(f"the store refused a frame: {result}")
            server.stop_and_close(store)
        return bench.timing_fresh(empty_store, ingest, sum(map(len, frames)), repeats=3,
                                  other_cpu=server.spent)

    def admission_of(frames: list[list[dict]], memo: bool) -> float:
        """What a remote sensor's frame costs before the store: host names checked against
        its certificate, every TTPHash recomputed (collector/admit.py; with ``memo``, through
        a memo that starts empty each round, as the collector's does). Each round admits
        copies of the frames made before it, untimed (admission changes events in place)."""
        identity = _remote_identity(frames)
        total = sum(map(len, frames))

        def copies() -> list[list[dict]]:
            return [[copy.deepcopy(e) for e in batch] for batch in frames]

        def admitted(copied: list[list[dict]]) -> None:
            counts = AdmitCounts()
            remembered = ttphash.Memo() if memo else None
            for n, batch in enumerate(copied):
                admit(identity, n * 500, len(batch), batch, counts, remembered)
            if counts.verified != total:
                raise click.ClickException(f"admission did not verify every event: {counts}")

        return bench.median_us_fresh(copies, admitted, total, repeats=3)

    admission = admission_of(batches, memo=False)
    fleet_plain = admission_of(fleet_batches, memo=False)
    fleet_admission = admission_of(fleet_batches, memo=True)
    # Each frame as the store gets it from a remote sensor, made once, untimed, before the
    # rounds (the admission rows above and collector/throughput.py measure what comes
    # before the store).
    memo = ttphash.Memo()
    arrivals = {id(batch): _arrival(batch, memo) for batch in batches + fleet_batches}
    packer = Documents(lambda: [(1, _dictionary(training))])
    floor_rows = [[row[:EVENT_FIELDS] for row in event_rows("floor", n * 500, batch, "bench",
                                                            packer.pack_many(batch))]
                  for n, batch in enumerate(fleet_batches)]
    plain_bytes = sum(len(wire.pack_event(e)) for e in fleet) / len(fleet)
    packed_bytes = sum(len(r[8]) for rows in floor_rows for r in rows) / len(fleet)
    with tempfile.TemporaryDirectory(prefix="ttpsensor-bench-") as directory:
        sqlite = timed(os.path.join(directory, "bench.sqlite"))
        sqlite_fleet = timed(os.path.join(directory, "fleet.sqlite"), fleet_batches)
        sqlite_sets = timed(os.path.join(directory, "sets.sqlite"), fleet_batches,
                            per_commit=PER_COMMIT)
        sqlite_plain = timed(os.path.join(directory, "plain.sqlite"), fleet_batches,
                             per_commit=PER_COMMIT, compress=False)
        sqlite_floor = timed(os.path.join(directory, "floor.sqlite"), fleet_batches, floor=True)
    rows = [bench.Row("collector admission (hosts, TTPHash recomputed)", admission,
                      "SQLite ingest", admission / sqlite.wall_us),
            bench.Row("collector admission, a fleet (TTPHashes through the collector's memo)",
                      fleet_admission, "the same without it", fleet_admission / fleet_plain),
            _row("collector ingest, SQLite (frames of 500, every TTPHash new)", sqlite),
            _row(f"collector ingest, SQLite (a fleet: {FLEET_HASHES} TTPHashes repeat)",
                 sqlite_fleet, "every TTPHash new", sqlite),
            _row(f"collector ingest, SQLite, a fleet, {PER_COMMIT} frames a commit",
                 sqlite_sets, "one a commit", sqlite_fleet),
            _row(f"the same, documents plain msgpack ({plain_bytes:,.0f} bytes each; "
                 f"compressed with the store's dictionary: {packed_bytes:,.0f})",
                 sqlite_plain, "compressed", sqlite_sets),
            _row("SQLite alone: the fleet's event rows built beforehand, one executemany "
                 "and commit a frame (the floor)", sqlite_floor, "our ingest, a fleet",
                 sqlite_fleet)]
    if rules is not None:
        matched = sum(len(rules.match(e)) for e in fleet)
        alone = bench._median_us(lambda: [rules.match(e) for e in fleet], len(fleet),
                                 repeats=3)
        rows.append(bench.Row(f"Sigma: {len(rules)} rules evaluated alone ({matched} matches "
                              f"in {len(fleet)} events)", alone, "SQLite, a fleet",
                              alone / sqlite_fleet.wall_us))
        by_sql = _sigma_as_sql(sigma_dir, fleet_batches)
        if by_sql is not None:
            rows.append(bench.Row(f"Sigma as SQL (pySigma SQLite backend, each frame a table; "
                                  f"{by_sql[1]} matches)", by_sql[0], "rules evaluated alone",
                                  by_sql[0] / alone))
        with tempfile.TemporaryDirectory(prefix="ttpsensor-bench-") as directory:
            # Measured again beside it: the ratio is of two figures of the same minute.
            plain = timed(os.path.join(directory, "plain.sqlite"), fleet_batches)
            sigma = timed(os.path.join(directory, "sigma.sqlite"), fleet_batches, rules)
        rows.append(_row(f"collector ingest, SQLite, a fleet, with {len(rules)} Sigma rules",
                         sigma, "the same without rules", plain))
    if postgres:
        pg = timed(postgres)
        rows.append(_row("collector ingest, PostgreSQL (every TTPHash new)", pg, "SQLite",
                         sqlite))
        pg_fleet = timed(postgres, fleet_batches)
        rows.append(_row("collector ingest, PostgreSQL (a fleet)", pg_fleet, "SQLite, a fleet",
                         sqlite_fleet))
        pg_sets = timed(postgres, fleet_batches, per_commit=PER_COMMIT)
        rows.append(_row(f"collector ingest, PostgreSQL, a fleet, {PER_COMMIT} frames a commit",
                         pg_sets, "one a commit", pg_fleet))
        pg_plain = timed(postgres, fleet_batches, per_commit=PER_COMMIT, compress=False)
        rows.append(_row("the same, documents plain msgpack", pg_plain, "compressed", pg_sets))
        pg_floor = timed(postgres, fleet_batches, per_commit=PER_COMMIT, floor=True)
        rows.append(_row(f"PostgreSQL alone: the fleet's event rows built beforehand, one COPY "
                         f"and commit per {PER_COMMIT} frames (the floor)", pg_floor,
                         f"our ingest, {PER_COMMIT} a commit", pg_sets))
    bench.print_table(rows, "per event, median of 3 rounds (each into a fresh store); CPU: "
                      "this process's, and a PostgreSQL server's backend on this host")
