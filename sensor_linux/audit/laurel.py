"""The ``laurel`` renderer: an audit event as the JSON line LAUREL 0.8.2 writes for it.

Matched byte for byte against LAUREL's golden files (settings in ../shared/corpus/README.md:
no translation, no pid/script/container enrichment). Layout: ``ID``, ``NODE``, then one member
per record type in order of first appearance; SYSCALL, EXECVE, CWD, PROCTITLE and user-space
records are objects, other kernel records are lists of objects. SYSCALL's ``a0``-``a3`` become
``ARGV`` (``"0x…"``), EXECVE's arguments and PROCTITLE's title become ``ARGV`` lists. Duplicate
keys are kept, as LAUREL keeps them.

Strings use LAUREL's escaping: printable ASCII and valid UTF-8 as they are (except the BOM),
control characters, DEL, ``%``, ``+`` and invalid bytes as lower-case ``%xx``. Written by hand
with string building because JSON libraries cannot emit duplicate keys and this is the hot path.
"""

from __future__ import annotations

import re

from sensor_linux.audit.assemble import AuditEvent
from sensor_linux.audit.decode import execve_argv, is_execve_arg_key
from sensor_linux.audit.records import (CWD, EXECVE, PROCTITLE, SYSCALL, Hex, Oct, Value,
                                        is_multipart, type_name)

_SINGLE = frozenset({SYSCALL, EXECVE, PROCTITLE, CWD})

# LAUREL configured as for its golden files (no translation, no enrichment), for running it as
# the peer our output is compared with (tests, benchmarks). Format with directory=.
PEER_CONFIG = """\
directory = "{directory}"
statusreport-period = 0
[auditlog]
file = "laurel.log"
size = 4000000000
generations = 1
[transform]
execve-argv = [ "array" ]
[translate]
universal = false
user-db = false
[enrich]
pid = false
execve-env = []
container = false
script = false
"""
_ESCAPE = re.compile("[\x00-\x1f\x7f%+\"\\\\\ufeff\udc80-\udcff]")
_FIXED = {'"': '\\"', "\\": "\\\\", "\ufeff": "%ef%bb%bf"}


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    fixed = _FIXED.get(ch)
    if fixed is not None:
        return fixed
    code = ord(ch)
    return "%%%02x" % (code - 0xDC00 if code >= 0xDC80 else code)


def laurel_string(data: bytes) -> str:
    """A JSON string literal of ``data`` in LAUREL's escaping."""
    if data.isascii():
        text = data.decode("ascii")
        if not _ESCAPE.search(text):
            return '"' + text + '"'
        return '"' + _ESCAPE.sub(_escape_char, text) + '"'
    return '"' + _ESCAPE.sub(_escape_char, data.decode("utf-8", "surrogateescape")) + '"'


def laurel_proctitle_argv(value: Value) -> list[bytes]:
    """PROCTITLE split as LAUREL splits it: a NUL ends the current argument only if that
    argument is non-empty, so an empty argument's NUL stays at the start of the next one
    (``a\\0\\0b`` gives ``["a", "\\0b"]``). Seen in the live differential test; our own events
    take argv from EXECVE, which has no such ambiguity."""
    if not isinstance(value, bytes):
        return []
    argv: list[bytes] = []
    start = 0
    for i, byte in enumerate(value):
        if byte == 0 and i > start:
            argv.append(value[start:i])
            start = i + 1
    if start < len(value):
        argv.append(value[start:])
    return argv


def _value(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bytes):
        return laurel_string(value)
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is Hex:
        return '"0x%x"' % value
    if kind is Oct:
        return '"0o%o"' % value
    if isinstance(value, list):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return laurel_string(str(value).encode())


def _object(pairs: list[tuple[str, Value]], rtype: int) -> str:
    parts: list[str] = []
    if rtype == SYSCALL:
        argv: list[Value] = []
        for key, value in pairs:
            if len(key) == 2 and key[0] == "a" and key[1].isdigit():
                argv.append(value)
            else:
                parts.append('"%s":%s' % (key, _value(value)))
        parts.append('"ARGV":[%s]' % ",".join(
            '"0x%x"' % v if type(v) is Hex else _value(v) for v in argv))
    elif rtype == EXECVE:
        for key, value in pairs:
            if not is_execve_arg_key(key):
                parts.append('"%s":%s' % (key, _value(value)))
        args, _ = execve_argv(pairs)
        parts.append('"ARGV":[%s]' % ",".join(_value(a) for a in args))
    elif rtype == PROCTITLE:
        title: Value = None
        for key, value in pairs:
            if key == "proctitle":
                title = value
            else:
                parts.append('"%s":%s' % (key, _value(value)))
        parts.append('"ARGV":[%s]' % ",".join(laurel_string(a)
                                              for a in laurel_proctitle_argv(title)))
    else:
        for key, value in pairs:
            parts.append('"%s":%s' % (key, _value(value)))
    return "{" + ",".join(parts) + "}"


def render(event: AuditEvent) -> str:
    """One JSON line (without the newline)."""
    groups: dict[int, list[list[tuple[str, Value]]]] = {}
    for record in event.records:
        bodies = groups.get(record.rtype)
        if bodies is None:
            groups[record.rtype] = [list(record.body)]
        elif record.rtype in _SINGLE or not is_multipart(record.rtype):
            bodies[0].extend(record.body)  # EXECVE continuation records merge into one
        else:
            bodies.append(list(record.body))
    out = ['{"ID":"%s"' % event.id]
    if event.node is not None:
        out.append('"NODE":' + laurel_string(event.node))
    for rtype, bodies in groups.items():
        name = type_name(rtype)
        if rtype in _SINGLE or not is_multipart(rtype):
            out.append('"%s":%s' % (name, _object(bodies[0], rtype)))
        else:
            out.append('"%s":[%s]' % (name, ",".join(_object(b, rtype) for b in bodies)))
    return ",".join(out) + "}"
