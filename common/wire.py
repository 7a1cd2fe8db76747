"""The wire form of events: msgpack, exact for every value the schema allows.

``str`` travels as msgpack str and ``bytes`` (non-UTF-8 kernel text) as msgpack bin, so decoding
gives back exactly the types and bytes that went in. A batch is a msgpack array of events; the
spool (zstd frames) and the forwarder carry batches.
"""

from __future__ import annotations

from typing import Any, Iterable

import msgpack

from common.schema import Event


class WireError(ValueError):
    """Bytes that are not a msgpack event or batch."""


def pack_event(event: Event) -> bytes:
    return msgpack.packb(event, use_bin_type=True)


def unpack_event(data: bytes) -> Event:
    value = _unpack(data)
    if not isinstance(value, dict):
        raise WireError("msgpack value is not a map")
    return value


def pack_batch(events: Iterable[Event]) -> bytes:
    return msgpack.packb(list(events), use_bin_type=True)


def unpack_batch(data: bytes) -> list[Event]:
    value = _unpack(data)
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise WireError("msgpack value is not an array of maps")
    return value


def _unpack(data: bytes) -> Any:
    try:
        # raw=False: str stays str, bin stays bytes. strict_map_key keeps keys to str/bytes.
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
        raise WireError(f"not a msgpack value: {exc}") from exc
