"""Shared test helpers.

``require()`` is how a test states a precondition on the machine (root, a kernel feature, a
server): locally an unmet precondition skips, under ``CI=true`` it fails, because a skipped test
is not a passed test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SEED = SHARED / "seed" / "threathunters-posts.txt"
IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"precondition not met under CI=true: {reason}")
    pytest.skip(reason)


def ttpsensor_command() -> list[str]:
    exe = shutil.which("ttpsensor", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "common.cli"]


def run_cli(*args: str, input: bytes | str | None = None,
            check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed ``ttpsensor`` command as a user would."""
    text = not isinstance(input, bytes)
    return subprocess.run(ttpsensor_command() + list(args), input=input, capture_output=True,
                          text=text, check=check, timeout=300, **kwargs)


def seed_qlog_example() -> str:
    """The Notepad-from-Explorer QLOG event, exactly as the TTPHash post prints it."""
    require(SEED.exists(), f"{SEED} (shared/ seed document) is missing")
    text = SEED.read_text(encoding="utf-8")
    start = text.index("\n{\n") + 1
    end = text.index("\n}\n", start) + 2
    doc = text[start:end]
    json.loads(doc)  # it must be valid JSON as printed
    return doc


@pytest.fixture
def notepad_text() -> str:
    return seed_qlog_example()


@pytest.fixture
def notepad(notepad_text: str) -> dict:
    return json.loads(notepad_text)


def _audit_snapshot() -> tuple[str, str] | None:
    """auditctl's view of the machine's audit state, or None where it cannot be read."""
    auditctl = shutil.which("auditctl")
    if auditctl is None or os.geteuid() != 0:
        return None
    status = subprocess.run([auditctl, "-s"], capture_output=True, text=True)
    rules = subprocess.run([auditctl, "-l"], capture_output=True, text=True)
    if status.returncode or rules.returncode:
        return None
    keep = [line for line in status.stdout.splitlines()
            if line.split(" ")[0] in ("enabled", "failure", "pid", "rate_limit",
                                      "backlog_limit", "backlog_wait_time")]
    return "\n".join(keep), rules.stdout


@pytest.fixture(scope="session", autouse=True)
def audit_state_is_left_as_found():
    """Whatever a test does, the machine's audit state at the end equals the start."""
    before = _audit_snapshot()
    yield
    after = _audit_snapshot()
    if before is not None and after != before:
        subprocess.run(["auditctl", "-D"], capture_output=True)
        enabled = next(l.split()[1] for l in before[0].splitlines() if l.startswith("enabled"))
        subprocess.run(["auditctl", "-e", enabled], capture_output=True)
        pytest.fail(f"the test run changed the audit state: {before} -> {after}")
