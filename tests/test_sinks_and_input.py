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
