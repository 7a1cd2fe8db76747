"""eBPF exec records to common-schema events, with the same meanings as the audit source.

Every fact of the exec comes from the record, which the probes read from the kernel at the
exec: the argument vector the new image received (after ``#!`` processing), the executable as
the kernel opened it (for a script, its interpreter, as audit's ``exe``), the identity of that
file, all eight ids, the working directory, login uid, session, terminal and parent. Nothing is
taken from ``/proc`` or from the sensor's own context; what the record could not carry exactly
is null. ``/proc`` is read only for a parent the sensor never saw and, by :mod:`image`, for an
image that is neither on disk any more nor hashed before.
"""

from __future__ import annotations

import time

from common.percent import as_text, as_texts
from common.schema import Event, utc_timestamp
from sensor_linux.cgroups import CgroupNames
from sensor_linux.ebpf.probes import FLAG_EXECVEAT, FLAG_NO_ENTRY, FLAG_TRUNC_ARGS, ExecRecord
from sensor_linux.enrich import Enricher
from sensor_linux.procfs import ProcessFacts, kernel_tty_name


# The flags that add fields after the arguments' (build(): an exec without them returns early).
_RARE_FLAGS = FLAG_EXECVEAT | FLAG_NO_ENTRY


class EbpfEventBuilder:
    """``mark_unaudited``: say on an exec whose task syscall audit does not record (the
    sources that run audit beside the probes; docs/ebpf.md, "Execs audit cannot see")."""

    def __init__(self, enricher: Enricher, cgroups: CgroupNames | None = None,
                 mark_unaudited: bool = False, epoch_offset: float | None = None) -> None:
        self.enricher = enricher
        self.cgroups = cgroups if cgroups is not None else CgroupNames()
        self.mark_unaudited = mark_unaudited
        # bpf_ktime_get_ns is CLOCK_MONOTONIC; this turns it into wall-clock time. A replay
        # of another boot's records may fix it (its times then repeat from run to run).
        self._epoch_offset = (time.time() - time.monotonic() if epoch_offset is None
                              else epoch_offset)

    def facts(self, record: ExecRecord) -> ProcessFacts:
        """What the record says about the new process (before enrichment)."""
        success = record.retval >= 0  # not record.failed, without the property's call
        # A failed exec ran nothing: the event is about the file it tried, named as passed
        # (audit's PATH record says the same).
        executable = record.executable if success else record.filename
        cwd = record.cwd
        facts = ProcessFacts(
            pid=record.pid, ppid=record.ppid or None,
            start_time=record.ktime / 1e9 + self._epoch_offset,
            executable=as_text(executable) if executable is not None else None,
            comm=as_text(record.comm),
            cwd=as_text(cwd) if cwd is not None else None,
            uids=record.uids, gids=record.gids, tty=kernel_tty_name(record.tty),
            login_uid=record.login_uid, session=record.session,
            container_id=self.cgroups.container_id(record.cgroup_id))
        if success:
            facts.args = (as_texts(record.args)  # type: ignore[assignment]
                          if record.args is not None else None)
            facts.image_identity = record.identity
            facts.exe_deleted = record.identity is not None and record.identity.nlink == 0
        return facts

    def build(self, record: ExecRecord) -> Event:
        success = record.retval >= 0
        facts = self.facts(record)
        event = self.enricher.process_event(facts, "ebpf", timestamp=facts.start_time,
                                            record=success)
        process = event["process"]
        event["event"]["outcome"] = "success" if success else "failure"
        process["exit_code"] = record.retval
        flags = record.flags
        if success:
            process["args_count"] = record.argc
            if flags & FLAG_TRUNC_ARGS:
                process["args_truncated"] = True
            if record.arg_faults:
                # Arguments the probe could not read are null elements, never "".
                process["args_faulted"] = record.arg_faults
        creator = record.creator
        if (not flags & _RARE_FLAGS and not self.mark_unaudited
                and (creator is None or creator == record.ppid)):
            return event  # the usual exec: nothing below applies
        if flags & FLAG_EXECVEAT:
            process["execveat"] = True
        if flags & FLAG_NO_ENTRY:
            # No execve syscall began it: the kernel's own exec (a usermode helper such as
            # modprobe), which syscall audit rules cannot see.
            event.setdefault("ttpsensor", {})["kernel_exec"] = True
        if self.mark_unaudited and record.unaudited:
            # The task has no audit context: no audit rule can see this exec or anything else
            # the task does. When it was created says why (crosscheck.py).
            extra = event.setdefault("ttpsensor", {})
            extra["unaudited_task"] = True
            extra["task_start"] = utc_timestamp(record.task_start / 1e9 + self._epoch_offset)
        parent = process.get("parent")
        if creator is not None and creator != record.ppid and parent:
            # Its creator had exited before the exec: the kernel's parent is an adopter.
            parent["adopted"] = True
            process["creator"] = {"pid": record.creator}
        return event
