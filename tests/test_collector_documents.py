"""The events' documents: plain msgpack until the store has TRAIN_DOCUMENTS of them, then
compressed with a zstd dictionary trained on them; both kinds read back exactly, on SQLite and
PostgreSQL, by the writer and by readers opened before or after the dictionary."""

from __future__ import annotations

import json
import sqlite3

import pytest
import zstandard

from collector import documents
from collector.bench import fleet_events
from collector.console.hunting import Hunt
from collector.documents import TRAIN_DOCUMENTS, ZSTD_MAGIC, DocumentError
from collector.store import Incoming, Store
from common import wire
from tests.conftest import run_cli

EVENTS = TRAIN_DOCUMENTS + 1000


def _stored(store: Store) -> list[bytes]:
    return [bytes(doc) for (doc,) in store._execute(
        "SELECT doc FROM events ORDER BY seq").fetchall()]


def _ingest(store: Store, events: list, start: int = 0) -> None:
    """``events`` in frames of 500, the first numbered ``start``."""
    for first in range(0, len(events), 500):
        store.ingest("sp", start + first, events[first:first + 500], "s1")


def test_documents_are_compressed_once_the_store_has_trained(store_location) -> None:
    events = fleet_events(EVENTS, seed=21)
    with Store(store_location) as store:
        _ingest(store, events[:500])
        # A reader opened before the dictionary exists reads documents packed with it later.
        reader_before = Store(store_location, readonly=True)
        _ingest(store, events[500:TRAIN_DOCUMENTS], start=500)
        assert store.documents.dictionary_id is not None  # trained at TRAIN_DOCUMENTS
        (row,) = store._execute("SELECT id, samples FROM doc_dictionaries").fetchall()
        assert row[1] == TRAIN_DOCUMENTS
        store.ingest("sp", TRAIN_DOCUMENTS, events[TRAIN_DOCUMENTS:], "s1")
        docs = _stored(store)
        plain, packed = docs[:TRAIN_DOCUMENTS], docs[TRAIN_DOCUMENTS:]
        assert plain == [wire.pack_event(e) for e in events[:TRAIN_DOCUMENTS]]
        assert all(d[:4] == ZSTD_MAGIC for d in packed)
        assert all(zstandard.get_frame_parameters(d).dict_id == row[0] for d in packed)
        # A tenth of the size or less on the fleet mix (1,615 bytes a document plain).
        assert sum(map(len, packed)) * 5 < sum(len(wire.pack_event(e))
                                               for e in events[TRAIN_DOCUMENTS:])
        assert [r["event"] for r in store.events_of("sp")] == events
        # A TTPHash first seen after the training keeps its sample compressed too; both
        # kinds read back, by the writer and by a reader.
        samples = dict(store._execute("SELECT ttphash, sample FROM baseline").fetchall())
        kinds = {bytes(sample)[:4] == ZSTD_MAGIC for sample in samples.values()}
        assert kinds == {True, False}
        first = {}
        for event in events:
            first.setdefault(event["ttphash"]["value"], event)
        for value in samples:
            assert store.show(value)["sample"] == first[value]
    try:
        assert [r["event"] for r in reader_before.events_of("sp")] == events
        assert all(reader_before.show(value)["sample"] == first[value] for value in samples)
    finally:
        reader_before.close()
    with Store(store_location, readonly=True) as reader:
        assert [r["event"] for r in reader.events_of("sp")] == events
        assert reader.documents.dictionary_id is None  # a reader never packs


def test_a_reopened_writer_packs_with_the_stored_dictionary(store_location) -> None:
    events = fleet_events(EVENTS, seed=22)
    with Store(store_location) as store:
        _ingest(store, events[:TRAIN_DOCUMENTS])
        trained = store.documents.dictionary_id
    with Store(store_location) as store:
        assert store.documents.dictionary_id == trained
        store.ingest_frames([Incoming("sp", TRAIN_DOCUMENTS, events[TRAIN_DOCUMENTS:], "s1")])
        assert all(d[:4] == ZSTD_MAGIC for d in _stored(store)[TRAIN_DOCUMENTS:])
        # Training happened once: a reopened store does not train again.
        assert store._execute("SELECT count(*) FROM doc_dictionaries").fetchone()[0] == 1
        assert [r["event"] for r in store.events_of("sp")] == events


def test_frames_stored_together_count_towards_training(tmp_path) -> None:
    events = fleet_events(TRAIN_DOCUMENTS, seed=23)
    with Store(str(tmp_path / "s.sqlite")) as store:
        frames = [Incoming("sp", k, events[k:k + 500], "s1")
                  for k in range(0, TRAIN_DOCUMENTS, 500)]
        store.ingest_frames(frames[:4])
        assert store.documents.dictionary_id is None
        store.ingest_frames(frames[4:])
        assert store.documents.dictionary_id is not None


