"""Read JSON events from a text stream: JSON lines, or pretty-printed documents one after another.

Each yielded item carries the line number where its document starts, so errors can name it.
A document that is broken is reported once and reading resumes on the line after its first
line, so one bad line never swallows the good ones behind it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

# A document may span lines (QLOG prints indented JSON); bound how much we hold for one.
MAX_DOCUMENT_LINES = 10_000
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024

_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class Document:
    line: int            # 1-based line where the document starts
    value: Any = None    # the parsed JSON value, when error is None
    error: str | None = None


_STRUCTURE = re.compile(r'["\\{}\[\]]')


class _Depth:
    """How deep the text so far is nested, outside strings: a document can only be complete
    when it is back at 0. Only the structural characters are looked at."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False

    def feed(self, text: str) -> None:
        escaped_at = -1  # position of a character escaped by a backslash
        for match in _STRUCTURE.finditer(text):
            char, at = match.group(), match.start()
            if not self.in_string:
                if char == '"':
                    self.in_string = True
                elif char in "{[":
                    self.depth += 1
                elif char in "}]":
                    self.depth -= 1
            elif at == escaped_at:
                continue  # \" or \\: escaped, no effect
            elif char == "\\":
                escaped_at = at + 1
            elif char == '"':
                self.in_string = False
        # A JSON string never spans lines: a line that ends inside one is broken anyway.
        self.in_string = False

    @property
    def closed(self) -> bool:
        return self.depth <= 0


def read_documents(lines: Iterable[str]) -> Iterator[Document]:
    """Yield one :class:`Document` per JSON value or per unparseable stretch."""
    pending: list[tuple[int, str]] = []  # (line number, text) of an unfinished document
    size = 0
    depth = _Depth()
    for number, line in enumerate(lines, start=1):
        if not pending and not line.strip():
            continue
        pending.append((number, line))
        size += len(line)
        depth.feed(line)
        over_limit = len(pending) > MAX_DOCUMENT_LINES or size > MAX_DOCUMENT_BYTES
        count = len(pending)
        # An open document is tried again only at 1, 2, 4, 8... lines (n log n in all, where
        # every line was quadratic), so a broken line is still found at once.
        if not depth.closed and not over_limit and count & (count - 1):
            continue
        yield from _drain(pending, final=False, over_limit=over_limit)
        size = sum(len(text) for _, text in pending)
        depth = _Depth()
        for _, text in pending:
            depth.feed(text)
    while pending:
        yield from _drain(pending, final=True, over_limit=False)


def _drain(pending: list[tuple[int, str]], *, final: bool, over_limit: bool) -> Iterator[Document]:
    """Parse as many complete documents from ``pending`` as possible, mutating it."""
    while pending:
        text = "".join(t for _, t in pending)
        start = len(text) - len(text.lstrip())
        if start == len(text):
            pending.clear()
            return
        try:
            value, end = _decoder.raw_decode(text, start)
        except RecursionError:
            yield Document(pending[0][0], error="not valid JSON (nested too deeply)")
            del pending[0]
            continue
        except ValueError as exc:
            if not isinstance(exc, json.JSONDecodeError):  # e.g. a number of 5,000 digits
                yield Document(pending[0][0], error=f"not valid JSON ({exc})")
                del pending[0]
                continue
            incomplete = exc.pos >= len(text.rstrip())
            if incomplete and not final and not over_limit:
                return  # wait for more lines
            first_line = pending[0][0]
            reason = "document too large" if over_limit else _describe(exc)
            yield Document(first_line, error=f"not valid JSON ({reason})")
            del pending[0]  # resume on the next line
            continue
        first_line = pending[0][0]
        rest = text[end:]
        if rest.strip() and not rest.lstrip().startswith(("{", "[")):
            yield Document(first_line, error="not valid JSON (trailing data after the value)")
            pending.clear()
            return
        yield Document(first_line, value=value)
        _drop_consumed(pending, end)


def _drop_consumed(pending: list[tuple[int, str]], consumed: int) -> None:
    """Remove the first ``consumed`` characters from the pending lines."""
    while pending and consumed >= len(pending[0][1]):
        consumed -= len(pending[0][1])
        del pending[0]
    if pending and consumed:
        number, text = pending[0]
        pending[0] = (number, text[consumed:])


def _describe(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg} at column {exc.colno}" if exc.lineno == 1 else exc.msg


def load_event(value: Any) -> dict[str, Any]:
    """An event of our schema from a parsed JSON document: ours (ECS) or QLOG's; raises
    :class:`common.schema.SchemaError` for anything else."""
    from common import ecs, qlog
    from common.schema import SchemaError, validate
    if qlog.is_qlog(value):
        return qlog.read_event(value)
    if isinstance(value, dict) and "schema" in value:
        event = ecs.parse(value)
        validate(event)
        return event
    raise SchemaError("neither an event of ours (no 'schema') nor a QLOG event (no 'QType')")
