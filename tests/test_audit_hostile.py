"""Hostile audit input through the real `audisp` command: every bad line is counted and kept,
nothing crashes, memory follows what was received, and a replay opens no file the log names."""

from __future__ import annotations

import json
import os
import subprocess

from sensor_linux.audit.assemble import MAX_RECORDS_PER_EVENT, Assembler
from sensor_linux.audit.lines import MAX_LINE, LineSplitter
from sensor_linux.audit.records import parse
from sensor_linux.audit.bench import spawn_measured
from tests.conftest import run_cli, ttpsensor_command
from tests.test_audit_corpus import LAUREL_DIR

EXEC = (b'type=SYSCALL msg=audit(1700000000.100:7): arch=c000003e syscall=59 success=yes exit=0 '
        b'ppid=1 pid=4242 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 '
        b'tty=pts0 ses=3 comm="ls" exe="/usr/bin/ls" key=(null)\n'
        b'type=EXECVE msg=audit(1700000000.100:7): argc=2 a0="ls" a1="-l"\n'
        b'type=PATH msg=audit(1700000000.100:7): item=0 name="/usr/bin/ls" '
        b'mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL\n'
        b'type=EOE msg=audit(1700000000.100:7): \n')


def _audisp(tmp_path, data: bytes, *args: str) -> tuple[subprocess.CompletedProcess, dict,
                                                         list[dict]]:
    log = tmp_path / "in.log"
    log.write_bytes(data)
    errors = tmp_path / "errors.log"
    done = run_cli("audisp", str(log), "--parse-error-log", str(errors), *args)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    summary = json.loads(done.stderr.strip().splitlines()[-1].split(": ", 1)[1])
    events = [json.loads(line) for line in done.stdout.splitlines()]
    return done, summary, events


def test_numbers_of_thousands_of_digits_are_errors_or_text_never_a_crash(tmp_path) -> None:
    huge = b"9" * 5000
    data = (EXEC.replace(b"1700000000.100:7", b"1700000000.100:" + huge, 1)      # header
            + EXEC.replace(b"pid=4242", b"pid=" + huge).replace(b":7)", b":8)")   # field
            + EXEC.replace(b"argc=2", b"argc=" + huge).replace(b":7)", b":9)")
            + EXEC.replace(b"a1=", b"a" + huge + b"=").replace(b":7)", b":10)")
            + EXEC.replace(b":7)", b":11)"))                                       # intact
    done, summary, events = _audisp(tmp_path, data)
    assert done.returncode == 0
    assert summary["parse_errors"] == 1                       # the header one
    assert summary["records"] + summary["parse_errors"] == summary["lines"]
    execs = [e for e in events if e["event"]["action"] == "process_create"]
    assert len(execs) == 4 and summary["internal_errors"] == 0
    assert (tmp_path / "errors.log").read_bytes().count(b"\n") == 1


def test_memory_follows_what_arrived_not_what_a_line_claims(tmp_path) -> None:
    data = (EXEC.replace(b"argc=2", b"argc=2000000000")
            + EXEC.replace(b"a1=", b"a999999999=").replace(b":7)", b":8)")
            + EXEC.replace(b'a1="-l"', b"a1=" + b"41" * (20 * 1024 * 1024)).replace(
                b":7)", b":9)"))
    log = tmp_path / "claims.log"
    log.write_bytes(data)
    # The child's own peak (under GNU time): not RUSAGE_CHILDREN, the largest of every child
    # this test run ever had, nor our own wait4's, which holds this process's peak.
    with open(os.devnull, "wb") as null:
        usage = spawn_measured(ttpsensor_command() + [
            "audisp", str(log), "--parse-error-log", str(tmp_path / "claims-errors.log")],
            null.fileno(), null.fileno(), null.fileno(), dict(os.environ))
    # About 25 MiB (the interpreter and its modules are 23): the 40 MB line is cut as it
    # arrives, never held whole, and no claim is allocated for.
    assert usage.exit_code == 0 and 0 < usage.peak_rss_mib < 64, usage
    done, summary, events = _audisp(tmp_path, data)
    assert done.returncode == 0
    execs = [e for e in events if e["event"]["action"] == "process_create"]
    # The 40 MB line is cut and kept as a parse error (its event comes without argv); the
    # others' argv holds what arrived plus at most 1,024 placeholders.
    assert len(execs) == 3 and summary["parse_errors"] == 1
    assert all(len(e["process"].get("args", [])) <= 2 + 1024 for e in execs)
    assert sorted(len(e["process"].get("args", [])) for e in execs) == [0, 2 + 1024, 2 + 1024]
    assert len(done.stdout) < 1_000_000


