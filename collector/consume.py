"""The collector's JetStream consumer: frames out of the stream, into the store.

A durable pull consumer (collector workers share it); a message is acknowledged only after the
store committed its frame, and the store's (spool, seq) keys make a redelivery harmless. The
frames of a fetch are committed together, in sets (collector.store.Store.ingest_frames).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

from collector.admit import AdmitCounts, Identity, Refused, SpoolOwners, admit
from collector.store import Incoming, Store, commit_sets
from common import ttphash
from common.gcpolicy import steady_gc
from common.jetstream import STREAM, SUBJECT_PREFIX, SUBJECTS, ensure_stream
from common.schema import Event
from common.spool import decode_frame

ACK_WAIT = 5.0            # a killed consumer's unacknowledged frames come back this soon
FETCH = 100               # messages asked for at once; stored in sets (store.COMMIT_EVENTS)


@dataclass
class StreamCounts:
    frames: int = 0
    new: int = 0
    duplicates: int = 0


class Delivered(NamedTuple):
    """A frame out of the stream: its spool (a header), its sensor (the subject's last part),
    and its events, with each event's bytes as received (Frame.events_and_documents)."""
    spool: str
    sensor: str
    first_seq: int
    events: list[Event]
    documents: list[Any] | None = None


class StreamIngest:
    """What the consumer does with a set of frames: each admitted as its subject's sensor
    (its spools and host names bound to it as over TLS, its TTPHashes recomputed through a
    memo: collector/admit.py), those admitted stored in one transaction. Called with a set,
    it gives each frame's outcome: None, or why it was refused."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.counts = StreamCounts()
        self.admitted = AdmitCounts()
        self.owners = SpoolOwners(store)
        self.memo = ttphash.Memo()  # a fleet's commands repeat: TTPHashes recomputed once

    def __call__(self, frames: list[Delivered]) -> list[Exception | None]:
        outcomes: list[Exception | None] = [None] * len(frames)
        passed: list[tuple[int, Incoming]] = []
        for index, frame in enumerate(frames):
            try:
                passed.append((index, self._admitted(frame)))
            except Exception as exc:  # noqa: BLE001 - refused, terminated by the consumer
                outcomes[index] = exc
        results = self.store.ingest_frames([incoming for _, incoming in passed]) \
            if passed else []
        for (index, _), result in zip(passed, results):
            if isinstance(result, Exception):
                outcomes[index] = result
                continue
            self.counts.frames += 1
            self.counts.new += result.new
            self.counts.duplicates += result.duplicates
        return outcomes

    def _admitted(self, frame: Delivered) -> Incoming:
        spool, sensor = frame.spool, frame.sensor
        if not sensor or not 0 < len(spool) <= 64:
            raise Refused(f"no sensor in the subject or no spool id ({sensor!r}, {spool!r})")
        identity = Identity(sensor, frozenset({sensor.casefold()}))
        self.owners.claim(identity, spool, self.admitted)
        admission = admit(identity, frame.first_seq, len(frame.events), frame.events,
                          self.admitted, self.memo)
        return Incoming(spool, frame.first_seq, frame.events, sensor,
                        admission.received(frame.documents),
                        admission.canonical)


async def consume(url: str, durable: str,
                  ingest: Callable[[list[Delivered]], list[Exception | None]],
                  stop: Callable[[], bool], log: Callable[[str], None]) -> None:
    """Feed every frame of the stream to ``ingest`` and acknowledge it after. ``ingest``
    takes a set of frames (of up to COMMIT_EVENTS events: one transaction) and gives each
    one's outcome, None or why it was refused. A frame that does not decode, or that
    ``ingest`` refuses, is terminated (never redelivered) and logged. A frame's sensor is the
    subject's last part, which NATS permissions can bind to a NATS user (the
    ``Ttpsensor-Sensor`` header is only what the publisher says)."""
    import nats
    nc = await nats.connect(url, max_reconnect_attempts=-1, connect_timeout=5)
    js = nc.jetstream(timeout=10)
    await ensure_stream(js)
    from nats.js.api import ConsumerConfig
    subscription = await js.pull_subscribe(SUBJECTS, durable=durable, stream=STREAM,
                                           config=ConsumerConfig(ack_wait=ACK_WAIT))
    try:
        # Frames of decoded events are what the worker holds: Python's cyclic collector
        # would walk them all again and again (common/gcpolicy.py).
        with steady_gc():
            while not stop():
                try:
                    messages = await subscription.fetch(FETCH, timeout=1)
                except asyncio.TimeoutError:
                    continue
                except Exception as exc:  # noqa: BLE001 - nats raises its own TimeoutError too
                    if "timeout" in type(exc).__name__.lower():
                        continue
                    raise
                undecodable: list[tuple[Any, Exception]] = []
                # Decoded a set at a time (a fetch's frames could be 50,000 events), and each set
                # acknowledged once it is committed, before the next is stored: a fetch's frames
                # do not all wait ACK_WAIT out.
                for chunk in commit_sets(_decoded(messages, undecodable),
                                         lambda item: len(item[1].events)):
                    for (message, _), refusal in zip(chunk, _outcomes(ingest, chunk)):
                        if refusal is None:
                            await message.ack_sync()
                            continue
                        # A poison frame, not a stuck stream.
                        log(f"terminating a message the collector refused: "
                            f"{type(refusal).__name__}: {refusal}")
                        await message.term()
                for message, exc in undecodable:
                    log(f"terminating an undecodable message: {exc}")
                    await message.term()
    finally:
        await nc.drain()


def _decoded(messages: list[Any], undecodable: list[tuple[Any, Exception]]
             ) -> Iterator[tuple[Any, Delivered]]:
    """Each message with its frame, as it is reached; those that do not decode go to
    ``undecodable``."""
    for message in messages:
        headers = message.headers or {}
        try:
            frame = decode_frame(message.data)
            events, documents = frame.events_and_documents()
        except Exception as exc:  # noqa: BLE001 - any undecodable frame
            undecodable.append((message, exc))
            continue
        yield message, Delivered(headers.get("Ttpsensor-Spool", ""),
                                 message.subject[len(SUBJECT_PREFIX):], frame.first_seq, events,
                                 documents)


def _outcomes(ingest: Callable[[list[Delivered]], list[Exception | None]],
              chunk: list[tuple[Any, Delivered]]) -> list[Exception | None]:
    """``ingest`` of a set; should it raise, of each frame alone, so that one frame's
    failure stays its own."""
    try:
        return ingest([delivered for _, delivered in chunk])
    except Exception:  # noqa: BLE001 - tried again frame by frame
        pass
    outcomes: list[Exception | None] = []
    for _, delivered in chunk:
        try:
            outcomes.extend(ingest([delivered]))
        except Exception as exc:  # noqa: BLE001 - this frame's refusal
            outcomes.append(exc)
    return outcomes
