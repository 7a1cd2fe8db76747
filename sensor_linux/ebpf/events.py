"""eBPF exec records to common-schema events, with the same meanings as the audit source.

What the probes cannot see without kernel struct offsets comes from user space:

* the executable as the kernel ran it: the filename resolved against the working directory and
  symlinks, and for a ``#!`` script its interpreter (what audit's ``exe`` reports);
* the effective user: the real uid, unless the file is set-uid (then its owner), which is what
  exec does (nosuid mounts and no_new_privs aside);
* cwd, login uid, session, tty and container: from ``/proc/PID`` while the process still runs
  the image; the event lists them in ``ttpsensor.best_effort``.
"""

from __future__ import annotations

import os
import stat
import time

from common.percent import as_text
from common.schema import Event
from sensor_linux.ebpf.probes import FLAG_EXECVEAT, ExecRecord
from sensor_linux.enrich import Enricher
from sensor_linux.procfs import ProcessFacts, read_exe, read_process

BEST_EFFORT = ("working_directory", "audit", "tty", "container")


def resolve_image(filename: bytes, cwd: bytes | None, pid: int | None = None,
                  proc: str = "/proc") -> bytes | None:
    """The file the kernel executed for ``filename``: absolute, symlinks resolved, and for a
    ``#!`` script the interpreter. An exec through a descriptor (fexecve, execveat with
    AT_EMPTY_PATH) is named ``/dev/fd/N`` by the kernel, which only means something inside
    that process: its /proc/PID/exe says what ran, or it stays unknown (None)."""
    if filename.startswith(b"/dev/fd/"):
        link, _ = read_exe(pid, proc) if pid is not None else (None, False)
        if link is None:
            return None
        return link if isinstance(link, bytes) else link.encode("utf-8", "surrogateescape")
    path = filename if filename.startswith(b"/") or cwd is None else os.path.join(cwd, filename)
    real = os.path.realpath(path)
    try:
        with open(real, "rb") as f:
            head = f.read(256)
    except OSError:
        return real
    if head.startswith(b"#!"):
        interpreter = head[2:].split(b"\n", 1)[0].strip().split(None, 1)
        if interpreter:
            return os.path.realpath(interpreter[0])
    return real


def _effective_ids(executable: bytes, uid: int, gid: int) -> tuple[int, int]:
    try:
        st = os.stat(executable)
    except OSError:
        return uid, gid
    euid = st.st_uid if st.st_mode & stat.S_ISUID else uid
    egid = st.st_gid if st.st_mode & stat.S_ISGID else gid
    return euid, egid


class EbpfEventBuilder:
    def __init__(self, enricher: Enricher) -> None:
        self.enricher = enricher
        # bpf_ktime_get_ns is CLOCK_MONOTONIC; this turns it into wall-clock time.
        self._epoch_offset = time.time() - time.monotonic()

    def build(self, record: ExecRecord) -> Event:
        success = record.retval == 0
        live = read_process(record.pid, self.enricher.proc) if success else None
        cwd = live.cwd if live is not None else None
        cwd_bytes = cwd.encode("utf-8", "surrogateescape") if isinstance(cwd, str) else cwd
        if success:
            executable = resolve_image(record.filename, cwd_bytes, record.pid,
                                       self.enricher.proc)
        else:
            executable = record.filename  # a failed exec ran nothing: the name as passed
        euid, egid = _effective_ids(executable, record.uid, record.gid) if (
            success and executable is not None) else (record.uid, record.gid)
        facts = ProcessFacts(
            pid=record.pid, ppid=record.ppid or (live.ppid if live else None),
            start_time=record.ktime / 1e9 + self._epoch_offset,
            executable=as_text(executable) if executable is not None else None,
            comm=as_text(record.comm),
            args=[as_text(a) for a in record.args],
            uids=(record.uid, euid, euid, euid), gids=(record.gid, egid, egid, egid))
        best_effort = []
        # The /proc facts belong to this exec only if they were read while it ran this image.
        if live is not None and live.executable == facts.executable:
            facts.cwd, facts.tty, facts.container_id = live.cwd, live.tty, live.container_id
            facts.login_uid, facts.session = live.login_uid, live.session
            best_effort = [f"process.{name}" for name in BEST_EFFORT]
        event = self.enricher.process_event(facts, "ebpf", timestamp=facts.start_time,
                                            record=success)
        process = event["process"]
        event["event"]["outcome"] = "success" if success else "failure"
        process["exit_code"] = record.retval
        process["args_count"] = record.argc
        if record.truncated:
            process["args_truncated"] = True
        if record.flags & FLAG_EXECVEAT:
            process["execveat"] = True
        if best_effort:
            event.setdefault("ttpsensor", {})["best_effort"] = best_effort
        return event
