"""Spool -> forwarder -> collector with real processes and real TLS on loopback."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest

from collector.store import Store
from common import pki, ttphash
from common.spool import Spool
from tests.conftest import free_port, ttpsensor_command
from tests.sigma_rules import rule_yaml, selection

pytestmark = pytest.mark.server


SENSOR = "sensor-a"   # the lab's sensor certificate: its events' host name


def _events(n: int, start: int = 0) -> list[dict]:
    """Process creations of 101 kinds on the lab sensor's host, each with its TTPHash."""
    events = []
    for i in range(start, start + n):
        event = {"schema": 1, "@timestamp": f"2026-11-29T00:00:{(i % 60):02d}.000000Z",
                 "event": {"id": f"ev-{i}", "action": "process_create", "provider": "ebpf"},
                 "host": {"name": SENSOR, "os": {"type": "linux"}},
                 "process": {"pid": i, "executable": f"/usr/bin/p{i % 101}",
                             "args": [f"p{i % 101}", str(i % 101)]}}
        ttphash.attach(event)
        events.append(event)
    return events


class Proc:
    def __init__(self, tmp: Path, name: str, args: list[str], nofile: int | None = None) -> None:
        self.err = tmp / f"{name}.err"

        def limit() -> None:
            if nofile is not None:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(ttpsensor_command() + args, stdout=subprocess.DEVNULL,
                                     stderr=open(self.err, "a"), preexec_fn=limit)

    def stopped(self) -> dict:
        """The counters it printed when it stopped. Connection threads may still log a line
        after that one (a collector closing hundreds of connections), so it is searched for,
        not taken as the last line."""
        lines = [line for line in self.text().splitlines() if "stopped: " in line]
        assert lines, f"no 'stopped' line: {self.text()[-2000:]}"
        return json.loads(lines[-1].split("stopped: ", 1)[1])

    def text(self) -> str:
        return self.err.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=60)


@pytest.fixture
def lab(tmp_path):
    certs = tmp_path / "pki"
    # The forwarder's hello names this machine's host name: the certificate covers it.
    issued = pki.init(str(certs), [f"{SENSOR}={socket.gethostname()}"])
    for files in issued.values():
        assert stat.S_IMODE(os.stat(files.key).st_mode) == 0o600
    return tmp_path, issued


def _collector(tmp: Path, issued, port: int, store: str, name: str = "collector",
               nofile: int | None = None, sigma: str | None = None) -> Proc:
    c = issued["collector"]
    proc = Proc(tmp, name, ["collect", "--listen", f"127.0.0.1:{port}", "--cert", c.cert,
                            "--key", c.key, "--ca", issued["ca"].cert, "--store", store]
                + (["--sigma", sigma] if sigma else []), nofile=nofile)
    deadline = time.monotonic() + 60
    while "listening on" not in proc.text():
        assert proc.proc.poll() is None and time.monotonic() < deadline, proc.text()
        time.sleep(0.05)
    return proc


def _forwarder(tmp: Path, issued, ports: list[int]) -> Proc:
    s = issued["sensor-a"]
    args = ["forward", "--spool", str(tmp / "spool"), "--cert", s.cert, "--key", s.key,
            "--ca", issued["ca"].cert, "--server-name", "localhost"]
    for port in ports:
        args += ["--collector", f"127.0.0.1:{port}"]
    return Proc(tmp, "forwarder", args)


def _stored(location: str) -> int:
    if not location.startswith("postgresql://") and not os.path.exists(location):
        return 0
    store = Store(location)
    try:
        return store.count_events()
    finally:
        store.close()


