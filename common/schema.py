"""The event schema shared by every source and sink (documented in ``docs/schema.md``).

An event is a plain nested ``dict`` whose field names follow the Elastic Common Schema where ECS
has a name. Dotted names in the docs (``process.parent.executable``) are paths into the nesting.
Every event carries ``schema`` (:data:`SCHEMA_VERSION`), ``@timestamp``, ``event`` and ``host``.

Value conventions:

* text that came from the kernel (argv, paths, cwd) is ``str`` when it is valid UTF-8 and
  ``bytes`` when it is not (:mod:`common.percent`), so msgpack keeps it exactly;
* a field whose value could not be determined is ``None`` or absent; ``""`` means known empty;
* user and group ids are decimal strings (ECS ``user.id`` is a keyword);
* times are UTC ISO 8601 strings with microseconds and a ``Z`` suffix.

Process-create event (``event.action == "process_create"``)::

    schema, @timestamp,
    event:   {id, action, kind, category, type, provider, original_id, module?}
    host:    {name, id, os: {type}}
    process: {pid, name, executable, args, command_line, working_directory, exit_code,
              start, entity_id?, hash: {md5, sha1, sha256}, on_disk, running?,
              user: {id, name, sid?, domain?}, real_user: {id, name}, saved_user: {id, name},
              group: {id, name}, tty: {name}, interactive,
              audit: {login_user: {id, name}, session},            # Linux
              container: {id}, package: {name, version, verified}, # Linux
              kernel_image_name, integrity_level, creator_pid,     # Windows
              pe: {imphash, original_file_name, company, product, file_version},
              code_signature: {exists, status, subject_name, issuer, thumbprint, digest,
                               signatures},
              parent: {the same fields as far as known, plus start, running, event_id}}
    ttphash: {value, version, complete}
    audit:   {records: [...]}                                      # audit source only

Generic event (anything that is not a process creation): the common header plus whatever the
source knows, ``event.action`` named after its record types.
"""

from __future__ import annotations

import collections
import datetime as _dt
import functools
import math
import os
from typing import Any, Sequence

SCHEMA_VERSION = 1

ACTION_PROCESS_CREATE = "process_create"

Event = dict[str, Any]


def utc_timestamp(when: float | _dt.datetime | None = None) -> str:
    """ISO 8601 UTC with microseconds, e.g. ``2026-11-29T20:51:22.123456Z``."""
    if type(when) is float:  # seconds from a record: the case of every event, tested first
        return _from_seconds(when)
    if when is None:
        moment = _dt.datetime.now(_dt.timezone.utc)
    elif isinstance(when, _dt.datetime):
        moment = when.astimezone(_dt.timezone.utc) if when.tzinfo else when.replace(
            tzinfo=_dt.timezone.utc)
    else:
        return _from_seconds(when)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@functools.lru_cache(maxsize=1024)
def _from_seconds(when: float) -> str:
    """Remembered: an event's time and its process's start are usually the same moment. The
    date and time of day are formatted once per second (events of one second share them);
    the microseconds are rounded as ``datetime.fromtimestamp`` rounds them (the fraction
    times 10^6, half to even), so the text is the same as from the datetime."""
    fraction, whole = math.modf(when)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    return f"{_second_text(int(whole))}.{micros:06d}Z"


@functools.lru_cache(maxsize=64)
def _second_text(second: int) -> str:
    moment = _dt.datetime.fromtimestamp(second, _dt.timezone.utc)
    if moment.year >= 1000:  # isoformat writes the same, faster; strftime's %Y has no padding
        return moment.isoformat()[:19]
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


# Event ids are made 256 at a time from one read of the kernel's random source: a
# getrandom() per event was a system call on the hot path. A deque, because popleft() is atomic
# (a thread may make events beside the main loop); emptied in a forked child, which must not
# hand out ids its parent already made.
_ID_BATCH = 256
_ids: collections.deque[str] = collections.deque()
if hasattr(os, "register_at_fork"):  # Windows has no fork
    os.register_at_fork(after_in_child=_ids.clear)


# Each byte as it is with a UUID's version (4: the high four bits of its 7th byte) or variant
# (RFC 4122: the top two bits of its 9th) set, to set them in every id of a batch at once.
_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))
_VARIANT = bytes(b & 0x3F | 0x80 for b in range(256))


# Where the 32 hex digits of a UUID stand in its text (8-4-4-4-12, the dashes between), and
# the text of one id in a batch: its dashes, its digits to fill, a space after it.
_DIGIT_COLUMNS = tuple(at for at in range(36) if at not in (8, 13, 18, 23))
_ID_TEMPLATE = b"00000000-0000-0000-0000-000000000000 "


