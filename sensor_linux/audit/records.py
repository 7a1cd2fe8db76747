"""Parse one audit record line into a :class:`Record`.

Input is auditd's string format (``[node=N ]type=T msg=audit(SEC.MSEC:SERIAL): k=v ...``, with
the ENRICHED part after ``\\x1d``) or the same text from a netlink payload. Hot path: one
compiled regex for the header, one that tokenizes the body into key/value pairs, then a typing
step per field. Values are typed as LAUREL types them, so the ``laurel`` renderer can be exact:

* ``None``: ``(null)``, ``?`` or empty;
* ``int``: a decimal number; :class:`Hex` and :class:`Oct`: numbers written in that base;
* ``bytes``: text (quoted, bare, or hex-decoded), kept as raw bytes;
* ``list`` of bytes: the permission list of an AVC (``{ read write }``).

Duplicated keys are kept, in order. A line that is not a record raises :class:`ParseError`.
"""

from __future__ import annotations

import functools
import re
from itertools import repeat
from operator import methodcaller
from typing import Callable, Sequence, Union

from sensor_linux.audit import fields
from sensor_linux.audit.msgtypes import NAMES, NUMBERS
from common.compiled import compiled


class Hex(int):
    """A number the kernel wrote in hexadecimal (rendered ``"0x1f"``)."""

    __slots__ = ()


class Oct(int):
    """A number the kernel wrote in octal (rendered ``"0o100755"``)."""

    __slots__ = ()


Value = Union[None, int, bytes, list]

EOE = NUMBERS["EOE"]
SYSCALL = NUMBERS["SYSCALL"]
EXECVE = NUMBERS["EXECVE"]
PROCTITLE = NUMBERS["PROCTITLE"]
CWD = NUMBERS["CWD"]
PATH = NUMBERS["PATH"]
AVC = NUMBERS["AVC"]
TTY = NUMBERS["TTY"]
SOCKADDR = NUMBERS["SOCKADDR"]
MAC_POLICY_LOAD = NUMBERS["MAC_POLICY_LOAD"]
LOGIN = NUMBERS["LOGIN"]


class ParseError(ValueError):
    """A line that is not an audit record; ``kind`` names the part that failed."""

    def __init__(self, kind: str, line: bytes) -> None:
        super().__init__(f"{kind}: {line[:200]!r}")
        self.kind = kind
        self.line = line


