"""The overhead lab: its parts on their own, then ``bench overhead --quick`` for real."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from sensor_linux.lab import measure
from sensor_linux.lab.loadgen import _latencies_us, generate
from sensor_linux.lab.modes import MarkerCounter, all_modes
from sensor_linux.lab.overhead import Measurement
from sensor_linux.lab.report import markdown, processes, ratios, rows
from tests.conftest import require, run_cli


def test_marker_counter_reads_only_new_whole_lines(tmp_path) -> None:
    log = tmp_path / "out.jsonl"
    log.write_bytes(b'{"a": "ttplab-old"}\n{"a": "ttplab-run"}\n')   # before the run: ignored
    counter = MarkerCounter(log, b"ttplab-run")
    with open(log, "ab") as f:
        f.write(b'{"a": "ttplab-run"}\n{"a": "other"}\n{"a": "ttplab-r')   # a line half written
    assert counter.count() == 1
    with open(log, "ab") as f:
        f.write(b'un"}\n')
    assert counter.count() == 2
    prefixed = MarkerCounter(log, b"ttplab-run", b"type=EXECVE ")
    with open(log, "ab") as f:
        f.write(b"type=EXECVE msg=audit(1.0:1): a1=\"ttplab-run\"\n"
                b"type=PROCTITLE msg=audit(1.0:1): ttplab-run\n")
    assert prefixed.count() == 1
    assert MarkerCounter(tmp_path / "absent", b"x").count() == 0


def test_load_generator_spawns_at_the_rate_and_reports_its_children(tmp_path) -> None:
    result = generate(200, 0.5, "unit")
    assert result.started == 100 and result.spawn_failures == 0
    assert 100 < result.achieved_rate < 300
    assert 0 < result.latency_p50_us <= result.latency_p99_us
    assert result.children_cpu_s > 0     # the spawned programs' CPU is theirs, not ours
    with pytest.raises(ValueError):
        generate(0, 1, "bad")


def test_latencies_pair_each_spawn_with_its_own_reap_when_pids_wrap() -> None:
    spawned = [(7, 1000), (8, 2000), (7, 5000)]      # pid 7 reused after its first reap
    reaped = [(7, 3000), (8, 4000), (7, 9000)]
    assert sorted(_latencies_us(spawned, reaped)) == [2.0, 2.0, 4.0]
    assert _latencies_us([(9, 0)], []) == []           # never reaped: no latency invented


def test_cpu_of_a_process_whose_name_has_parentheses_and_spaces(tmp_path) -> None:
    odd = tmp_path / "x) (y z"
    shutil.copy("/bin/sh", odd)
    proc = subprocess.Popen([str(odd), "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); "
                                             "done; sleep 5"])
    try:
        time.sleep(1.5)
        assert measure.comm(proc.pid) == "x) (y z"
        cpu = measure.process_cpu(proc.pid)
        assert cpu is not None and cpu.total_s > 0
        fields = measure.stat_fields(proc.pid)
        assert fields is not None and int(fields[1]) == os.getpid()   # ppid: parsed in place
        assert proc.pid in measure.children(os.getpid())
    finally:
        proc.kill()
        proc.wait()
    assert measure.process_cpu(proc.pid) is None


def test_task_runs_counts_the_cpu_and_wakes_of_every_live_thread() -> None:
    """Each wake from a sleep puts a thread on a CPU once more (preemption on a busy machine
    only adds to it): two threads that nap twenty times each give forty at least, both
    counted; a process that is gone gives zero."""
    code = ("import threading, time\n"
            "def naps():\n"
            "    for _ in range(20):\n"
            "        time.sleep(0.01)\n"
            "other = threading.Thread(target=lambda: (naps(), time.sleep(60)), daemon=True)\n"
            "other.start(); naps(); sum(range(3_000_000))\n"
            "time.sleep(0.5); print('done', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "done\n"
        runs = measure.task_runs(proc.pid)
        assert len(os.listdir(f"/proc/{proc.pid}/task")) == 2
        # A second of life: forty naps and a few preemptions, not thousands of anything.
        assert 40 <= runs.slices < 5000 and 0.01 < runs.cpu_seconds < 5, runs
        assert (runs - measure.TaskRuns(0.01, 40)).slices == runs.slices - 40
    finally:
        proc.kill()
        proc.wait()
    assert measure.task_runs(proc.pid) == measure.TaskRuns()


def test_report_derives_totals_from_the_baseline_and_ratios_between_modes() -> None:
    def m(mode: str, collectors: float, workload: float, kauditd: float = 0.0) -> Measurement:
        return Measurement(mode, 500, mode.startswith("ebpf"), started=100, received=100,
                           collector_cpu_pct=collectors, workload_cpu_pct=workload,
                           kauditd_cpu_pct=kauditd)
    results = [m("none", 0, 50), m("auditd-raw", 4, 56, 2), m("ebpf", 5, 52),
               Measurement("hybrid", 500, True, error="did not start")]
    for r in results[:3]:
        r.achieved_rate = 500.0
    results[2].bpf_run_pct = 0.5
    stalled = m("auditd+ttpsensor", 40, 10)       # the workload waited: a stalled system
    stalled.achieved_rate, stalled.received = 300.0, 60
    laurel = m("auditd+laurel", 10, 55)
    laurel.achieved_rate = 499.0
    results += [stalled, laurel]
    table = {r["mode"]: r for r in rows(results)}
    assert table["auditd-raw"]["workload_excess_pct"] == 6
    assert table["auditd-raw"]["total_cpu_pct"] == 12
    assert table["ebpf"]["total_cpu_pct"] == 7
    assert table["hybrid"]["total_cpu_pct"] is None
    assert table["auditd+ttpsensor"]["saturated"] and not table["auditd+laurel"]["saturated"]
    compared = ratios(list(table.values()))
    # The stalled plugin run is no cost figure: it is left out of the comparisons.
    assert [(c["mode"], c["peer"]) for c in compared] == [("ebpf", "auditd-raw")]
    assert compared[0]["total_ratio"] == pytest.approx(7 / 12)
    # Steady: collectors, kauditd and BPF, without the workload excess.
    assert compared[0]["steady_ratio"] == pytest.approx(5.5 / 6)
    # Each collector process per exec: 3 % of a CPU at 499 execs/s is 60 µs an exec.
    laurel.collectors = {"laurel": {"user": 3.0, "system": 1.0},
                         "auditd": {"user": 1.0, "system": 4.0}}
    laurel.memory_mib = {"laurel": {"rss": 11.0, "peak": 12.5},
                         "auditd": {"rss": 3.0, "peak": 3.0}}
    per_process = processes(rows(results))
    assert [(p["mode"], p["process"]) for p in per_process] == [
        ("auditd+laurel", "auditd"), ("auditd+laurel", "laurel")]  # no other row names any
    assert per_process[1]["user_us_per_exec"] == pytest.approx(3.0 * 1e4 / 499)
    assert per_process[1]["us_per_exec"] == pytest.approx(4.0 * 1e4 / 499)
    assert (per_process[1]["rss_mib"], per_process[1]["peak_rss_mib"]) == (11.0, 12.5)
    assert "| auditd+laurel | 500 | laurel | 60.1 | 20.0 | 80.2 | 11.0 | 12.5 |" in markdown(
        rows(results), [], per_process)
    # Results written before the lab read memory show none.
    old_row = dict(rows(results)[-1])
    old_row.pop("memory_mib")
    assert processes([old_row])[0]["peak_rss_mib"] is None


@pytest.mark.kernel
def test_quick_lab_runs_every_mode_end_to_end_and_restores_state(tmp_path) -> None:
    require(os.geteuid() == 0, "the lab needs root")
    for tool in ("auditd", "auditctl", "laurel"):
        require(shutil.which(tool) is not None, f"{tool} is needed")

    def state() -> tuple[str, str, str]:
        status = subprocess.run(["auditctl", "-s"], capture_output=True, text=True).stdout
        enabled = next(line for line in status.splitlines() if line.startswith("enabled"))
        rules = subprocess.run(["auditctl", "-l"], capture_output=True, text=True).stdout
        return enabled, rules, measure.read_bpf_stats_enabled()

    before = state()
    out = tmp_path / "report"
    done = run_cli("bench", "overhead", "--quick", "--out", str(out), timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert state() == before

    doc = json.loads((out / "results.json").read_text())
    modes = list(all_modes())
    assert [(r["mode"], r["rate"]) for r in doc["results"]] == \
        [(mode, rate) for mode in modes for rate in (100, 500)]
    for row in doc["results"]:
        assert row["error"] is None, row
        assert row["started"] == row["rate"] * 3        # the generator kept the pace
        if row["mode"] == "none":
            assert row["received"] is None and row["collectors"] == {}
        else:
            assert row["received"] == row["started"], row   # nothing lost in any mode
            assert row["collectors"], row
        if row["mode"] in ("ebpf", "hybrid"):
            assert row["bpf_ns_per_run"] > 0                # our probes ran, and were timed
        if (row["mode"].startswith("auditd") or row["mode"] == "netlink") \
                and row["rate"] == 500:
            assert row["kauditd_cpu_pct"] > 0, row         # audit's delivery thread was seen
    assert {c["comparison"] for c in doc["ratios"]} == {
        "our eBPF mode vs auditd alone", "our hybrid mode vs auditd alone",
        "our plugin vs LAUREL (both behind auditd)",
        "our netlink mode vs auditd with LAUREL"}
    # Every collector process of every mode, per exec (auditd's own share behind a plugin).
    assert {(p["mode"], p["rate"], p["process"]) for p in doc["processes"]} == {
        (r["mode"], r["rate"], name) for r in doc["results"] for name in r["collectors"]}
    for row in doc["results"]:
        mine = [p["us_per_exec"] for p in doc["processes"]
                if (p["mode"], p["rate"]) == (row["mode"], row["rate"])]
        assert sum(mine) == pytest.approx(row["collector_cpu_pct"] * 1e4 / row["achieved_rate"])
    # Each collector's own memory, read while it ran: a process of a few MiB (auditd) to an
    # interpreter with its tables (ours), never the lab's own size.
    for p in doc["processes"]:
        assert 0.5 < p["rss_mib"] <= p["peak_rss_mib"] < 400, p
        if p["mode"] == "ebpf":
            # The compile's heap and the compiler's code were given back after the load.
            assert p["rss_mib"] < p["peak_rss_mib"] - 40, p
    with open(out / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(doc["results"])
    assert (out / "results.md").read_text().count("\n| ") >= len(doc["results"])
    assert (out / "cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Which kind of host the run was made on: its page reads after the eBPF sources' pause.
    # Measured before the modes and again after them (a shared host's cost moves in a run).
    host, after = doc["settings"]["host_pages"], doc["settings"]["host_pages_after"]
    for measured in (host, after):
        assert measured["pause_s"] == 0.2 and measured["pages"] == 2000
        assert all(measured[k] > 0 for k in ("small_no_pause_us", "small_paused_us",
                                             "huge_no_pause_us", "huge_paused_us"))
    said = (out / "results.md").read_text()
    assert f"costs {host['small_paused_us']:.2f} µs" in said
    assert (f"and {after['small_paused_us']:.2f} µs ({after['small_no_pause_us']:.2f}) "
            "measured again after the modes") in said
    # And how fast its interpreter ran fixed work, before and after the modes.
    speed, speed_after = (doc["settings"]["host_interpreter"],
                          doc["settings"]["host_interpreter_after"])
    for measured in (speed, speed_after):
        assert measured["items"] == 2000 and measured["dumps_us"] > 0 < measured["parse_us"]
    assert (f"json.dumps of a fixed process event {speed['dumps_us']:.2f} µs, a fixed audit "
            f"record split by a Python loop {speed['parse_us']:.2f} µs; "
            f"{speed_after['dumps_us']:.2f} and {speed_after['parse_us']:.2f} µs") in said


def test_rounds_alternate_their_order_and_are_judged_on_their_median() -> None:
    from sensor_linux.lab.modes import all_modes as modes_by_name
    from sensor_linux.lab.overhead import round_order
    from sensor_linux.lab.report import summary

    modes = list(modes_by_name().values())[:3]
    assert round_order(modes, 1) == modes
    assert round_order(modes, 2) == modes[::-1]
    assert round_order(modes, 3) == modes

    def m(mode: str, round_: int, collectors: float, workload: float) -> Measurement:
        return Measurement(mode, 500, mode == "ebpf", started=100, received=100,
                           achieved_rate=500.0, collector_cpu_pct=collectors,
                           workload_cpu_pct=workload, round=round_)
    # Round 2's baseline is higher: each round's totals are against its own.
    results = [m("none", 1, 0, 50), m("auditd-raw", 1, 10, 50), m("ebpf", 1, 4, 50),
               m("none", 2, 0, 60), m("auditd-raw", 2, 10, 60), m("ebpf", 2, 4.5, 61),
               m("none", 3, 0, 50), m("auditd-raw", 3, 10, 50), m("ebpf", 3, 4, 54)]
    table = rows(results)
    assert [r["total_cpu_pct"] for r in table if r["mode"] == "ebpf"] == [4, 5.5, 8]
    compared = ratios(table)
    assert [(c["round"], c["total_ratio"]) for c in compared] == [
        (1, pytest.approx(0.4)), (2, pytest.approx(0.55)), (3, pytest.approx(0.8))]
    [ebpf] = [s for s in summary(compared) if s["comparison"].startswith("our eBPF")]
    assert ebpf["rounds"] == 3 and ebpf["goal"] == 0.5
    assert ebpf["total_median"] == pytest.approx(0.55)
    assert (ebpf["total_min"], ebpf["total_max"]) == (pytest.approx(0.4), pytest.approx(0.8))
    assert ebpf["steady_median"] == pytest.approx(0.4)  # 4, 4.5, 4 against 10
    # One round's total under the goal is not the median's; the steady ratios (without the
    # workload excess) are all under it.
    assert ebpf["total_within_goal"] is False and ebpf["steady_within_goal"] is True
    text = markdown(table, compared, processes(table), summary(compared))
    assert "| round | mode |" in text
    assert "| our eBPF mode vs auditd alone | 500 | 3 | 0.55× | 0.40–0.80× | 0.40× | " \
           "0.40–0.45× | ≤ 0.50× | no / yes |" in text
    # One round: no round column and no summary table (its median is its only figure).
    single = rows(results[:3])
    assert "| round |" not in markdown(single, ratios(single), None,
                                       summary(ratios(single)))
    assert "median within goal" not in markdown(single, ratios(single), None,
                                                summary(ratios(single)))


@pytest.mark.kernel
def test_lab_rounds_run_every_mode_again_in_the_other_order(tmp_path) -> None:
    require(os.geteuid() == 0, "the lab needs root")
    require(shutil.which("auditd") is not None, "auditd is needed")
    out = tmp_path / "report"
    done = run_cli("bench", "overhead", "--quick", "--rounds", "2", "--modes",
                   "none,auditd-raw,ebpf", "--out", str(out), timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert [(r["round"], r["mode"], r["rate"]) for r in doc["results"]] == [
        (1, "none", 100), (1, "none", 500), (1, "auditd-raw", 100), (1, "auditd-raw", 500),
        (1, "ebpf", 100), (1, "ebpf", 500),
        (2, "ebpf", 100), (2, "ebpf", 500), (2, "auditd-raw", 100), (2, "auditd-raw", 500),
        (2, "none", 100), (2, "none", 500)]
    for row in doc["results"]:
        assert row["error"] is None, row
        if row["mode"] != "none":
            assert row["received"] == row["started"], row
    # Each round's comparison is of that round's runs; the summary counts the rounds that
    # gave a figure (a round whose total came out below zero gives none).
    rounds = {(c["round"], c["rate"]) for c in doc["ratios"]
              if c["comparison"] == "our eBPF mode vs auditd alone"
              and c["total_ratio"] is not None}
    assert {s["rate"] for s in doc["summary"]
            if s["comparison"] == "our eBPF mode vs auditd alone"} == {100, 500}
    for item in doc["summary"]:
        if item["comparison"] == "our eBPF mode vs auditd alone":
            assert item["rounds"] == len({r for r, rate in rounds if rate == item["rate"]})
            if item["rounds"]:
                assert item["total_min"] <= item["total_median"] <= item["total_max"]
    assert "median within goal" in (out / "results.md").read_text()
    assert (out / "cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_our_plugin_mode_refuses_pythonpath_which_auditd_would_not_pass_on(tmp_path,
                                                                          monkeypatch) -> None:
    """auditd starts its plugins with an empty environment: under PYTHONPATH the plugin would
    run the installed code while the lab's other modes ran PYTHONPATH's (a lab of 2026-12-06
    measured an older plugin so). The mode says why before anything starts."""
    from sensor_linux.lab.modes import ModeError
    require(shutil.which("auditd") is not None, "auditd is needed")
    mode = all_modes()["auditd+ttpsensor"]
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(ModeError, match="PYTHONPATH"):
        mode.start(tmp_path / "work")
    assert mode.proc is None  # type: ignore[attr-defined] # no auditd was started
