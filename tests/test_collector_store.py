"""The collector's store and `ttpsensor hunt`: exact deduplication, the TTPHash baseline."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

from collector.consume import Delivered, StreamCounts, StreamIngest
from collector.deliver import LocalDelivery
from collector.documents import Documents
from collector.store import Incoming, IngestResult, KnownBaseline, Store
from collector.writer import FrameWriter, WriterClosed
from common import ttphash, wire
from common.spool import Spool
from tests.conftest import process_family, run_cli


def _exec(host: str, exe: str, args: list[str], ts: str) -> dict:
    event = {"schema": 1, "@timestamp": ts,
             "event": {"id": f"{host}-{exe}-{ts}", "action": "process_create",
                       "provider": "auditd"},
             "host": {"name": host, "os": {"type": "linux"}},
             "process": {"pid": 1, "executable": exe, "args": args,
                         "real_user": {"id": "0", "name": "root"},
                         "user": {"id": "0", "name": "root"},
                         "hash": {"sha256": "A" * 64}, "on_disk": True,
                         "package": {"name": "coreutils"}}}
    ttphash.attach(event)
    return event


def test_ingest_is_idempotent_and_builds_the_baseline(store_location) -> None:
    store = Store(store_location)
    if not store.postgres:
        assert stat.S_IMODE(os.stat(store_location).st_mode) == 0o600
    common_a = _exec("a", "/usr/bin/ls", ["ls"], "2026-11-01T00:00:00.000000Z")
    common_b = _exec("b", "/usr/bin/ls", ["ls"], "2026-11-02T00:00:00.000000Z")
    rare = _exec("b", "/tmp/x", ["x", "-e"], "2026-11-03T00:00:00.000000Z")
    first = store.ingest("spool-a", 0, [common_a], "a")
    assert (first.new, first.duplicates) == (1, 0)
    again = store.ingest("spool-a", 0, [common_a], "a")  # the same frame, delivered twice
    assert (again.new, again.duplicates) == (0, 1)
    store.ingest("spool-b", 0, [common_b, rare], "b")
    assert store.count_events() == 3
    top = store.top(10)
    assert top[0]["ttphash"] == common_a["ttphash"]["value"] and top[0]["count"] == 2
    assert top[0]["hosts"] == 2
    assert [r["ttphash"] for r in store.rare(1)] == [rare["ttphash"]["value"]]
    assert [r["ttphash"] for r in store.new_since("2026-11-02T12:00:00Z")] == [
        rare["ttphash"]["value"]]
    shown = store.show(rare["ttphash"]["value"].lower())
    assert shown["sample"] == rare and shown["host_names"] == ["b"]
    assert shown["canonical"] == ttphash.compute(rare).canonical.decode()
    store.allow(common_a["ttphash"]["value"], "everyone runs ls")
    assert [r["ttphash"] for r in store.not_allowed()] == [rare["ttphash"]["value"]]
    assert store.disallow(common_a["ttphash"]["value"]) and not store.disallow("00")


def test_local_delivery_from_spool_acks_and_keeps_gaps(tmp_path, store_location) -> None:
    spool = Spool(str(tmp_path / "spool"), batch_events=5, max_bytes=1 << 30)
    store = Store(store_location)
    delivery = LocalDelivery(spool, store, "h")
    for i in range(12):
        spool.append(_exec("h", f"/bin/p{i % 3}", ["p"], f"2026-11-0{1 + i % 9}T00:00:00Z"))
    assert delivery.deliver() == 12
    assert spool.acked() == 12 and delivery.deliver() == 0
    spool._record_gap(12, 20, "spool full")  # as the cap would
    spool.flush()
    delivery.deliver()
    [gap] = store.gaps()
    assert (gap["first_seq"], gap["end_seq"], gap["events"]) == (12, 20, 8)


def _events(host: str, first: int, count: int) -> list[dict]:
    return [_exec(host, f"/bin/p{i % 3}", ["p", str(i % 2)], f"2026-11-0{1 + i % 9}T00:00:00Z")
            for i in range(first, first + count)]


# Past what a 64-bit column holds: the store refuses the frame (sqlite3 and psycopg alike).
_TOO_FAR = 2**63


def test_frames_stored_together_are_stored_as_frames_stored_alone(
        store_location, request, tmp_path) -> None:
    other = (request.getfixturevalue("postgres_server")() if store_location.startswith(
        "postgresql") else str(tmp_path / "alone.sqlite"))
    frames = [Incoming("spool-a", 0, _events("a", 0, 4), "a"),
              Incoming("spool-b", 0, _events("b", 0, 4), "b"),
              Incoming("spool-a", 0, _events("a", 0, 4), "a"),  # sent again, in the same set
              Incoming("spool-a", 4, _events("a", 4, 4), "a")]
    together, alone = Store(store_location), Store(other)
    results = together.ingest_frames(frames)
    assert results == [alone.ingest(*frame) for frame in frames]
    assert [r.new for r in results] == [4, 4, 0, 4]  # type: ignore[union-attr]
    for spool in ("spool-a", "spool-b"):
        assert together.events_of(spool) == alone.events_of(spool)
    assert together.top(50) == alone.top(50) and len(together.top(50)) == 6
    assert sum(row["count"] for row in together.top(50)) == 12


class _CopyCountingStore(Store):
    """A store that lists the tables its COPYs went to (PostgreSQL)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.copies: list[str] = []

    def copy_rows(self, cursor, table, rows) -> None:  # type: ignore[override]
        self.copies.append(table)
        Store.copy_rows(cursor, table, rows)


