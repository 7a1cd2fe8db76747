"""Sigma rules evaluated at ingest: matches stored beside the events (SQLite and a real
PostgreSQL), once per event and rule whatever is sent twice, marked when the TTPHash is
allow-listed, listed by `hunt sigma` with its filters, and evaluated by the sensor's embedded
collector (`run --sigma`)."""

from __future__ import annotations

import copy
import json
import os
import threading

import pytest

from collector.sigma.rules import load, load_rule_set
from collector.store import Store
from common import bench, qlog, ttphash
from sensor_linux import app
from sensor_linux.runner import RunConfig
from sensor_linux.sources import SOURCES, SourceEntry
from tests.conftest import run_cli, seed_qlog_example
from tests.sigma_rules import rule_id, rule_yaml, selection, write_rules
from tests.test_runner import TOY_PIPE

RULES = {
    "curl_to_tmp.yml": rule_yaml("Download to tmp", "    sel:\n        Image|endswith: /curl\n"
                                 "        CommandLine|contains: ' -o /tmp/'\n    condition: sel"),
    "any_shell.yml": rule_yaml("Shell started", "    sel:\n        Image|endswith:\n"
                               "            - /sh\n            - /bash\n    condition: sel",
                               level="low"),
    "win_cmd.yml": rule_yaml("Windows shell", selection("Image|endswith: '\\cmd.exe'"),
                             product="windows", level="critical"),
}


def linux(executable: str, args: list, host: str, ts: str) -> dict:
    event = copy.deepcopy(bench.varied_events(1)[0])
    event["process"].update(executable=executable, args=args)
    event["process"].pop("command_line", None)
    event["host"]["name"] = host
    event["@timestamp"] = ts
    ttphash.attach(event)
    return event


def events() -> list[dict]:
    windows = qlog.read_event(json.loads(seed_qlog_example()))
    windows["process"].update(executable="C:\\Windows\\System32\\cmd.exe")
    windows["@timestamp"] = "2026-12-01T10:00:04.000000Z"
    note = copy.deepcopy(bench.varied_events(1)[0])
    note["event"]["action"] = "note"               # not a process creation: not evaluated
    note["process"].update(executable="/bin/sh")
    return [
        linux("/usr/bin/curl", ["curl", "-o", "/tmp/x", "http://e"], "web-1",
              "2026-12-01T10:00:00.000000Z"),                        # high + nothing else
        linux("/usr/bin/bash", ["bash", "-c", "curl -o /tmp/y"], "web-2",
              "2026-12-01T10:00:01.000000Z"),                        # low (image is bash)
        linux("/usr/bin/ls", ["ls"], "web-1", "2026-12-01T10:00:02.000000Z"),   # none
        linux("/usr/bin/cmd.exe", ["cmd.exe"], "web-1",
              "2026-12-01T10:00:03.000000Z"),                        # a windows rule: not here
        windows,                                                      # critical
        note,
    ]


def test_matches_are_stored_once_marked_when_allowed_and_hunted(tmp_path,
                                                               store_location) -> None:
    said: list[str] = []
    rules = load_rule_set([write_rules(tmp_path / "rules", RULES)], said.append)
    assert said == ["Sigma rules: 3 evaluated at ingest, 0 for other log sources, 0 not used"]
    batch = events()
    with Store(store_location, rules=rules) as store:
        store.allow(batch[1]["ttphash"]["value"], "admins run this", "test")
        result = store.ingest("spool-a", 0, batch, "sensor-1")
        assert (result.new, result.matches) == (6, 3)
        again = store.ingest("spool-a", 0, batch, "sensor-1")      # a frame sent twice
        assert (again.new, again.matches) == (0, 0)
        rows = store.sigma_matches()
    assert [(r["seq"], r["title"], r["level"], r["host"], r["allowed"]) for r in rows] == [
        (4, "Windows shell", "critical", "sensor-1", 0),   # no host name: the sensor
        (1, "Shell started", "low", "web-2", 1),
        (0, "Download to tmp", "high", "web-1", 0)]
    assert rows[2]["ttphash"] == batch[0]["ttphash"]["value"]
    assert rows[2]["tags"] == "attack.execution,attack.t1059"

    def hunt(*args: str) -> list[tuple]:
        result = run_cli("hunt", "--store", store_location, "--json", "sigma", *args)
        assert result.returncode == 0, result.stderr
        return [(r["seq"], r["allowed"]) for r in map(json.loads, result.stdout.splitlines())]
    assert hunt() == [(4, 0), (1, 1), (0, 0)]
    assert hunt("--level", "high") == [(4, 0), (0, 0)]             # high and above
    assert hunt("--rule", "Shell started") == [(1, 1)]
    assert hunt("--rule", rule_id("Windows shell")) == [(4, 0)]
    assert hunt("--host", "web-1") == [(0, 0)]
    assert hunt("--since", "2026-12-01T10:00:01Z") == [(4, 0), (1, 1)]
    table = run_cli("hunt", "--store", store_location, "sigma")
    assert "Download" in table.stdout and "Sigma matches (3)" in table.stdout
    # Allow-listed after the match: shown as allowed from then on.
    with Store(store_location) as store:
        store.allow(batch[0]["ttphash"]["value"], "our download job", "test")
    assert hunt("--host", "web-1") == [(0, 1)]


