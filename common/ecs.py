"""The ``ecs`` renderer: one event as one line of JSON, and back, losslessly.

JSON cannot carry bytes that are not UTF-8. A field holding such bytes (an argv element, a path)
is written in percent form (:mod:`common.percent`) and its dotted path is listed in
``ttpsensor.percent_encoded``; for a list the whole list is in percent form. Every other field is
plain JSON text, so the common case stays readable and SIEM-friendly, and :func:`parse` restores
the exact event.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from common.percent import percent_decode, percent_encode
from common.schema import Event, get_path, set_path

PERCENT_FIELD = "ttpsensor.percent_encoded"

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def render(event: Event) -> str:
    """One JSON line (without the newline)."""
    try:
        # Hot path: orjson writes what the standard library's compact encoder writes for
        # everything an event holds (str, int, bool, None, lists, dicts; no floats), ten times
        # faster. It refuses bytes (a field that is not UTF-8), an integer past 64 bits and a
        # lone surrogate: those events take the standard library's path, bytes in percent form.
        return orjson.dumps(event).decode("utf-8")
    except orjson.JSONEncodeError:
        return _compact.encode(to_json_safe(event))


def render_line(event: Event) -> bytes:
    """:func:`render` as a file takes it: UTF-8 bytes with the newline, the same bytes a line
    sink writes for :func:`render`'s text. orjson's bytes are written as they are, not decoded
    to text and encoded back (two copies of every event on the hot path)."""
    try:
        return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return _compact.encode(to_json_safe(event)).encode("utf-8", "surrogateescape") + b"\n"


def to_json_safe(event: Event) -> Event:
    """A copy of ``event`` with bytes in percent form and their paths recorded."""
    marks: list[str] = []
    safe = _encode_node(event, "", marks)
    if marks:
        existing = get_path(safe, PERCENT_FIELD) or []
        set_path(safe, PERCENT_FIELD, sorted(set(existing) | set(marks)))
    return safe


def _contains_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, list):
        return any(_contains_bytes(v) for v in value)
    return False


def _encode_node(node: Any, path: str, marks: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _encode_node(v, f"{path}.{k}" if path else k, marks) for k, v in node.items()}
    if isinstance(node, list):
        if any(isinstance(v, dict) for v in node):
            return [_encode_node(v, path, marks) for v in node]
        if _contains_bytes(node):
            marks.append(path)
            return [percent_encode(v) if isinstance(v, (str, bytes)) else v for v in node]
        return node
    if isinstance(node, bytes):
        marks.append(path)
        return percent_encode(node)
    return node


def parse(doc: dict[str, Any]) -> Event:
    """Restore an event parsed from our JSON (undo the percent form of marked fields)."""
    marks = get_path(doc, PERCENT_FIELD)
    if not marks:
        return doc
    for path in marks:
        value = get_path(doc, path)
        if isinstance(value, str):
            set_path(doc, path, percent_decode(value))
        elif isinstance(value, list):
            set_path(doc, path, [percent_decode(v) if isinstance(v, str) else v for v in value])
    sensor = doc.get("ttpsensor")
    if isinstance(sensor, dict):
        sensor.pop("percent_encoded", None)
        if not sensor:
            del doc["ttpsensor"]
    return doc
