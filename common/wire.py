"""The wire form of events: msgpack, exact for every value the schema allows.

``str`` travels as msgpack str and ``bytes`` (non-UTF-8 kernel text) as msgpack bin, so decoding
gives back exactly the types and bytes that went in. A batch is a msgpack array of events; the
spool (zstd frames) and the forwarder carry batches.

Encoding is msgspec's msgpack encoder: the same bytes as msgpack-python's ``packb`` with
``use_bin_type`` for every value of the schema (a test compares them), three times faster on
the spool's hot path. A value it does not take goes to ``packb``. Decoding stays with
msgpack-python, whose limits (``strict_map_key``) the collector relies on; msgspec only finds
where each event of a batch begins and ends (``unpack_batch_documents``).
"""

from __future__ import annotations

from typing import Any, Iterable

import msgpack
import msgspec

from common.schema import Event


class WireError(ValueError):
    """Bytes that are not a msgpack event or batch."""


_encoder = msgspec.msgpack.Encoder()


def pack_event(event: Event) -> bytes:
    try:
        return _encoder.encode(event)
    except (msgspec.EncodeError, TypeError, OverflowError):
        return msgpack.packb(event, use_bin_type=True)


def unpack_event(data: bytes) -> Event:
    value = _unpack(data)
    if not isinstance(value, dict):
        raise WireError("msgpack value is not a map")
    return value


def pack_batch(events: Iterable[Event]) -> bytes:
    batch = list(events)
    try:
        return _encoder.encode(batch)
    except (msgspec.EncodeError, TypeError, OverflowError):
        return msgpack.packb(batch, use_bin_type=True)


def unpack_batch(data: bytes) -> list[Event]:
    value = _unpack(data)
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise WireError("msgpack value is not an array of maps")
    return value


# An array read as each element's own bytes, not decoded: what the collector stores as an
# event's document instead of encoding the decoded event again.
_ELEMENTS = msgspec.msgpack.Decoder(list[msgspec.Raw])


def unpack_batch_documents(data: bytes) -> tuple[list[Event], list[Any] | None]:
    """A batch's events, and each event's bytes as they are in ``data`` (``msgspec.Raw``:
    buffers into ``data``, not copies). The bytes are found by a second, shallow pass
    (0.7 µs an event of the collector bench's fleet, where encoding the event again costs
    about 4); None when that pass does not agree with the first (never on valid msgpack)."""
    events = unpack_batch(data)
    try:
        documents = _ELEMENTS.decode(data)
    except msgspec.DecodeError:
        return events, None
    return events, (documents if len(documents) == len(events) else None)


def _unpack(data: bytes) -> Any:
    try:
        # raw=False: str stays str, bin stays bytes. strict_map_key keeps keys to str/bytes.
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
        raise WireError(f"not a msgpack value: {exc}") from exc
