"""A busy machine for the live tests: tests/busy.sh running beside them.

Users run the sensor on hosts where other processes exec all the time; a live test must hold
there, attributing only what it can (its own pids and markers). ``busy_machine`` starts the
background activity for one test and stops it after.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

BUSY = Path(__file__).with_name("busy.sh")
RATE = 100  # execs a second, about


@pytest.fixture
def busy_machine() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(["bash", str(BUSY), str(RATE)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
