"""The collector's store and `ttpsensor hunt`: exact deduplication, the TTPHash baseline."""

from __future__ import annotations

import json
import os
import stat

from collector.deliver import LocalDelivery
from collector.store import Store
from common import ttphash
from common.spool import Spool
from tests.conftest import run_cli


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
