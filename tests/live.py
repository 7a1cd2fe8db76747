"""Helpers for the live tests: a sensor subprocess and matching its events to a workload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from common import ecs
from common.percent import as_text
from sensor_linux.audit.netlink import AuditSocket
from tests.conftest import require, ttpsensor_command


# How long a stopping sensor may take (it drains what it has read and restores audit state).
STOP_SECONDS = 90


class Sensor:
    """``ttpsensor run`` as a subprocess writing JSON lines to a file. Every one started is
    killed at the end of its test if it is still running (tests/conftest.py), so that a
    failed test never leaves an audit daemon behind for the rest of the run."""

    started: list["Sensor"] = []   # the running ones; emptied after each test

    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        # The sensor drops to the ttpsensor user after opening its sockets; it may write only
        # in directories named for it.
        tmp = tmp / "ttpsensor-files"
        tmp.mkdir(exist_ok=True)
        self.name = name
        self.out = tmp / f"{name}.jsonl"
        self.err_path = tmp / f"{name}.err"
        self.proc = subprocess.Popen(
            ttpsensor_command() + ["run", "--output", f"jsonl:{self.out}", "--parse-error-log",
                                   str(tmp / f"{name}-parse-errors.log"), *args],
            stdout=subprocess.DEVNULL, stderr=open(self.err_path, "w"))
        Sensor.started.append(self)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, predicate, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} sensor exited ({self.proc.returncode}) waiting for "
                            f"{what}: {self.stderr}")
            time.sleep(0.1)
        pytest.fail(f"timed out after {timeout:g} s waiting for {what} from the {self.name} "
                    f"sensor ({self.written()}): {self.stderr[-8000:]}")

    def written(self) -> str:
        """What the sensor had written and the kernel's audit state, for a timeout's message
        (a live test that times out once in many runs needs to say where the event stopped)."""
        actions: dict[str, int] = {}
        keys: set[str] = set()
        try:
            for event in self.events():
                action = str(event.get("event", {}).get("action"))
                actions[action] = actions.get(action, 0) + 1
                key = event.get("audit", {}).get("key")
                if key:
                    keys.add(str(key))
            status = AuditSocket().status()
            state = (f"audit pid {status.pid} (the sensor's {self.proc.pid}), "
                     f"lost {status.lost}, backlog {status.backlog}")
        except Exception as exc:  # noqa: BLE001 - a message, never a second failure
            return f"could not tell what it wrote: {exc!r}"
        return f"events by action {actions}, audit keys {sorted(keys)}, {state}"

    def events(self) -> list[dict]:
        """Every event written so far, the rotated files' (FILE.N ... FILE.1) first."""
        rotated = [p for p in self.out.parent.glob(self.out.name + ".*") if p.suffix[1:].isdigit()]
        rotated.sort(key=lambda p: -int(p.suffix[1:]))
        events = []
        for path in rotated + [self.out]:
            if not path.exists():
                continue
            # The sensor may be writing a line right now: read complete lines only.
            text = path.read_text()
            events += [ecs.parse(json.loads(line))
                       for line in text[:text.rfind("\n") + 1].splitlines()]
        return events

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_SECONDS) -> int:
        """Signal the sensor and return its exit code. One that does not stop in ``timeout``
        is made to print every thread's stack (SIGABRT, faulthandler), killed, and the test
        fails with that stack."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the {self.name} sensor did not stop within {timeout:g} s of signal "
                        f"{sig}; where it was:\n{self.stderr[-8000:]}")

    def kill(self) -> None:
        """Stack to stderr, then SIGKILL if that does not end it."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGABRT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def kill_leftovers() -> list[str]:
    """Kill the sensors started since the last call that still run; their names."""
    left = [s for s in Sensor.started if s.proc.poll() is None]
    Sensor.started.clear()
    for sensor in left:
        sensor.kill()
    return [s.name for s in left]


def stop_all(*sensors: Sensor) -> None:
    """Stop every sensor (each one, whatever the others do), then fail if any failed."""
    failed = []
    for sensor in sensors:
        try:
            code = sensor.stop()
        except BaseException as exc:  # noqa: BLE001 - the others must still be stopped
            failed.append(f"{sensor.name}: {exc}")
            continue
        if code != 0:
            failed.append(f"{sensor.name} exited {code}: {sensor.stderr[-8000:]}")
    assert not failed, "\n".join(failed)


def registered(sensor: Sensor) -> bool:
    return AuditSocket().status().pid == sensor.proc.pid


def probes_loaded(sensor: Sensor) -> bool:
    return "compiled and loaded" in sensor.stderr


def summary(sensor: Sensor) -> dict:
    """The JSON summary a sensor prints on its last line when it stops."""
    return json.loads(sensor.stderr.strip().splitlines()[-1].split("stopped: ", 1)[1])


def require_bcc() -> None:
    try:
        import bcc  # noqa: F401
    except ImportError:
        require(False, "BCC (python3-bpfcc) is needed")
    require(os.path.isdir("/sys/kernel/tracing/events/sched"), "tracefs must be mounted")


def ebpf_and_audit(tmp: Path) -> tuple[Sensor, Sensor]:
    """An eBPF sensor and an audit (unicast) sensor side by side, both ready."""
    require_bcc()
    ebpf = Sensor(tmp, "ebpf", "--source", "ebpf")
    audit = Sensor(tmp, "audit", "--source", "audit", "--state-file",
                   str(tmp / "ttpsensor-files" / "state.json"))
    try:
        ebpf.wait_for(lambda: probes_loaded(ebpf), "the probes to load", timeout=120)
        audit.wait_for(lambda: registered(audit), "audit registration")
    except BaseException:
        audit.kill()
        ebpf.kill()
        raise
    return ebpf, audit


def captured(events: list[dict], token: str) -> dict[int, list]:
    found = {}
    for event in events:
        args = event.get("process", {}).get("args") or []
        if event["event"]["action"] in ("process_create", "exec_unmatched") and len(args) > 1 \
                and isinstance(args[1], str) and args[1].startswith(f"ttpw-{token}-"):
            found[event["process"]["pid"]] = args
    return found


def assert_complete(events: list[dict], token: str, spawned: dict[int, list[bytes]]) -> None:
    found = captured(events, token)
    assert set(found) == set(spawned), f"missing {len(set(spawned) - set(found))} execs"
    for pid, argv in spawned.items():
        assert found[pid] == [as_text(a) for a in argv]


