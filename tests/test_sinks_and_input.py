"""Rotated JSON-lines files and the JSON document reader."""

from __future__ import annotations

import os
import stat

import pytest

from common.jsonin import read_documents
from common.sinks import RotatingFileSink


def test_rotation_keeps_n_generations_with_mode_0600(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    sink = RotatingFileSink(str(path), max_bytes=100, generations=3)
    lines = [f'{{"n":{i:04d},"pad":"{"x" * 30}"}}' for i in range(20)]  # 44 bytes each
    for line in lines:
        sink.write(line)
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    for p in tmp_path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert p.stat().st_size <= 100
    kept = []
    for name in ["events.jsonl.3", "events.jsonl.2", "events.jsonl.1", "events.jsonl"]:
        kept += (tmp_path / name).read_text().splitlines()
    assert kept == lines[-len(kept):]  # newest lines, in order, none duplicated
    assert len(kept) == 8


def test_existing_file_is_appended_and_tightened_to_0600(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    sink = RotatingFileSink(str(path), max_bytes=1000)
    sink.write("new \udcff")  # a surrogate-escaped byte never fails a write
    sink.close()
    assert path.read_bytes() == b"old\nnew \xff\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_bad_settings_are_rejected(tmp_path) -> None:
    with pytest.raises(ValueError):
        RotatingFileSink(str(tmp_path / "x"), max_bytes=0)


def _docs(text: str):
    return [(d.line, d.value, d.error is not None) for d in read_documents(text.splitlines(True))]


def test_reader_handles_lines_pretty_documents_and_errors() -> None:
    text = '{"a": 1}\n\n{\n  "b": [1,\n 2]\n}\n{"c": 3} {"d": 4}\n{oops\n{"e": 5}\n'
    assert _docs(text) == [(1, {"a": 1}, False), (3, {"b": [1, 2]}, False),
                           (7, {"c": 3}, False), (7, {"d": 4}, False), (8, None, True),
                           (9, {"e": 5}, False)]


def test_reader_resumes_after_an_unterminated_object() -> None:
    assert _docs('{"a": 1\n{"b": 2}\n') == [(1, None, True), (2, {"b": 2}, False)]
    assert _docs('{"a": 1}\n{"b": \n') == [(1, {"a": 1}, False), (2, None, True)]
    assert _docs('{"a": 1} trailing\n') == [(1, None, True)]


def test_process_table_is_bounded_slim_and_prunes_exited_processes() -> None:
    from common.proctable import Entry, ProcessTable
    table = ProcessTable(max_entries=3)
    for pid in range(1, 6):
        table.record(Entry(pid, float(pid), {"pid": pid, "executable": "/x",
                                             "parent": {"pid": 0, "big": "x" * 1000}}))
    assert len(table) == 3 and table.evicted == 2
    assert "parent" not in table.get(5).process  # only parent fields are kept
    alive = {4}
    assert table.prune(lambda pid: pid in alive) == 0  # first sighting: grace period
    assert table.prune(lambda pid: pid in alive) == 2
    assert [p for p in (3, 4, 5) if table.get(p)] == [4]
    # PID reuse: an entry that started after the child cannot be its parent.
    assert table.parent_of(4, 1.0) is None and table.reuse_rejected == 1
    assert table.parent_of(4, 10.0).pid == 4


def test_a_device_output_is_written_not_rotated_or_chmodded() -> None:
    from common.sinks import StreamSink, open_sink
    before = os.stat("/dev/null")
    sink = open_sink("jsonl:/dev/null", max_bytes=10)
    assert isinstance(sink, StreamSink)
    for _ in range(5):
        sink.write("x" * 20)
    sink.close()
    after = os.stat("/dev/null")
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)


def test_an_output_is_never_written_through_a_link_nor_into_another_users_file(tmp_path) -> None:

    from tests.conftest import require, run_cli
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o644)
    link = tmp_path / "events.jsonl"
    link.symlink_to(victim)
    with pytest.raises(OSError, match="is a symbolic link"):
        RotatingFileSink(str(link))
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "would-be-created")
    with pytest.raises(OSError, match="is a symbolic link"):
        RotatingFileSink(str(dangling))
    assert victim.read_text() == "precious" and victim.stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "would-be-created").exists()
    # The command says so in one line.
    done = run_cli("run", "--source", "procfs", "--once", "--store", "", "--output", str(link))
    assert done.returncode != 0 and "is a symbolic link" in done.stderr
    assert "Traceback" not in done.stderr
    # An existing file of ours keeps no wider mode; a device is used as it is.
    own = tmp_path / "own.jsonl"
    own.write_text("")
    own.chmod(0o644)
    RotatingFileSink(str(own)).close()
    assert own.stat().st_mode & 0o777 == 0o600
    null_mode = os.stat("/dev/null").st_mode
    RotatingFileSink("/dev/null").close()
    assert os.stat("/dev/null").st_mode == null_mode
    require(os.geteuid() == 0, "root is needed to give a file to another user")
    theirs = tmp_path / "theirs.jsonl"
    theirs.write_text("")
    os.chown(theirs, 65534, 65534)
    with pytest.raises(OSError, match="belongs to uid 65534"):
        RotatingFileSink(str(theirs))