def test_postgres_stores_a_set_of_new_frames_by_one_copy(postgres_server) -> None:
    """The frames of a set go in by one COPY, which the server stores while the next rows
    are made; the set is stored as the frames stored alone are. With a frame sent again,
    the set's COPY is undone and each frame is copied on its own."""
    frames = [Incoming("spool-a", 0, _events("a", 0, 4), "a"),
              Incoming("spool-b", 0, _events("b", 0, 4), "b"),
              Incoming("spool-a", 4, _events("a", 4, 4), "a")]
    together, alone = _CopyCountingStore(postgres_server()), Store(postgres_server())
    results = together.ingest_frames(frames)
    assert together.copies == ["events"]
    assert results == [alone.ingest(*frame) for frame in frames]
    for spool in ("spool-a", "spool-b"):
        assert together.events_of(spool) == alone.events_of(spool)
    assert together.top(50) == alone.top(50)

    together.copies.clear()
    again = [Incoming("spool-b", 4, _events("b", 4, 4), "b"), frames[0]]
    assert [r.new for r in together.ingest_frames(again)] == [4, 0]  # type: ignore[union-attr]
    assert together.copies == ["events", "events", "events", "events_in"]
    assert len(together.events_of("spool-b")) == 8 and len(together.events_of("spool-a")) == 8


class _Forgetful(KnownBaseline):
    """Remembers nothing: every set looks its baseline rows up (as before the cache)."""

    def keep(self) -> None:
        self.drop()


