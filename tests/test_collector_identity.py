"""A sensor is who its certificate (or its JetStream subject) says: it cannot write under
another sensor's spool id, speak for another host, or label an event with a TTPHash its fields
do not give. Against the real TLS collector, a real forwarder and a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import stat
import time

import pytest

from collector.admit import certificate_identity
from collector.store import Store, StoreError
from common import pki, transport, ttphash, wire
from common.spool import Spool, encode_frame
from tests.conftest import free_port, run_cli
from tests.test_collector_attacks import _connect
from tests.test_forward_collect import (Proc, _collector, _events, _forwarder,
                                        _stored, _wait)

pytestmark = pytest.mark.server

HOST = socket.gethostname()


@pytest.fixture
def fleet(tmp_path):
    """Two sensors of one CA; both certificates cover this machine's host name (the
    forwarder's hello names it), and each its own name."""
    issued = pki.init(str(tmp_path / "pki"), [f"sensor-a={HOST}", f"sensor-b={HOST}"])
    return tmp_path, issued


def _hello(tls, spool: str, host: str | None = None) -> None:
    hello = {"spool": spool, "version": 1}
    if host is not None:
        hello["host"] = host
    transport.send(tls, b"H", json.dumps(hello).encode())


def _serve(fleet, store_location: str | None = None):  # noqa: ANN202
    """The fleet's collector on a free port: (issued, port, store, collector process)."""
    tmp, issued = fleet
    port = free_port()
    store = store_location or str(tmp / "store.sqlite")
    return issued, port, store, _collector(tmp, issued, port, store)


def _on_host(events: list[dict], host: str) -> list[dict]:
    for event in events:
        event["host"]["name"] = host
        ttphash.attach(event)
    return events


def test_the_certificate_names_the_sensor_and_its_hosts(fleet) -> None:
    _, issued = fleet
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(open(issued["sensor-a"].cert, "rb").read())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [HOST]
    identity = certificate_identity({"subject": ((("commonName", "sensor-a"),),),
                                     "subjectAltName": (("DNS", "Web-01.example"),
                                                        ("IP Address", "10.0.0.1"))})
    assert identity.name == "sensor-a" and identity.hosts == {"sensor-a", "web-01.example"}
    assert identity.speaks_for("WEB-01.example") and not identity.speaks_for("10.0.0.1")
    with pytest.raises(pki.PkiError, match="NAME=HOST"):
        pki.sensor_spec("web-01=")


def test_a_spool_id_belongs_to_the_first_sensor_that_delivers_it(fleet) -> None:
    issued, port, store, collector = _serve(fleet)
    try:
        with _connect(issued, port) as tls:
            _hello(tls, "spool-of-a", HOST)
            transport.send(tls, b"F", encode_frame(0, _events(5))[0])
            assert transport.receive(tls)[0] == b"A"
        with _connect(issued, port, "sensor-b") as tls:  # b takes a's spool id
            _hello(tls, "spool-of-a", HOST)
            transport.send(tls, b"F", encode_frame(5, _on_host(_events(5, 5), "sensor-b"))[0])
            kind, body = transport.receive(tls)
            assert kind == b"R" and b"belongs to sensor 'sensor-a'" in body
            with pytest.raises((transport.ProtocolError, OSError)):
                transport.receive(tls)  # and the connection is closed
        with _connect(issued, port) as tls:  # a goes on where it was
            _hello(tls, "spool-of-a", HOST)
            transport.send(tls, b"F", encode_frame(5, _events(5, 5))[0])
            assert transport.receive(tls)[0] == b"A"
    finally:
        collector.stop()
    assert _stored(store) == 10
    with Store(store, readonly=True) as opened:
        assert {e["sensor"] for e in opened.events_of("spool-of-a")} == {"sensor-a"}
    stats = collector.stopped()
    assert stats["refused_spools"] == 1 and stats["events_new"] == 10
    assert "Traceback" not in collector.text()


