"""The benchmark commands run and print their tables (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("args", [["encode", "--events", "50"],
                                  ["filehash", "--files", "5", "--rounds", "1"],
                                  ["spool", "--events", "600"],
                                  ["ingest", "--events", "600"]])
def test_bench_command_runs(args) -> None:
    result = run_cli("bench", *args)
    assert result.returncode == 0, result.stderr
    assert "µs/event" in result.stdout
