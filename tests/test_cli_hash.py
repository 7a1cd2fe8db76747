"""``ttpsensor hash`` as a user runs it: good events, bad lines, mixed input."""

from __future__ import annotations

import json

from common import ecs, qlog
from tests.conftest import run_cli


def test_mixed_stream_reports_bad_lines_by_number_and_hashes_the_rest(notepad: dict) -> None:
    ours = ecs.render(qlog.read_event(notepad))
    lines = [
        json.dumps(notepad),                      # 1: QLOG event
        "{not json",                              # 2: broken
        ours,                                     # 3: our ECS event
        "[1, 2, 3]",                              # 4: JSON but not an event
        "",                                       # 5: blank (ignored)
        '{"schema": 1, "@timestamp": "t", "event": {"id": "i", "action": "user_login", '
        '"provider": "auditd"}, "host": {}}',     # 6: an event without a TTPHash
        '{"QType": "Process Create", "Fullpath": 12, "StartTime": "2021-01-01T00:00:00"}',  # 7
    ]
    result = run_cli("hash", "-", input="\n".join(lines) + "\n")
    assert result.returncode == 2
    out = result.stdout.splitlines()
    assert [o.split()[-1] for o in out] == ["1", "3"]
    assert out[0].split()[0] == out[1].split()[0]  # same event, two formats, one hash
    err = result.stderr
    assert "line 2: not valid JSON" in err
    assert "line 4: not an event" in err
    assert "line 6: skipped" in err and "user_login" in err
    assert "line 7: cannot hash" in err and "Fullpath" in err


def test_indented_documents_and_json_output(notepad_text: str) -> None:
    result = run_cli("hash", "--json", "--explain", "-", input=notepad_text + notepad_text)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, notepad_text.count("\n") + 1]
    assert rows[0]["complete"] is True and rows[0]["canonical"].startswith('{"AuthenticodeHash"')


def test_truncated_last_document_is_an_error_not_a_hang(notepad_text: str) -> None:
    result = run_cli("hash", "-", input=notepad_text + notepad_text[:200])
    assert result.returncode == 2
    assert len(result.stdout.splitlines()) == 1
    assert "not valid JSON" in result.stderr


def test_missing_file_is_a_clear_usage_error() -> None:
    result = run_cli("hash", "/nonexistent/events.jsonl")
    assert result.returncode == 2
    assert "does not exist" in result.stderr.lower() or "no such file" in result.stderr.lower()