def test_line_splitter_bounds_memory_and_splits_on_newline_only() -> None:
    splitter = LineSplitter(max_line=16)
    out = splitter.feed(b"short\r\nx" + b"y" * 40)
    out += splitter.feed(b"z" * 40 + b"\nnext\n")
    out += splitter.finish()
    assert out[0] == b"short\r\n"                              # \r is not a line end
    assert len(out[1]) == 17 and out[1].startswith(b"xyyy")    # cut: max_line + 1 bytes
    assert out[2] == b"next\n" and len(out) == 3 and splitter.overlong == 1
    assert LineSplitter().feed(b"a" * (MAX_LINE + 5) + b"\n")[0] == b"a" * (MAX_LINE + 1)


def test_the_same_bytes_give_the_same_records_from_a_file_and_a_pipe(tmp_path) -> None:
    # A \r inside a line: neither path may split there (the pipe used to).
    data = (LAUREL_DIR / "record-execve.txt").read_bytes().replace(b"key=(null)",
                                                                   b"key=(null)\r", 1)
    done, from_file, _ = _audisp(tmp_path, data, "--format", "laurel")
    piped = subprocess.run(ttpsensor_command() + [
        "audisp", "--format", "laurel", "--parse-error-log", str(tmp_path / "e2.log")],
        input=data, capture_output=True, timeout=120)
    from_pipe = json.loads(piped.stderr.decode().strip().splitlines()[-1].split(": ", 1)[1])
    assert piped.stdout.decode() == done.stdout and done.stdout
    assert {k: from_pipe[k] for k in ("lines", "records", "parse_errors")} == {
        k: from_file[k] for k in ("lines", "records", "parse_errors")}


def test_an_event_with_too_many_records_is_cut_and_counted() -> None:
    assembler = Assembler()
    line = b"type=PATH msg=audit(1700000000.100:7): item=0 name=\"x\""
    for _ in range(MAX_RECORDS_PER_EVENT + 10):
        assembler.add(parse(line))
    assert assembler.stats.duplicates == 0
    assert len(assembler.take_rejected()) == 10
    [event] = assembler.flush()
    assert len(event.records) == MAX_RECORDS_PER_EVENT