class Record:
    """One parsed line. ``body`` is a list of ``(key, value)``; ``raw`` is the line as read.

    A plain record (checked whole by the split path) is typed when ``body`` is first read:
    the LAUREL renderer takes its fields as text (:meth:`plain_fields`) and never needs the
    typed values, and typing is most of a record's cost."""

    __slots__ = ("node", "rtype", "sec", "msec", "serial", "_body", "raw", "_plain", "_parts",
                 "_fields")

    def __init__(self, node: bytes | None, rtype: int, sec: int, msec: int, serial: int,
                 body: list[tuple[str, Value]] | None, raw: bytes,
                 plain: bytes | None = None, parts: tuple[bytes, ...] = ()) -> None:
        self.node = node
        self.rtype = rtype
        self.sec = sec
        self.msec = msec
        self.serial = serial
        self._body = body
        self.raw = raw
        self._plain = plain  # the body text of a plain record, typed on demand
        self._parts = parts  # and its key=value parts (shared between records: never mutate)
        self._fields: dict[bytes, bytes] | None = None  # its fields by name, for get()

    @property
    def body(self) -> list[tuple[str, Value]]:
        body = self._body
        if body is None:
            try:
                body = self._body = _typed_execve(self._parts) if self.rtype == EXECVE \
                    else list(map(_typed_pair, repeat(self.rtype), self._parts))
            except _BadField as exc:
                raise ParseError(exc.kind, self.raw) from None
        return body

    def plain_fields(self) -> list[tuple[bytes, bytes]]:
        """A plain record's fields as ``(key, raw text)``, both bytes; empty for others."""
        # A body _PLAIN has matched: keys hold no "=", values no space.
        return [part.partition(b"=")[::2] for part in self._parts]  # type: ignore[misc]

    def plain_parts(self) -> tuple[bytes, ...]:
        """A plain record's fields as ``key=value`` text (a plain body has no whitespace but
        the spaces between fields); empty for others. The tuple may be shared with other
        records of the same text."""
        return self._parts

    @property
    def is_plain(self) -> bool:
        return self._plain is not None

    @property
    def type_name(self) -> str:
        return type_name(self.rtype)

    def get(self, key: str, default: Value = None) -> Value:
        """The first field named ``key``. A plain record types only that field, found by
        ``find`` until something has asked for many (see :meth:`values`)."""
        plain = self._plain
        if plain is not None and self._body is None:
            fields = self._fields
            if fields is not None:
                raw = fields.get(_key_bytes(key))
            else:
                raw = find_field(plain, _key_bytes(key))
            return default if raw is None else field_value(self.rtype, key, raw, self.raw)
        for k, v in self.body:
            if k == key:
                return v
        return default

    def _field_text(self) -> dict[bytes, bytes] | None:
        """A plain record not typed yet: its fields' text by name (the first of duplicated
        keys wins, as in ``get``'s scan); None otherwise."""
        if self._plain is None or self._body is not None:
            return None
        fields = self._fields
        if fields is None:
            # Built from the last field to the first: of duplicated keys the first wins, as
            # in get's scan.
            fields = self._fields = dict(map(_KEY_AND_VALUE, reversed(self._parts)))
        return fields

    def values(self, keys: tuple[str, ...]) -> list[Value]:
        """``get`` of each of ``keys`` (None where absent), in one pass. A decimal field
        written as plain digits is read with ``int()`` here (what typing gives it, without
        the calls: most of an exec's SYSCALL facts are such ids)."""
        fields = self._field_text()
        if fields is not None:
            rtype, line = self.rtype, self.raw
            out: list[Value] = []
            for key, name, decimal in _value_plan(rtype, keys):
                raw = fields.get(name)
                if raw is None:
                    out.append(None)
                elif decimal and raw.isdigit() and len(raw) <= 18:
                    out.append(int(raw))  # below 10**18: inside int64, as typed_value asks
                else:
                    out.append(field_value(rtype, key, raw, line))
            return out
        return [self.get(key) for key in keys]

    def __repr__(self) -> str:
        return f"Record({self.type_name} {self.sec}.{self.msec:03d}:{self.serial} {self.body!r})"


# A Record without its __init__ (parse's split path sets every slot itself).
_new_object = object.__new__


# A plain part as [key, value], in C: keys hold no "=".
_KEY_AND_VALUE = methodcaller("split", b"=", 1)


@functools.lru_cache(maxsize=256)
def _value_plan(rtype: int, keys: tuple[str, ...]) -> tuple[tuple[str, bytes, bool], ...]:
    """For Record.values: each key, its bytes, and whether typed_value reads it as a decimal
    (the keys field_value types itself, EXECVE's and SYSCALL's aN, are no decimal names)."""
    return tuple((key, _key_bytes(key),
                  key not in fields.HEX and key not in fields.OCT
                  and (key in fields.NOT_ENCODED or key.endswith(("uid", "gid"))))
                 for key in keys)


def type_name(rtype: int) -> str:
    name = NAMES.get(rtype)
    return name if name is not None else f"UNKNOWN[{rtype}]"


# Kernel records that belong to multi-record events and wait for EOE (as auparse does); a set,
# for the hot paths (a look-up instead of a call).
MULTIPART = frozenset(range(1300, 2100)) | {LOGIN}
# auditd's own events (DAEMON_START, DAEMON_END, ...: AUDIT_FIRST_DAEMON to LAST_DAEMON), which
# auditd numbers itself, not the kernel.
DAEMON = frozenset(range(1200, 1300))