class _AskingStore(Store):
    """A store that lists the values each baseline look-up asked for; its baseline fails
    once when ``fail`` is set (after learning what it stored)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.asked: list[set[str]] = []
        self.fail = False

    def _stored_in(self, select, values):  # type: ignore[override]
        self.asked.append(set(values))
        return super()._stored_in(select, values)

    def _baseline(self, groups, chain) -> None:  # type: ignore[override]
        super()._baseline(groups, chain)
        if self.fail:
            self.fail = False
            raise RuntimeError("the baseline failed")


def _baseline_of(store: Store) -> list[tuple]:
    return sorted((row["ttphash"], row["count"], row["hosts"], row["first_seen"],
                   row["last_seen"], tuple(store.show(row["ttphash"])["host_names"]))
                  for row in store.top(100))


def test_the_store_looks_up_only_the_baseline_rows_it_has_not_committed(
        store_location, request, tmp_path) -> None:
    """What a set committed to the baseline is not looked up again; what an undone
    transaction stored is; rows another writer added are found; and the baseline is the
    one a store that looks everything up every time builds."""
    other = (request.getfixturevalue("postgres_server")() if store_location.startswith(
        "postgresql") else str(tmp_path / "forgetful.sqlite"))
    cached, forgetful = _AskingStore(store_location), Store(other)
    forgetful.known = _Forgetful()
    first = [Incoming("spool-a", 0, _events("a", 0, 6), "a"),
             Incoming("spool-b", 0, _events("b", 0, 6), "b")]
    hashes = {e["ttphash"]["value"] for f in first for e in f.events}
    for store in (cached, forgetful):
        store.ingest_frames(first)
    assert cached.known.hashes == hashes and len(hashes) == 6
    assert cached.known.pairs == {(h, host) for h in hashes for host in "ab"}

    # Again from both hosts, a new host and a new command: only the new ones are asked for.
    new = _exec("c", "/bin/new", ["new"], "2026-11-20T00:00:00Z")
    second = [Incoming("spool-a", 6, _events("a", 6, 6), "a"),
              Incoming("spool-c", 0, [*_events("c", 0, 2), new], "c")]
    cached.asked.clear()
    for store in (cached, forgetful):
        store.ingest_frames(second)
    asked = set().union(*cached.asked)
    assert new["ttphash"]["value"] in asked
    assert asked <= {new["ttphash"]["value"], *{e["ttphash"]["value"]
                                                for e in _events("c", 0, 2)}}
    assert _baseline_of(cached) == _baseline_of(forgetful)

    # An undone transaction: what it stored is gone, and not taken as known.
    cached.fail = True
    undone = _exec("a", "/bin/undone", ["undone"], "2026-11-21T00:00:00Z")
    with pytest.raises(RuntimeError, match="the baseline failed"):
        cached.ingest("spool-a", 12, [undone], "a")
    assert undone["ttphash"]["value"] not in cached.known.hashes
    for store in (cached, forgetful):
        store.ingest("spool-a", 12, [undone], "a")
    assert _baseline_of(cached) == _baseline_of(forgetful)

    # Another writer of the same store adds a host to known rows: found, not counted twice.
    writer = Store(store_location)
    writer.ingest("spool-d", 0, _events("d", 0, 3), "d")
    forgetful.ingest("spool-d", 0, _events("d", 0, 3), "d")
    for store in (cached, forgetful):
        store.ingest("spool-d", 3, _events("d", 3, 3), "d")
    assert _baseline_of(cached) == _baseline_of(forgetful)
    assert max(row["hosts"] for row in cached.top(100)) == 4


def test_a_frame_the_store_refuses_is_refused_alone(store_location) -> None:
    """The set is undone and stored again frame by frame: only the frame the store refuses
    gets its error (on a new PostgreSQL store, the staging table the undone set created
    is made again)."""
    store = Store(store_location)
    outcomes = store.ingest_frames([Incoming("s", 0, _events("h", 0, 3), "h"),
                                    Incoming("s", _TOO_FAR, _events("h", 3, 3), "h"),
                                    Incoming("s", 3, _events("h", 3, 3), "h")])
    assert isinstance(outcomes[1], Exception)
    assert outcomes[0] == outcomes[2] == IngestResult(new=3)
    assert store.seqs() == list(range(6))


class _RefusingStore(Store):
    """A store that refuses the frame starting at ``refuse`` (having stored the whole set:
    what the delivery acknowledges is the point)."""

    refuse: int | None = None

    def ingest_frames(self, frames):
        results = super().ingest_frames(frames)
        return [ValueError("refused") if frame.first_seq == self.refuse else result
                for frame, result in zip(frames, results)]


def test_local_delivery_acks_up_to_a_refused_frame(tmp_path) -> None:
    spool = Spool(str(tmp_path / "spool"), batch_events=5, max_bytes=1 << 30)
    store = _RefusingStore(str(tmp_path / "store.sqlite"))
    store.refuse = 5
    delivery = LocalDelivery(spool, store, "h")
    for event in _events("h", 0, 15):
        spool.append(event)
    with pytest.raises(ValueError, match="refused"):
        delivery.deliver()
    assert spool.acked() == 5 and delivery.delivered == 5
    store.refuse = None
    # Sent again from the refused frame on (this store had kept both: nothing new).
    assert delivery.deliver() == 0 and delivery.duplicates == 10
    assert spool.acked() == 15 and store.count_events() == 15


def test_the_stream_consumer_refuses_only_the_frames_it_must(tmp_path) -> None:
    """A set of frames out of JetStream: each admitted as its subject's sensor or refused,
    the others stored together; a frame the store refuses is that frame's refusal alone."""
    store = _RefusingStore(str(tmp_path / "store.sqlite"))
    store.refuse = 9
    ingest = StreamIngest(store)
    outcomes = ingest([Delivered("spool-a", "a", 0, _events("a", 0, 3)),
                       Delivered("", "a", 3, _events("a", 3, 3)),         # no spool id
                       Delivered("spool-a", "b", 3, _events("b", 3, 3)),  # a's spool
                       Delivered("spool-b", "b", 0, _events("a", 0, 3)),  # a's host
                       Delivered("spool-b", "b", 3, _events("b", 3, 3)),
                       Delivered("spool-a", "a", 9, _events("a", 9, 3))])  # the store refuses
    assert [type(o).__name__ for o in outcomes] == [
        "NoneType", "Refused", "Refused", "Refused", "NoneType", "ValueError"]
    assert "belongs to sensor 'a'" in str(outcomes[2]) and "names host 'a'" in str(outcomes[3])
    assert ingest.counts == StreamCounts(frames=2, new=6)
    assert (ingest.admitted.refused_spools, ingest.admitted.refused_frames) == (1, 1)


