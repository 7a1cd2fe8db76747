"""NATS JetStream as the fleet transport, the sensor's side: spool frames in.

Publishing: each spool frame, exactly as on disk, goes to ``ttpsensor.frames.<sensor>`` with
the header ``Nats-Msg-Id: <spool id>:<first seq>``, so JetStream drops a resend within its
duplicate window; the spool's cursor moves only on the publish acknowledgement. The
collector's durable consumer is collector/consume.py. No clustering of our own: a JetStream
cluster (R3) is the replicated part.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from common.spool import Spool, SpoolError

STREAM = "TTPSENSOR"
SUBJECT_PREFIX = "ttpsensor.frames."
SUBJECTS = SUBJECT_PREFIX + ">"
DUPLICATE_WINDOW = 600.0  # seconds: longer than any forwarder restart


async def ensure_stream(js: Any) -> None:
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECTS],
                                         storage=StorageType.FILE,
                                         duplicate_window=DUPLICATE_WINDOW))


@dataclass
class PublishStats:
    frames: int = 0
    events_acked: int = 0
    duplicates: int = 0
    errors: int = 0


async def publish_spool(url: str, spool_dir: str, sensor: str, stop: Callable[[], bool],
                        stats: PublishStats, log: Callable[[str], None]) -> None:
    """Publish the spool from its cursor until ``stop``; reconnects and retries on errors."""
    import nats
    backoff = 0.5
    while not stop():
        try:
            nc = await nats.connect(url, max_reconnect_attempts=-1, connect_timeout=5)
            js = nc.jetstream(timeout=10)
            await ensure_stream(js)
            backoff = 0.5
            while not stop():
                spool = Spool(spool_dir, readonly=True)
                sent = 0
                for frame in spool.read_frames():
                    ack = await js.publish(
                        SUBJECT_PREFIX + sensor, frame.raw(), stream=STREAM,
                        headers={"Nats-Msg-Id": f"{spool.spool_id}:{frame.first_seq}",
                                 "Ttpsensor-Spool": spool.spool_id,
                                 "Ttpsensor-Sensor": sensor})
                    stats.frames += 1
                    stats.duplicates += int(bool(ack.duplicate))
                    spool.ack(frame.first_seq + frame.count)
                    stats.events_acked += frame.count
                    sent += 1
                if not sent:
                    await asyncio.sleep(0.2)
            await nc.drain()
        except (OSError, SpoolError, asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001
            stats.errors += 1
            log(f"publishing failed ({type(exc).__name__}: {exc}); retrying in {backoff:.1f} s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
