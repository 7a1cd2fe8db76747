"""Renderer registry: a format name to a function from an event to one output line."""

from __future__ import annotations

import json
from typing import Callable

from common import ecs, qlog
from common.schema import Event

Renderer = Callable[[Event], str]


def _qlog_line(event: Event) -> str:
    return json.dumps(qlog.render(event), ensure_ascii=False, separators=(",", ":"))


RENDERERS: dict[str, Renderer] = {
    "ecs": ecs.render,
    "qlog": _qlog_line,
}
