"""The durable local spool: events on disk until a collector has acknowledged them.

Layout of a spool directory::

    spool.json                    spool id (random) and format version
    seg-<first seq, 20 digits>    append-only segment files of frames
    cursor.json                   {"acked": N}: every event with seq < N is acknowledged

Frame (little-endian)::

    magic "TTPF" | payload length u32 | CRC32C u32 | first seq u64 | events u32 | payload

The CRC covers everything after itself (first seq, count, payload); the payload is a zstd
frame of a msgpack array of events (:mod:`common.wire`). Every event has a sequence number
(first seq + index), so a frame id (spool id, first seq) is unique and a collector can
deduplicate exactly, and a missing range is visible as such.

Never block, never crash-loop: when the spool would pass ``max_bytes`` (or the disk is full)
the oldest segment is deleted and a ``spool_gap`` event records exactly how many unacknowledged
events went with it; a reader cuts a torn tail, skips a frame whose CRC fails, finds the next
frame after garbage, and counts all of it.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import google_crc32c
import zstandard

from common import wire
from common.schema import Event, new_event

MAGIC = b"TTPF"
_HEADER = struct.Struct("<4sIIQI")          # magic, length, crc, first seq, count
_CRC_FROM = 12                              # the CRC covers the header from offset 12 on
FORMAT = 1
SEGMENT_PREFIX = "seg-"
DEFAULT_SEGMENT_BYTES = 16 << 20
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_BATCH_EVENTS = 500
DEFAULT_BATCH_BYTES = 1 << 20
DEFAULT_BATCH_SECONDS = 1.0
MAX_PAYLOAD = 64 << 20
FSYNC_POLICIES = ("frame", "interval", "never")


class SpoolError(OSError):
    pass


@dataclass
class Frame:
    segment: str
    offset: int
    first_seq: int
    count: int
    payload: bytes

    def events(self) -> list[Event]:
        data = zstandard.ZstdDecompressor().decompress(self.payload,
                                                        max_output_size=MAX_PAYLOAD * 8)
        return wire.unpack_batch(data)

    def raw(self) -> bytes:
        """The frame as it is on disk (and on the wire)."""
        tail = struct.pack("<QI", self.first_seq, self.count) + self.payload
        return MAGIC + struct.pack("<II", len(self.payload), google_crc32c.value(tail)) + tail


def decode_frame(data: bytes) -> Frame:
    """One whole frame (as received from a forwarder); SpoolError if it is not valid."""
    if len(data) < _HEADER.size:
        raise SpoolError(22, "frame shorter than its header")
    magic, length, crc, first, count = _HEADER.unpack_from(data)
    if magic != MAGIC or length == 0 or count == 0 or _HEADER.size + length != len(data):
        raise SpoolError(22, "not a frame (magic, length or count)")
    if google_crc32c.value(data[_CRC_FROM:]) != crc:
        raise SpoolError(22, "frame CRC mismatch")
    return Frame("", 0, first, count, data[_HEADER.size:])


@dataclass
class SpoolStats:
    events_written: int = 0
    frames_written: int = 0
    bytes_written: int = 0
    uncompressed_bytes: int = 0
    segments_dropped: int = 0
    events_dropped: int = 0       # unacknowledged events lost to the size cap or a full disk
    write_errors: int = 0
    # reading
    corrupt_frames: int = 0       # CRC or decoding failed
    garbage_bytes: int = 0        # skipped while looking for the next frame
    torn_tails: int = 0           # a last frame cut short (a crash while writing)
    missing_events: int = 0       # sequence numbers never found (a deleted segment)


def encode_frame(first_seq: int, events: list[Event], level: int = 3) -> tuple[bytes, int]:
    """A frame and the size of its uncompressed payload."""
    raw = wire.pack_batch(events)
    payload = zstandard.ZstdCompressor(level=level).compress(raw)
    tail = struct.pack("<QI", first_seq, len(events)) + payload
    crc = google_crc32c.value(tail)
    return MAGIC + struct.pack("<II", len(payload), crc) + tail, len(raw)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_name(first_seq: int) -> str:
    return f"{SEGMENT_PREFIX}{first_seq:020d}"


def _segment_seq(name: str) -> int:
    return int(name[len(SEGMENT_PREFIX):])


class Spool:
    """One spool directory: writing (batched), reading from a sequence number, acknowledging."""

    def __init__(self, directory: str, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 batch_events: int = DEFAULT_BATCH_EVENTS,
                 batch_bytes: int = DEFAULT_BATCH_BYTES,
                 batch_seconds: float = DEFAULT_BATCH_SECONDS, fsync: str = "frame",
                 host: dict[str, Any] | None = None, readonly: bool = False) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.batch_seconds = batch_seconds
        self.fsync = fsync
        self.host = host or {}
        self.stats = SpoolStats()
        # A reader beside a live writer (the forwarder) must never repair or write segments.
        self.readonly = readonly
        if readonly and not os.path.isfile(os.path.join(directory, "spool.json")):
            raise SpoolError(2, f"{directory} is not a spool (no spool.json)")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.spool_id = self._load_meta()
        self._batch: list[Event] = []
        self._batch_size = 0
        self._batch_started = 0.0
        self._last_fsync = time.monotonic()
        self._file = None
        self._segment: str | None = None
        self.next_seq = self._recover()

    # --- identity and recovery ------------------------------------------------------------

    def _load_meta(self) -> str:
        path = os.path.join(self.dir, "spool.json")
        try:
            with open(path) as f:
                return str(json.load(f)["id"])
        except (OSError, ValueError, KeyError):
            spool_id = str(uuid.uuid4())
            self._replace(path, json.dumps({"id": spool_id, "format": FORMAT}))
            return spool_id

    def segments(self) -> list[str]:
        return sorted(n for n in os.listdir(self.dir) if n.startswith(SEGMENT_PREFIX))

    def _recover(self) -> int:
        """The next sequence number, after cutting a torn tail off the last segment."""
        segments = self.segments()
        if not segments or self.readonly:
            return self.acked()
        last = segments[-1]
        end_seq, good_end = _segment_seq(last), 0
        for frame in self.frames(last, count_errors=False):
            end_seq = frame.first_seq + frame.count
            good_end = frame.offset + _HEADER.size + len(frame.payload)
        path = os.path.join(self.dir, last)
        if os.path.getsize(path) > good_end:
            with open(path, "r+b") as f:
                f.truncate(good_end)
            self.stats.torn_tails += 1
        return max(end_seq, self.acked())

    # --- writing --------------------------------------------------------------------------

    def append(self, event: Event, now: float | None = None) -> None:
        """Queue one event; frames are written by count, size or age of the batch."""
        if self.readonly:
            raise SpoolError(30, "this spool was opened read-only")
        now = time.monotonic() if now is None else now
        if not self._batch:
            self._batch_started = now
        self._batch.append(event)
        self._batch_size += 256  # an estimate; the frame size is known after encoding
        if (len(self._batch) >= self.batch_events or self._batch_size >= self.batch_bytes
                or now - self._batch_started >= self.batch_seconds):
            self.flush()

    def tick(self, now: float | None = None) -> None:
        """Write a batch that has waited ``batch_seconds``; fsync on the interval policy."""
        now = time.monotonic() if now is None else now
        if self._batch and now - self._batch_started >= self.batch_seconds:
            self.flush()
        if self.fsync == "interval" and self._file is not None and now - self._last_fsync >= 1:
            os.fsync(self._file.fileno())
            self._last_fsync = now

    def flush(self) -> None:
        if not self._batch:
            return
        events, self._batch, self._batch_size = self._batch, [], 0
        first = self.next_seq
        frame, raw_size = encode_frame(first, events)
        self._make_room(len(frame))
        for attempt in range(3):
            try:
                self._write_frame(first, frame)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    raise
                self.stats.write_errors += 1
                self._close_segment()
                if attempt == 2 or not self._drop_oldest(keep_last=False):
                    # Nothing left to drop: these events are lost, and say so.
                    self.next_seq += len(events)
                    self._record_gap(first, first + len(events), "disk full", spool=False)
                    return
        self.next_seq = first + len(events)
        self.stats.events_written += len(events)
        self.stats.frames_written += 1
        self.stats.bytes_written += len(frame)
        self.stats.uncompressed_bytes += raw_size

    def _write_frame(self, first: int, frame: bytes) -> None:
        if self._file is None or self._file.tell() + len(frame) > self.segment_bytes:
            self._close_segment()
            self._segment = _segment_name(first)
            self._file = open(os.path.join(self.dir, self._segment), "ab")
            os.fchmod(self._file.fileno(), 0o600)
        start = self._file.tell()
        try:
            self._file.write(frame)
            self._file.flush()
            if self.fsync == "frame":
                os.fsync(self._file.fileno())
        except OSError:
            # Leave no torn frame behind: cut the segment back to where this frame began.
            try:
                self._file.truncate(start)
            except OSError:
                pass
            raise

    def _close_segment(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def size(self) -> int:
        return sum(os.path.getsize(os.path.join(self.dir, n)) for n in self.segments())

    def _make_room(self, incoming: int) -> None:
        while self.size() + incoming > self.max_bytes and self._drop_oldest(keep_last=True):
            pass

    def _drop_oldest(self, keep_last: bool) -> bool:
        segments = self.segments()
        if not segments or (keep_last and len(segments) == 1):
            return False
        oldest = segments[0]
        following = _segment_seq(segments[1]) if len(segments) > 1 else self.next_seq
        if self._segment == oldest:
            self._close_segment()
        os.unlink(os.path.join(self.dir, oldest))
        self.stats.segments_dropped += 1
        lost_from = max(_segment_seq(oldest), self.acked())
        if following > lost_from:
            self._record_gap(lost_from, following, "spool full")
        return True

    def _record_gap(self, start: int, end: int, reason: str, spool: bool = True) -> None:
        """A ``spool_gap`` event with the exact range and count of events lost."""
        self.stats.events_dropped += end - start
        gap = new_event("spool_gap", "ttpsensor", host=self.host)
        gap["event"]["kind"] = "alert"
        # The running total makes the newest gap event exact on its own, even when a later
        # drop takes older gap events with it.
        gap["ttpsensor"] = {"spool_gap": {"spool": self.spool_id, "first_seq": start,
                                          "end_seq": end, "events": end - start,
                                          "total_events_dropped": self.stats.events_dropped,
                                          "reason": reason}}
        self._batch.insert(0, gap)  # it travels in the next frame
        self._batch_size += 256

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._file is not None and self.fsync != "never":
                os.fsync(self._file.fileno())
            self._close_segment()

    # --- reading and acknowledging ----------------------------------------------------------

    def acked(self) -> int:
        try:
            with open(os.path.join(self.dir, "cursor.json")) as f:
                return int(json.load(f)["acked"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def ack(self, seq: int) -> None:
        """Everything below ``seq`` is acknowledged; fully acknowledged segments are deleted
        after the cursor is safely on disk (the last segment never: it may be in use)."""
        self._replace(os.path.join(self.dir, "cursor.json"), json.dumps({"acked": seq}))
        segments = self.segments()
        for i, name in enumerate(segments[:-1]):
            if _segment_seq(segments[i + 1]) <= seq and name != self._segment:
                try:
                    os.unlink(os.path.join(self.dir, name))
                except FileNotFoundError:
                    pass  # the writer dropped it first

    def _replace(self, path: str, text: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.dir)

    def frames(self, segment: str, count_errors: bool = True) -> Iterator[Frame]:
        """Valid frames of one segment; corruption is skipped (and counted). A segment the
        writer dropped meanwhile reads as empty (its gap event says what was lost)."""
        try:
            with open(os.path.join(self.dir, segment), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        offset = 0
        while offset + _HEADER.size <= len(data):
            magic, length, crc, first, count = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + length
            if magic != MAGIC or length == 0 or length > MAX_PAYLOAD or count == 0:
                nxt = data.find(MAGIC, offset + 1)
                if count_errors:
                    self.stats.garbage_bytes += (nxt if nxt >= 0 else len(data)) - offset
                if nxt < 0:
                    return
                offset = nxt
                continue
            if end > len(data):
                if count_errors:
                    self.stats.torn_tails += 1
                return
            if google_crc32c.value(data[offset + _CRC_FROM:end]) != crc:
                if count_errors:
                    self.stats.corrupt_frames += 1
                nxt = data.find(MAGIC, offset + 1)
                if nxt < 0:
                    return
                offset = nxt
                continue
            yield Frame(segment, offset, first, count, data[offset + _HEADER.size:end])
            offset = end
        if offset < len(data) and count_errors:
            self.stats.torn_tails += 1

    def read_frames(self, from_seq: int | None = None) -> Iterator[Frame]:
        """Frames from ``from_seq`` (default: the cursor) on, without decompressing them.
        Holes between frames (a deleted or unreadable segment) are counted in
        ``stats.missing_events``; what lies before the first frame may have been acknowledged
        and deleted, so it is not counted."""
        expected = self.acked() if from_seq is None else from_seq
        started = False
        for segment in self.segments():
            for frame in self.frames(segment):
                if frame.first_seq + frame.count <= expected:
                    continue
                if frame.first_seq > expected and started:
                    self.stats.missing_events += frame.first_seq - expected
                started = True
                expected = frame.first_seq + frame.count
                yield frame

    def read(self, from_seq: int | None = None) -> Iterator[tuple[Frame, list[Event]]]:
        """Frames with their events, as :meth:`read_frames`; a frame that passes its CRC but
        does not decode is counted as corrupt and skipped."""
        for frame in self.read_frames(from_seq):
            try:
                events = frame.events()
            except (zstandard.ZstdError, wire.WireError):
                self.stats.corrupt_frames += 1
                continue
            yield frame, events

    def summary(self) -> dict[str, Any]:
        out = asdict(self.stats)
        out.update(spool_id=self.spool_id, next_seq=self.next_seq, acked=self.acked(),
                   segments=len(self.segments()), bytes=self.size())
        return out


@dataclass
class SpoolSink:
    """The spool as a sink of events (``--output spool:DIR``)."""

    spool: Spool
    written: int = field(default=0)

    def write_event(self, event: Event, line: str | None = None) -> None:
        self.spool.append(event)
        self.written += 1

    def write(self, line: str) -> None:
        raise SpoolError(22, "the spool stores events: use an events format (ecs)")

    def flush(self) -> None:
        self.spool.tick()

    def close(self) -> None:
        self.spool.close()
