"""One pipeline for every source and platform: decode -> build -> fold -> route -> render ->
emit.

A source hands the pipeline what it read (an audit text line, a BPF exec record, an ETW
event). The stages around one loop:

* a **decoder** turns that into items to build: the audit decoder parses lines and assembles
  records into events; a BPF record or a normalized ETW start is an item already. Bad input is
  the decoder's to count and keep;
* a **builder** makes an event of our schema from an item (enrichment and TTPHash included),
  or there is none and the item is rendered as it is (LAUREL output of assembled records);
* a **folder** may hold events back and fold them into later ones (Linux: PATH-walk misses);
* **route** may keep an event from the output (the combined sources send audit's execs to the
  cross-check), **observe** sees each event written;
* the **output** renders it in its format, or stores it (common/sinks.py); an event no output
  has a form for is counted as not representable.

An input our own code fails on is counted as an internal error and kept (what it came from,
verbatim, in the error log); bad input and failures never stop the stream. The
:class:`Keeper` says so on the messages stream, the first ten of each kind and then one in a
thousand, numbered.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Protocol, TextIO

from common.schema import Event, get_path
from common.sinks import Output, Sink

# Decoded items built at a time by feed_many. Decoding a run of lines and then building its
# events costs less CPU than building each event between the lines that completed it: each
# stage's code and tables stay in the CPU's caches for a run of items. Replaying 20,000
# recorded execs in the laurel format (`ttpsensor bench audit`'s recording), µs an event by
# run: 1: 39-40, 8: 34, 32: 31, 64: 29-31, 128: 31, 512: 32, the whole file: 32-34.
BUILD_BATCH = 64
REPORT_FIRST = 10        # then one message per REPORT_EVERY, to keep the messages readable
REPORT_EVERY = 1000


class Keeper:
    """Keeps what could not be used, verbatim, in the error log (replayable), and says why."""

    def __init__(self, error_log: Sink | None, messages: TextIO | None = None,
                 prefix: str = "ttpsensor") -> None:
        self.error_log = error_log
        self.messages = messages      # None: standard error, if the process has one
        self.prefix = prefix

    def keep(self, reason: str, originals: list[bytes | str], count: int) -> None:
        """Keep ``originals`` (the ``count``-th of their kind) and report the first ones."""
        report = count <= REPORT_FIRST or count % REPORT_EVERY == 0
        for original in originals:
            text = original if isinstance(original, str) else original.decode(
                "utf-8", "surrogateescape")
            text = text.rstrip("\n")
            if self.error_log is not None:
                self.error_log.write(text)
            if report:
                shown = text[:160].encode("utf-8", "surrogateescape").decode(
                    "utf-8", "replace").rstrip()
                self._say(f"{reason} (#{count}): {shown}")
        if not originals and report:
            self._say(f"{reason} (#{count})")

    def _say(self, message: str) -> None:
        stream = self.messages if self.messages is not None else sys.stderr
        if stream is not None:  # a Windows service has no standard error
            stream.write(f"{self.prefix}: {message}\n")

    def flush(self) -> None:
        if self.error_log is not None:
            self.error_log.flush()


class Decoder(Protocol):
    """What a source read -> items to build. ``originals`` is what to keep of an item that
    our code failed on (``reason`` says how)."""

    def decode(self, raw: Any) -> list[Any]: ...
    def tick(self) -> list[Any]: ...
    def flush(self) -> list[Any]: ...
    def originals(self, item: Any, reason: str) -> list[bytes | str]: ...
    def summary(self) -> dict[str, object]: ...


class Builder(Protocol):
    def build(self, item: Any) -> Event: ...


class Folder(Protocol):
    def take(self, event: Event) -> list[Event]: ...
    def expire(self, everything: bool = False) -> list[Event]: ...
    def summary(self) -> dict[str, object]: ...


@dataclass
class PipelineStats:
    events: int = 0              # items built (or rendered as they are)
    output_lines: int = 0
    not_representable: int = 0   # no output took it (qlog of a generic event), or routed away
    internal_errors: int = 0     # our own code failed; what it came from is kept


class Pipeline:
    """``builder`` makes events for the output; without one, ``render_item`` makes a line of
    each decoded item (LAUREL output of assembled audit records)."""

    def __init__(self, decoder: Decoder, sink: Output, *, builder: Builder | None = None,
                 render_item: Callable[[Any], str] | None = None,
                 folder: Folder | None = None, keeper: Keeper | None = None,
                 route: Callable[[Event], bool] | None = None,
                 observe: Callable[[Event], None] | None = None) -> None:
        if (builder is None) == (render_item is None):
            raise ValueError("a pipeline has a builder or an item renderer, not both")
        self.decoder = decoder
        self.render_item = render_item
        self.sink = sink
        self.builder = builder
        self.folder = folder
        self.keeper = keeper or Keeper(None)
        self.route = route
        self.observe = observe
        self.stats = PipelineStats()

    def feed(self, raw: Any) -> None:
        items = self.decoder.decode(raw)
        if items:  # most audit lines complete no event
            self._build(items)

    def feed_many(self, raws: Iterable[Any]) -> None:
        """``feed`` of each of ``raws``, in one loop: a source that reads in batches (a
        replayed file, a plugin's pipe) saves a call per line on the hot path. Items are
        built BUILD_BATCH at a time, after their decoding, not one by one between lines."""
        decode = self.decoder.decode
        items: list[Any] = []
        for raw in raws:
            decoded = decode(raw)
            if decoded:
                items += decoded
                if len(items) >= BUILD_BATCH:
                    self._build(items)
                    items = []
        if items:
            self._build(items)

    def tick(self) -> None:
        """Periodic: what waited too long in the decoder and the folder."""
        self._build(self.decoder.tick())
        if self.folder is not None:
            self._output(self.folder.expire())

    def close(self) -> None:
        """Everything still held, then flush."""
        self._build(self.decoder.flush())
        if self.folder is not None:
            self._output(self.folder.expire(everything=True))
        self.sink.flush()
        self.keeper.flush()

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {**self.decoder.summary(), **asdict(self.stats)}
        if self.folder is not None:
            out["exec_attempts"] = self.folder.summary()
        return out

    def _build(self, items: list[Any]) -> None:
        if self.builder is None:
            self._render(items)
            return
        # Built, then output together: one output call a batch, not one an event. Output
        # order is build order; the build of an item writes nothing (errors go to the keeper).
        build = self.builder.build
        take = self.folder.take if self.folder is not None else None
        ready: list[Event] = []
        built = 0
        try:
            for item in items:
                built += 1
                try:
                    event = build(item)
                except Exception as exc:  # noqa: BLE001 - a bug must not stop the stream
                    reason = f"internal error {type(exc).__name__}: {exc}"
                    self.internal_error(reason, self.decoder.originals(item, reason))
                    continue
                if take is None:
                    ready.append(event)
                else:
                    ready += take(event)
        finally:
            self.stats.events += built
        self._output(ready)

    def _render(self, items: list[Any]) -> None:
        """Lines of the items as they are (LAUREL), without events."""
        render = self.render_item
        for item in items:
            self.stats.events += 1
            try:
                line = render(item)  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the stream
                reason = f"internal error {type(exc).__name__}: {exc}"
                self.internal_error(reason, self.decoder.originals(item, reason))
                continue
            self.sink.write(line)
            self.stats.output_lines += 1

    def _output(self, events: list[Event]) -> None:
        for event in events:
            try:
                if self.route is not None and not self.route(event):
                    self.stats.not_representable += 1
                    continue
                prepared = self.sink.prepare(event)
            except Exception as exc:  # noqa: BLE001
                kept = get_path(event, "audit.records") or []
                self.internal_error(f"internal error {type(exc).__name__}: {exc}",
                                     [r for r in kept if isinstance(r, (str, bytes))])
                continue
            # Writing is not ours to forgive: a full disk or a closed pipe is the run's.
            if not self.sink.write_event(event, prepared):
                self.stats.not_representable += 1
                continue
            self.stats.output_lines += 1
            if self.observe is not None:
                self.observe(event)

    def internal_error(self, reason: str, originals: list[bytes | str]) -> None:
        self.stats.internal_errors += 1
        self.keeper.keep(reason, originals, self.stats.internal_errors)