# Numbers are bounded in length everywhere (20 digits hold any 64-bit value): a longer one is
# not a number the kernel wrote, and Python refuses int() of over 4,300 digits anyway. The
# kernel writes milliseconds as three digits; eleven digits of seconds reach the year 5138,
# and a time past 9999 has no ISO 8601 form.
_HEADER = re.compile(
    rb"(?:node=([^ \t\r\n]+) +)?type=(?:([A-Za-z0-9_]+)|UNKNOWN\[(\d{1,10})\]) +"
    rb"msg=audit\((\d{1,11})\.(\d{1,3}):(\d{1,20})\): *")

# key=value, where value is "…", '…', { … } or a bare token. The separator is spaces or the
# ENRICHED marker \x1d. Anything the pattern cannot consume is garbage.
_TOKEN = re.compile(
    rb"[ \x1d]*([A-Za-z][A-Za-z0-9_-]*(?:\[\d+\])?)="
    rb"(\"[^\"]*\"|'(?:[^'\"]|\"[^\"]*\")*'|'[^']*'|\{ .*? \}|[^ \x1d\n]*)")
_SUBJ_SUFFIX = re.compile(rb" \([A-Za-z_][A-Za-z0-9_]*\)")
_UNKNOWN_FAMILY = re.compile(rb" family[^ \x1d\n]*")  # auditd's "SADDR=unknown family(0)"
_AVC_PERMS = re.compile(rb"avc: *(granted|denied) *\{ *((?:[A-Za-z_][A-Za-z0-9_]* *)+)\} *for *")
_HEX_PAIRS = re.compile(rb"(?:[0-9A-Fa-f]{2})+")
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]+")
_DEC = re.compile(rb"[+-]?[0-9]{1,20}")
_OCT = re.compile(rb"[0-7]{1,22}")
# Printable ASCII but the double quote: a quoted value that needs no decoding.
_SAFE_QUOTED = re.compile(rb"[!#-~]*")
_EXECVE_ARG = re.compile(r"a(\d{1,9})(?:\[(\d{1,9})\]|(_len))?")
_INT64 = 1 << 63


def parse(line: bytes, fast: bool = True) -> Record:
    """Parse one record line (with or without its trailing newline). ``fast``: a plain record
    (``type=NAME msg=audit(STAMP): `` and a body :data:`_PLAIN` matches whole, ``\\x1d`` read
    as a space) takes the split path (:func:`split_record`), its fields typed when first
    needed; it gives the same record as the general parser, which takes everything else
    (``False`` forces it; the tests compare the two)."""
    if fast:
        split = split_record(line, SPLIT_TYPES)
        if split is not None:
            # Record(None, rtype, sec, msec, serial, None, line, plain, parts), its slots set
            # here without the call of __init__ through the type: most lines come this way,
            # and that call was some 800 instructions of each (6,700 an exec of the lab's
            # log, `bench instructions`). tests/test_audit_shortcuts.py checks every slot.
            record = _new_object(Record)
            record.rtype, record.sec, record.msec, record.serial, record._plain, \
                record._parts = split
            record.node = record._body = record._fields = None
            record.raw = line
            if record.rtype == EXECVE:
                record.body  # typed now: a bad argument is a parse error of this line
            return record
    end = len(line)
    while end and line[end - 1] in b"\r\n":
        end -= 1
    node, rtype, sec, msec, serial, pos = _general_header(line)
    return Record(node, rtype, sec, msec, serial, _parse_body(line, pos, end, rtype), line)


Header = tuple[bytes | None, int, int, int, int, int]  # node, type, sec, msec, serial, body


def _general_header(line: bytes) -> Header:
    header = _HEADER.match(line)
    if header is None:
        raise ParseError("cannot parse header", line)
    node, name, unknown, sec, msec, serial = header.groups()
    if unknown is not None:
        rtype = int(unknown)
    else:
        rtype = NUMBERS.get(name.decode("ascii"), -1)
        if rtype < 0:
            raise ParseError("unknown record type", line)
    return node, rtype, int(sec), int(msec), int(serial), header.end()


_STAMP = re.compile(rb"msg=audit\((\d{1,11})\.(\d{1,3}):(\d{1,20})\):")