def test_admitted_events_are_stored_as_the_bytes_that_came(tmp_path) -> None:
    """A frame's events are stored as the bytes they came in, not encoded again; an event
    whose TTPHash admission replaced, or that carried a check of its own, is stored as
    admitted. Reading puts the row's check back into the event."""
    store = Store(str(tmp_path / "store.sqlite"))
    events = _events("a", 0, 4)
    events[2]["ttphash"]["value"] = "0" * 64        # a hash its fields do not give
    events[3]["ttphash"]["check"] = "verified"      # the sensor's word for the collector's
    # Each event's bytes with its keys in another order: what a fresh encoding of the
    # admitted event is not.
    received = [msgpack.packb(dict(reversed(list(e.items()))), use_bin_type=True)
                for e in events]
    ingest = StreamIngest(store)
    assert ingest([Delivered("spool-a", "a", 0, events, received)]) == [None]
    docs = [bytes(d) for (d,) in store._execute("SELECT doc FROM events ORDER BY seq")]
    assert docs[:2] == received[:2]
    assert docs[2] == wire.pack_event(events[2]) != received[2]
    assert docs[3] == wire.pack_event(events[3]) != received[3]
    stored = store.events_of("spool-a")
    assert [r["ttphash_check"] for r in stored] == ["verified", "verified", "recomputed",
                                                    "verified"]
    assert [r["event"] for r in stored] == events    # as admitted: each with its check
    assert "check" not in wire.unpack_event(docs[0])["ttphash"]


