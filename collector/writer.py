"""One thread that writes the frames of every connection, committing those that wait together.

The collector serves each sensor on a thread of its own, which hands the writer a few of its
frames before it answers the first (collector/server.py). Frames arrive while a commit runs;
the writer stores all that waited by then in one transaction
(:meth:`collector.store.Store.ingest_frames`, about COMMIT_EVENTS events at most), and each
sender is answered after that commit, as before: an acknowledged frame is always a committed
one.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Callable

from collector.store import COMMIT_EVENTS, Incoming, IngestResult, Store

# Frames handed over and not yet stored, from all senders together: a connection may hand over
# several (collector/server.py), and a decoded frame is a few MB.
CAPACITY = 64


class WriterClosed(ConnectionError):
    """The collector is stopping: the frame was not stored and must not be answered (the
    forwarder sends it again after it reconnects; a refusal would make it skip the frame)."""


@dataclass
class Pending:
    """A frame handed to the writer, and its outcome once the writer has stored it."""

    frame: Incoming
    done: threading.Event = field(default_factory=threading.Event)
    outcome: IngestResult | Exception | None = None

    def result(self) -> IngestResult:
        """The frame's result once it is committed; raise what the store raised for it (the
        set it was in is then stored frame by frame)."""
        self.done.wait()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome


@dataclass
class WriterStats:
    commits: int = 0            # transactions of one or more frames
    committed_frames: int = 0   # frames they held (a frame the store refused too)


class FrameWriter:
    """Stores frames handed to :meth:`store_frame` from any thread. ``lock`` is the lock that
    serializes every use of the store (the collector's: connection threads also claim spools
    through it); ``stored`` is called under it with each frame and its outcome (the
    collector's counts). At most ``capacity`` frames are handed over and not yet stored."""

    def __init__(self, store: Store, lock: threading.Lock,
                 stored: Callable[[Incoming, IngestResult | Exception], None],
                 capacity: int = CAPACITY) -> None:
        self.store = store
        self.lock = lock
        self.stored = stored
        self.stats = WriterStats()
        self._room = threading.Semaphore(capacity)
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._closed = False
        self._gate = threading.Lock()  # nothing is handed over after the close
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def store_frame(self, frame: Incoming) -> IngestResult:
        """Store ``frame`` and return its result once it is committed; raise what the store
        raised for it (the set it was in is then stored frame by frame)."""
        return self.submit(frame).result()

    def submit(self, frame: Incoming) -> Pending:
        """Hand ``frame`` over without waiting for its commit (only for room, when the writer
        is full): its Pending gives the result."""
        self._room.acquire()
        pending = Pending(frame)
        with self._gate:
            if self._closed:
                self._room.release()
                raise WriterClosed("the collector is stopping")
            self._queue.put(pending)
        return pending

    def waiting(self) -> int:
        """Frames handed over and not taken yet."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop after the frames handed over so far (each is stored and answered)."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            # The lock first, then what waits: frames that arrive while another thread holds
            # the store join this set.
            with self.lock:
                batch, end = self._gather(first)
                try:
                    outcomes = self.store.ingest_frames([p.frame for p in batch])
                except Exception as exc:  # noqa: BLE001 - never leave a sender waiting
                    outcomes = [exc] * len(batch)
                self.stats.commits += 1
                self.stats.committed_frames += len(batch)
                for pending, outcome in zip(batch, outcomes):
                    pending.outcome = outcome
                    try:
                        self.stored(pending.frame, outcome)
                    except Exception:  # noqa: BLE001 - a count, never the writer's end
                        pass
            for pending in batch:
                pending.done.set()
                self._room.release()
            if end:
                return

    def _gather(self, first: Pending) -> tuple[list[Pending], bool]:
        """``first`` and the frames waiting behind it, until COMMIT_EVENTS events are reached;
        whether the close came among them."""
        batch, events = [first], len(first.frame.events)
        while events < COMMIT_EVENTS:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
            if pending is None:
                return batch, True
            batch.append(pending)
            events += len(pending.frame.events)
        return batch, False
