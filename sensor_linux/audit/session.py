"""Audit sessions: being the audit daemon (unicast), or listening beside one (multicast).

Audit state is global to the machine, so a unicast session writes down what it found (enabled
flag, failure mode, backlog settings, the registered pid, every rule as kernel bytes) in a state
file *before* it changes anything, and puts exactly that back when it closes. If the sensor is
killed with SIGKILL, the next start finds the state file of a dead owner and restores it first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from sensor_linux.audit import netlink
from sensor_linux.audit.netlink import AuditNetlinkError, AuditSocket, AuditStatus
from sensor_linux.procfs import kernel_command_line

DEFAULT_STATE_FILE = "/run/ttpsensor/audit-state.json"
DEFAULT_BACKLOG_LIMIT = 8192
ALL_SETTINGS = (netlink.AUDIT_STATUS_ENABLED | netlink.AUDIT_STATUS_FAILURE
                | netlink.AUDIT_STATUS_RATE_LIMIT | netlink.AUDIT_STATUS_BACKLOG_LIMIT
                | netlink.AUDIT_STATUS_BACKLOG_WAIT_TIME)


class AuditBusy(RuntimeError):
    """Another live audit daemon is registered."""


class AuditLocked(RuntimeError):
    """Audit configuration is immutable until reboot (``auditctl -e 2``)."""


def process_name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


@dataclass
class SavedState:
    owner: int
    status: dict[str, int]
    rules: list[bytes] = field(default_factory=list)

    def dump(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"owner": self.owner, "status": self.status,
                       "rules": [r.hex() for r in self.rules]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "SavedState | None":
        try:
            with open(path) as f:
                doc = json.load(f)
            return cls(doc["owner"], doc["status"], [bytes.fromhex(r) for r in doc["rules"]])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def restore(control: AuditSocket, saved: SavedState) -> None:
    """Put back the rules and settings in ``saved``; no daemon stays registered."""
    status = control.status()
    if status.pid in (os.getpid(), saved.owner) or (status.pid and not process_name(status.pid)):
        control.set_status(netlink.AUDIT_STATUS_PID, pid=0)
    control.replace_rules(saved.rules)
    s = saved.status
    control.set_status(ALL_SETTINGS, enabled=s["enabled"], failure=s["failure"],
                       rate_limit=s["rate_limit"], backlog_limit=s["backlog_limit"],
                       backlog_wait_time=s["backlog_wait_time"])


def repair_stale_state(control: AuditSocket, state_file: str) -> bool:
    """If an earlier sensor died without restoring, restore what it had found. True if so."""
    saved = SavedState.load(state_file)
    if saved is None:
        return False
    if saved.owner != os.getpid() and process_name(saved.owner) is not None:
        raise AuditBusy(f"another ttpsensor (pid {saved.owner}) owns the audit session "
                        f"({state_file})")
    restore(control, saved)
    os.unlink(state_file)
    return True


def audit_at_boot(cmdline: str) -> bool:
    """Whether the kernel command line enables audit from boot (``audit=1`` or ``audit=on``,
    which the kernel takes alike): then every task gets an audit context unless a task rule
    excludes it."""
    return any(word.lower() in ("audit=1", "audit=on") for word in cmdline.split())


def older_processes_warning(enabled: int, cmdline: str) -> str | None:
    """What to say when the sensor turns audit on (``enabled`` was 0) on a kernel not booted
    with ``audit=1`` (or ``audit=on``, which the kernel takes alike): the kernel gives a task
    its audit context when the task is created, and only once audit has been enabled on this
    boot (kernel/auditsc.c, ``audit_alloc``), so a process that has run since before then is
    never audited, neither its own execve nor what its syscall rules would match; the
    processes it starts are."""
    if enabled or audit_at_boot(cmdline):
        return None
    return ("audit was off when the sensor started, and the kernel was not booted with "
            "audit=1: if audit has not been enabled since boot, processes already running are "
            "not audited at all (their own execve, the files they write), only what they start "
            "from now on; boot with audit=1 to audit every process (docs/audit.md, "
            "\"Processes older than audit\"; the eBPF exec probes have no such gap)")


class UnicastSession:
    """Be the audit daemon until :meth:`close`: enable audit, load rules, register."""

    mode = "audit"

    def __init__(self, rules: list[bytes] | None = None, rules_file: str | None = None,
                 backlog_limit: int = DEFAULT_BACKLOG_LIMIT,
                 state_file: str = DEFAULT_STATE_FILE, without_exec: bool = False) -> None:
        self.rules = netlink.default_exec_rules() if rules is None else rules
        # Hybrid mode: exec comes from eBPF, so audit must not spend its cost on exec.
        self.without_exec = without_exec
        self.rules_file = rules_file
        self.backlog_limit = backlog_limit
        self.state_file = state_file
        self.control: AuditSocket | None = None
        self.records: AuditSocket | None = None
        self.saved: SavedState | None = None
        self.repaired = False
        self.lost_at_start = 0
        self.warnings: list[str] = []
        # Whether the kernel had audit on from boot: then a task without an audit context was
        # excluded by a task rule, whenever it was created (crosscheck.py).
        self.audit_at_boot = False

    def open(self) -> None:
        control = AuditSocket()
        self.control = control
        self.repaired = repair_stale_state(control, self.state_file)
        status = control.status()
        if status.enabled == 2:
            raise AuditLocked("audit is locked (enabled=2) until reboot: rules and the audit "
                              "daemon cannot change; use --source audit-multicast beside the "
                              "running auditd, or ttpsensor audisp as its plugin")
        if status.pid and status.pid != os.getpid() and process_name(status.pid):
            name = process_name(status.pid)
            raise AuditBusy(
                f"another audit daemon is registered: {name} (pid {status.pid}). Use "
                f"--source audit-multicast to listen beside it, or run 'ttpsensor audisp' as "
                f"its plugin (packaging/audit/ttpsensor.conf), or stop it first.")
        cmdline = kernel_command_line()
        self.audit_at_boot = audit_at_boot(cmdline)
        warning = older_processes_warning(status.enabled, cmdline)
        if warning:
            self.warnings.append(warning)
        self.saved = SavedState(os.getpid(), status.as_dict(), control.list_rules())
        self.saved.dump(self.state_file)  # before anything changes
        records = AuditSocket()
        records.enlarge_buffer()
        self.records = records
        control.set_status(netlink.AUDIT_STATUS_ENABLED | netlink.AUDIT_STATUS_BACKLOG_LIMIT,
                           enabled=1, backlog_limit=max(self.backlog_limit,
                                                        status.backlog_limit))
        for rule in self.rules:
            try:
                control.add_rule(rule)
            except AuditNetlinkError as exc:
                if exc.errno != 17:  # EEXIST: an identical rule is already loaded
                    raise
        if self.rules_file:
            load_rules_file(self.rules_file)
        if self.without_exec:
            for rule in control.list_rules():
                if netlink.is_exec_rule(rule):
                    control.delete_rule(rule)
        records.register()
        self.lost_at_start = control.status().lost

    def lost(self) -> int:
        """Records the kernel dropped since this session opened."""
        assert self.control is not None
        return max(0, self.control.status().lost - self.lost_at_start)

    def close(self) -> None:
        if self.control is not None and self.saved is not None:
            restore(self.control, self.saved)
            try:
                os.unlink(self.state_file)
            except FileNotFoundError:
                pass
            except OSError as exc:
                # The state is restored; a stale file only makes the next start restore the
                # same state again, which is harmless.
                sys.stderr.write(f"ttpsensor: cannot remove {self.state_file}: {exc}\n")
            self.saved = None
        for sock in (self.records, self.control):
            if sock is not None:
                sock.close()
        self.records = self.control = None


class MulticastSession:
    """Read-only: join the audit log multicast group beside a running audit daemon."""

    mode = "audit-multicast"

    def __init__(self) -> None:
        self.control: AuditSocket | None = None
        self.records: AuditSocket | None = None
        self.lost_at_start = 0
        self.warnings: list[str] = []

    def open(self) -> None:
        self.control = AuditSocket()
        status = self.control.status()
        if not status.enabled:
            self.warnings.append("audit is disabled (enabled=0): no records will arrive until "
                                 "it is enabled")
        if not self.control.list_rules():
            self.warnings.append("no audit rules are loaded: only user-space records will "
                                 "arrive")
        self.records = AuditSocket(groups=1 << (netlink.AUDIT_NLGRP_READLOG - 1))
        self.records.enlarge_buffer()
        self.lost_at_start = status.lost

    def lost(self) -> int:
        assert self.control is not None
        return max(0, self.control.status().lost - self.lost_at_start)

    def close(self) -> None:
        for sock in (self.records, self.control):
            if sock is not None:
                sock.close()
        self.records = self.control = None


def load_rules_file(path: str) -> None:
    """Extra rules in auditctl syntax, loaded by auditctl itself (the reference parser)."""
    auditctl = shutil.which("auditctl")
    if auditctl is None:
        raise AuditNetlinkError(2, "--rules needs auditctl (Debian package auditd) to read "
                                "auditctl syntax")
    result = subprocess.run([auditctl, "-R", path], capture_output=True, text=True)
    if result.returncode != 0:
        raise AuditNetlinkError(22, f"auditctl -R {path}: {result.stderr.strip()}")


def choose_session(source: str) -> tuple[UnicastSession | MulticastSession, str]:
    """``audit``, ``audit-multicast``, or ``auto``: unicast unless a live daemon is registered.
    Returns the session and a sentence saying what was chosen and why."""
    if source == "audit":
        return UnicastSession(), "audit netlink unicast (ttpsensor is the audit daemon)"
    if source == "audit-multicast":
        return MulticastSession(), "audit netlink multicast (read-only beside the audit daemon)"
    control = AuditSocket()
    try:
        status: AuditStatus = control.status()
    finally:
        control.close()
    if status.pid and process_name(status.pid):
        return MulticastSession(), (f"audit netlink multicast, because {process_name(status.pid)}"
                                    f" (pid {status.pid}) is the registered audit daemon")
    return UnicastSession(), "audit netlink unicast, because no audit daemon is registered"
