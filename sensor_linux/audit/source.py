"""The live audit source: records from a netlink session (unicast or multicast) into an
:func:`audit_pipeline`. The runner (sensor_linux/runner.py) owns its lifecycle."""

from __future__ import annotations

from typing import Callable

from common.sinks import Output
from sensor_linux.audit.netlink import AuditNetlinkError, AuditSocket
from sensor_linux.audit.pipeline import AuditDecoder, open_error_log
from sensor_linux.audit.session import AuditBusy, AuditLocked, UnicastSession, choose_session
from sensor_linux.audit.capture import WaitingLines, live_audit
from sensor_linux.batching import BATCH_SECONDS
from sensor_linux.enrich import Enricher
from sensor_linux.runner import BaseSource, RunConfig, SourceError


# One record per datagram: a few hundred execs' worth, a fraction of a second of work.
DRAIN_DATAGRAMS = 2048


class NetlinkInput:
    """The audit record socket, drained without blocking. Socket overflows (ENOBUFS: the
    kernel could not deliver because our receive buffer was full) are counted in the
    pipeline's stats."""

    def __init__(self, records: AuditSocket, waiting: WaitingLines) -> None:
        self.records = records
        self.waiting = waiting
        self.decoder: AuditDecoder = waiting.pipeline.decoder  # type: ignore[assignment]
        records.sock.setblocking(False)

    def fileno(self) -> int:
        return self.records.sock.fileno()

    def due_in(self) -> float | None:
        """Read when the socket is readable; due when lines wait to be built."""
        return self.waiting.due_in()

    def drain(self) -> float:
        """Read until the socket is empty, or at most DRAIN_DATAGRAMS; no pause if more
        waits. The bound keeps the runner's loop turning when execs come faster than we read:
        it must still see a stop, flush its outputs and time out events. Then build what
        waits, if it is due. (The socket holds 16 MiB: BATCH_SECONDS of any rate.)"""
        more = self._read()
        self.waiting.feed_if_due()
        return 0.0 if more else BATCH_SECONDS

    def _read(self) -> bool:
        read = 0
        while read < DRAIN_DATAGRAMS:
            try:
                lines, lost, more = self.records.read_batch()
            except BlockingIOError:
                return False  # read until empty: nothing is waiting
            self.decoder.stats.socket_overflows += lost
            read += max(len(lines), 1)
            self.waiting.add_many(lines)
            if not more:
                return False  # a batch that did not fill took what was waiting
        return True


def audit_error(exc: Exception) -> SourceError:
    """A source error that says what to do about a failed audit session."""
    hint = ""
    if isinstance(exc, AuditNetlinkError) and exc.errno in (1, 13):
        hint = (" (run as root: audit needs CAP_AUDIT_CONTROL, and CAP_AUDIT_READ for "
                "multicast)")
    return SourceError(f"{exc}{hint}")


class AuditSource(BaseSource):
    """``--source auto|audit|audit-multicast``."""

    serving = True
    seed = True

    def __init__(self, config: RunConfig, sink: Output, say: Callable[[str], None]) -> None:
        self.config = config
        self.say = say
        self.enricher = Enricher() if config.fmt != "laurel" else None
        self.error_log = open_error_log(config.parse_error_log, config.max_bytes,
                                        config.generations)
        # Each exec's live facts read as it is read, its event built later (capture.py).
        self.waiting = live_audit(config.fmt, sink, self.enricher, self.error_log,
                                  config.keep_exec_attempts)
        self.session: UnicastSession | None = None
        self.name = config.source

    def open(self) -> None:
        try:
            session, why = choose_session(self.config.source)
            if isinstance(session, UnicastSession):
                session.rules_file = self.config.rules_file
                session.state_file = self.config.state_file
            self.say(f"source: {why}")
            session.open()
        except (AuditBusy, AuditLocked, AuditNetlinkError) as exc:
            raise audit_error(exc) from exc
        self.session, self.name = session, session.mode
        if getattr(session, "repaired", False):
            self.say("restored the audit state left by a sensor that did not exit cleanly")
        for warning in session.warnings:
            self.say(f"warning: {warning}")

    def inputs(self) -> list[NetlinkInput]:
        assert self.session is not None and self.session.records is not None
        return [NetlinkInput(self.session.records, self.waiting)]

    def files(self) -> list[str]:
        return [self.config.state_file, self.error_log.path]

    def tick(self) -> None:
        self.waiting.tick()

    def lost(self) -> int:
        return self.session.lost() if self.session is not None else 0

    def backlog(self) -> int | None:
        control = getattr(self.session, "control", None)
        return control.status().backlog if control is not None else None

    def release(self) -> None:
        if self.session is not None:
            self.session.close()

    def finish(self) -> None:
        self.waiting.close()

    def close(self) -> None:
        self.error_log.close()

    def summary(self) -> dict[str, object]:
        return self.waiting.pipeline.summary()
