"""One lifecycle and one read loop for every live source.

A source (``sensor_linux/sources.py`` registers them) opens its kernel handles as root, hands
the runner its inputs (a descriptor to wait on, and for one that gathers, when it is due), and
turns what it reads into output itself. The runner owns the rest, the same for every source:

    open -> learn the running processes -> drop privileges -> pump (drain, let the next batch
    gather, tick once a second) -> on a signal: give back machine-global state first, drain
    and settle what is left, close, write the final status (the caller says the summary).

The loop waits on the inputs' descriptors with ``select``, until the next tick or the first
input that is due. After a drain of a readable descriptor the loop lets events gather for
``BATCH_SECONDS``, or the shorter time that input asks for; an input that gathers longer is
read when due or woken (see batching.py).
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from common.gcpolicy import steady_gc
from common.sinks import DEFAULT_GENERATIONS, DEFAULT_MAX_BYTES, Output
from sensor_linux.batching import BATCH_SECONDS, StopFlag

TICK_SECONDS = 1.0


class SignalStop:
    """The stop flag the loops wait on, set by SIGINT/SIGTERM (see install_stop_handlers).

    A wait is a ``poll`` of a pipe that :meth:`set` writes to, not a ``threading.Event``:
    the live sources wait after every read (50 times a second), and an Event's timed wait
    costs about 40 µs more CPU than a poll's on these VMs (docs/overhead.md). It ends as
    promptly: ``set`` from another thread makes the pipe readable, and a signal that
    arrives during the poll runs its handler (``set``), after which the poll goes on
    (PEP 475) and finds the pipe readable. One per process: its two descriptors are kept
    for the process's life."""

    def __init__(self) -> None:
        self._set = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._poll = select.poll()
        self._poll.register(self._read, select.POLLIN)

    def set(self, *_: object) -> None:
        if not self._set:
            self._set = True
            try:
                os.write(self._write, b"!")
            except BlockingIOError:
                pass  # the pipe already holds a byte: a wait will end anyway

    def wait(self, timeout: float) -> bool:
        """Until the flag is set or ``timeout`` seconds have passed; whether it is set."""
        if not self._set:
            self._poll.poll(max(0.0, timeout) * 1000.0)
        return self._set

    def is_set(self) -> bool:
        return self._set


def install_stop_handlers() -> SignalStop:
    flag = SignalStop()
    signal.signal(signal.SIGTERM, flag.set)
    signal.signal(signal.SIGINT, flag.set)
    return flag