@functools.lru_cache(maxsize=256)
def stamp_token(token: bytes) -> tuple[int, int, int] | None:
    """``msg=audit(SEC.MSEC:SERIAL):`` as numbers; remembered, as every record of an event
    repeats it."""
    match = _STAMP.fullmatch(token)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


# What the split path takes, checked whole by one pattern: key=value pairs one or more spaces
# apart, a quoted value with no space or quote inside. It declines other whitespace and
# separators, quotes that may hold spaces, braces, the keys the general parser reads specially, and
# the record types whose body starts with free text (AVC, TTY, MAC_POLICY_LOAD, netlabel:).
_SPECIAL_START = frozenset((AVC, TTY, MAC_POLICY_LOAD))
# The split path's first token, "type=NAME", of the types it takes.
SPLIT_TYPES = {b"type=" + name.encode("ascii"): number for name, number in NUMBERS.items()
               if number not in _SPECIAL_START}
_PAIR = (rb'(?!subj=|SADDR=)[A-Za-z][A-Za-z0-9_-]*(?:\[[0-9]+\])?='
         rb'(?:"[^" \t-\r\x1d\'{]*"|(?!")[^ \t-\r\x1d\'{]*)')
# No possessive quantifiers: they would make the match a third cheaper, but Python 3.11.2
# (Debian 12) matches a possessive group wrongly (it took 'name="/bin/sh" in').
_PLAIN = re.compile(rb" *(?:%s(?: +%s)*)? *" % (_PAIR, _PAIR))


def _split_plain(body: bytes) -> tuple[bytes, ...] | None:
    """A body's ``key=value`` parts if the split path takes it (_PLAIN matches it whole),
    else None."""
    if _PLAIN.fullmatch(body) is None:
        return None
    return tuple(body.split())


# SYSCALL's first fields as the kernel writes them (audit_log_exit): what differs from one exec
# to the next (arguments, caller, new pid) comes before the ids, terminal, session, comm and
# exe, which repeat for every run of a binary by one user. a0-a3 are at SYSCALL_ARGUMENTS.
SYSCALL_HEAD = (b"arch=", b"syscall=", b"success=", b"exit=", b"a0=", b"a1=", b"a2=", b"a3=",
                b"items=", b"ppid=", b"pid=")
SYSCALL_ARGUMENTS = slice(4, 8)
SYSCALL_TAIL = slice(len(SYSCALL_HEAD), None)   # what follows pid=


def in_kernel_layout(parts: Sequence[bytes]) -> bool:
    """Whether a SYSCALL record's ``key=value`` parts start as the kernel writes them
    (SYSCALL_HEAD, with more fields after it): its fields can then be read at their places."""
    return len(parts) > len(SYSCALL_HEAD) and all(map(bytes.startswith, parts, SYSCALL_HEAD))


# A SYSCALL body as the kernel writes it (audit_log_exit: these fields in this order; the
# ENRICHED names auditd appends after them). One pattern without a choice per field checks
# it in a third of _PLAIN's time, and a SYSCALL body is never seen twice (pid, arguments).
# Everything it takes, _PLAIN takes (the same quoted values; hex, digits and names are bare
# values), so the parts are the same; a body it declines (subj=, another layout) goes to _PLAIN.
_KERNEL_TEXT = rb'(?:"[^" \t-\r\x1d\'{]*"|[0-9A-F]+|\(null\))'
_KERNEL_SYSCALL = re.compile(
    rb"arch=[0-9a-f]+ syscall=[0-9]+ (?:success=(?:yes|no) exit=-?[0-9]+ )?"
    rb"a0=[0-9a-f]+ a1=[0-9a-f]+ a2=[0-9a-f]+ a3=[0-9a-f]+ items=[0-9]+ ppid=[0-9]+ "
    rb"pid=[0-9]+ auid=[0-9]+ uid=[0-9]+ gid=[0-9]+ euid=[0-9]+ suid=[0-9]+ fsuid=[0-9]+ "
    rb"egid=[0-9]+ sgid=[0-9]+ fsgid=[0-9]+ tty=[A-Za-z0-9()/]+ ses=[0-9]+ "
    rb"comm=%s exe=%s key=%s"
    rb'(?: [A-Z][A-Z_]*=(?:"[^" \t-\r\x1d\'{]*"|[0-9a-z_]+))*' % ((_KERNEL_TEXT,) * 3))


