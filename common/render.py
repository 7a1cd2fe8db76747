"""Renderer registry: a format name to a function from an event to one output line.

An output in a format renders events itself (common/sinks.py's TextOutput) with
:func:`line_renderer`, which says None for an event the format has no form for."""

from __future__ import annotations

import json
from typing import Callable

import orjson

from common import ecs, qlog
from common.schema import ACTION_PROCESS_CREATE, Event

Renderer = Callable[[Event], str]
LineRenderer = Callable[[Event], "str | None"]


def _qlog_line(event: Event) -> str:
    doc = qlog.render(event)
    try:
        return orjson.dumps(doc).decode("utf-8")  # the same bytes, faster (common/ecs.py)
    except orjson.JSONEncodeError:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


RENDERERS: dict[str, Renderer] = {
    "ecs": ecs.render,
    "qlog": _qlog_line,
}


def _qlog_or_none(event: Event) -> str | None:
    if event.get("event", {}).get("action") != ACTION_PROCESS_CREATE:
        return None  # QLOG has a form for process creations only
    return _qlog_line(event)


def _none(event: Event) -> None:
    return None  # LAUREL lines are rendered from audit records, never from our events


def file_line_renderer(fmt: str) -> Callable[[Event], "bytes | None"] | None:
    """:func:`line_renderer` for a file (common/sinks.py's LineFileOutput) where a format has
    one: the line as the file's bytes, newline included. ECS, the sensor's default and hot
    path; the other formats go through text (:class:`common.sinks.TextOutput`)."""
    return ecs.render_line if fmt == "ecs" else None


def line_renderer(fmt: str) -> LineRenderer:
    """The renderer of an output in ``fmt`` (ecs, qlog or laurel)."""
    if fmt == "laurel":
        return _none
    if fmt == "qlog":
        return _qlog_or_none
    return RENDERERS[fmt]
