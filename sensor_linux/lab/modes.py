"""The collection modes the overhead lab compares, each started, counted and stopped in turn.

A mode knows how to start its collectors in a private work directory, which processes are its
collectors (for CPU), which process holds its BPF programs, and how many of a run's execs
reached its output (counted by the run's marker argument, see ``loadgen.marker_argv``).

auditd runs with a private configuration directory (``auditd -c DIR``), never the host's
``/etc/audit``; the lab restores the audit state it found after every mode (see overhead.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from common.cli import self_command
from sensor_linux.audit.laurel import PEER_CONFIG
from sensor_linux.audit.netlink import AuditSocket
from sensor_linux.audit.session import DEFAULT_BACKLOG_LIMIT
from sensor_linux.lab.measure import children, comm

START_TIMEOUT = 180.0        # BCC compiles the probe at start: tens of seconds on a busy host
OUTPUT_BYTES = 1 << 40       # outputs are never rotated during a run: the lab counts them

def plugin_settings(output: Path, errors: Path) -> str:
    """The settings file of ``ttpsensor-audisp`` as the lab runs it (also ``bench plugin``):
    ECS with enrichment and TTPHash into ``output``, never rotated, bad records to ``errors``."""
    return (f'format = "ecs"\noutputs = ["jsonl:{output}"]\nmax-bytes = {OUTPUT_BYTES}\n'
            f'generations = 1\nparse-error-log = "{errors}"\n')


AUDITD_CONF = """\
local_events = yes
write_logs = yes
log_file = {dir}/audit.log
log_group = root
log_format = {log_format}
flush = INCREMENTAL_ASYNC
freq = 50
max_log_file = 4000
num_logs = 2
priority_boost = 0
name_format = NONE
max_log_file_action = ROTATE
space_left = 10
space_left_action = IGNORE
admin_space_left = 5
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
use_libwrap = no
tcp_listen_queue = 5
tcp_max_per_addr = 1
tcp_client_max_idle = 0
transport = TCP
distribute_network = no
q_depth = 90000
overflow_action = SYSLOG
max_restarts = 10
plugin_dir = {dir}/plugins.d
end_of_event_timeout = 2
"""

PLUGIN_CONF = """\
active = yes
direction = out
path = {path}
type = always
args = {args}
format = string
"""

EXEC_RULES = [["-a", "always,exit", "-F", f"arch={arch}", "-S", "execve,execveat", "-k",
               "ttplab"] for arch in ("b64", "b32")]


class ModeError(RuntimeError):
    """A mode that could not start or stopped by itself; the message says why."""


class Mode(Protocol):
    name: str
    ours: bool          # a ttpsensor mode (the lab requires no loss from these)

    def start(self, work: Path) -> None: ...
    def collectors(self) -> dict[str, int]: ...
    def bpf_pid(self) -> int | None: ...
    def output(self) -> tuple[Path, bytes] | None:
        """The file whose lines are the mode's events, and the prefix of an exec's line."""
    def check_alive(self) -> None: ...
    def stop(self) -> None: ...


def terminate(proc: "subprocess.Popen[bytes] | None") -> None:
    """SIGTERM (collectors restore state and flush on it), SIGKILL after a minute."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class MarkerCounter:
    """Counts the lines of an output that hold one run's marker, reading only what is new.

    Started when the run starts: the run's events can only come after that point, and outputs
    of long runs are large (tens of MB), so each poll reads only the lines added since the last.
    """

    def __init__(self, path: Path, marker: bytes, prefix: bytes = b"") -> None:
        self.path, self.marker, self.prefix = path, marker, prefix
        self.offset = path.stat().st_size if path.exists() else 0
        self.found = 0

    def count(self) -> int:
        if not self.path.exists():
            return self.found
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1    # a line still being written is read next time
        for line in data[:end].split(b"\n"):
            if self.marker in line and line.startswith(self.prefix):
                self.found += 1
        self.offset += end
        return self.found