def _made_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as text, as ``str(uuid.uuid4())`` writes them.
    Written column by column for the whole batch (a slice assignment per digit's place, in
    C) instead of a formatting per id: ids were a twentieth of an eBPF event's bytecodes."""
    data = bytearray(os.urandom(16 * count))
    data[6::16] = data[6::16].translate(_VERSION_4)
    data[8::16] = data[8::16].translate(_VARIANT)
    # A bytearray on both sides: compiled by Cython (common/compiled.py), a bytearray's
    # slice takes only a bytearray.
    digits = bytearray(data.hex(), "ascii")
    text = bytearray(_ID_TEMPLATE * count)
    for digit, column in enumerate(_DIGIT_COLUMNS):
        text[column::37] = digits[digit::32]
    return text.decode("ascii").split()


def new_event_id() -> str:
    """A random (version 4) UUID as text, each one different."""
    while True:
        try:
            return _ids.popleft()
        except IndexError:
            _ids.extend(_made_ids(_ID_BATCH))


def new_event(action: str, provider: str, *, host: dict[str, Any],
              timestamp: float | _dt.datetime | None = None,
              original_id: str | None = None, event_id: str | None = None,
              kind: str = "event") -> Event:
    """The header every event carries; sources fill in the rest."""
    header = {"id": event_id or new_event_id(), "action": action, "kind": kind,
              "provider": provider}
    event: Event = {"schema": SCHEMA_VERSION, "@timestamp": utc_timestamp(timestamp),
                    "event": header, "host": host}
    if original_id is not None:
        header["original_id"] = original_id
    if action == ACTION_PROCESS_CREATE:
        header["category"] = ["process"]
        header["type"] = ["start"]
    return event


def get_path(event: Event, path: str, default: Any = None) -> Any:
    """``event["a"]["b"]`` for ``path == "a.b"``; ``default`` when any step is missing."""
    return get_steps(event, path.split("."), default)


def get_steps(event: Event, steps: Sequence[str], default: Any = None) -> Any:
    """get_path of a path split beforehand (``("a", "b")``): for code that reads the same
    paths of every event."""
    node: Any = event
    for key in steps:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def set_path(event: Event, path: str, value: Any) -> None:
    """Set ``path`` in ``event``, creating intermediate maps."""
    keys = path.split(".")
    node = event
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


class SchemaError(ValueError):
    """An object that is not an event of this schema."""


_TEXT = (str, bytes)


def validate(event: Any) -> None:
    """Raise :class:`SchemaError` naming the first problem; return ``None`` when valid.

    Checks the header and, for process creations, the types of the fields that downstream code
    and the TTPHash rely on. Unknown extra fields are allowed (sources may add their own).
    """
    if not isinstance(event, dict):
        raise SchemaError("an event is a JSON object")
    schema = event.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise SchemaError("missing integer 'schema'")
    if schema > SCHEMA_VERSION:
        raise SchemaError(f"schema {schema} is newer than this build understands "
                          f"({SCHEMA_VERSION})")
    for path in ("@timestamp", "event.id", "event.action", "event.provider"):
        if not isinstance(get_path(event, path), str):
            raise SchemaError(f"missing string '{path}'")
    if not isinstance(event.get("host"), dict):
        raise SchemaError("missing map 'host'")
    if event["event"]["action"] != ACTION_PROCESS_CREATE:
        return
    process = event.get("process")
    if not isinstance(process, dict):
        raise SchemaError("a process_create event needs a map 'process'")
    _check_process(process, "process")
    parent = process.get("parent")
    if parent is not None:
        if not isinstance(parent, dict):
            raise SchemaError("'process.parent' must be a map or null")
        _check_process(parent, "process.parent")


def _check_process(process: dict[str, Any], where: str) -> None:
    pid = process.get("pid")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
        raise SchemaError(f"'{where}.pid' must be an integer")
    args = process.get("args")
    # An element may be null: the source lost that argument (an EXECVE record never came).
    if args is not None and (not isinstance(args, list)
                             or not all(a is None or isinstance(a, _TEXT) for a in args)):
        raise SchemaError(f"'{where}.args' must be a list of strings")
    for key in ("executable", "command_line", "working_directory", "name"):
        value = process.get(key)
        if value is not None and not isinstance(value, _TEXT):
            raise SchemaError(f"'{where}.{key}' must be a string")
    for key in ("on_disk", "running"):
        value = process.get(key)
        if value is not None and not isinstance(value, bool):
            raise SchemaError(f"'{where}.{key}' must be true, false or null")