def _split_syscall(body: bytes) -> tuple[bytes, ...] | None:
    """_split_plain of a SYSCALL body, checked by _KERNEL_SYSCALL first."""
    if _KERNEL_SYSCALL.fullmatch(body) is not None:
        return tuple(body.split(b" "))
    return _split_plain(body)


# Most bodies of an exec's records repeat from one exec of a binary to the next (PATH, CWD,
# BPRM_FCAPS, EOE's empty one, often EXECVE and PROCTITLE): one look-up instead of the match.
_plain_parts = functools.lru_cache(maxsize=4096)(_split_plain)

# What the split path gives: rtype, sec, msec, serial, plain (the body), parts.
Split = tuple[int, int, int, int, bytes, tuple[bytes, ...]]


def split_record_python(line: bytes, types: dict[bytes, int]) -> Split | None:
    """The split path: ``type=NAME msg=audit(STAMP): BODY`` (split at its first two spaces,
    NAME looked up in ``types``) with a plain body, as ``(rtype, sec, msec, serial, plain,
    parts)``: ``plain`` is the body without its line end, \\x1d read as a space, ``parts`` its
    ``key=value`` fields; None for a line the general parser takes. The reference for the C
    version (sensor_linux/audit/_split.c), and what runs where it is not built."""
    head = line.split(b" ", 2)  # b"type=NAME", b"msg=audit(STAMP):", body
    if len(head) != 3:
        return None
    rtype = types.get(head[0])
    if rtype is None:
        return None
    stamp = stamp_token(head[1])
    if stamp is None:
        return None
    plain = head[2].rstrip(b"\r\n")
    if b"\x1d" in plain:
        # auditd's ENRICHED part follows \x1d, a separator as a space is (and never inside a
        # plain value: it would become a space there).
        plain = plain.replace(b"\x1d", b" ")
    # A SYSCALL body is never seen twice (pid, arguments): not worth remembering.
    parts = _plain_parts(plain) if rtype != SYSCALL else _split_syscall(plain)
    if parts is None:
        return None
    return rtype, stamp[0], stamp[1], stamp[2], plain, parts


_C = compiled("sensor_linux.audit._split")
split_record_c: Callable[[bytes, dict[bytes, int]], Split | None] | None = \
    _C.split_record if _C is not None else None
split_record = split_record_c or split_record_python
# (parts, other) -> typed parts, or None for a bad argument: typed_execve_python's twin.
typed_execve_c: Callable[[tuple[bytes, ...], Callable[[bytes], tuple[str, Value]]],
                         list[tuple[str, Value]] | None] | None = \
    _C.typed_execve if _C is not None else None


def split_path() -> str:
    """Which split path parse() takes, for the benchmarks to say what they measured."""
    return "C" if split_record_c is not None and split_record is split_record_c \
        else "pure Python"


def find_field(plain: bytes, key: bytes) -> bytes | None:
    """The text of the first field ``key`` of a plain body. A plain value holds no space, so
    ``key=`` at the start or after a space begins a field, never the inside of a value."""
    if plain.startswith(key) and plain[len(key):len(key) + 1] == b"=":
        start = len(key) + 1
    else:
        at = plain.find(b" " + key + b"=")
        if at < 0:
            return None
        start = at + len(key) + 2
    end = plain.find(b" ", start)
    return plain[start:] if end < 0 else plain[start:end]


@functools.lru_cache(maxsize=4096)
def _plain_key(key: bytes) -> str:
    return key.decode("ascii")


@functools.lru_cache(maxsize=4096)
def _key_bytes(key: str) -> bytes:
    return key.encode("ascii", "replace")


def plain_key(key: bytes) -> str:
    """A plain field's name as text."""
    return _plain_key(key)


