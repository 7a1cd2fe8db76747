"""Local delivery: spool -> store in the same process (the embedded collector).

Reads the spool from its cursor, ingests each frame (idempotently) and acknowledges it, so the
spool deletes what the store holds. Used by the README's main job, so that `ttpsensor hunt`
works on one machine with no other setup; fleets use the forwarder and a collector instead.
"""

from __future__ import annotations

from collector.store import Store
from common.spool import Spool


class LocalDelivery:
    def __init__(self, spool: Spool, store: Store, sensor: str) -> None:
        self.spool = spool
        self.store = store
        self.sensor = sensor
        self.delivered = 0
        self.duplicates = 0

    def deliver(self) -> int:
        """Everything spooled and not yet acknowledged; returns the events now stored."""
        self.spool.flush()
        acked = self.spool.acked()
        new = 0
        for frame, events in self.spool.read(acked):
            result = self.store.ingest(self.spool.spool_id, frame.first_seq, events, self.sensor)
            new += result.new
            self.duplicates += result.duplicates
            acked = frame.first_seq + frame.count
        if acked != self.spool.acked():
            self.spool.ack(acked)
        self.delivered += new
        return new
