"""The benchmark commands run and print their tables (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("args", [["encode", "--events", "50"],
                                  ["filehash", "--files", "5", "--rounds", "1"],
                                  ["spool", "--events", "600"],
                                  ["ingest", "--events", "600"],
                                  ["ingest", "--events", "600", "--prefill", "1000"],
                                  ["collect", "--sensors", "2", "--frames", "1"]])
def test_bench_command_runs(args) -> None:
    result = run_cli("bench", *args)
    assert result.returncode == 0, result.stderr
    assert "µs/event" in result.stdout


def test_bench_assembly_assembles_every_event_of_its_streams() -> None:
    result = run_cli("bench", "assembly", "--scale", "0.02")
    assert result.returncode == 0, result.stderr
    rows = {line[:28].strip(): line[28:].split() for line in result.stdout.splitlines()[1:]}
    assert rows["in order, with EOE"][:2] == ["2000", "1000"]
    assert rows["100k open, then 3k later"][:2] == ["5000", "5000"]
    assert rows["1,000 nodes shuffled"][:2] == ["1400", "700"]


def test_bench_stages_prints_every_stage_of_both_paths() -> None:
    """On a corpus log (no recording needed) and the recorded eBPF stream."""
    from tests.test_audit_corpus import LAUREL_DIR
    log = LAUREL_DIR / "shell-proc-trace-confusion.txt"
    result = run_cli("bench", "stages", "--audit-log", str(log), "--ebpf-events", "200")
    assert result.returncode == 0, result.stderr
    for path in ("audit path", "eBPF path"):
        assert path in result.stdout
    rows = [line.strip("│ ").split("│")[0].strip() for line in result.stdout.splitlines()
            if line.startswith("│")]
    for stage in ("json.dumps (reference)", "decode", "build (whole event)", "facts",
                  "enrich (process map)", "fingerprint (TTPHash)", "render (ECS line)",
                  "sink (rotating file)", "total"):
        assert sum(row.startswith(stage) for row in rows) == 2, (stage, rows)


def test_bench_console_measures_every_page(tmp_path) -> None:
    done = run_cli("bench", "console", "--events", "3000", "--requests", "3", "--keep",
                   str(tmp_path))
    assert done.returncode == 0, done.stderr
    for page in ("today", "rare", "a TTPHash", "a host's tree", "search: argument"):
        assert page in done.stdout, done.stdout
    assert "3,000 events" in done.stdout


def test_bench_ingest_with_generated_sigma_rules(tmp_path) -> None:
    """Both evaluators on the same frames: ours and pySigma's SQL find the same matches."""
    assert run_cli("sigma", "generate", str(tmp_path), "--count", "30").returncode == 0
    result = run_cli("bench", "ingest", "--events", "1000", "--sigma", str(tmp_path),
                     env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "Sigma rules: 30 evaluated at ingest" in result.stderr
    ours = re.search(r"30 rules evaluated alone \((\d+) matches", result.stdout)
    by_sql = re.search(r"each frame a table; (\d+) matches", result.stdout)
    assert ours and by_sql and int(ours.group(1)) == int(by_sql.group(1)) > 0, result.stdout
    assert "with 30 Sigma rules" in result.stdout


def test_a_figure_at_zero_is_printed_not_divided_by(capsys) -> None:
    """bench ingest's admission is a difference of two timings, which a noisy machine can
    bring to zero (it once failed CI with a ZeroDivisionError): the table says so."""
    from common.bench import Row, print_table
    print_table([Row("a difference below resolution", 0.0, "x", 0.0), Row("one", 2.0)])
    out = capsys.readouterr().out
    assert "a difference below resolution" in out and "500,000" in out
    assert re.search(r"0\.00 .*–", out)


def test_the_cpu_column_is_printed_where_a_bench_measured_cpu(capsys) -> None:
    """A table with CPU figures has their column, "–" where a row has none (a remote
    server); a table without any has no such column."""
    from common.bench import Row, print_table, timing_fresh
    timing = timing_fresh(lambda: None, lambda _: sum(range(200_000)), 1000, repeats=3,
                          other_cpu=lambda _: 0.5)
    assert timing.cpu_us is not None and timing.cpu_us >= 500.0  # 0.5 s over 1,000 items
    unknown = timing_fresh(lambda: None, lambda _: None, 10, repeats=2,
                           other_cpu=lambda _: None)
    assert unknown.cpu_us is None
    print_table([Row("with", 2.0, cpu_us=timing.cpu_us), Row("without", 4.0)])
    out = capsys.readouterr().out
    assert "CPU µs/event" in out and re.search(r"without +│ +4\.00 +│ +– ", out), out
    print_table([Row("plain", 2.0)])
    assert "CPU" not in capsys.readouterr().out


def test_the_server_backend_cpu_of_a_round_is_counted(postgres_server) -> None:
    """bench ingest adds the PostgreSQL backend's CPU on this host to its own: a query that
    keeps the server busy shows there, not in this process's CPU."""
    import time

    from collector.bench import ServerCpu
    from collector.store import Store
    store, server = Store(postgres_server()), ServerCpu()
    server.start(store)
    ours = time.process_time()
    store.db.execute("SELECT count(*) FROM generate_series(1, 5000000)").fetchone()
    ours = time.process_time() - ours
    server.stop_and_close(store)
    spent = server.spent(store)
    assert spent is not None and spent >= 0.2 and spent > 5 * ours, (spent, ours)
    assert server.spent(store) is None  # read once


def test_bench_wake_feeds_every_batch_and_compares_with_no_pause(tmp_path) -> None:
    """A corpus trace repeated into 400 execs: every event of the warm-up, the run without
    pauses and each batch is built (one event per record group here), and each batch size has
    its row for the pipeline and for the json.dumps reference; then the host's page reads."""
    from sensor_linux.audit.bench import repeat
    from tests.test_audit_corpus import LAUREL_DIR
    clean = tmp_path / "trace.log"  # the corpus file's comments are no audit records
    clean.write_bytes(b"".join(line for line in (LAUREL_DIR / "shell-proc-trace.txt")
                               .read_bytes().splitlines(keepends=True)
                               if line.strip() and not line.startswith(b"#")))
    log = tmp_path / "repeated.log"
    repeat(clean, log, 400)
    result = run_cli("bench", "wake", "--audit-log", str(log), "--warm", "10",
                     "--continuous", "20", "--batches", "3", "--gap-ms", "1",
                     env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    fed = 10 + 20 + 3 * (1 + 2 + 5 + 20)
    assert f"{fed} events built" in result.stdout, result.stdout
    for what in ("pipeline", "json.dumps"):
        assert f"{what}, no pause" in result.stdout
        for size in (1, 2, 5, 20):
            assert re.search(rf"{what}, {size} a batch: a wake [+-][\d,]+ µs", result.stdout)
    # The host's own table: each page size without and after the pause, set against each other.
    for kind in ("4 KiB pages", r"2 MiB pages \((given|asked for, not given)\)"):
        assert re.search(rf"{kind}, no pause +│ +[\d.]+", result.stdout), result.stdout
        assert re.search(rf"{kind}, after a 1 ms pause +│ +[\d.]+ .*no pause", result.stdout)
    # And its interpreter, at fixed work: each figure a positive number of µs an item.
    for what in ("json.dumps of a fixed process event",
                 "a fixed SYSCALL record's fields, split by a Python loop"):
        found = re.search(rf"{re.escape(what)} +│ +([\d.]+) ", result.stdout)
        assert found and float(found.group(1)) > 0, result.stdout
    too_many = run_cli("bench", "wake", "--audit-log", str(log), "--batches", "1000")
    assert too_many.returncode != 0 and "this run feeds" in too_many.stderr


def test_the_interpreter_reference_does_real_work_and_times_it() -> None:
    """The fixed record is split into all its fields (the loop is the work timed, not a
    shortcut), the event is one JSON can encode, and each figure is a time per item."""
    from sensor_linux import wake
    fields = wake._reference_fields(wake._REFERENCE_RECORD)
    assert len(fields) == 28 and fields[b"exe"] == b"/usr/bin/true" and fields[b"ses"] == b"3"
    assert fields[b"key"] == b"ttpsensor-exec" and b"type" in fields
    assert json.loads(json.dumps(wake._REFERENCE_EVENT)) == wake._REFERENCE_EVENT
    few, many = wake.interpreter_costs(items=50, rounds=3), wake.interpreter_costs(rounds=3)
    for costs in (few, many):
        assert costs.dumps_us > 0 and costs.parse_us > 0
    assert (few.items, many.items) == (50, wake.INTERPRETER_ITEMS)
    line = wake.interpreter_line(few, many)
    assert f"event {few.dumps_us:.2f} µs" in line and f"; {many.dumps_us:.2f} and" in line


def test_bench_ingest_measures_postgresql_and_its_floor(postgres_server) -> None:
    """Every PostgreSQL row is printed, the floor last; the floor's COPY stored every event of
    the fleet (it is the last thing the bench does to the database)."""
    import psycopg
    url = postgres_server()
    result = run_cli("bench", "ingest", "--events", "1000", "--postgres", url,
                     env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    for row in ("collector ingest, PostgreSQL (every TTPHash new)",
                "collector ingest, PostgreSQL, a fleet, 16 frames a commit",
                "PostgreSQL alone: the fleet's event rows built beforehand"):
        assert row in result.stdout, result.stdout
        # Its CPU (ours and the local server backend's) is a figure, not "–".
        line = next(li for li in result.stdout.splitlines() if row in li)
        assert re.search(r"│ +[\d.]+ +│ +[\d.]+ +│", line), line
    with psycopg.connect(url) as db:
        assert db.execute("SELECT spool, count(*) FROM events GROUP BY spool").fetchall() == [
            ("floor", 1000)]