@functools.lru_cache(maxsize=65536)
def _typed(key: str, raw: bytes) -> Value:
    """typed_value, remembered: most values of a record repeat (arch, syscall, ids)."""
    return typed_value(0, key, raw)


class _BadField(Exception):
    """A value the parser refuses (an EXECVE argument); a ParseError of its line."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def field_value(rtype: int, key: str, raw: bytes, line: bytes) -> Value:
    """A field's value, for both parsers: EXECVE arguments, SYSCALL's a0-a3 (hex), and the
    rest typed by field name (short values remembered)."""
    try:
        return _field_value(rtype, key, raw)
    except _BadField as exc:
        raise ParseError(exc.kind, line) from None


# Plain fields of at most this many bytes are typed once, up to REMEMBERED_PAIRS of them: most
# repeat (ids, arch, paths, a command's arguments).
REMEMBER_PAIR = 96
REMEMBERED_PAIRS = 16384


def _typed_pair(rtype: int, part: bytes) -> tuple[str, Value]:
    """A plain ``key=value`` part as ``(name, value)``."""
    return _remembered_pair(rtype, part) if len(part) <= REMEMBER_PAIR else _pair(rtype, part)


def _pair(rtype: int, part: bytes) -> tuple[str, Value]:
    key, _, raw = part.partition(b"=")
    name = _plain_key(key)
    return name, _field_value(rtype, name, raw)


_remembered_pair = functools.lru_cache(maxsize=REMEMBERED_PAIRS)(_pair)


def _field_value(rtype: int, key: str, raw: bytes) -> Value:
    """field_value; _BadField for a value the parser refuses."""
    if rtype == EXECVE and key[0] == "a" and key != "argc":
        return _execve_value(key, raw)
    if rtype == SYSCALL and len(key) == 2 and key[0] == "a" and key[1].isdigit():
        return Hex(int(raw, 16)) if len(raw) <= 16 and _HEX_DIGITS.fullmatch(raw) else raw
    return _typed(key, raw) if len(raw) <= 64 else typed_value(rtype, key, raw)


def _parse_body(line: bytes, pos: int, end: int, rtype: int) -> list[tuple[str, Value]]:
    trailer: tuple[str, Value] | None = None
    if rtype == AVC:
        avc = _AVC_PERMS.match(line, pos)
        if avc is not None:
            trailer = (avc.group(1).decode(), avc.group(2).split())
            pos = avc.end()
    elif rtype == TTY and line.startswith(b"tty ", pos):
        pos += 4
    elif rtype == MAC_POLICY_LOAD and line.startswith(b"policy loaded ", pos):
        pos += 14
    elif line.startswith(b"netlabel:", pos):
        trailer = ("netlabel", None)
        pos += 9
    body: list[tuple[str, Value]] = []
    while True:
        while pos < end and line[pos] in b" \x1d":
            pos += 1
        if pos >= end:
            break
        token = _TOKEN.match(line, pos, end)
        if token is None:
            raise ParseError("cannot parse body", line)
        key = token.group(1).decode("ascii")
        raw = token.group(2)
        pos = token.end()
        if key == "subj":  # AppArmor: "subj==/usr/bin/man//&man_groff (enforce)"
            suffix = _SUBJ_SUFFIX.match(line, pos, end)
            if suffix is not None:
                raw += suffix.group()
                pos = suffix.end()
        elif key == "SADDR" and raw == b"unknown":
            suffix = _UNKNOWN_FAMILY.match(line, pos, end)
            if suffix is not None:
                raw += suffix.group()
                pos = suffix.end()
        if pos < end and line[pos] not in b" \x1d":
            raise ParseError("garbage at end of value", line)
        body.append((key, field_value(rtype, key, raw, line)))
    if trailer is not None:
        body.append(trailer)
    return body


def typed_execve_python(parts: tuple[bytes, ...]) -> list[tuple[str, Value]]:
    """An EXECVE record's plain parts typed, as _typed_pair types them. Its arguments differ
    from one exec to the next, so a whole argument is decoded at once (_encoded), without the
    remembered pairs' look-up and the key's pattern for each. The reference for the C
    version (typed_execve in _split.c), and what runs where it is not built."""
    out: list[tuple[str, Value]] = []
    for part in parts:
        key, _, raw = part.partition(b"=")
        name = _whole_argument(key)
        if name is None:
            out.append(_typed_pair(EXECVE, part))
            continue
        value = _encoded(raw)
        if value is _NOT_ENCODED:
            raise _BadField("bad execve argument")  # as _execve_value refuses it
        out.append((name, value))  # type: ignore[arg-type]
    return out


def _typed_execve_compiled(parts: tuple[bytes, ...]) -> list[tuple[str, Value]]:
    """typed_execve_python in C: an EXECVE record is typed when it is parsed, and its
    arguments were a tenth of a replay's CPU in Python (docs/audit.md)."""
    typed = typed_execve_c(parts, _typed_execve_other)  # type: ignore[misc]
    if typed is None:
        raise _BadField("bad execve argument")
    return typed