def test_a_replay_opens_no_file_the_log_names(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = (EXEC.replace(b'exe="/usr/bin/ls"', f'exe="{fifo}"'.encode())
            + EXEC.replace(b":7)", b":8)"))
    done, summary, events = _audisp(tmp_path, data)          # would hang if the FIFO opened
    execs = [e for e in events if e["event"]["action"] == "process_create"]
    assert done.returncode == 0 and len(execs) == 2
    for event in execs:
        assert "hash" not in event["process"] and event["process"]["on_disk"] is None
        assert "package" not in event["process"]
    # Asked to, it hashes this host's file, but never blocks on a FIFO.
    done, _, events = _audisp(tmp_path, data, "--from-this-host")
    ls = [e for e in events if e["event"]["action"] == "process_create"
          and e["process"]["executable"] == "/usr/bin/ls"]
    assert ls and "hash" in ls[0]["process"]
    fifo_event = [e for e in events if e["event"]["action"] == "process_create"
                  and e["process"]["executable"] == str(fifo)]
    assert fifo_event and "hash" not in fifo_event[0]["process"]


def test_the_fuzzer_runs_clean_and_would_see_a_crash(tmp_path, monkeypatch) -> None:
    """A short run of `ttpsensor bench fuzz` (the long one is run by hand, see
    docs/security.md) finds nothing; and the harness does catch and keep a failure."""
    keep = tmp_path / "kept"
    done = run_cli("bench", "fuzz", "--seconds", "20", "--seed", "3", "--keep", str(keep),
                   "--json", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["inputs"] > 500 and report["audit_inputs"] and report["json_inputs"]
    assert report["parse_errors"] > 0 and not keep.exists()
    from sensor_linux.audit import fuzz

    def broken(data: bytes, stats: fuzz.FuzzStats) -> str | None:
        if b"EXECVE" in data:
            raise KeyError("planted")
        return None

    monkeypatch.setattr(fuzz, "_run_audit", broken)
    stats = fuzz.fuzz(fuzz.default_seeds(), 2.0, 0, keep, 10.0, 4096, lambda s: None)
    assert stats.failures > 0 and stats.reasons.get("KeyError") == stats.failures
    assert len(list(keep.glob("*.why"))) == stats.failures


def test_internal_errors_are_numbered_among_themselves() -> None:
    """An event our own code fails on keeps its records and says which internal error it is
    (they were numbered with the parse errors: always #0)."""
    import io

    from common.render import RENDERERS
    from common.sinks import StreamSink, TextOutput
    from sensor_linux.audit.pipeline import audit_pipeline

    class Broken:
        def build(self, audit):  # noqa: ANN001, ANN201 - a builder with a bug
            raise KeyError("a bug")

    messages, kept = io.StringIO(), io.StringIO()
    pipeline = audit_pipeline("ecs", TextOutput(StreamSink(io.StringIO()), RENDERERS["ecs"]),
                              error_log=StreamSink(kept), messages=messages)
    pipeline.builder = Broken()
    for n in (7, 8):
        for line in EXEC.replace(b":7)", b":%d)" % n).splitlines(keepends=True):
            pipeline.feed(line)
    pipeline.close()
    assert pipeline.stats.internal_errors == 2 and pipeline.decoder.stats.parse_errors == 0
    numbers = [line.split("(#", 1)[1].split(")", 1)[0]
               for line in messages.getvalue().splitlines() if "internal error" in line]
    assert numbers and set(numbers) == {"1", "2"}
    assert len(kept.getvalue().splitlines()) == 6  # SYSCALL, EXECVE, PATH of both, verbatim


def test_a_time_past_year_9999_is_a_counted_parse_error_not_an_internal_one(tmp_path) -> None:
    far = EXEC.replace(b"1700000000.100:7", b"253402300800.100:7")  # 10000-01-01
    done, summary, events = _audisp(tmp_path, far + EXEC.replace(b":7)", b":8)"))
    assert summary["internal_errors"] == 0 and summary["parse_errors"] == 4
    assert len(events) == 1 and events[0]["event"]["original_id"] == "1700000000.100:8"
    assert (tmp_path / "errors.log").read_bytes().count(b"253402300800.100:7") == 4


def test_the_split_path_reads_every_line_as_the_general_parser_does() -> None:
    """The hand-written fast path of the record parser (records._plain_body) gives the same
    record as the general parser, or declines: on every corpus line and on mutations of them."""
    import random

    from sensor_linux.audit.fuzz import _mutate, parsers_disagree
    from tests.test_audit_corpus import CORPUS
    lines = [line for path in sorted(CORPUS.rglob("*.txt"))
             for line in path.read_bytes().splitlines() if line.strip()]
    assert len(lines) > 500
    for line in lines:
        assert parsers_disagree(line) is None, line
    rng = random.Random(16)
    seeds = [b"\n".join(lines[i:i + 20]) for i in range(0, len(lines), 20)]
    for _ in range(3000):
        for line in _mutate(rng.choice(seeds), seeds, rng).splitlines():
            assert parsers_disagree(line) is None, line


def test_decimal_fields_read_by_int_type_as_the_general_parser_types_them() -> None:
    """values() reads a decimal field of plain digits with int(): leading zeros, the longest
    numbers it takes and the first it leaves to typing (past int64), signs, empty values, and
    the hex, octal and per-record-type fields that are not decimal must read as typed."""
    from sensor_linux.audit.fuzz import parsers_disagree
    from sensor_linux.audit.records import parse
    for body in (b"pid=0000123 ppid=999999999999999999 uid=9223372036854775807 "
                 b"gid=9223372036854775808 auid=4294967295 ses=-1 exit=-2 euid=+5 suid= "
                 b"arch=c000003e syscall=59 a0=10 a1=0777 items=2 mode=0100755 fsuid=00",
                 b"argc=3 a0=31 a1=\"x\" a2_len=12 a3=00 fd=7 inode=1234567890123456789 "
                 b"arch=40000003 flags=10"):
        for rtype in (b"SYSCALL", b"EXECVE", b"PATH"):
            line = b"type=" + rtype + b" msg=audit(1.002:3): " + body
            assert parsers_disagree(line) is None, line
    record = parse(b"type=SYSCALL msg=audit(1.002:3): pid=0007 uid=12345678901234567890 a1=10")
    assert record.is_plain
    assert record.values(("pid", "uid", "a1")) == [7, b"12345678901234567890", 16]


def test_a_plain_record_finds_a_field_by_name_not_by_a_prefix_or_inside_a_value() -> None:
    """get() on a plain record looks for ``key=`` in its text: a key that begins another key,
    a value that holds ``key=``, a body with no space after the header, and duplicated keys
    must read as the general parser reads them."""
    from sensor_linux.audit.fuzz import parsers_disagree
    for line in (b'type=PATH msg=audit(1.002:3):nametype=NORMAL name="/x" item=0',
                 b'type=PATH msg=audit(1.002:3): nametype=NORMAL name="/x" item=0',
                 b'type=CWD msg=audit(1.002:3):cwd="/a=b" cwd="/second"',
                 b'type=SYSCALL msg=audit(1.002:3): arch=c000003e a0=arch=1 arch2=5 syscall=59',
                 b'type=PATH msg=audit(1.002:3): item=0 name=616263 item=1'):
        assert parsers_disagree(line) is None, line
    from sensor_linux.audit.records import parse
    # The split path takes the form auditd writes (a space after the header); the first field
    # of its body is found at the start of the text.
    record = parse(b'type=PATH msg=audit(1.002:3): nametype=NORMAL name="/x" item=0')
    assert record.is_plain and record.get("name") == b"/x" and record.get("nametype") == b"NORMAL"
    assert parse(b'type=CWD msg=audit(1.002:3): cwd="/a" cwd="/b"').get("cwd") == b"/a"
    assert not parse(b'type=CWD msg=audit(1.002:3):cwd="/a"').is_plain  # the general parser's
