"""Decode what audit spreads over several fields or encodes in binary: argv and sockaddr.

EXECVE carries ``argc`` and ``a0``, ``a1``, ... over one or more records; an argument too long
for one record comes as ``aN_len`` followed by ``aN[0]``, ``aN[1]``, ... chunks. Any argument may
be hex-encoded (already decoded by the parser).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from operator import itemgetter
from typing import Iterable, Sequence

from sensor_linux.audit.records import Value

_ARG_KEY = re.compile(r"a(\d{1,9})(?:\[(\d{1,9})\])?$")


def is_execve_arg_key(key: str) -> bool:
    """``aN``, ``aN[i]`` or ``aN_len`` (EXECVE argument fields)."""
    return key[0] == "a" and key != "argc" and (key[1:2].isdigit())


# An argv list is never longer than the arguments that arrived plus this many placeholders for
# ones that did not: ``argc=2000000000`` in a 300-byte line must not become two billion Nones.
MAX_MISSING_ARGS = 1024


@functools.lru_cache(maxsize=256)
def _whole_keys(count: int) -> tuple[str, ...]:
    return ("argc", *(f"a{i}" for i in range(count - 1)))


def whole_args(body: Sequence[tuple[str, Value]]) -> list[Value] | None:
    """The argument values of the usual EXECVE fields, ``argc`` and then every argument whole
    (no ``aN_len`` chunks), in order and as many as ``argc`` says; None for anything else."""
    if not body:
        return None
    argc = body[0][1]
    if type(argc) is not int or argc != len(body) - 1 \
            or tuple(map(itemgetter(0), body)) != _whole_keys(len(body)):
        return None
    return list(map(itemgetter(1), body[1:]))


def execve_argv(body: Iterable[tuple[str, Value]]) -> tuple[list[bytes | None], int | None]:
    """``(argv, argc)`` from EXECVE fields. Arguments that never arrived are ``None``, up to
    :data:`MAX_MISSING_ARGS` of them; ``argc`` stays the count the kernel reported."""
    if isinstance(body, list):
        values = whole_args(body)
        if values is not None:  # arguments are text or (null), which reads as ""
            argv = [b"" if value is None else value for value in values]
            return argv, len(values)  # type: ignore[return-value]
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
    count = min(count, len(whole) + MAX_MISSING_ARGS)
    return [whole.get(i) for i in range(count)], argc


AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
_AUDIT_ARCH_LE = 0x40000000


def sockaddr(raw: bytes, arch: int | None = None) -> dict[str, object]:
    """A SOCKADDR record's ``saddr`` as ``{family, address?, port?, path?}``.

    The family is in the audited machine's byte order (the arch's little-endian bit says which);
    ports are in network order. Unknown families keep only their number.
    """
    if len(raw) < 2:
        return {"family": None}
    little = arch is None or bool(arch & _AUDIT_ARCH_LE)
    family = int.from_bytes(raw[:2], "little" if little else "big")
    out: dict[str, object] = {"family": family}
    if family == AF_INET and len(raw) >= 8:
        out.update(family="inet", port=int.from_bytes(raw[2:4], "big"),
                   address=".".join(str(b) for b in raw[4:8]))
    elif family == AF_INET6 and len(raw) >= 24:
        out.update(family="inet6", port=int.from_bytes(raw[2:4], "big"),
                   address=str(ipaddress.IPv6Address(raw[8:24])))
    elif family == AF_UNIX:
        path = raw[2:]
        abstract = path[:1] == b"\0"
        path = path[1:] if abstract else path.split(b"\0", 1)[0]
        out.update(family="local", path=path.rstrip(b"\0") if abstract else path,
                   abstract=abstract)
    return out
