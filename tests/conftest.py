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
from pathlib import Path
from typing import Callable

import pytest

from common.bench import free_port  # noqa: F401 - the tests' helper too
from common.cli import self_command

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SEED = SHARED / "seed" / "threathunters-posts.txt"
IN_CI = os.environ.get("CI") == "true"


def pytest_sessionstart(session: pytest.Session) -> None:
    """No test runs code older than the tree: a compiled module built from an older source
    would be imported instead of the source beside it (common/compiled.py)."""
    from common.compiled import module_state
    stale = module_state()["stale"]
    if stale:
        pytest.exit(f"compiled modules older than their sources: {', '.join(stale)}; rebuild "
                    f"them (bash packaging/dev/bootstrap.sh setup, or pip install -e .)",
                    returncode=3)


def require(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"precondition not met under CI=true: {reason}")
    pytest.skip(reason)


def ttpsensor_command() -> list[str]:
    return self_command()


def pure_python_says(code: str, pure: bool) -> str:
    """What ``python -c code`` prints, with TTPSENSOR_PURE_PYTHON set or not: how the tests of
    the compiled modules see which path a fresh process takes (common/compiled.py)."""
    import sys
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60,
                          env=dict(os.environ, TTPSENSOR_PURE_PYTHON="1" if pure else "")
                          ).stdout.strip()


def heap_growth(run: Callable[[], object], times: int) -> int:
    """Bytes the Python heap grew by over ``times`` calls of ``run``, after a first call has
    filled what it remembers: how the C modules' tests catch a reference leaked per call."""
    import tracemalloc
    run()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(times):
            run()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def run_cli(*args: str, input: bytes | str | None = None,
            check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed ``ttpsensor`` command as a user would."""
    text = not isinstance(input, bytes)
    return subprocess.run(ttpsensor_command() + list(args), input=input, capture_output=True,
                          text=text, check=check, **{"timeout": 300, **kwargs})


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


def not_listening(port: int, server: subprocess.Popen, timeout: float = 30) -> str | None:
    """Wait until something accepts on 127.0.0.1:``port``; None then, else why not (the
    ``server`` that should have exited, or the time ran out). The caller fails or requires."""
    import socket
    import time
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return None
        except OSError:
            if server.poll() is not None:
                return f"it exited ({server.returncode})"
            if time.monotonic() > deadline:
                return f"nothing listens on port {port} after {timeout:g} s"
            time.sleep(0.1)


@pytest.fixture(scope="session", autouse=True)
def audit_state_is_left_as_found():
    """Whatever a test does, the machine's audit state at the end equals the start."""
    before = _audit_snapshot()
    yield
    after = _audit_snapshot()
    if before is not None and after != before:
        pid_line = next((l for l in after[0].splitlines() if l.startswith("pid ")), "pid 0")
        owner = int(pid_line.split()[1])
        if not owner or not os.path.exists(f"/proc/{owner}"):
            # Nobody owns the state: it is ours to put back.
            subprocess.run(["auditctl", "-D"], capture_output=True)
            enabled = next(l.split()[1] for l in before[0].splitlines()
                           if l.startswith("enabled"))
            subprocess.run(["auditctl", "-e", enabled], capture_output=True)
        # A live audit daemon (another run's sensor) owns it otherwise: never touch that.
        pytest.fail(f"the audit state changed during the test run: {before} -> {after}")


@pytest.fixture(autouse=True)
def no_sensor_outlives_its_test():
    """A sensor a failed test left running would stay the audit daemon for the rest of the
    run (and the machine's execs would wait on its backlog): kill it, and say so."""
    from tests.live import kill_leftovers
    yield
    left = kill_leftovers()
    assert not left, f"sensors left running by the test, killed: {left}"


def process_family(host: str) -> list[dict]:
    """A shell and two children of it on ``host`` (the children name it as their parent):
    what the console links by process keys."""
    import copy

    from common import bench, ttphash
    shell = copy.deepcopy(bench.varied_events(1, seed=6)[0])
    shell["host"]["name"] = host
    shell["process"].update(pid=7000, executable="/usr/bin/bash", start=shell["@timestamp"])
    ttphash.attach(shell)
    family = [shell]
    for n, tool in enumerate(("/usr/bin/curl", "/usr/bin/tar")):
        child = copy.deepcopy(bench.varied_events(1, seed=10 + n)[0])
        child["host"]["name"] = host
        child["process"].update(pid=7001 + n, executable=tool)
        child["process"]["parent"].update(pid=7000, start=shell["@timestamp"])
        ttphash.attach(child)
        family.append(child)
    return family


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster for the test run, on a free loopback port; stopped after.

    Yields a function that creates a fresh database and returns its URL.
    """
    import glob
    import tempfile
    import uuid

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    require(os.geteuid() == 0, "root is needed to run PostgreSQL as its own user")
    require(bool(binaries), "PostgreSQL is needed (apt-get install postgresql)")
    bin_dir = binaries[-1]
    base = tempfile.mkdtemp(prefix="ttpsensor-pg-", dir="/tmp")
    shutil.chown(base, "postgres", "postgres")
    port = free_port()

    def as_postgres(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True,
                              text=True, timeout=120)

    init = as_postgres(f"{bin_dir}/initdb", "-D", f"{base}/data", "-A", "trust", "-U",
                       "postgres")
    require(init.returncode == 0, f"initdb failed: {init.stderr}")
    started = as_postgres(f"{bin_dir}/pg_ctl", "-D", f"{base}/data", "-l", f"{base}/log",
                          "-w", "-o", f"-p {port} -h 127.0.0.1 -k {base}", "start")
    require(started.returncode == 0, f"PostgreSQL did not start: {started.stderr}")

    def new_database() -> str:
        import psycopg
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                             autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{port}/{name}"

    try:
        yield new_database
    finally:
        as_postgres(f"{bin_dir}/pg_ctl", "-D", f"{base}/data", "-m", "fast", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    """Each collector test runs against SQLite and against a real PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("postgres_server")()


@pytest.fixture
def nats_server(tmp_path):
    """A nats-server with JetStream on a free loopback port, stopped after the test."""
    require(shutil.which("nats-server") is not None, "nats-server is needed "
            "(apt-get install nats-server)")
    port = free_port()
    store = tmp_path / "jetstream"
    server = subprocess.Popen(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port),
                               "-sd", str(store)], stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "nats.err", "w"))
    problem = not_listening(port, server)
    require(problem is None, f"nats-server did not start ({problem}): "
                             f"{(tmp_path / 'nats.err').read_text()}")
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


# Background exec activity for live tests (tests/busy.sh): a fixture every test can ask for.
from tests.busy import busy_machine  # noqa: E402,F401
