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

import functools
import re
from typing import Any

from sensor_linux.audit import fields
from sensor_linux.audit.assemble import AuditEvent
from sensor_linux.audit.completeness import ExecCompleteness
from sensor_linux.audit.decode import execve_argv, is_execve_arg_key, whole_args
from sensor_linux.audit.records import (CWD, EXECVE, MULTIPART, PATH, PROCTITLE, SYSCALL,
                                        SYSCALL_ARGUMENTS, SYSCALL_TAIL, Hex, Oct, Record,
                                        Value, field_value, in_kernel_layout, plain_key,
                                        type_name)

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
    if not value.startswith(b"\0") and b"\0\0" not in value:
        argv = value.split(b"\0")  # no empty argument: every NUL ends one
        if not argv[-1]:
            argv.pop()
        return argv
    argv = []
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


def _member(key: str, value: Value) -> str:
    return '"%s":%s' % (key, _value(value))


_DEC, _ENCODED, _OTHER = 0, 1, 2
# Printable ASCII that LAUREL writes as it is: not the quote, backslash, "%" or "+".
_VERBATIM = re.compile(rb'[!#$&-*,-\[\]-~]*')


@functools.lru_cache(maxsize=4096)
def _key_kind(key: bytes) -> tuple[str, int]:
    """A field's ``"key":`` prefix and how its value is written (records.typed_value)."""
    text = plain_key(key)
    if text in fields.HEX or text in fields.OCT:
        kind = _OTHER
    elif text in fields.NOT_ENCODED or text.endswith(("uid", "gid")):
        kind = _DEC
    else:
        kind = _ENCODED
    return '"%s":' % text, kind


def _plain_member(part: bytes, line: bytes, rtype: int = 0) -> str:
    """The member of a plain ``key=value`` field. Shortcuts for the values that differ from
    one event to the next (decimal ids, quoted paths) give what the general path gives: a
    decimal without sign or leading zero is its digits; a quoted printable value is itself."""
    key, _, raw = part.partition(b"=")
    prefix, kind = _key_kind(key)
    if kind == _DEC:
        digits = raw[1:] if raw[:1] == b"-" else raw
        if digits.isdigit() and len(digits) <= 18 and (digits[0] != 48 or raw == b"0"):
            return prefix + raw.decode("ascii")
    elif kind == _ENCODED and len(raw) >= 2 and raw[0] == 34 and raw[-1] == 34 \
            and _VERBATIM.fullmatch(raw, 1, len(raw) - 1):
        return prefix + raw.decode("ascii")
    text = plain_key(key)
    return _member(text, field_value(rtype, text, raw, line))


def _is_syscall_arg(part: bytes) -> bool:
    return part[0] == 97 and part[1:2].isdigit() and part[2:3] == b"="  # aN=


# A SYSCALL argument as the kernel writes it (%lx): what "0x%x" of its number gives back.
_KERNEL_HEX = re.compile(rb"[1-9a-f][0-9a-f]{0,15}|0")


def _syscall_arg(part: bytes, line: bytes) -> str:
    """``"0x…"`` of a SYSCALL ``aN=`` part (or what the general path makes of another value)."""
    raw = part[3:]
    if _KERNEL_HEX.fullmatch(raw):
        return '"0x' + raw.decode("ascii") + '"'
    value = field_value(SYSCALL, plain_key(part[:2]), raw, line)
    return '"0x%x"' % value if type(value) is Hex else _value(value)


# Parts of at most this many bytes are remembered, up to MAX_REMEMBERED of them; whole plain
# records of at most REMEMBER_RECORD bytes, up to MAX_RECORDS of them.
REMEMBER_PART = 96
MAX_REMEMBERED = 65536
REMEMBER_RECORD = 1024
MAX_RECORDS = 4096


def _remember(known: dict[Any, str], key: Any, text: str, limit: int) -> None:
    """Keep ``text`` under ``key``; a full memory starts a new generation (emptied: the
    common fields and records come back at once)."""
    if len(known) >= limit:
        known.clear()
    known[key] = text


@functools.lru_cache(maxsize=1024)
def _group_head(rtype: int) -> tuple[str, bool]:
    """A record type's ``"NAME":`` and whether its records are a list (other kernel records
    of multi-record events) rather than one object."""
    return '"%s":' % type_name(rtype), rtype not in _SINGLE and rtype in MULTIPART


