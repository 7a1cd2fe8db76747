"""Every test vector of docs/ttphash.md, and the seed's Notepad event through the real CLI."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess

import pytest

from common import ecs, qlog, ttphash
from tests.conftest import ROOT, run_cli

SPEC = (ROOT / "docs" / "ttphash.md").read_text(encoding="utf-8")
VECTOR = re.compile(
    r"### Vector (?P<n>\d+): (?P<title>[^\n]*)\n.*?```json\n(?P<input>.*?)```.*?"
    r"```text\n(?P<canonical>[^\n]*)\n```\s*\nTTPHash: `(?P<hash>[0-9A-F]{64})` "
    r"\((?P<complete>complete|incomplete)\)", re.S)
VECTORS = [m.groupdict() for m in VECTOR.finditer(SPEC)]


def test_spec_has_at_least_six_vectors() -> None:
    assert len(VECTORS) >= 6
    assert [int(v["n"]) for v in VECTORS] == list(range(1, len(VECTORS) + 1))


def _event(text: str) -> dict:
    doc = json.loads(text)
    return qlog.read_event(doc) if qlog.is_qlog(doc) else ecs.parse(doc)


@pytest.mark.parametrize("vector", VECTORS, ids=[f"v{v['n']}" for v in VECTORS])
def test_vector(vector: dict) -> None:
    # The documented hash is the SHA-256 of the documented canonical bytes (spec is consistent)...
    canonical = vector["canonical"].encode("utf-8")
    assert hashlib.sha256(canonical).hexdigest().upper() == vector["hash"]
    # ...and our implementation produces exactly those bytes from the documented input.
    result = ttphash.compute(_event(vector["input"]))
    assert result.canonical == canonical
    assert result.value == vector["hash"]
    assert result.complete is (vector["complete"] == "complete")


def test_spec_covers_required_cases() -> None:
    canon = {int(v["n"]): v["canonical"] for v in VECTORS}
    inputs = {int(v["n"]): v["input"] for v in VECTORS}
    assert any('"EventGuid": "630699d6' in i for i in inputs.values()), "Notepad QLOG event"
    assert any("%FF" in c and "%25" in c and '"OS":"linux"' in c for c in canon.values())
    assert any(v["complete"] == "incomplete" and ":null" in v["canonical"] for v in VECTORS)


def test_notepad_vector_is_the_seed_event_verbatim(notepad_text: str) -> None:
    assert json.loads(VECTORS[0]["input"]) == json.loads(notepad_text)


def test_cli_explain_on_seed_notepad_matches_sha256sum_and_spec(notepad_text: str,
                                                               tmp_path) -> None:
    path = tmp_path / "notepad.json"
    path.write_text(notepad_text, encoding="utf-8")
    out = run_cli("hash", "--explain", str(path), check=True).stdout.splitlines()
    printed_hash, state, *_ = out[0].split()
    assert state == "complete"
    # An independent program (coreutils sha256sum) over the printed canonical bytes.
    summed = subprocess.run(["sha256sum"], input=out[1].encode("utf-8"), capture_output=True,
                            check=True).stdout.split()[0].decode().upper()
    assert summed == printed_hash == VECTORS[0]["hash"]
