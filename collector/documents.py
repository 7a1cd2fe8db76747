"""The events table's documents: each event as msgpack, compressed with a zstd dictionary
that the store trained on its own first documents.

An event's fields repeat from one event to the next (the key names, the host, the parent, the
images of a few hundred binaries), so a dictionary trained on a store's first few thousand
events makes each document a small zstd frame. Measured on a 5,000-exec audit replay (ECS
events from the 5,000 execs recorded for the lab): 2,944 bytes of msgpack per event, 1,392
compressed alone, 183 with a dictionary trained on the first 4,000; the collector bench's
fleet mix 1,615 to 231 bytes, for 3.3 µs of compression. A smaller row is a cheaper insert,
commit and index page on SQLite and PostgreSQL alike.

A stored document is either plain msgpack (a map: its first byte is 0x80-0x8f, 0xde or 0xdf)
or a zstd frame (its first four bytes are zstd's magic number) whose header carries the id of
its dictionary; the store's ``doc_dictionaries`` table holds each dictionary under that id.
Documents stored before the store had a dictionary stay plain, and stay readable.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import zstandard

from common import wire
from common.schema import Event

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DICTIONARY_BYTES = 64 * 1024
TRAIN_DOCUMENTS = 4000   # plain documents a store holds before it trains its dictionary
LEVEL = 1                # level 3 gave 1 % smaller frames for 75 % more time


class DocumentError(ValueError):
    """A stored document that cannot be read back (corrupt, or of an unknown dictionary)."""


def train(samples: Sequence[bytes], dict_id: int) -> bytes | None:
    """A dictionary for documents like ``samples``, under ``dict_id`` (the id each frame it
    compresses carries); None when the samples are too few or too alike to train on."""
    try:
        return zstandard.train_dictionary(DICTIONARY_BYTES, list(samples),
                                          dict_id=dict_id).as_bytes()
    except zstandard.ZstdError:
        return None


class Documents:
    """Packs events for the store and reads stored documents back.

    ``load`` gives the store's dictionaries as ``(id, dictionary)``; it is called at the start
    and again when a document names a dictionary not loaded yet (a reader opened before the
    writer trained one). ``compress``: pack with the newest dictionary, once there is one."""

    def __init__(self, load: Callable[[], Iterable[tuple[int, bytes]]],
                 compress: bool = True) -> None:
        self._load = load
        self.compress = compress
        self._dictionaries: dict[int, zstandard.ZstdCompressionDict] = {}
        self._readers: dict[int, zstandard.ZstdDecompressor] = {}
        self._packer: zstandard.ZstdCompressor | None = None
        self.dictionary_id: int | None = None   # the dictionary new documents are packed with
        self.reload()

    def reload(self) -> None:
        for dict_id, data in self._load():
            if dict_id not in self._readers:
                self.add(dict_id, bytes(data))

    def add(self, dict_id: int, data: bytes) -> None:
        """A dictionary of the store's: documents that name it are read with it, and new
        ones are packed with the newest (when compressing)."""
        dictionary = zstandard.ZstdCompressionDict(data)
        self._dictionaries[dict_id] = dictionary
        self._readers[dict_id] = zstandard.ZstdDecompressor(dict_data=dictionary)
        if self.compress:
            self._pack_with_newest()

    def start_compressing(self) -> None:
        """Pack with the newest dictionary from now on (a store opened with plain documents
        that is asked to compress them)."""
        self.compress = True
        self._pack_with_newest()

    def _pack_with_newest(self) -> None:
        newest = max(self._dictionaries, default=None)
        if newest is not None and newest != self.dictionary_id:
            self.dictionary_id = newest
            self._packer = zstandard.ZstdCompressor(level=LEVEL,
                                                    dict_data=self._dictionaries[newest])

    def compress_plain(self, document: bytes) -> bytes:
        """A plain stored document compressed with the newest dictionary (as it is: the
        msgpack is not decoded); one that is compressed already, or with no dictionary to
        use, comes back unchanged."""
        packer = self._packer
        if packer is None or document[:4] == ZSTD_MAGIC:
            return document
        return packer.compress(document)

    def pack(self, event: Event, received: Any = None) -> bytes:
        """The document of ``event``: compressed with the newest dictionary, when there is
        one. ``received``: the event's msgpack as it came (wire.unpack_batch_documents, any
        buffer), stored instead of encoding the event again (4 µs an event of the collector
        bench's fleet)."""
        packer = self._packer
        if received is None:
            packed = wire.pack_event(event)
            return packed if packer is None else packer.compress(packed)
        return bytes(received) if packer is None else packer.compress(received)

    def pack_many(self, events: Sequence[Event],
                  received: Sequence[Any] | None = None) -> list[bytes]:
        """``pack`` of each of ``events`` (``received[i]`` as ``pack``'s ``received``): the
        same bytes, compressed by one call for the frame (zstd's multi_compress_to_buffer)
        instead of one call each. The bench's fleet in frames of 500, measured alone: 2.3
        against 3.5 µs a document; on two threads 2.7 (starting them costs more, per frame,
        than they save)."""
        if received is None:
            received = (None,) * len(events)
        elif len(received) != len(events):
            raise ValueError(f"{len(received)} documents for {len(events)} events")
        plain = [wire.pack_event(event) if got is None else got
                 for event, got in zip(events, received)]
        packer = self._packer
        if packer is None or not plain:
            return [bytes(document) for document in plain]
        return [segment.tobytes()
                for segment in packer.multi_compress_to_buffer(plain)]

    def unpack(self, document: bytes) -> Event:
        """A stored document's event; DocumentError if it cannot be read."""
        if document[:4] == ZSTD_MAGIC:
            document = self._decompress(document)
        try:
            return wire.unpack_event(document)
        except ValueError as exc:   # wire.WireError, and msgpack's own errors
            raise DocumentError(f"stored document is not an event: {exc}") from exc

    def _decompress(self, frame: bytes) -> bytes:
        try:
            dict_id = zstandard.get_frame_parameters(frame).dict_id
        except zstandard.ZstdError as exc:
            raise DocumentError(f"stored document has a bad zstd header: {exc}") from exc
        reader = self._readers.get(dict_id)
        if reader is None:
            self.reload()
            reader = self._readers.get(dict_id)
        if reader is None:
            raise DocumentError(f"stored document is compressed with dictionary {dict_id}, "
                                "which the store does not hold")
        try:
            return reader.decompress(frame)
        except zstandard.ZstdError as exc:
            raise DocumentError(f"stored document does not decompress: {exc}") from exc