def test_a_sensor_cannot_speak_for_another_host(fleet) -> None:
    issued, port, store, collector = _serve(fleet)
    try:
        with _connect(issued, port, "sensor-b") as tls:  # a hello naming another host
            _hello(tls, "spool-of-b", "sensor-a")
            kind, body = transport.receive(tls)
            assert kind == b"R" and b"does not speak for" in body
        with _connect(issued, port, "sensor-b") as tls:  # frames naming another host
            _hello(tls, "spool-of-b")                     # (an old forwarder: no host)
            transport.send(tls, b"F", encode_frame(0, _events(3))[0])  # host sensor-a
            kind, body = transport.receive(tls)
            assert kind == b"N" and b"names host 'sensor-a'" in body
            mixed = _on_host(_events(3, 3), "sensor-b")
            mixed[1]["host"]["name"] = "db-01"
            transport.send(tls, b"F", encode_frame(3, mixed)[0])
            assert transport.receive(tls)[0] == b"N"  # one event of another host: all refused
            own = _on_host(_events(3, 6), "SENSOR-B")   # host names have no case
            transport.send(tls, b"F", encode_frame(6, own)[0])
            assert transport.receive(tls)[0] == b"A"
    finally:
        collector.stop()
    assert _stored(store) == 3
    stats = collector.stopped()
    assert stats["refused_hosts"] == 1 and stats["refused_frames"] == 2


def test_a_refused_forwarder_keeps_its_spool_and_says_why(fleet) -> None:
    tmp, issued = fleet
    store = str(tmp / "store.sqlite")
    claimed = Store(store)
    spool = Spool(str(tmp / "spool"), batch_events=10)
    for event in _events(30):
        spool.append(event)
    spool.close()
    claimed.claim_spool(Spool(str(tmp / "spool"), readonly=True).spool_id, "sensor-b")
    claimed.close()
    port = free_port()
    collector = _collector(tmp, issued, port, store)
    forwarder = _forwarder(tmp, issued, [port])  # sensor-a, whose spool id b holds
    try:
        _wait(lambda: forwarder.text().count("refused this sensor") >= 2, "two refusals",
              timeout=60)
        assert forwarder.proc.poll() is None  # still running, retrying with backoff
    finally:
        forwarder.stop()
        collector.stop()
    assert "belongs to sensor 'sensor-b'" in forwarder.text()
    assert Spool(str(tmp / "spool"), readonly=True).acked() == 0  # nothing skipped
    assert _stored(store) == 0
    stats = forwarder.stopped()
    assert stats["refusals"] >= 2 and stats["nacks"] == 0


def test_the_collector_recomputes_every_ttphash(fleet, store_location) -> None:
    issued, port, store_location, collector = _serve(fleet, store_location)
    events = _events(4)
    genuine = events[0]["ttphash"]["value"]
    allowed = _events(1, 50)[0]["ttphash"]["value"]  # a hash the hunter allow-listed
    events[1]["ttphash"]["value"] = allowed           # a malicious exec labelled with it
    complete = events[2]["ttphash"]["complete"]
    events[2]["ttphash"]["complete"] = not complete    # a flag that disagrees
    events[3]["ttphash"]["version"] = 7                # a version this collector cannot check
    try:
        with _connect(issued, port) as tls:
            _hello(tls, "spool-a", HOST)
            transport.send(tls, b"F", encode_frame(0, events)[0])
            assert transport.receive(tls)[0] == b"A"
            # The same executions again: the collector's memo answers now, with the same
            # checks.
            transport.send(tls, b"F", encode_frame(4, events)[0])
            assert transport.receive(tls)[0] == b"A"
    finally:
        collector.stop()
    with Store(store_location, readonly=True) as store:
        stored = store.events_of("spool-a")
        checks = [e["ttphash_check"] for e in stored]
        docs = [e["event"]["ttphash"] for e in stored]
        baseline = {row["ttphash"]: row["count"] for row in store.top(100)}
        # The verified event is stored as the forwarder sent it; the replaced ones as
        # admitted (the check is the row's, put back when read).
        kept = [bytes(d) for (d,) in store._execute(
            "SELECT doc FROM events WHERE spool = 'spool-a' ORDER BY seq").fetchall()]
    assert kept[0] == wire.pack_event(events[0]) and docs[0]["check"] == "verified"
    assert "check" in wire.unpack_event(kept[1])["ttphash"]
    assert checks[4:] == checks[:4] and docs[4:] == docs[:4]
    checks, docs = checks[:4], docs[:4]
    assert checks == ["verified", "recomputed", "recomputed", "unverifiable"]
    assert docs[0]["value"] == genuine and "claimed" not in docs[0]
    assert docs[1]["value"] == ttphash.compute(events[1]).value != allowed
    assert docs[1]["claimed"] == allowed
    assert docs[2]["complete"] is complete and docs[2]["claimed"] == docs[2]["value"]
    assert "value" not in docs[3] and docs[3]["version"] == 7
    assert allowed not in baseline and sum(baseline.values()) == 6  # unverifiable: left out
    stats = collector.stopped()
    assert (stats["verified"], stats["recomputed"], stats["unverifiable"]) == (2, 4, 2)