def test_the_sensors_embedded_collector_evaluates_rules(tmp_path) -> None:
    read, write = os.pipe()
    TOY_PIPE[:] = [read]
    registry = {**SOURCES, "toy": SourceEntry("tests.test_runner:ToySource", ("ecs",), "toy")}
    os.write(write, b"curl bash ls sh\n")
    os.close(write)
    said: list[str] = []
    store = str(tmp_path / "store.sqlite")
    app.run_sensor(RunConfig(source="toy"), [f"jsonl:{tmp_path}/out.jsonl",
                                             f"spool:{tmp_path}/sp"], store, said.append,
                   registry=registry, sigma=[write_rules(tmp_path / "rules", RULES)])
    assert "Sigma rules: 3 evaluated at ingest, 0 for other log sources, 0 not used" in said
    with Store(store, readonly=True) as stored:
        assert sorted(r["title"] for r in stored.sigma_matches()) == ["Shell started"] * 2
    with pytest.raises(app.UsageProblem, match="--store"):
        app.run_sensor(RunConfig(source="toy"), [f"spool:{tmp_path}/sp2"], "", said.append,
                       registry=registry, sigma=[str(tmp_path / "rules")])
    with pytest.raises(app.UsageProblem, match="spool"):
        app.run_sensor(RunConfig(source="toy"), [f"jsonl:{tmp_path}/o2.jsonl"], store,
                       said.append, registry=registry, sigma=[str(tmp_path / "rules")])


def test_rules_that_cannot_be_used_are_told_and_the_rest_evaluated(tmp_path) -> None:
    directory = tmp_path / "rules"
    write_rules(directory, RULES)
    (directory / "broken.yml").write_text("title: x\ndetection: [\n")
    (directory / "loaded_dll.yml").write_text(
        "title: dll\nlogsource:\n    category: process_creation\n    product: windows\n"
        "detection:\n    sel:\n        ImageLoaded|endswith: .dll\n    condition: sel\n")
    said: list[str] = []
    rules = load_rule_set([str(directory)], said.append)
    assert len(rules) == 3
    assert any("broken.yml" in m for m in said)
    assert any("loaded_dll.yml" in m and "ImageLoaded" in m for m in said)
    assert said[-1] == "Sigma rules: 3 evaluated at ingest, 0 for other log sources, 2 not used"


def test_generated_rules_load_and_some_match_the_bench_events(tmp_path) -> None:
    """The rules `bench ingest --sigma` measures with: all usable, and they match some (not
    all) of the benchmark's events, through the rule set's literal pre-check and without it."""
    result = run_cli("sigma", "generate", str(tmp_path / "gen"), "--count", "40")
    assert result.returncode == 0, result.stderr
    loaded = load([str(tmp_path / "gen")])
    assert len(loaded.rules) == 40 and not loaded.problems
    from collector.sigma.rules import RuleSet
    rules = RuleSet(loaded.rules)
    sample = bench.varied_events(400)
    matched = [rules.match(e) for e in sample]
    assert 0 < sum(map(bool, matched)) < len(sample)
    assert matched == [[r for r in loaded.rules if r.matches(e)] for e in sample]


def test_threads_share_nothing_while_matching(tmp_path) -> None:
    """Collector connection threads ingest concurrently: a rule set keeps no per-event state
    between calls."""
    rules = load_rule_set([write_rules(tmp_path / "rules", RULES)], lambda m: None)
    batch = events()
    expected = [[r.title for r in rules.match(e)] for e in batch]
    seen: list[list[list[str]]] = []

    def worker() -> None:
        seen.append([[r.title for r in rules.match(e)] for e in batch * 200][:len(batch)])
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [expected] * 4


def test_a_store_from_before_sigma_answers_hunt_sigma_with_nothing(tmp_path) -> None:
    """`hunt` opens a store read-only, so it cannot add the table an older store lacks."""
    path = str(tmp_path / "old.sqlite")
    with Store(path) as store:
        store.ingest("s", 0, events()[:1], "sensor-1")
        store.db.execute("DROP TABLE sigma_matches")
        store.db.commit()
    result = run_cli("hunt", "--store", path, "--json", "sigma")
    assert result.returncode == 0 and result.stdout == "", result.stderr


def test_a_rule_that_fails_on_an_event_is_counted_and_the_frame_still_stored(tmp_path) -> None:
    """A rule whose evaluation raises (a bug, a value of a type nobody foresaw) must not fail
    the frame's ingest: the collector would refuse it and the forwarder send it for ever."""
    rules = load_rule_set([write_rules(tmp_path / "rules", RULES)], lambda m: None)
    shell = next(r for r in rules.rules if r.title == "Shell started")

    def broken(fields) -> bool:  # noqa: ANN001
        raise TypeError("a value nobody foresaw")
    shell.test = broken
    with Store(str(tmp_path / "store.sqlite"), rules=rules) as store:
        result = store.ingest("s", 0, events(), "sensor-1")
        assert result.new == 6 and result.matches == 2     # the other rules still matched
    assert rules.errors == {shell.id: 1}                  # bash: the one event it was asked
