"""Decode argv, which audit spreads over several fields and records.

EXECVE carries ``argc`` and ``a0``, ``a1``, ... over one or more records; an argument too long
for one record comes as ``aN_len`` followed by ``aN[0]``, ``aN[1]``, ... chunks. Any argument may
be hex-encoded (already decoded by the parser).
"""

from __future__ import annotations

import re
from typing import Iterable

from sensor_linux.audit.records import Value

_ARG_KEY = re.compile(r"a(\d+)(?:\[(\d+)\])?$")


def is_execve_arg_key(key: str) -> bool:
    """``aN``, ``aN[i]`` or ``aN_len`` (EXECVE argument fields)."""
    return key[0] == "a" and key != "argc" and (key[1:2].isdigit())


def execve_argv(body: Iterable[tuple[str, Value]]) -> tuple[list[bytes | None], int | None]:
    """``(argv, argc)`` from EXECVE fields. Arguments that never arrived are ``None``."""
    whole: dict[int, bytes | None] = {}
    chunks: dict[int, dict[int, bytes]] = {}
    argc: int | None = None
    for key, value in body:
        if key == "argc":
            argc = value if isinstance(value, int) else None
            continue
        match = _ARG_KEY.match(key)
        if match is None:
            continue  # aN_len or an unexpected field
        index = int(match.group(1))
        if match.group(2) is None:
            whole[index] = value if isinstance(value, bytes) else (b"" if value is None else None)
        else:
            chunks.setdefault(index, {})[int(match.group(2))] = (
                value if isinstance(value, bytes) else b"")
    for index, parts in chunks.items():
        whole[index] = b"".join(parts[i] for i in sorted(parts))
    count = max(max(whole) + 1 if whole else 0, argc or 0)
    return [whole.get(i) for i in range(count)], argc
