"""The collector's JetStream consumer: frames out of the stream, into the store.

A durable pull consumer (collector workers share it); a message is acknowledged only after the
store committed its frame, and the store's (spool, seq) keys make a redelivery harmless.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from common.jetstream import STREAM, SUBJECT_PREFIX, SUBJECTS, ensure_stream
from common.spool import decode_frame

ACK_WAIT = 5.0            # a killed consumer's unacknowledged frames come back this soon


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