_typed_execve_other = functools.partial(_typed_pair, EXECVE)
_typed_execve = _typed_execve_compiled if typed_execve_c is not None else typed_execve_python


@functools.lru_cache(maxsize=1024)
def _whole_argument(key: bytes) -> str | None:
    """The name of an EXECVE key whose value is an encoded argument (``aN``, ``aN[i]``),
    else None (``argc``, ``aN_len``, other keys)."""
    try:
        name = key.decode("ascii")
    except UnicodeDecodeError:
        return None
    match = _EXECVE_ARG.fullmatch(name)
    return name if match is not None and not match.group(3) else None


def _execve_value(key: str, raw: bytes) -> Value:
    match = _EXECVE_ARG.fullmatch(key)
    if match is None:
        return typed_value(EXECVE, key, raw)
    if match.group(3):  # aN_len
        if _DEC.fullmatch(raw):
            return int(raw)
        raise _BadField("bad argument length")
    value = _encoded(raw)
    if value is _NOT_ENCODED:
        raise _BadField("bad execve argument")
    return value  # type: ignore[return-value]


_NOT_ENCODED = object()


def _encoded(raw: bytes) -> object:
    """The encoded forms: "quoted", hex blob, (null) or ?; _NOT_ENCODED otherwise."""
    if raw[:1] == b'"' and _SAFE_QUOTED.fullmatch(raw, 1, len(raw) - 1) and raw[-1:] == b'"' \
            and len(raw) >= 2:
        return raw[1:-1]
    if _HEX_PAIRS.fullmatch(raw):
        return bytes.fromhex(raw.decode("ascii"))
    if raw == b"(null)" or raw == b"?":
        return None
    return _NOT_ENCODED


def _unspecified(rtype: int, key: str, raw: bytes) -> Value:
    """Values outside the field's expected format, kept as text."""
    if not raw:
        return None
    first = raw[:1]
    if first == b'"' and raw[-1:] == b'"' and len(raw) >= 2:
        return raw[1:-1]
    if first == b"'" and raw[-1:] == b"'" and len(raw) >= 2:
        return raw[1:-1]
    if first == b"{" and raw.startswith(b"{ ") and raw.endswith(b" }"):
        return b"{" + raw[2:-2] + b"}"
    return raw


def typed_value(rtype: int, key: str, raw: bytes) -> Value:
    """Type a raw value by its field name, the way the audit field dictionary defines it."""
    if key in fields.NOT_ENCODED or key.endswith(("uid", "gid")):
        if key in fields.HEX:
            if len(raw) <= 16 and _HEX_DIGITS.fullmatch(raw):
                number = int(raw, 16)
                if number < (1 << 64):
                    return Hex(number)
        elif key in fields.OCT:
            if _OCT.fullmatch(raw):
                return Oct(int(raw, 8))
        elif _DEC.fullmatch(raw):
            number = int(raw)
            if -_INT64 <= number < _INT64:
                return number
        return _unspecified(rtype, key, raw)
    value = _encoded(raw)
    if value is not _NOT_ENCODED:
        return value  # type: ignore[return-value]
    return _unspecified(rtype, key, raw)