def test_plain_documents_when_asked(tmp_path) -> None:
    events = fleet_events(EVENTS, seed=24)
    path = str(tmp_path / "s.sqlite")
    with Store(path, compress_documents=False) as store:
        _ingest(store, events)
        assert store.documents.dictionary_id is None
        assert _stored(store) == [wire.pack_event(e) for e in events]
        assert store._execute("SELECT count(*) FROM doc_dictionaries").fetchone()[0] == 0


def test_duplicates_do_not_count_towards_training(tmp_path) -> None:
    events = fleet_events(1000, seed=25)
    with Store(str(tmp_path / "s.sqlite")) as store:
        for _ in range(TRAIN_DOCUMENTS // 500):
            _ingest(store, events)      # the same 1,000 events again and again
        assert store.documents.dictionary_id is None


def test_samples_too_few_to_train_leave_documents_plain(tmp_path, monkeypatch) -> None:
    assert documents.train([b"\x81\xa1a\x01"] * 5, 1) is None
    monkeypatch.setattr("collector.store.TRAIN_DOCUMENTS", 5)
    events = fleet_events(5, seed=26)
    with Store(str(tmp_path / "s.sqlite")) as store:
        _ingest(store, events)
        assert store.documents.dictionary_id is None   # tried, and refused by zstd
        assert store._execute("SELECT count(*) FROM doc_dictionaries").fetchone()[0] == 0
        assert store._plain_documents == 0              # tried again after as many more
        assert [r["event"] for r in store.events_of("sp")] == events


def test_a_store_from_before_dictionaries_reads_read_only(tmp_path) -> None:
    path = str(tmp_path / "old.sqlite")
    events = fleet_events(100, seed=27)
    with Store(path) as store:
        _ingest(store, events)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE doc_dictionaries")
    db.commit()
    db.close()
    with Store(path, readonly=True) as reader:
        assert [r["event"] for r in reader.events_of("sp")] == events
    with Store(path) as store:      # opened for writing, it gains the table
        assert store._execute("SELECT count(*) FROM doc_dictionaries").fetchone()[0] == 0


def test_unreadable_documents_raise_a_clear_error(tmp_path) -> None:
    events = fleet_events(EVENTS, seed=28)
    with Store(str(tmp_path / "s.sqlite")) as store:
        _ingest(store, events)
        packed = store.documents.pack(events[0])
        assert packed[:4] == ZSTD_MAGIC and store.event_doc(packed) == events[0]
        with pytest.raises(DocumentError, match="does not decompress"):
            store.event_doc(packed[:-6] + b"\0" * 6)
        foreign = zstandard.ZstdCompressor(dict_data=zstandard.ZstdCompressionDict(
            documents.train([wire.pack_event(e) for e in events], 99))).compress(
                wire.pack_event(events[0]))
        with pytest.raises(DocumentError, match="dictionary 99, which the store does not hold"):
            store.event_doc(foreign)
        with pytest.raises(DocumentError, match="bad zstd header"):
            store.event_doc(ZSTD_MAGIC + b"\xff")
        with pytest.raises(DocumentError, match="not an event"):
            store.event_doc(b"\x91\x01")   # a msgpack array
        # The console's pages read documents through the store (the newest of this hash is
        # compressed).
        value = events[-1]["ttphash"]["value"]
        newest = store._execute("SELECT doc FROM events WHERE ttphash = ? ORDER BY ts DESC "
                                "LIMIT 1", (value,)).fetchone()[0]
        assert bytes(newest)[:4] == ZSTD_MAGIC
        detail = Hunt(store).detail(value)
        assert detail is not None and detail.samples
        assert all(s["event"]["ttphash"]["value"] == value for s in detail.samples)
        last = events[-1]
        view = Hunt(store).host(last["host"]["name"], last["@timestamp"], "9999")
        assert view.events >= 1 and last in [node.event for node in view.roots]


def test_a_writer_that_cannot_train_keeps_storing_and_takes_another_writers_dictionary(
        tmp_path, monkeypatch) -> None:
    """Two writers of one store (JetStream workers): the one whose training fails (the other
    stored a dictionary first) still stores its frames, and packs with the other's."""
    path = str(tmp_path / "s.sqlite")
    events = fleet_events(EVENTS, seed=29)
    with Store(path) as first, Store(path) as second:
        trained = second.train_dictionary([wire.pack_event(e) for e in events[:TRAIN_DOCUMENTS]])
        assert trained is not None and first.documents.dictionary_id is None

        def locked(*_: object) -> None:
            raise sqlite3.OperationalError("database is locked")
        monkeypatch.setattr(first, "train_dictionary", locked)
        _ingest(first, events[:TRAIN_DOCUMENTS])    # reaches the count, and training fails
        assert first.documents.dictionary_id == trained
        first.ingest("sp", TRAIN_DOCUMENTS, events[TRAIN_DOCUMENTS:], "s1")
        docs = _stored(first)
        assert all(d[:4] != ZSTD_MAGIC for d in docs[:TRAIN_DOCUMENTS])
        assert all(zstandard.get_frame_parameters(d).dict_id == trained
                   for d in docs[TRAIN_DOCUMENTS:])
        assert [r["event"] for r in first.events_of("sp")] == events


def test_store_compress_compresses_what_was_stored_plain(store_location) -> None:
    """`ttpsensor store compress` on a store written with plain documents: a dictionary is
    trained, every document compressed (read back the same), and a second run finds none."""
    events = fleet_events(EVENTS, seed=30)
    with Store(store_location, compress_documents=False) as store:
        _ingest(store, events)
    done = run_cli("store", "compress", "--store", store_location, "--batch", "1500")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["compressed"] == EVENTS and report["dictionary"] == 1
    assert report["bytes_after"] * 5 < report["bytes_before"]
    assert f"{EVENTS:,} documents looked at, {EVENTS:,} compressed" in done.stderr
    with Store(store_location, readonly=True) as reader:
        assert [r["event"] for r in reader.events_of("sp")] == events
        assert all(d[:4] == ZSTD_MAGIC for d in _stored(reader))
    again = run_cli("store", "compress", "--store", store_location)
    assert again.returncode == 0 and json.loads(again.stdout)["compressed"] == 0


def test_store_compress_says_why_when_it_cannot(tmp_path) -> None:
    path = str(tmp_path / "small.sqlite")
    with Store(path) as store:
        _ingest(store, fleet_events(3, seed=31))
    done = run_cli("store", "compress", "--store", path)
    assert done.returncode == 1
    assert "too few documents, or too alike, to train a dictionary on" in done.stderr
    missing = run_cli("store", "compress", "--store", str(tmp_path / "none.sqlite"))
    assert missing.returncode == 1 and "no store at" in missing.stderr


def test_compressing_a_plain_store_uses_the_dictionary_it_holds(tmp_path) -> None:
    """A store opened with plain documents, holding a dictionary another writer trained:
    compressing what it stored uses that dictionary, and trains none of its own."""
    path = str(tmp_path / "s.sqlite")
    events = fleet_events(EVENTS, seed=32)
    with Store(path) as trainer:
        trained = trainer.train_dictionary([wire.pack_event(e) for e in events])
    with Store(path, compress_documents=False) as store:
        _ingest(store, events)
        assert store.documents.dictionary_id is None
        assert store.compress_stored()[0] == EVENTS
        assert store.documents.dictionary_id == trained
        assert store._execute("SELECT count(*) FROM doc_dictionaries").fetchone()[0] == 1
        assert [r["event"] for r in store.events_of("sp")] == events


def test_the_benchs_fleet_is_a_process_per_event_with_the_kinds_ttphashes() -> None:
    """bench ingest's fleet repeats a few thousand executions, but each event is a process of
    its own (its own key, as on a real host, for the index that links processes), and each
    still carries the TTPHash its canonical input gives (pid and start are not part of it)."""
    from collector.store import process_key
    from common import ttphash

    events = fleet_events(3000, seed=5)
    assert len({process_key(e["process"]) for e in events}) == len(events)
    assert len({e["ttphash"]["value"] for e in events}) < len(events) / 2  # kinds repeat
    assert all(ttphash.compute(e).value == e["ttphash"]["value"] for e in events[:300])


def test_a_frame_packed_in_one_call_is_what_each_event_packed_alone_gives() -> None:
    """Documents.pack_many (the store's path) against pack (one call an event): the same
    bytes, compressed and plain, for events sent with their received bytes and without; an
    empty frame is an empty list. Each document reads back as its event."""
    events = fleet_events(300, seed=5)
    received = [wire.pack_event(e) if i % 3 else None for i, e in enumerate(events)]
    dictionary = documents.train([wire.pack_event(e) for e in fleet_events(TRAIN_DOCUMENTS,
                                                                            seed=6)], 1)
    assert dictionary is not None
    compressing = documents.Documents(lambda: [(1, dictionary)])
    plain = documents.Documents(lambda: [(1, dictionary)], compress=False)
    for packer, compressed in ((compressing, True), (plain, False)):
        many = packer.pack_many(events, received)
        assert many == [packer.pack(e, r) for e, r in zip(events, received)]
        assert all((d[:4] == ZSTD_MAGIC) is compressed for d in many)
        assert [packer.unpack(d) for d in many] == [wire.unpack_event(wire.pack_event(e))
                                                    for e in events]
        assert packer.pack_many(events) == [packer.pack(e) for e in events]
        assert packer.pack_many([], []) == []
        with pytest.raises(ValueError, match="299 documents for 300 events"):
            packer.pack_many(events, received[1:])
