"""``ttpsensor bench plugin``: our auditd plugin and LAUREL fed the same recorded events at a
rate. The events as written (fresh ids, this process as parent), the feed itself with the real
plugins (every event written out, rounds in alternating order, CPU taken), a plugin that loses
events caught, the summary's medians, and bad options refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sensor_linux.audit import paced
from sensor_linux.audit.bench import count_lines
from sensor_linux.audit.records import parse
from tests.conftest import require, run_cli
from tests.test_audit_corpus import LAUREL_DIR

# Real kernel records of ``dpkg -l`` (LAUREL's corpus): execs, clones and others.
RECORDING = LAUREL_DIR / "proc-trace-dpkg-l.txt"


def _events() -> list[paced.Template]:
    require(RECORDING.exists(), f"{RECORDING} (the shared corpus) is missing")
    return paced.templates(RECORDING.read_bytes().splitlines(keepends=True), os.getpid())


def test_each_event_is_written_with_a_fresh_id_and_this_process_as_its_parent() -> None:
    lines = RECORDING.read_bytes().splitlines(keepends=True) if RECORDING.exists() else []
    events = _events()
    lines = [line for line in lines if b"msg=audit(" in line]  # not its comments
    ids = {(r.node, r.sec, r.msec, r.serial) for r in map(parse, lines)}
    assert len(events) == len(ids) > 1
    new = paced.event_id(77, 1_800_000_000.25)
    assert new == b"1800000000.250:77"
    for template in events:
        text = new.join(template)
        records = [parse(line) for line in text.splitlines(keepends=True)]
        assert len(records) == len(template) - 1
        assert {(r.sec, r.msec, r.serial) for r in records} == {(1_800_000_000, 250, 77)}
        for record in records:
            if record.get("ppid") is not None:
                assert record.get("ppid") == os.getpid()
    # Every record of the recording is written, in its order, nothing else.
    stamped = b"".join(b"".join(t) for t in events)
    assert stamped.count(b"\n") == len(lines)


def _plugins_or_skip() -> None:
    require(shutil.which("laurel") is not None, "LAUREL (apt-get install laurel) is missing")


def test_both_plugins_write_every_event_fed_round_after_round(tmp_path: Path) -> None:
    _plugins_or_skip()
    runs = paced.measure(_events(), [200], rounds=2, seconds=1.5, warmup=0.5,
                         plugins=paced.engines(tmp_path), work=tmp_path)
    assert [(r.round, r.engine) for r in runs] == [
        (1, paced.OURS), (1, paced.PEER), (2, paced.PEER), (2, paced.OURS)]
    for run in runs:
        assert run.fed > 200 and run.output == run.fed, run
        assert 0 < run.window_events <= run.fed and run.cpu_seconds > 0, run
        assert run.slices > 0 and run.slices_per_second > 0, run  # it woke to read
        assert run.achieved_rate <= 200 * 1.1, run  # never ahead of its schedule
        # Its own memory, read while it ran: LAUREL a few MiB, ours an interpreter's tens.
        assert 0.5 < run.rss_mib <= run.peak_rss_mib < 400, run
    assert paced.lost(runs) == []
    (row,) = paced.summary(runs)
    assert row["rate"] == 200 and row["ratio"] > 0 and row["lowest"] <= row["highest"]


# Real kernel records (auditd's log, this project's VMs): a PATH walk, seven failed execs of
# one process (ENOENT) and the one that found the program.
PATH_WALK = Path(__file__).parent / "data" / "audit-path-walk.log"


def test_failed_execs_folded_into_the_next_exec_count_as_written(tmp_path: Path) -> None:
    """Ours folds a PATH walk's misses into the exec that follows them (one line for eight
    events), LAUREL writes each: both wrote every event fed."""
    _plugins_or_skip()
    events = paced.templates(PATH_WALK.read_bytes().splitlines(keepends=True), os.getpid())
    assert len(events) == 8
    runs = paced.measure(events, [80], rounds=1, seconds=1.0, warmup=0.2,
                         plugins=paced.engines(tmp_path), work=tmp_path)
    assert paced.lost(runs) == []
    for run in runs:
        assert run.output == run.fed > 8, run
    lines = count_lines(tmp_path / "ours-80-1.jsonl")
    assert lines < runs[0].fed / 4  # folded: the count above is not one a line


def test_an_output_counts_a_line_an_event_and_ours_its_folded_attempts(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"process": {"pid": 1, "exec_attempts": {"count": 3, "errors": {}}}}\n'
                   # the name elsewhere (LAUREL's text, another map) counts one line
                   '{"process": {"pid": 2}, "labels": {"exec_attempts": {"count": 9}}}\n'
                   '{"event": {"kind": "metric"}}\n'
                   '{"process": {"exec_attempts": {"cou')  # cut while written
    assert paced.count_events(out) == 7
    assert paced.count_events(tmp_path / "none.jsonl") == 0


def test_a_plugin_that_loses_events_is_caught(tmp_path: Path) -> None:
    out = tmp_path / "kept.txt"

    def keeps_five(run: paced.Run) -> tuple[list[str], None, Path]:
        # Reads everything (no broken pipe) and keeps the first five lines.
        return ["sh", "-c", f"awk 'NR <= 5' > {out}"], None, out

    def writes_each(run: paced.Run) -> tuple[list[str], None, Path]:
        return ["sh", "-c", f"cat > {tmp_path}/all.txt"], None, tmp_path / "all.txt"

    events = [[b"type=EOE msg=audit(", b"): \n"]]
    runs = paced.measure(events, [100], rounds=1, seconds=0.5, warmup=0.1,
                         plugins={"short": keeps_five, "whole": writes_each}, work=tmp_path)
    assert [r.engine for r in paced.lost(runs)] == ["short"]
    assert runs[0].output == 5 and runs[1].output == runs[1].fed > 5


def test_a_plugin_that_stops_while_fed_is_a_clear_error(tmp_path: Path) -> None:
    import click

    def stops(run: paced.Run) -> tuple[list[str], None, Path]:
        return ["sh", "-c", "echo 'no configuration' >&2; exit 3"], None, tmp_path / "none"

    events = [[b"type=EOE msg=audit(", b"): \n"]]
    with pytest.raises(click.ClickException, match="stops stopped while fed: no configuration"):
        paced.measure(events, [100], rounds=1, seconds=2.0, warmup=0.1,
                      plugins={"stops": stops}, work=tmp_path)


def test_the_summary_takes_the_median_of_the_rounds_ratios() -> None:
    def run(engine: str, number: int, cpu: float) -> paced.Run:
        return paced.Run(engine, 500, number, fed=1000, window_events=1000,
                         window_seconds=2.0, cpu_seconds=cpu, output=1000)

    runs = [run(paced.OURS, 1, 0.10), run(paced.PEER, 1, 0.05),
            run(paced.OURS, 2, 0.12), run(paced.PEER, 2, 0.10),
            run(paced.OURS, 3, 0.09), run(paced.PEER, 3, 0.06)]
    (row,) = paced.summary(runs)
    assert (row["ours_us"], row["peer_us"]) == pytest.approx((100.0, 60.0))
    assert (row["lowest"], row["ratio"], row["highest"]) == pytest.approx((1.2, 1.5, 2.0))


def test_bench_plugin_prints_both_tables_and_refuses_bad_options() -> None:
    _plugins_or_skip()
    require(RECORDING.exists(), f"{RECORDING} (the shared corpus) is missing")
    done = run_cli("bench", "plugin", "--audit-log", str(RECORDING), "--rates", "150",
                   "--seconds", "1", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    assert "ttpsensor-audisp against LAUREL" in done.stdout and "lost" in done.stdout
    for option, value, message in (("--rates", "fast", "not a list of numbers"),
                                   ("--rates", "0", "positive rates"),
                                   ("--seconds", "0", "positive number of seconds")):
        refused = run_cli("bench", "plugin", "--audit-log", str(RECORDING), option, value)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