def _spool_while_killing(spool: Spool, total: int, kills: int, sender: Proc, receiver: Proc,
                         new_sender, new_receiver) -> tuple[Proc, Proc]:
    """Spool ``total`` events in ``kills`` rounds, SIGKILLing the sender and the receiver in
    turn at a random moment of each round (the sensor keeps spooling meanwhile)."""
    rng = random.Random(total + kills)
    written = 0
    for k in range(kills):
        chunk = (total - written) // (kills - k)
        for event in _events(chunk, written):
            spool.append(event)
        spool.flush()
        written += chunk
        time.sleep(rng.uniform(0.05, 0.6))
        if k % 2 == 0:
            sender.stop(signal.SIGKILL)
            sender = new_sender()
        else:
            receiver.stop(signal.SIGKILL)
            receiver = new_receiver()
    spool.close()
    return sender, receiver


def _wait(predicate, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _p7_rule(directory: Path) -> Path:
    """A Sigma rule evaluated at ingest in the crash tests: its matches too must be stored
    exactly once."""
    rule = directory / "p7.yml"
    rule.write_text(rule_yaml("p7 runs", selection("Image|endswith: /p7")))
    return rule


def _matched_once(store: Store, total: int, collector: Proc) -> None:
    matched = store.sigma_matches(limit=total)
    assert sorted(m["seq"] for m in matched) == [i for i in range(total) if i % 101 == 7]
    assert {m["title"] for m in matched} == {"p7 runs"}
    assert "Sigma rules: 1 evaluated at ingest" in collector.text()


def test_crash_test_exactly_once_in_the_store_despite_sigkills(lab, store_location) -> None:
    tmp, issued = lab
    total = int(os.environ.get("TTPSENSOR_CRASH_EVENTS", "200000"))
    kills = int(os.environ.get("TTPSENSOR_CRASH_KILLS", "20"))
    spool = Spool(str(tmp / "spool"), batch_events=500, segment_bytes=4 << 20)
    port = free_port()
    rule = _p7_rule(tmp)
    collector = _collector(tmp, issued, port, store_location, sigma=str(rule))
    forwarder = _forwarder(tmp, issued, [port])
    try:
        forwarder, collector = _spool_while_killing(
            spool, total, kills, forwarder, collector,
            lambda: _forwarder(tmp, issued, [port]),
            lambda: _collector(tmp, issued, port, store_location, sigma=str(rule)))
        _wait(lambda: _stored(store_location) >= total, f"{total} events in the store")
    finally:
        forwarder.stop()
        collector.stop()
    store = Store(store_location)
    assert store.count_events() == total  # none lost, none twice (keys are (spool, seq))
    assert store.seqs() == list(range(total))
    assert sum(r["count"] for r in store.top(1000)) == total  # the baseline counted each once
    _matched_once(store, total, collector)
    assert Spool(str(tmp / "spool"), readonly=True).acked() == total


def test_failover_to_the_second_collector(lab, store_location) -> None:
    tmp, issued = lab
    spool = Spool(str(tmp / "spool"), batch_events=100)
    for event in _events(1000):
        spool.append(event)
    spool.close()
    dead, alive = free_port(), free_port()
    collector = _collector(tmp, issued, alive, store_location)
    forwarder = _forwarder(tmp, issued, [dead, alive])
    try:
        _wait(lambda: _stored(store_location) == 1000, "1000 events", timeout=60)
    finally:
        forwarder.stop()
        collector.stop()
    assert '"failovers": 1' in forwarder.text() or "failover" in forwarder.text()


def test_unauthenticated_clients_are_refused_and_logged(lab) -> None:
    tmp, issued = lab
    port = free_port()
    store = str(tmp / "store.sqlite")
    collector = _collector(tmp, issued, port, store)
    try:
        with socket.create_connection(("127.0.0.1", port)) as plain:  # plain TCP
            plain.sendall(b"\x00\x00\x00\x05Hhello")
            plain.settimeout(5)
            try:
                plain.recv(100)
            except OSError:
                pass
        no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        no_cert.load_verify_locations(issued["ca"].cert)
        with pytest.raises((ssl.SSLError, OSError)):
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with no_cert.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"\x00\x00\x00\x01H")
                    tls.recv(10)
        other = pki.init(str(tmp / "other-pki"), ["intruder"])
        foreign = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        foreign.load_verify_locations(issued["ca"].cert)
        foreign.load_cert_chain(other["intruder"].cert, other["intruder"].key)
        with pytest.raises((ssl.SSLError, OSError)):
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with foreign.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"\x00\x00\x00\x01H")
                    tls.recv(10)
        _wait(lambda: collector.text().count("refused") >= 3, "three refusals", timeout=30)
    finally:
        collector.stop()
    assert _stored(store) == 0
    assert '"refused": 3' in collector.text()
    assert stat.S_IMODE(os.stat(tmp / "store.sqlite").st_mode) == 0o600