def test_a_file_output_writes_the_bytes_a_text_output_writes_and_rotates(tmp_path) -> None:
    """open_outputs gives an ECS file the bytes path (LineFileOutput): the file holds what a
    TextOutput over the same sink kind writes, line for line, rotation included; a LAUREL
    line (text, not an event) goes through as before."""
    from common import ecs
    from common.schema import new_event
    from common.sinks import LineFileOutput, TextOutput, emit, open_outputs
    events = []
    for n in range(40):
        event = new_event("process_create", "ebpf", host={"name": "h"}, timestamp=1.0 * n)
        event["process"] = {"pid": n, "args": ["x" * n, "\udcff" if n % 7 == 0 else "é"]}
        events.append(event)
    fast = open_outputs([f"jsonl:{tmp_path / 'fast.jsonl'}"], "ecs", max_bytes=4000,
                        generations=3)
    assert isinstance(fast.output, LineFileOutput)
    slow = TextOutput(RotatingFileSink(str(tmp_path / "slow.jsonl"), 4000, 3), ecs.render)
    for output in (fast.output, slow):
        for event in events:
            assert emit(output, event)
        output.write("type=SYSCALL msg=audit(1.0:1): laurel's own line")
        output.close()
    fast_files = sorted(p.name[4:] for p in tmp_path.glob("fast.jsonl*"))
    assert fast_files == sorted(p.name[4:] for p in tmp_path.glob("slow.jsonl*"))
    assert fast_files == [".jsonl", ".jsonl.1", ".jsonl.2"]  # rotated twice
    for suffix in fast_files:
        assert (tmp_path / f"fast{suffix}").read_bytes() == \
            (tmp_path / f"slow{suffix}").read_bytes(), suffix
    assert (tmp_path / "fast.jsonl.1").stat().st_size <= 4000
    # Two files: one rendering for both (FanOut), the same bytes in each.
    both = open_outputs([f"jsonl:{tmp_path / 'a.jsonl'}", f"jsonl:{tmp_path / 'b.jsonl'}"],
                        "ecs")
    for event in events[:5]:
        assert emit(both.output, event)
    both.close()
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes() == \
        b"".join(ecs.render(e).encode("utf-8", "surrogateescape") + b"\n" for e in events[:5])
    # Other formats, and stdout, keep the text path.
    assert type(open_outputs(["-"], "ecs").output) is TextOutput
    qlog = open_outputs([f"jsonl:{tmp_path / 'q.jsonl'}"], "qlog")
    assert type(qlog.output) is TextOutput
    qlog.close()


def test_the_parent_fields_of_a_map_keep_their_order_whatever_its_layout() -> None:
    """record() keeps a map's PARENT_FIELDS in their order, found once per layout of its
    keys: maps of one layout, of others, and more layouts than are remembered."""
    from common.proctable import MAX_LAYOUTS, PARENT_FIELDS, Entry, ProcessTable
    table = ProcessTable()
    wanted = [k for k in PARENT_FIELDS if k not in ("tty", "pe")]
    layouts = [wanted[::-1] + ["args_count", "parent"], ["exit_code"] + wanted, wanted[:3]]
    layouts += [[f"extra{n}", "pid", "name"] for n in range(MAX_LAYOUTS + 5)]
    for pid, keys in enumerate(layouts * 2, start=1):
        process = {key: f"{key}-{pid}" for key in keys}
        table.record(Entry(pid, None, process))
        kept = table.get(pid).process
        assert list(kept) == [k for k in PARENT_FIELDS if k in process]
        assert all(kept[k] == process[k] for k in kept)