def test_a_new_ttphash_keeps_the_canonical_input_admission_computed(tmp_path,
                                                                    monkeypatch) -> None:
    """The baseline row of a TTPHash first seen in an admitted frame holds the canonical
    input admission computed (the store computes none again); a frame not admitted (the
    local delivery) has it computed by the store, and both are what compute() gives."""
    computed: list[str] = []
    compute = ttphash.compute

    def watched(event, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        computed.append(event["event"]["id"])
        return compute(event, *args, **kwargs)
    store = Store(str(tmp_path / "store.sqlite"))
    events = _events("a", 0, 3)   # three executables: three TTPHashes
    monkeypatch.setattr(ttphash, "compute", watched)
    assert StreamIngest(store)([Delivered("spool-a", "a", 0, events)]) == [None]
    assert computed == []
    local = _events("b", 0, 1)
    local[0]["process"]["args"] = ["local", "only"]
    ttphash.attach(local[0])
    computed.clear()
    store.ingest("spool-b", 0, local, "b")
    assert computed == [local[0]["event"]["id"]]
    for event in (*events, local[0]):
        shown = store.show(event["ttphash"]["value"])
        assert shown["canonical"] == compute(event).canonical.decode()


def test_local_delivery_stores_the_spools_bytes(tmp_path, monkeypatch) -> None:
    """The sensor's own spool into its store: every document is the event's bytes in the
    spool, none is encoded again."""
    packed_again: list[bool] = []
    pack_many = Documents.pack_many

    def watched(self, events, received=None):  # noqa: ANN001, ANN202
        packed_again.extend([True] * len(events) if received is None
                            else [got is None for got in received])
        return pack_many(self, events, received)
    monkeypatch.setattr(Documents, "pack_many", watched)
    spool = Spool(str(tmp_path / "spool"), batch_events=5, max_bytes=1 << 30)
    store = Store(str(tmp_path / "store.sqlite"))
    events = _events("h", 0, 12)
    for event in events:
        spool.append(event)
    assert LocalDelivery(spool, store, "h").deliver() == 12
    assert packed_again == [False] * 12   # (the baseline's samples go through pack, anew)
    docs = [bytes(d) for (d,) in store._execute("SELECT doc FROM events ORDER BY seq")]
    assert docs == [wire.pack_event(e) for e in events]


def test_a_new_store_has_8k_pages_and_an_old_one_keeps_its_own(tmp_path) -> None:
    """New SQLite stores are made with 8 KiB pages (cheaper ingest); a store made before,
    with SQLite's 4 KiB, keeps its pages and goes on storing."""
    import sqlite3
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as made:  # as a store of before: SQLite's default pages
        made.execute("PRAGMA journal_mode=WAL")
        made.execute("CREATE TABLE spools (spool TEXT PRIMARY KEY, sensor TEXT NOT NULL, "
                     "since TEXT NOT NULL)")
    made.close()
    for path, pages in ((tmp_path / "new.sqlite", 8192), (old, 4096)):
        with Store(str(path)) as store:
            assert store.ingest("s", 0, _events("h", 0, 3), "h").new == 3
        with Store(str(path), readonly=True) as reader:
            assert reader.db.execute("PRAGMA page_size").fetchone()[0] == pages
            assert [r["event"]["event"]["id"] for r in reader.events_of("s")] == [
                e["event"]["id"] for e in _events("h", 0, 3)]


def test_the_writer_commits_the_frames_that_waited_together(tmp_path) -> None:
    store = Store(str(tmp_path / "store.sqlite"))
    lock = threading.Lock()
    reported: list[tuple[int, object]] = []
    writer = FrameWriter(store, lock, lambda frame, outcome: reported.append(
        (frame.first_seq, outcome)))
    frames = [Incoming("s", i * 4, _events("h", i * 4, 4), "h") for i in range(3)]
    frames.append(Incoming("s", _TOO_FAR, _events("h", 12, 4), "h"))
    answers: dict[int, object] = {}

    def send(frame: Incoming) -> None:
        try:
            answers[frame.first_seq] = writer.store_frame(frame)
        except Exception as exc:  # noqa: BLE001 - the refused frame's answer
            answers[frame.first_seq] = exc

    senders = [threading.Thread(target=send, args=(frame,)) for frame in frames]
    with lock:  # the store is busy: the writer takes one frame, the others wait behind it
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 30
        while writer.waiting() < len(frames) - 1:
            assert time.monotonic() < deadline, f"{writer.waiting()} frames waiting"
            time.sleep(0.01)
    for sender in senders:
        sender.join(30)
    assert (writer.stats.commits, writer.stats.committed_frames) == (1, 4)
    assert [answers[i * 4] for i in range(3)] == [IngestResult(new=4)] * 3
    assert isinstance(answers[_TOO_FAR], Exception) and store.count_events() == 12
    assert sorted(seq for seq, _ in reported) == [0, 4, 8, _TOO_FAR]
    writer.close()
    with pytest.raises(WriterClosed, match="stopping"):
        writer.store_frame(frames[0])


def test_run_then_hunt_works_with_no_other_setup(tmp_path) -> None:
    data = tmp_path / "ttpsensor-data"
    result = run_cli("run", "--source", "procfs", "--once", "--output", f"spool:{data}/spool",
                     "--store", f"{data}/store.sqlite", "--user", "root")
    assert result.returncode == 0, result.stderr
    top = run_cli("hunt", "--store", f"{data}/store.sqlite", "--json", "top", "--limit", "3")
    rows = [json.loads(line) for line in top.stdout.splitlines()]
    assert rows and all(len(r["ttphash"]) == 64 and r["count"] >= 1 for r in rows)
    show = run_cli("hunt", "--store", f"{data}/store.sqlite", "show", rows[0]["ttphash"])
    assert show.returncode == 0 and "canonical" in show.stdout
    missing = run_cli("hunt", "--store", f"{tmp_path}/none.sqlite", "top")
    assert missing.returncode == 1 and "no store" in missing.stderr


def test_a_ttphash_events_are_found_by_its_chain_or_an_index(store_location, request) -> None:
    """A new SQLite store links each TTPHash's events and has no index by TTPHash; a new
    PostgreSQL store indexes events by the TTPHash's first 16 characters (and time), and the
    console's look-up takes that index, newest first without a sort. A store made before
    (SQLite: its events unlinked; either: the index on the whole value) keeps its index. In
    each, the console finds only a TTPHash's own events when another shares its prefix."""
    import copy

    from collector.console.hunting import Hunt
    from collector.store import SCHEMA

    postgres = store_location.startswith("postgresql")
    old = request.getfixturevalue("postgres_server")() if postgres else store_location + ".old"
    if not postgres:  # a store of before: the events table as it was made then
        with sqlite3.connect(old) as made:
            made.executescript(SCHEMA)
    with Store(old) as made:  # and the index on the whole value
        assert not made.chained
        made._execute("DROP INDEX events_hash_ts")
        made._execute("CREATE INDEX events_hash_ts ON events (ttphash, ts)")
        if not made.postgres:
            made.db.commit()
    family = process_family("alpha")
    shell = family[0]["ttphash"]["value"]
    twin = copy.deepcopy(family[0])   # the same first 16 characters, another TTPHash
    twin["ttphash"]["value"] = shell[:16] + ("0" if shell[16] != "0" else "1") + shell[17:]
    twin["host"]["name"] = "beta"
    for location, age in ((store_location, "new"), (old, "old")):
        with Store(location) as store:
            assert store.chained is (age == "new" and not postgres)
            assert store.ingest("s", 0, family + [twin], "h").new == 4
            hunt = Hunt(store)
            assert [s["host"] for s in hunt.detail(shell).samples] == ["alpha"]
            assert [s["host"] for s in hunt.detail(twin["ttphash"]["value"]).samples] == ["beta"]
            recent, args = store.ttphash_events(shell, 5)
            if store.postgres:
                store._execute("SET enable_seqscan = off")
            explain = "EXPLAIN" if store.postgres else "EXPLAIN QUERY PLAN"
            plan = " ".join(str(row) for row in store._execute(
                f"{explain} SELECT doc FROM ({recent}) AS r", args).fetchall())
            indexes = _event_indexes(store)
            if store.chained:
                assert "events_hash_ts" not in indexes, indexes
                # Each step of the chain a look-up by id; nothing scans the events.
                assert "INTEGER PRIMARY KEY" in plan and "SCAN e " not in plan, plan
                continue
            assert ("substr(ttphash, 1, 16)" in indexes["events_hash_ts"]) is (age == "new")
            assert "events_hash_ts" in plan, plan
            assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


def test_a_chained_store_links_each_ttphash_events_newest_first(tmp_path) -> None:
    """Frames stored alone and together, sent again whole and in part (each row then tried
    alone), and a store opened again: each TTPHash's chain holds exactly its stored
    executions (found by a scan of the table), newest stored first, and stops at the limit."""
    def chain(store: Store, value: str, limit: int = 1000) -> list[tuple[str, int]]:
        recent, args = store.ttphash_events(value, limit)
        return [(r[0], int(r[1])) for r in store._execute(
            f"SELECT spool, seq FROM ({recent}) AS r", args).fetchall()]

    location = str(tmp_path / "store.sqlite")
    with Store(location) as store:
        assert store.ingest("a", 0, _events("a", 0, 6), "a").new == 6
        results = store.ingest_frames([
            Incoming("b", 0, _events("b", 0, 6), "b"),
            Incoming("a", 3, _events("a", 3, 6), "a"),       # half of it stored before
            Incoming("a", 0, _events("a", 0, 3), "a"),       # all of it stored before
            Incoming("b", 6, _events("b", 6, 4), "b")])
        assert [r.new for r in results] == [6, 3, 0, 4]  # type: ignore[union-attr]
    with Store(location) as store:  # the next writer goes on from the heads it stored
        assert store.ingest("c", 0, _events("c", 0, 5), "c").new == 5
        assert store.ingest("c", 3, _events("c", 3, 4), "c").new == 2
        status = [{"event": {"action": "sensor_status"}, "@timestamp": "2026-11-01T00:00:00Z"}]
        assert store.ingest("c", 7, status, "c").new == 1
        values = [r["ttphash"] for r in store.top(50)]
        assert len(values) == 6   # (i % 6 of each frame: every TTPHash in every frame)
        for value in values:
            stored = [(r[0], int(r[1])) for r in store._execute(
                "SELECT spool, seq FROM events WHERE ttphash = ? ORDER BY id DESC",
                (value,)).fetchall()]
            assert chain(store, value) == stored and len(stored) >= 3
            assert chain(store, value, 3) == stored[:3]
            assert store.show(value)["count"] == len(stored)
            assert "last_event" not in store.show(value)
        assert sum(len(chain(store, v)) for v in values) == store.count_events() - 1
        assert chain(store, "AB" * 32) == []
        before = {value: chain(store, value) for value in values}
        store.db.execute("VACUUM")   # (store compress --vacuum: the ids stay)
        assert {value: chain(store, value) for value in values} == before
        # The hunter's SQL of docs/architecture.md finds the same events.
        text = (Path(__file__).parent.parent / "docs/architecture.md").read_text()
        hunter = text.split("```sql\n", 1)[1].split("```", 1)[0]
        for value in values:
            assert [(r[1], int(r[2])) for r in store.db.execute(
                hunter, {"h": value}).fetchall()] == before[value]


def test_writers_sharing_a_chained_store_keep_its_chains_whole(tmp_path) -> None:
    """Collector workers may share one SQLite file: each writer's transaction takes the write
    lock before it numbers its events, so writers at the same time give no id twice and
    every chain still holds exactly its TTPHash's executions."""
    location = str(tmp_path / "store.sqlite")
    Store(location).close()
    failures: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            with Store(location) as store:
                for n in range(100):
                    frames = [Incoming(f"{name}-{k}", n * 5, _events(name, n * 5, 5), name)
                              for k in range(2)]
                    for result in store.ingest_frames(frames):
                        assert isinstance(result, IngestResult) and result.new == 5, result
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("w1", "w2", "w3", "w4")]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # the threads taking turns often, as processes would
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures
    with Store(location, readonly=True) as store:
        assert store.chained and store.count_events() == 4 * 100 * 2 * 5
        for value in [r["ttphash"] for r in store.top(50)]:
            recent, args = store.ttphash_events(value, 10_000)
            chained = [int(r[0]) for r in store._execute(
                f"SELECT id FROM ({recent}) AS r", args).fetchall()]
            stored = [int(r[0]) for r in store._execute(
                "SELECT id FROM events WHERE ttphash = ? ORDER BY id DESC", (value,)).fetchall()]
            assert chained == stored and store.show(value)["count"] == len(stored)