class Nothing:
    """No collector: the baseline every other mode is compared with."""

    name = "none"
    ours = False

    def start(self, work: Path) -> None:
        pass

    def collectors(self) -> dict[str, int]:
        return {}

    def bpf_pid(self) -> int | None:
        return None

    def output(self) -> tuple[Path, bytes] | None:
        return None

    def check_alive(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Auditd:
    """auditd with exec rules, optionally with one plugin (LAUREL or ``ttpsensor audisp``)."""

    def __init__(self, name: str, log_format: str, plugin: str | None = None,
                 ours: bool = False) -> None:
        self.name = name
        self.log_format = log_format
        self.plugin = plugin             # None, "laurel" or "ttpsensor"
        self.ours = ours
        self.proc: subprocess.Popen[bytes] | None = None
        self.work = Path()

    def start(self, work: Path) -> None:
        for tool in ("auditd", "auditctl") + (("laurel",) if self.plugin == "laurel" else ()):
            if shutil.which(tool) is None:
                raise ModeError(f"{tool} is not installed (apt-get install auditd laurel)")
        self.work = work
        plugins = work / "plugins.d"
        plugins.mkdir(parents=True)
        (work / "auditd.conf").write_text(AUDITD_CONF.format(dir=work,
                                                             log_format=self.log_format))
        if self.plugin == "laurel":
            (work / "laurel").mkdir()
            (work / "laurel.toml").write_text(PEER_CONFIG.format(directory=work / "laurel"))
            (plugins / "laurel.conf").write_text(PLUGIN_CONF.format(
                path=shutil.which("laurel"), args=f"--config {work}/laurel.toml"))
        elif self.plugin == "ttpsensor":
            plugin = Path(sys.executable).with_name("ttpsensor-audisp")
            if not plugin.exists():
                raise ModeError(f"{plugin} is missing: install ttpsensor (pip install -e .)")
            if os.environ.get("PYTHONPATH"):
                # auditd starts its plugins with an empty environment: the plugin would run
                # the installed code while the lab's other modes ran PYTHONPATH's.
                raise ModeError("PYTHONPATH does not reach a plugin auditd starts: run the "
                                "lab from an installation of the code to measure "
                                "(pip install -e .), without PYTHONPATH")
            (work / "audisp.toml").write_text(plugin_settings(work / "ttpsensor.jsonl",
                                                              work / "parse-errors.log"))
            (plugins / "ttpsensor.conf").write_text(PLUGIN_CONF.format(
                path=plugin, args=f"--config {work}/audisp.toml"))
        for conf in [work / "auditd.conf", *plugins.iterdir()]:
            conf.chmod(0o640)  # auditd refuses group- or world-writable configuration
        # In the foreground (-f, which the lab needs to own the process) auditd writes its log
        # to stdout instead of log_file, still in log_format.
        self.proc = subprocess.Popen(["auditd", "-f", "-n", "-s", "enable", "-c", str(work)],
                                     stdout=open(work / "audit.log", "wb"),
                                     stderr=open(work / "auditd.err", "wb"))
        deadline = time.monotonic() + START_TIMEOUT
        while AuditSocket().status().pid != self.proc.pid:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ModeError(f"auditd did not start: {(work / 'auditd.err').read_text()}")
            time.sleep(0.1)
        # The same backlog as the sensor's own audit mode, so the modes queue alike.
        subprocess.run(["auditctl", "-b", str(DEFAULT_BACKLOG_LIMIT)], check=True,
                       capture_output=True)
        for rule in EXEC_RULES:
            subprocess.run(["auditctl", *rule], check=True, capture_output=True)

    def collectors(self) -> dict[str, int]:
        if self.proc is None:
            return {}
        found = {"auditd": self.proc.pid}
        for pid in children(self.proc.pid):
            found[comm(pid) or str(pid)] = pid
        return found

    def bpf_pid(self) -> int | None:
        return None

    def output(self) -> tuple[Path, bytes] | None:
        if self.plugin == "laurel":
            return self.work / "laurel" / "laurel.log", b""
        if self.plugin == "ttpsensor":
            return self.work / "ttpsensor.jsonl", b""
        return self.work / "audit.log", b"type=EXECVE "

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise ModeError(f"auditd exited: {(self.work / 'auditd.err').read_text()}")
        if "terminated unexpectedly" in (self.work / "auditd.err").read_text():
            raise ModeError(f"a plugin died: {(self.work / 'auditd.err').read_text()}")

    def stop(self) -> None:
        subprocess.run(["auditctl", "-D"], capture_output=True)
        terminate(self.proc)
        self.proc = None


class SensorRun:
    """``ttpsensor run --source SOURCE`` writing ECS JSON lines."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.ours = True
        self.proc: subprocess.Popen[bytes] | None = None
        self.work = Path()

    def start(self, work: Path) -> None:
        self.work = work
        work.mkdir(parents=True)
        # --user root: the lab's work directory stays root's; dropping privileges changes no
        # per-event cost.
        self.proc = subprocess.Popen(
            self_command() + ["run", "--source", self.source, "--output", f"jsonl:{work}/events.jsonl",
                    "--max-bytes", str(OUTPUT_BYTES), "--generations", "1", "--store", "",
                    "--status-file", str(work / "status.json"), "--status-interval", "3600",
                    "--state-file", str(work / "audit-state.json"), "--parse-error-log",
                    str(work / "parse-errors.log"), "--user", "root"],
            stdout=subprocess.DEVNULL, stderr=open(work / "sensor.err", "wb"))

    def collectors(self) -> dict[str, int]:
        return {} if self.proc is None else {"ttpsensor": self.proc.pid}

    def bpf_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def output(self) -> tuple[Path, bytes] | None:
        return self.work / "events.jsonl", b""

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise ModeError(f"ttpsensor run --source {self.source} exited: "
                            f"{(self.work / 'sensor.err').read_text()[-2000:]}")

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


def all_modes() -> dict[str, Mode]:
    """Every mode by name, in the order the lab runs them."""
    modes: list[Mode] = [
        Nothing(),
        Auditd("auditd-raw", "RAW"),
        Auditd("auditd-enriched", "ENRICHED"),
        Auditd("auditd+laurel", "RAW", "laurel"),
        Auditd("auditd+ttpsensor", "RAW", "ttpsensor", ours=True),
        SensorRun("netlink", "audit"),
        SensorRun("ebpf", "ebpf"),
        SensorRun("hybrid", "hybrid"),
    ]
    return {mode.name: mode for mode in modes}