class LaurelRenderer:
    """Renders assembled audit events as LAUREL lines. It remembers the member text of short
    fields: most fields repeat from one event to the next (arch, ids, comm, exe, key, and the
    whole PATH, CWD and capability records of a binary run again), so a field costs a dict
    look-up, done in C over a record's fields. Only what was new is rendered in Python."""

    def __init__(self, completeness: ExecCompleteness | None = None) -> None:
        # Successful execs missing a record lost before us (sensor_linux/audit/completeness.py).
        self.completeness = ExecCompleteness() if completeness is None else completeness
        self._members: dict[bytes, str] = {}
        self._syscall_members: dict[bytes, str] = {}  # "" for a0-a3, which go to ARGV
        # SYSCALL's a0-a3 in the kernel's layout, as ARGV items: a caller that execs in a loop
        # passes the same pointers.
        self._arguments: dict[bytes, str] = {}
        # A plain record's object by its parts: PATH, CWD, BPRM_FCAPS of a binary run again.
        self._records: dict[tuple[bytes, ...], str] = {}
        # SYSCALL's members after pid in the kernel's layout (ids, terminal, session, comm,
        # exe, key), joined: they repeat for every run of a binary by one user.
        self._syscall_tails: dict[tuple[bytes, ...], str] = {}
        # The last usual EXECVE's arguments and their strings: PROCTITLE is most often the
        # same arguments joined by NULs, and then their strings are the same.
        self._argv: tuple[list[Value], list[str]] | None = None
        # Those arguments as a PROCTITLE's hex text (_title_hex), for the arguments it was of.
        self._title: tuple[list[Value], bytes | None] | None = None

    def __call__(self, event: AuditEvent) -> str:
        return self.render(event)

    def render(self, event: AuditEvent) -> str:
        """One JSON line (without the newline)."""
        # Records by type, in order of first appearance. SYSCALL, EXECVE, CWD, PROCTITLE and
        # user-space records merge into one object; other kernel records are a list of them.
        groups: dict[int, list[Record]] = {}
        for record in event.records:
            same = groups.get(record.rtype)
            if same is None:
                groups[record.rtype] = [record]
            else:
                same.append(record)
        syscall = groups.get(SYSCALL)
        if syscall is not None:
            self.completeness.note(syscall[0], EXECVE in groups, CWD in groups,
                                   PROCTITLE in groups, len(groups.get(PATH, ())))
        out = ['{"ID":"%s"' % event.id]
        if event.node is not None:
            out.append('"NODE":' + laurel_string(event.node))
        for rtype, records in groups.items():
            prefix, listed = _group_head(rtype)
            if listed:  # never SYSCALL, EXECVE or PROCTITLE: each record an object
                out.append(prefix + "[" + ",".join(map(self._single, records)) + "]")
            else:
                out.append(prefix + self._object(records))
        return ",".join(out) + "}"

    def _object(self, records: list[Record]) -> str:
        rtype = records[0].rtype
        if rtype == SYSCALL:
            members = self._syscall(records)
        elif rtype == EXECVE:
            members = self._execve(records)
        elif rtype == PROCTITLE:
            members = self._proctitle(records)
        elif len(records) == 1:
            return self._single(records[0])
        else:
            members = [member for record in records for member in self._plain(record)]
        return "{" + ",".join(members) + "}"

    def _single(self, record: Record) -> str:
        """The object of one record without special members (remembered whole if plain and
        short: PATH, CWD, BPRM_FCAPS of a binary run again)."""
        if not record.is_plain or len(record.raw) > REMEMBER_RECORD:
            return "{" + ",".join(self._plain(record)) + "}"
        parts = record.plain_parts()
        text = self._records.get(parts)
        if text is None:
            text = "{" + ",".join(self._plain(record)) + "}"
            _remember(self._records, parts, text, MAX_RECORDS)
        return text

    def _plain(self, record: Record) -> list[str]:
        """``"key":value`` of each field of a record without special members."""
        if not record.is_plain:
            return [_member(key, value) for key, value in record.body]
        parts = record.plain_parts()
        members = list(map(self._members.get, parts))
        if None in members:
            self._fill(members, parts, record, self._members)
        return members  # type: ignore[return-value]

    def _syscall(self, records: list[Record]) -> list[str]:
        """SYSCALL's members with ``a0``-``a3`` gathered into ``ARGV`` (of every SYSCALL
        record of the event: a second one merges into the first, as LAUREL merges them)."""
        out: list[str] = []
        argv: list[str] = []  # the ARGV items' text
        for record in records:
            if not record.is_plain:
                for key, value in record.body:
                    if len(key) == 2 and key[0] == "a" and key[1].isdigit():
                        argv.append('"0x%x"' % value if type(value) is Hex else _value(value))
                    else:
                        out.append(_member(key, value))
                continue
            parts = record.plain_parts()
            tail = None
            if in_kernel_layout(parts):
                # a0-a3 are the fifth to eighth fields, and nothing before them is an
                # argument; one that follows (in the tail) still goes by _fill, after.
                items = list(map(self._arguments.get, parts[SYSCALL_ARGUMENTS]))
                if None in items:
                    self._fill_arguments(items, parts[SYSCALL_ARGUMENTS], record.raw)
                argv.extend(items)  # type: ignore[arg-type] # none is None after the fill
                tail = parts[SYSCALL_TAIL]
                parts = parts[:SYSCALL_ARGUMENTS.start] + \
                    parts[SYSCALL_ARGUMENTS.stop:SYSCALL_TAIL.start]
            members = list(map(self._syscall_members.get, parts))
            if None in members:
                argv.extend(self._fill(members, parts, record, self._syscall_members))
            out.extend(filter(None, members))  # the arguments' places are ""
            if tail:
                text = self._syscall_tails.get(tail)
                if text is None:
                    members = list(map(self._syscall_members.get, tail))
                    arguments = self._fill(members, tail, record, self._syscall_members) \
                        if None in members else []
                    argv.extend(arguments)
                    text = ",".join(filter(None, members))
                    if not arguments and len(text) <= REMEMBER_RECORD:  # no ARGV item in it
                        _remember(self._syscall_tails, tail, text, MAX_RECORDS)
                if text:
                    out.append(text)
        out.append('"ARGV":[' + ",".join(argv) + "]")
        return out

    def _fill_arguments(self, items: list[str | None], parts: tuple[bytes, ...],
                        line: bytes) -> None:
        """The ARGV items of SYSCALL arguments not remembered, remembered if short."""
        for i, item in enumerate(items):
            if item is None:
                part = parts[i]
                text = items[i] = _syscall_arg(part, line)
                if len(part) <= REMEMBER_PART:
                    _remember(self._arguments, part, text, MAX_REMEMBERED)

    def _execve(self, records: list[Record]) -> list[str]:
        """EXECVE's members, its arguments (split over continuation records) as ``ARGV``."""
        args = whole_args(records[0].body) if len(records) == 1 else None
        if args is not None:  # the usual record: argc and every argument whole, in order
            strings = [laurel_string(value) if value is not None else '""'  # type: ignore[arg-type]
                       for value in args]
            self._argv = (args, strings)
            return ['"argc":%d' % len(args), '"ARGV":[%s]' % ",".join(strings)]
        pairs = [pair for record in records for pair in record.body]
        parts = [_member(key, value) for key, value in pairs if not is_execve_arg_key(key)]
        args, _ = execve_argv(pairs)
        parts.append('"ARGV":[%s]' % ",".join(_value(a) for a in args))
        return parts

    def _proctitle(self, records: list[Record]) -> list[str]:
        last = self._argv
        if last is not None and len(records) == 1:
            own = records[0].plain_parts()
            # The kernel's form, "proctitle=HEX": compared as text with the last usual
            # EXECVE's arguments joined, none of them empty, in the kernel's upper-case hex
            # (equal text is an equal title; anything else is typed below).
            if len(own) == 1 and own[0][:10] == b"proctitle=" \
                    and own[0][10:] == self._title_hex(last[0]):
                return ['"ARGV":[%s]' % ",".join(last[1])]
        title: Value = None
        parts: list[str] = []
        for record in records:
            for key, value in record.body:
                if key == "proctitle":
                    title = value
                else:
                    parts.append(_member(key, value))
        # The title is the last usual EXECVE's arguments joined, none of them empty: LAUREL's
        # split of it gives them back, so their strings are the title's (whichever event they
        # came from: they are a function of the arguments).
        if last is not None and type(title) is bytes and None not in last[0] \
                and b"" not in last[0] and title == b"\0".join(last[0]):  # type: ignore[arg-type]
            strings = last[1]
        else:
            strings = [laurel_string(a) for a in laurel_proctitle_argv(title)]
        parts.append('"ARGV":[%s]' % ",".join(strings))
        return parts

    def _title_hex(self, args: list[Value]) -> bytes | None:
        """``args`` joined by NULs as the kernel writes a title (upper-case hex), once per
        EXECVE; None where the title could not be them (an argument empty or missing)."""
        known = self._title
        if known is not None and known[0] is args:
            return known[1]
        text = None if None in args or b"" in args else \
            b"\0".join(args).hex().upper().encode("ascii")  # type: ignore[arg-type]
        self._title = (args, text)
        return text

    def _fill(self, members: list[str | None], parts: tuple[bytes, ...], record: Record,
              known: dict[bytes, str]) -> list[str]:
        """Render the members not remembered, and remember the short ones. SYSCALL's
        arguments (its known members are _syscall_members) are returned as ARGV items, their
        places in ``members`` left ""."""
        syscall = known is self._syscall_members
        argv: list[str] = []
        i = -1
        while None in members:  # found by index(), in C: most members are remembered
            i = members.index(None, i + 1)
            part = parts[i]
            if syscall and _is_syscall_arg(part):
                members[i] = ""  # an argument: differs per event, not worth remembering
                argv.append(_syscall_arg(part, record.raw))
                continue
            member = members[i] = _plain_member(part, record.raw, record.rtype)
            if len(part) <= REMEMBER_PART:
                _remember(known, part, member, MAX_REMEMBERED)
        return argv


def render(event: AuditEvent) -> str:
    """One JSON line (without the newline), with a renderer of its own (nothing remembered);
    a stream is rendered by one :class:`LaurelRenderer`."""
    return LaurelRenderer().render(event)