def _event_indexes(store: Store) -> dict[str, str]:
    """The events table's indexes, each by name with its definition."""
    query = ("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'"
             if store.postgres else
             "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")
    return {name: str(definition) for name, definition in store._execute(query).fetchall()}


def _process_indexes(store: Store) -> dict[str, str]:
    return {name: definition for name, definition in _event_indexes(store).items()
            if name in ("events_proc", "events_parent")}


def test_process_keys_are_indexed_for_new_stores_and_old_stores_keep_theirs(
        store_location, request) -> None:
    """A new store indexes the process keys that link an exec to its parent in an order
    cheap to insert: SQLite by (host, start, key), PostgreSQL the process's key by hash and
    the parent's (a key many children share) by a B-tree; the console's joins of a child to
    its parent and of a parent to its children use them. A store made with B-trees on
    (host, key) keeps them, and the console finds the same parents and children in it."""
    from collector.console.hunting import Hunt
    from collector.store import same_process

    old = (request.getfixturevalue("postgres_server")() if store_location.startswith(
        "postgresql") else store_location + ".old")
    with Store(old) as made:  # as a store of before: B-trees led by the host
        for name, column in (("events_proc", "proc"), ("events_parent", "parent")):
            made._execute(f"DROP INDEX {name}")
            made._execute(f"CREATE INDEX {name} ON events (host, {column})")
        if not made.postgres:
            made.db.commit()
    postgres = store_location.startswith("postgresql")
    expected = {"new": "USING hash " if postgres else "ltrim(proc, '0123456789')",
                "old": "USING btree (host, proc)" if postgres else "(host, proc)"}
    of_parent = {"new": "USING btree (parent)" if postgres else "ltrim(parent, '0123456789')",
                 "old": "USING btree (host, parent)" if postgres else "(host, parent)"}
    for location, age in ((store_location, "new"), (old, "old")):
        with Store(location) as store:
            family = process_family("alpha") + process_family("beta")
            assert store.ingest("s", 0, family, "h").new == 6
            found = _process_indexes(store)
            assert sorted(found) == ["events_parent", "events_proc"]
            assert expected[age] in found["events_proc"], found
            assert of_parent[age] in found["events_parent"], found
            shell = process_family("alpha")[0]["ttphash"]["value"]
            detail = Hunt(store).detail(shell)
            assert [c["n"] for c in detail.children] == [2, 2]  # each child on both hosts
            child = Hunt(store).detail(detail.children[0]["ttphash"])
            assert [(p["ttphash"], p["n"]) for p in child.parents] == [(shell, 2)]
            if age == "new":  # the joins child to parent and parent to children: the indexes
                if postgres:
                    store._execute("SET enable_seqscan = off")
                explain = "EXPLAIN" if postgres else "EXPLAIN QUERY PLAN"
                # (found, from the row, its seq, the key matched, to what, by which index)
                for found_by, given, seq, key, other, index, column in (
                        ("p", "c", 1, "p.proc", "c.parent", "events_proc", "proc"),
                        ("c", "p", 0, "c.parent", "p.proc", "events_parent", "parent")):
                    plan = " ".join(str(row) for row in store._execute(
                        f"{explain} SELECT {found_by}.ttphash FROM events {given} "
                        f"JOIN events {found_by} ON {found_by}.host = {given}.host AND "
                        f"{same_process(key, other)} WHERE {given}.seq = {seq}").fetchall())
                    # SQLite: all three of its columns, not only the host.
                    assert (index if postgres else
                            f"{index} (host=? AND <expr>=? AND {column}=?)") in plan, plan
