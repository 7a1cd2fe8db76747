"""Sigma rules the tests write, in SigmaHQ's format (our own rules; none copied)."""

from __future__ import annotations

import uuid
from pathlib import Path

NAMESPACE = uuid.UUID("6f1d3c2e-9b7a-4e58-8c41-2a0f5d7e9b13")


def rule_id(title: str) -> str:
    """A rule's id, the same for the same title (hash randomization plays no part)."""
    return str(uuid.uuid5(NAMESPACE, title))


def rule_yaml(title: str, detection: str, *, product: str = "linux", level: str = "high",
              tags: tuple[str, ...] = ("attack.execution", "attack.t1059")) -> str:
    """One process_creation rule; ``detection`` is the block's indented body."""
    return (f"title: '{title}'\nid: {rule_id(title)}\nstatus: test\nlevel: {level}\n"
            f"tags: [{', '.join(tags)}]\nlogsource:\n    category: process_creation\n"
            f"    product: {product}\ndetection:\n{detection}\n")


def selection(field_and_value: str) -> str:
    """The detection of a rule with one selection of one field."""
    return f"    sel:\n        {field_and_value}\n    condition: sel"


def write_rules(directory: Path, rules: dict[str, str]) -> str:
    """``rules`` (file name: YAML text) written into ``directory``; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in rules.items():
        (directory / name).write_text(text)
    return str(directory)
