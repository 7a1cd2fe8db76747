"""Bytes that may not be UTF-8, and their lossless text form.

Convention used across the event schema: a value taken from the kernel (argv element, path,
working directory) is a ``str`` when its bytes are valid UTF-8 and ``bytes`` only when they are
not. Text formats that cannot carry raw bytes (JSON, the TTPHash input) use *percent form*:
every byte that is not part of a well-formed UTF-8 sequence, and ``%`` itself, is written as
``%XX`` (upper-case hex); everything else is the UTF-8 text it is. The form is reversible.

Hot path (every argv element of every event), so it leans on the C UTF-8 decoder: decoding with
``surrogateescape`` maps exactly the bytes outside well-formed sequences to U+DC80..U+DCFF.
"""

from __future__ import annotations

import re
from typing import Sequence

# Any surrogate: U+DC80..U+DCFF are surrogate-escaped bytes; other lone surrogates can only come
# from hostile JSON (``"\\ud800"``) and are escaped as the bytes Python would give them.
_SURROGATE_OR_PERCENT = re.compile("[%\ud800-\udfff]")
_PERCENT_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "%":
        return "%25"
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        return "%%%02X" % (code - 0xDC00)
    return "".join("%%%02X" % b for b in ch.encode("utf-8", "surrogatepass"))


def as_text(value: bytes | str) -> bytes | str:
    """Return ``value`` as ``str`` when it is valid UTF-8, else unchanged ``bytes``."""
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def as_texts(values: Sequence[bytes | None]) -> list[bytes | str | None]:
    """:func:`as_text` of each of ``values`` (None stays None): decoded in one pass when all of
    them are UTF-8, the usual case (an event's records, its arguments), without a call each."""
    try:
        return [None if value is None else value.decode("utf-8") for value in values]
    except UnicodeDecodeError:
        return [None if value is None else as_text(value) for value in values]


def to_bytes(value: bytes | str) -> bytes:
    """The exact bytes of a schema value (``str`` may carry surrogate escapes)."""
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "surrogateescape")


def percent_encode(value: bytes | str) -> str:
    """Percent form of ``value``: invalid UTF-8 bytes and ``%`` as ``%XX``."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "surrogateescape")
    else:
        text = value
    # str.isascii() is a fast exit for the overwhelmingly common case (no surrogate possible).
    if "%" not in text and (text.isascii() or _SURROGATE_OR_PERCENT.search(text) is None):
        return text
    return _SURROGATE_OR_PERCENT.sub(_escape_char, text)


def percent_decode(text: str) -> bytes | str:
    """Inverse of :func:`percent_encode`, returning the schema convention (str if UTF-8)."""
    if "%" not in text:
        return text
    raw = _PERCENT_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8"))
    return as_text(raw)
