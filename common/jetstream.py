"""NATS JetStream as the fleet transport: spool frames in, durable consumers out.

Publishing: each spool frame, exactly as on disk, goes to ``ttpsensor.frames.<sensor>`` with
the header ``Nats-Msg-Id: <spool id>:<first seq>``, so JetStream drops a resend within its
duplicate window; the spool's cursor moves only on the publish acknowledgement. Consuming: a
durable pull consumer; a message is acknowledged only after the store committed its frame, and
the store's (spool, seq) keys make a redelivery harmless. No clustering of our own: a JetStream
cluster (R3) is the replicated part.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from common.spool import Spool, SpoolError, decode_frame

STREAM = "TTPSENSOR"
SUBJECT_PREFIX = "ttpsensor.frames."
SUBJECTS = SUBJECT_PREFIX + ">"
DUPLICATE_WINDOW = 600.0  # seconds: longer than any forwarder restart
ACK_WAIT = 5.0            # a killed consumer's unacknowledged frames come back this soon


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


async def consume(url: str, durable: str, ingest: Callable[[str, str, int, list], Any],
                  stop: Callable[[], bool], log: Callable[[str], None]) -> None:
    """Feed every frame of the stream to ``ingest(spool, sensor, first_seq, events)`` and
    acknowledge it after; a frame that does not decode, or that ``ingest`` refuses (raises),
    is terminated (never redelivered) and logged. ``sensor`` is the subject's last part, which
    NATS permissions can bind to a NATS user (the ``Ttpsensor-Sensor`` header is only what the
    publisher says)."""
    import nats
    nc = await nats.connect(url, max_reconnect_attempts=-1, connect_timeout=5)
    js = nc.jetstream(timeout=10)
    await ensure_stream(js)
    from nats.js.api import ConsumerConfig
    subscription = await js.pull_subscribe(SUBJECTS, durable=durable, stream=STREAM,
                                           config=ConsumerConfig(ack_wait=ACK_WAIT))
    try:
        while not stop():
            try:
                messages = await subscription.fetch(100, timeout=1)
            except asyncio.TimeoutError:
                continue
            except Exception as exc:  # noqa: BLE001 - nats raises its own TimeoutError too
                if "timeout" in type(exc).__name__.lower():
                    continue
                raise
            for message in messages:
                headers = message.headers or {}
                try:
                    frame = decode_frame(message.data)
                    events = frame.events()
                except Exception as exc:  # noqa: BLE001 - any undecodable frame
                    log(f"terminating an undecodable message: {exc}")
                    await message.term()
                    continue
                try:
                    ingest(headers.get("Ttpsensor-Spool", ""),
                           message.subject[len(SUBJECT_PREFIX):], frame.first_seq, events)
                except Exception as exc:  # noqa: BLE001 - a poison frame, not a stuck stream
                    log(f"terminating a message the collector refused: "
                        f"{type(exc).__name__}: {exc}")
                    await message.term()
                    continue
                await message.ack_sync()
    finally:
        await nc.drain()