def test_crash_test_through_jetstream(tmp_path, nats_server) -> None:
    total = int(os.environ.get("TTPSENSOR_CRASH_EVENTS", "200000"))
    kills = int(os.environ.get("TTPSENSOR_CRASH_KILLS", "20"))
    store = str(tmp_path / "store.sqlite")
    spool = Spool(str(tmp_path / "spool"), batch_events=500, segment_bytes=4 << 20)
    publisher_args = ["forward", "--spool", str(tmp_path / "spool"), "--nats", nats_server,
                      "--sensor", "sensor-a"]
    consumer_args = ["collect", "--nats", nats_server, "--store", store,
                     "--sigma", str(_p7_rule(tmp_path))]
    publisher = Proc(tmp_path, "publisher", publisher_args)
    consumer = Proc(tmp_path, "consumer", consumer_args)
    try:
        publisher, consumer = _spool_while_killing(
            spool, total, kills, publisher, consumer,
            lambda: Proc(tmp_path, "publisher", publisher_args),
            lambda: Proc(tmp_path, "consumer", consumer_args))
        _wait(lambda: _stored(store) >= total, f"{total} events in the store")
    finally:
        publisher.stop()
        consumer.stop()
    result = Store(store)
    assert result.count_events() == total
    assert result.seqs() == list(range(total))
    assert sum(r["count"] for r in result.top(1000)) == total
    _matched_once(result, total, consumer)
    assert Spool(str(tmp_path / "spool"), readonly=True).acked() == total


def test_forwarding_goes_on_past_every_kind_of_spool_damage(lab) -> None:
    tmp, issued = lab
    spool = Spool(str(tmp / "spool"), batch_events=10, segment_bytes=1500)
    for event in _events(400):
        spool.append(event)
    spool.close()
    segments = sorted((tmp / "spool").glob("seg-*"))
    assert len(segments) >= 6
    flipped = bytearray(segments[1].read_bytes())
    flipped[40] ^= 0x01                                   # a flipped bit
    segments[1].write_bytes(bytes(flipped))
    zeroed = bytearray(segments[2].read_bytes())
    zeroed[4:8] = b"\0\0\0\0"                             # a zero length
    segments[2].write_bytes(bytes(zeroed))
    segments[3].unlink()                                  # a missing segment
    last = segments[-1].read_bytes()
    segments[-1].write_bytes(last[:-25])                  # a truncated last frame
    (tmp / "spool" / "cursor.json").unlink(missing_ok=True)  # a deleted cursor
    reader = Spool(str(tmp / "spool"), readonly=True)
    readable = sum(f.count for f in reader.read_frames(0))
    assert reader.stats.corrupt_frames + (reader.stats.garbage_bytes > 0) >= 2
    assert reader.stats.missing_events > 0
    port = free_port()
    store = str(tmp / "store.sqlite")
    collector = _collector(tmp, issued, port, store)
    forwarder = _forwarder(tmp, issued, [port])
    try:
        _wait(lambda: _stored(store) == readable, f"{readable} readable events", timeout=60)
        time.sleep(1.0)
        assert forwarder.proc.poll() is None  # still running: no crash loop
    finally:
        forwarder.stop()
        collector.stop()
    assert "Traceback" not in forwarder.text() + collector.text()
    assert _stored(store) == readable < 400