def test_jetstream_binds_spools_and_hosts_to_the_subject(tmp_path, nats_server) -> None:
    """What a publisher says in its headers counts for nothing: the subject is the sensor."""
    import nats

    from common.jetstream import SUBJECT_PREFIX, STREAM, ensure_stream
    store = str(tmp_path / "store.sqlite")

    async def publish() -> None:
        nc = await nats.connect(nats_server)
        js = nc.jetstream(timeout=10)
        await ensure_stream(js)
        sends = [("sensor-a", "spool-a", 0, _events(3)),            # stored
                 ("sensor-b", "spool-a", 3, _on_host(_events(3, 3), "sensor-b")),  # a's spool
                 ("sensor-b", "spool-b", 0, _events(3)),            # events of sensor-a's host
                 ("sensor-b", "spool-b", 3, _on_host(_events(3, 3), "sensor-b"))]  # stored
        for subject, spool, first, events in sends:
            await js.publish(SUBJECT_PREFIX + subject, encode_frame(first, events)[0],
                             stream=STREAM, headers={"Ttpsensor-Spool": spool,
                                                     "Ttpsensor-Sensor": "sensor-a"})
        await nc.drain()

    asyncio.run(publish())
    consumer = Proc(tmp_path, "consumer", ["collect", "--nats", nats_server, "--store", store])
    try:
        _wait(lambda: _stored(store) >= 6 and consumer.text().count("terminating") >= 2,
              "two frames stored and two terminated", timeout=60)
        time.sleep(1)
    finally:
        consumer.stop()
    with Store(store, readonly=True) as opened:
        assert [(e["sensor"], e["seq"]) for e in opened.events_of("spool-a")] == [
            ("sensor-a", 0), ("sensor-a", 1), ("sensor-a", 2)]
        assert {e["sensor"] for e in opened.events_of("spool-b")} == {"sensor-b"}
    assert "belongs to sensor 'sensor-a'" in consumer.text()
    assert "names host 'sensor-a'" in consumer.text()
    assert "Traceback" not in consumer.text()


OLD_EVENTS = """CREATE TABLE events (
    spool TEXT NOT NULL, seq INTEGER NOT NULL, sensor TEXT NOT NULL, host TEXT,
    ts TEXT, action TEXT, ttphash TEXT, complete INTEGER, doc BLOB NOT NULL,
    PRIMARY KEY (spool, seq))"""