class SourceError(Exception):
    """A source cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class RunConfig:
    """What ``ttpsensor run`` was asked for (the defaults are its options' defaults)."""

    source: str = "auto"
    fmt: str = "ecs"
    rules_file: str | None = None
    state_file: str = "/run/ttpsensor/audit-state.json"
    parse_error_log: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    generations: int = DEFAULT_GENERATIONS
    status_file: str | None = None
    status_interval: float = 60.0
    user: str = "ttpsensor"
    ebpf_argv_bytes: int = 32768
    ebpf_ringbuf_pages: int = 1024
    keep_exec_attempts: bool = False
    interval: float = 1.0
    once: bool = False


class Input(Protocol):
    """One thing a source reads: a descriptor to wait on (``fileno``). ``drain`` reads what
    is ready without blocking and says how long the loop may let events gather before it
    reads again: BATCH_SECONDS, less for an input that would fill meanwhile (batching.Pacing),
    0 when more is waiting already (a full read: a reader that is behind must not pause).
    ``due_in``: seconds until it is to be drained even if its descriptor stays quiet (an input
    that gathers, read on a deadline and woken early), or None."""

    def fileno(self) -> int: ...
    def drain(self) -> float: ...
    def due_in(self) -> float | None: ...


class Source(Protocol):
    """A live source. ``serving`` sources hold kernel handles: the runner drops privileges
    and reports status for them. With ``seed``, the runner first learns the running
    processes into its ``enricher``'s process table (the parents of the first execs)."""

    name: str                     # "source" in the summary and the status file
    serving: bool
    seed: bool
    enricher: Any                 # sensor_linux.enrich.Enricher, or None (LAUREL output)
    tick_seconds: float

    def open(self) -> None: ...          # as root; SourceError when it cannot
    def inputs(self) -> list[Input]: ...
    def files(self) -> list[str]: ...    # files it writes after the privilege drop
    def tick(self) -> None: ...          # periodic: timeouts, expiries, scans
    def done(self) -> bool: ...          # nothing more will come (a one-shot scan)
    def lost(self) -> int: ...           # what the kernel side lost
    def backlog(self) -> int | None: ...  # the kernel's queue, where there is one
    def release(self) -> None: ...       # give back machine-global state: first at stop
    def finish(self) -> None: ...        # drain and settle what is left
    def close(self) -> None: ...
    def summary(self) -> dict[str, object]: ...


class BaseSource:
    """What a source that holds nothing the kernel or the machine keeps does at each step:
    nothing. Subclasses override what they need."""

    serving = False
    seed = False
    enricher: Any = None
    tick_seconds = TICK_SECONDS

    def open(self) -> None:
        pass

    def inputs(self) -> list[Input]:
        return []

    def files(self) -> list[str]:
        return []

    def tick(self) -> None:
        pass

    def done(self) -> bool:
        return False

    def lost(self) -> int:
        return 0

    def backlog(self) -> int | None:
        return None

    def release(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass

    def summary(self) -> dict[str, object]:
        return {}


def pump(source: Source, sink: Output, stop: StopFlag,
         on_tick: Callable[[], None] | None = None) -> None:
    """Read ``source`` until ``stop`` is set or it is done: drain, let the next batch
    gather, and tick (source, sink flush, ``on_tick``) every ``source.tick_seconds``, busy
    or idle. The first tick is at once (a scan starts with its first pass)."""
    inputs = {i.fileno(): i for i in source.inputs()}
    next_tick = time.monotonic()
    while not stop.is_set() and not source.done():
        if inputs:
            dues = [due for due in (i.due_in() for i in inputs.values()) if due is not None]
            timeout = min([max(0.0, next_tick - time.monotonic()), *dues])
            ready, _, _ = select.select(list(inputs), [], [], timeout)
            pause = BATCH_SECONDS
            for fd in ready:
                pause = min(pause, inputs[fd].drain())
            for fd, item in inputs.items():
                if fd not in ready and item.due_in() == 0:
                    item.drain()  # quiet, but due (a gathering input's deadline)
            if ready and pause > 0:
                stop.wait(pause)
        else:
            stop.wait(max(0.0, next_tick - time.monotonic()))
        if time.monotonic() >= next_tick:
            source.tick()
            sink.flush()
            if on_tick is not None:
                on_tick()
            next_tick = time.monotonic() + source.tick_seconds


def run(source: Source, sink: Output, config: RunConfig, stop: StopFlag, *,
        written: list[str], periodic: list[Callable[[], None]],
        say: Callable[[str], None]) -> dict[str, object]:
    """Run ``source`` into ``sink`` until ``stop`` (or until it is done), through the whole
    lifecycle (see the module's docstring); returns the final summary, which is also written
    to the status file. ``written`` are the files the outputs write after the privilege drop;
    ``periodic`` runs at every tick (local delivery), a failure reported and tried again.
    Raises SourceError (the sink is closed) when the source cannot start, PrivilegeError
    when the privilege drop fails."""
    from sensor_linux.privileges import PrivilegeError, cannot_replace, drop_to, sensor_dirs
    from sensor_linux.procscan import seed_process_table
    from sensor_linux.status import StatusReporter

    try:
        source.open()
    except BaseException:
        sink.close()
        raise
    reporter = None
    summary: dict[str, object] = {"source": source.name}
    try:
        if source.seed and source.enricher is not None:
            seed_process_table(source.enricher)
        if source.serving:
            files = written + source.files() + ([config.status_file] if config.status_file
                                                else [])
            say(drop_to(config.user, sensor_dirs(files)))
            problems = cannot_replace(files)
            if problems:
                raise PrivilegeError(1, f"as {config.user}, the sensor could not rotate or "
                                     f"replace its files: {'; '.join(problems)}. Write them "
                                     "to a directory named for the sensor (it is handed to "
                                     f"{config.user}), or pass --user root")
            reporter = StatusReporter(source, sink, config.status_file, config.status_interval)
        ticks = ([reporter.tick] if reporter is not None else []) + periodic
        with steady_gc():
            pump(source, sink, stop, on_tick=lambda: _tick(ticks, say))
    except BrokenPipeError:
        # The reader went away (`ttpsensor run | head`): stop quietly, like other filters.
        import os
        import sys
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        # The audit state is restored first, whatever else fails: it is the whole machine's.
        try:
            lost = source.lost()
        finally:
            source.release()
        try:
            source.finish()
            summary = {"source": source.name, "kernel_lost": lost, **source.summary()}
        finally:
            source.close()
            sink.close()
        if reporter is not None:
            reporter.final(summary)
    return summary


def _tick(functions: list[Callable[[], None]], say: Callable[[str], None]) -> None:
    """Periodic work (status, local delivery); one failing must not stop the sensor."""
    for function in functions:
        try:
            function()
        except Exception as exc:  # noqa: BLE001 - reported, and tried again next tick
            say(f"periodic task failed: {type(exc).__name__}: {exc}")
