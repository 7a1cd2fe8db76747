"""Local delivery: spool -> store in the same process (the embedded collector).

Reads the spool from its cursor, ingests each frame (idempotently) and acknowledges it, so the
spool deletes what the store holds. Used by the README's main job, so that `ttpsensor hunt`
works on one machine with no other setup; fleets use the forwarder and a collector instead.
"""

from __future__ import annotations

from typing import Any

from collector.store import Incoming, Store, commit_sets
from common.schema import Event
from common.spool import Frame, Spool


class LocalDelivery:
    def __init__(self, spool: Spool, store: Store, sensor: str) -> None:
        self.spool = spool
        self.store = store
        self.sensor = sensor
        self.delivered = 0
        self.duplicates = 0

    def deliver(self) -> int:
        """Everything spooled and not yet acknowledged; returns the events now stored.
        Frames go in sets of up to COMMIT_EVENTS events, one transaction each; the spool is
        acknowledged up to the last frame stored, also when a later one is refused (its error
        is raised)."""
        self.spool.flush()
        new = 0
        for frames in commit_sets(self.spool.read_with_documents(self.spool.acked()),
                                  lambda item: len(item[1])):
            new += self._store(frames)
        return new

    def _store(self, frames: list[tuple[Frame, list[Event], list[Any] | None]]) -> int:
        """One set of frames in one transaction, acknowledged up to the last one stored (each
        event's document is its bytes in the spool)."""
        results = self.store.ingest_frames([Incoming(self.spool.spool_id, frame.first_seq,
                                                     events, self.sensor, documents)
                                            for frame, events, documents in frames])
        new, acked = 0, None
        try:
            for (frame, _, _), result in zip(frames, results):
                if isinstance(result, Exception):
                    raise result
                new += result.new
                self.duplicates += result.duplicates
                acked = frame.first_seq + frame.count
        finally:
            if acked is not None:
                self.spool.ack(acked)
            self.delivered += new
        return new