def test_a_store_from_before_is_migrated_once(store_location) -> None:
    """A store written before spools had owners: its spools go to the sensor that wrote
    them, and its events stay."""
    if store_location.startswith("postgresql://"):
        import psycopg
        with psycopg.connect(store_location, autocommit=True) as db:
            db.execute(OLD_EVENTS.replace("BLOB", "BYTEA").replace("INTEGER", "BIGINT"))
            db.execute("INSERT INTO events VALUES ('old', 0, 'web-01', 'web-01', "
                       "'2026-01-01T00:00:00Z', 'process_create', NULL, NULL, 'x')")
    else:
        with sqlite3.connect(store_location) as db:
            db.execute(OLD_EVENTS)
            db.execute("INSERT INTO events VALUES ('old', 0, 'web-01', 'web-01', "
                       "'2026-01-01T00:00:00Z', 'process_create', NULL, NULL, x'00')")
    store = Store(store_location)
    assert store.count_events() == 1
    assert store.claim_spool("old", "intruder") == "web-01"
    store.ingest("new", 0, _events(2), "sensor-a")
    store.close()
    again = Store(store_location)  # nothing to do the second time
    assert again.count_events() == 3 and again.claim_spool("old", "x") == "web-01"
    again.close()
    with Store(store_location, readonly=True) as reader:  # what hunt opens: it cannot write
        assert reader.count_events() == 3
        with pytest.raises(Exception, match="read-only|readonly"):
            reader.allow("AB" * 32, "a reader cannot do this")


def test_hunt_only_reads_and_refuses_what_is_not_a_store(tmp_path) -> None:
    location = tmp_path / "store.sqlite"
    store = Store(str(location))
    store.ingest("s", 0, _events(3), "sensor-a")
    store.close()
    before = location.read_bytes()
    top = run_cli("hunt", "--store", str(location), "--json", "top")
    assert top.returncode == 0 and len(top.stdout.splitlines()) == 3, top.stderr
    assert location.read_bytes() == before
    # SQLite's reader of a WAL database may leave its lock index and an empty log beside it,
    # private as the store: never anything else.
    for extra in set(os.listdir(tmp_path)) - {"store.sqlite"}:
        assert extra in ("store.sqlite-shm", "store.sqlite-wal"), extra
        assert stat.S_IMODE(os.stat(tmp_path / extra).st_mode) == 0o600
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    done = run_cli("hunt", "--store", str(text), "top")
    assert done.returncode == 1 and "not a ttpsensor store" in done.stderr
    assert "Traceback" not in done.stderr and text.read_text() == "not a database\n" * 100
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    done = run_cli("hunt", "--store", str(other), "top")
    assert done.returncode == 1 and "not a ttpsensor store" in done.stderr
    with pytest.raises(StoreError, match="not a ttpsensor store"):
        Store(str(text))
    assert text.read_text() == "not a database\n" * 100


def test_every_command_says_why_it_cannot_open_a_store(postgres_server, tmp_path) -> None:
    """A PostgreSQL store that cannot be opened (here: a database that does not exist, on a
    real server) is a one-line error naming the store, its password hidden, from each
    command that opens one; so is a file that is not a store, for the writers."""
    real = postgres_server()
    missing = real.replace("postgresql://postgres@", "postgresql://postgres:s3cret@"
                           ).rsplit("/", 1)[0] + "/no_such_database"
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    for args, why in [
            (("hunt", "--store", missing, "top"), "does not exist"),
            (("collect", "--nats", "nats://127.0.0.1:1", "--store", missing), "does not exist"),
            (("bench", "ingest", "--events", "500", "--postgres", missing), "does not exist"),
            (("bench", "ingest", "--events", "500", "--postgres", str(notes)),
             "is not a postgresql:// URL"),
            (("collect", "--nats", "nats://127.0.0.1:1", "--store", str(notes)),
             "not a ttpsensor store")]:
        done = run_cli(*args)
        assert done.returncode in (1, 2) and why in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and "s3cret" not in done.stderr, done.stderr
        if missing in args:
            assert "postgres:***@" in done.stderr, done.stderr
    assert notes.read_text() == "not a database\n"


def test_the_store_is_our_own_private_file(tmp_path) -> None:
    wide = tmp_path / "wide.sqlite"
    Store(str(wide)).close()
    wide.chmod(0o644)
    Store(str(wide)).close()
    assert stat.S_IMODE(os.stat(wide).st_mode) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o644)
    link = tmp_path / "link.sqlite"
    link.symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        Store(str(link))
    assert victim.read_text() == "precious"
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o644  # not chmodded through the link
