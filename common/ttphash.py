"""TTPHash version 1: a deterministic fingerprint of a process-create event.

``TTPHash = upper(hex(sha256(utf8(JCS(input)))))`` where JCS is RFC 8785 and ``input`` holds only
the stable fields of the event and its parent, normalized as ``docs/ttphash.md`` specifies. That
document is the contract; this module is one implementation of it.

Pipeline: :func:`build_input` (select and normalize fields from an event of our schema) ->
:func:`canonical_bytes` (RFC 8785) -> :func:`digest`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import msgpack
import orjson


from common.percent import percent_encode
from common.schema import Event, get_path

VERSION = 1
QTYPE_PROCESS_CREATE = "Process Create"

# ASCII white space stripped from a Windows command line: space, TAB, LF, VT, FF, CR.
_ASCII_WS = " \t\n\x0b\x0c\r"
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


DeviceMap = dict[str, str] | None  # NT device -> drive letter, e.g. {"\\Device\\HarddiskVolume3": "C:"}


class TTPHashError(ValueError):
    """The event cannot be hashed (unknown OS, a field of the wrong type)."""


@dataclass(frozen=True)
class TTPHash:
    """A computed hash together with what it was computed from."""

    value: str
    complete: bool
    canonical: bytes
    input: dict[str, Any]
    version: int = VERSION

    def as_field(self) -> dict[str, Any]:
        """The ``ttphash`` map stored in events."""
        return {"value": self.value, "version": self.version, "complete": self.complete}


# --- normalizers --------------------------------------------------------------------------------

def ascii_upper(text: str) -> str:
    """Upper-case ASCII a-z only, so every language produces the same bytes."""
    if text.isascii():
        return text.upper()  # the same for ASCII text, in C (translate looks up each char)
    return text.translate(_ASCII_UPPER)


def map_nt_path(path: str, device_map: dict[str, str] | None = None) -> str:
    """Map NT namespace paths to Win32 drive-letter paths.

    Host-independent forms are always mapped (``\\??\\C:\\x``, ``\\\\?\\C:\\x``, ``\\Device\\Mup\\``,
    ``\\??\\UNC\\``). A volume device (``\\Device\\HarddiskVolume3``) needs the host's device map,
    which the sensor passes in; unmapped device paths are left as they are.
    """
    folded = ascii_upper(path)
    for prefix, replacement in (("\\??\\UNC\\", "\\\\"), ("\\\\?\\UNC\\", "\\\\"),
                                ("\\DEVICE\\MUP\\", "\\\\"), ("\\??\\", ""), ("\\\\?\\", "")):
        if folded.startswith(prefix):
            return replacement + path[len(prefix):]
    if device_map and folded.startswith("\\DEVICE\\"):
        for device, drive in device_map.items():
            dev = ascii_upper(device.rstrip("\\"))
            if folded == dev or folded.startswith(dev + "\\"):
                return drive.rstrip("\\") + path[len(dev):]
    return path


def _text(value: Any, field: str, device_map: DeviceMap = None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return percent_encode(value)
    if isinstance(value, str):
        return value
    raise TTPHashError(f"field {field!r} must be a string or null, not {type(value).__name__}")


def _bool(value: Any, field: str, device_map: DeviceMap = None) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise TTPHashError(f"field {field!r} must be true, false or null")


def _hexdigest(value: Any, field: str, device_map: DeviceMap = None) -> str | None:
    text = _text(value, field)
    return None if text is None else ascii_upper(text)


def _win_path(value: Any, field: str, device_map: DeviceMap = None) -> str | None:
    text = _text(value, field)
    return None if text is None else ascii_upper(map_nt_path(text, device_map))


def _win_commandline(value: Any, field: str, device_map: DeviceMap = None) -> str | None:
    text = _text(value, field)
    return None if text is None else text.strip(_ASCII_WS)


def _linux_path(value: Any, field: str, device_map: DeviceMap = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, bytes)):
        raise TTPHashError(f"field {field!r} must be a string or null")
    return percent_encode(value)


def _linux_argv(value: Any, field: str, device_map: DeviceMap = None) -> list[str | None] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise TTPHashError(f"field {field!r} must be a list of strings or null")
    try:
        joined = "".join(value)
    except TypeError:  # bytes, or null where the source lost an element (a missing EXECVE aN)
        pass
    else:
        # Almost every argv: ASCII text without "%", which percent form leaves as it is;
        # one check of the whole list instead of a call per element.
        if joined.isascii() and "%" not in joined:
            return list(value)
    return [None if arg is None else _linux_path(arg, field) for arg in value]


def _user(value: Any, field: str, device_map: DeviceMap = None) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value, field)


# --- field tables ------------------------------------------------------------------------------
# One row per TTPHash field: (name, candidate source paths relative to the process map, the first
# non-null one wins; normalizer). Order does not matter for the hash (JCS sorts keys); it follows
# docs/ttphash.md so the two can be read side by side.

Normalizer = Callable[[Any, str, "DeviceMap"], Any]
FieldTable = tuple[tuple[str, tuple[str, ...], Normalizer], ...]

LINUX_PROCESS: FieldTable = (
    ("User", ("real_user.name", "real_user.id"), _user),
    ("EffectiveUser", ("user.name", "user.id"), _user),
    ("Fullpath", ("executable",), _linux_path),
    ("Argv", ("args",), _linux_argv),
    ("sha256", ("hash.sha256",), _hexdigest),
    ("isOndisk", ("on_disk",), _bool),
    ("Package", ("package.name",), _text),
)
LINUX_PARENT: FieldTable = (
    ("User", ("real_user.name", "real_user.id"), _user),
    ("Fullpath", ("executable",), _linux_path),
    ("Argv", ("args",), _linux_argv),
    ("sha256", ("hash.sha256",), _hexdigest),
    ("isOndisk", ("on_disk",), _bool),
    ("isRunning", ("running",), _bool),
)
WINDOWS_PROCESS: FieldTable = (
    ("UsernameSID", ("user.sid",), _text),
    ("KernelImagefilename", ("kernel_image_name",), _win_path),
    ("OriginalFilename", ("pe.original_file_name",), _win_path),
    ("Fullpath", ("executable",), _win_path),
    ("Commandline", ("command_line",), _win_commandline),
    ("Imphash", ("pe.imphash",), _hexdigest),
    ("sha256", ("hash.sha256",), _hexdigest),
    ("ProcessIntegrityLevel", ("integrity_level",), _text),
    ("isOndisk", ("on_disk",), _bool),
    ("AuthenticodeHash", ("code_signature.digest",), _hexdigest),
)
WINDOWS_PARENT: FieldTable = (
    ("UsernameSID", ("user.sid",), _text),
    ("Imagefilename", ("name",), _win_path),
    ("KernelImagefilename", ("kernel_image_name",), _win_path),
    ("OriginalFilename", ("pe.original_file_name",), _win_path),
    ("Fullpath", ("executable",), _win_path),
    ("Commandline", ("command_line",), _win_commandline),
    ("Imphash", ("pe.imphash",), _hexdigest),
    ("sha256", ("hash.sha256",), _hexdigest),
    ("ProcessIntegrityLevel", ("integrity_level",), _text),
    ("isOndisk", ("on_disk",), _bool),
    ("isRunning", ("running",), _bool),
    ("AuthenticodeHash", ("code_signature.digest",), _hexdigest),
)


# The tables with each source path split into its keys once, not per event: its first key
# (looked up in the process map) and the rest (in the maps below it; mostly none).
CompiledTable = tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...], Normalizer], ...]


def _compile(table: FieldTable) -> CompiledTable:
    return tuple((name, tuple(_split_path(path) for path in paths), normalize)
                 for name, paths, normalize in table)


def _split_path(path: str) -> tuple[str, tuple[str, ...]]:
    first, *rest = path.split(".")
    return first, tuple(rest)


def _first_keys(table: CompiledTable, leave_out: str | None = None) -> tuple[str, ...]:
    """The keys of the process map where the paths of ``table``'s fields (but ``leave_out``)
    begin, each once: what :class:`Memo` keys a process map by."""
    return tuple(dict.fromkeys(first for name, paths, _ in table if name != leave_out
                               for first, _ in paths))


# The process's and its parent's table, by OS.
_TABLES = {"linux": (_compile(LINUX_PROCESS), _compile(LINUX_PARENT)),
           "windows": (_compile(WINDOWS_PROCESS), _compile(WINDOWS_PARENT))}


@dataclass(frozen=True)
class _MemoKeys:
    """The process map's keys that the hash of one OS reads: of the process, of its parent,
    and of the process but for Argv (None where the OS has no Argv)."""

    own: tuple[str, ...]
    parent: tuple[str, ...]
    own_but_argv: tuple[str, ...] | None


_MEMO_KEYS = {
    "linux": _MemoKeys(_first_keys(_TABLES["linux"][0]), _first_keys(_TABLES["linux"][1]),
                       _first_keys(_TABLES["linux"][0], leave_out="Argv")),
    "windows": _MemoKeys(_first_keys(_TABLES["windows"][0]),
                         _first_keys(_TABLES["windows"][1]), None),
}


def _raw(process: dict[str, Any], table: CompiledTable) -> list[Any]:
    """The value of each field of ``table`` as the event has it (before normalization): for
    each, the value at the first of its paths that has one. get_path of each path, written
    out (``process`` is a map: its key needs no check)."""
    out: list[Any] = []
    for _, paths, _ in table:
        node: Any = None
        for first, rest in paths:
            node = process.get(first)
            for key in rest:
                if not isinstance(node, dict):
                    node = None
                    break
                node = node.get(key)
            if node is not None:
                break
        out.append(node)
    return out


def _normalized(raw: list[Any], table: CompiledTable,
                device_map: dict[str, str] | None) -> dict[str, Any]:
    return {name: normalize(value, name, device_map)
            for (name, _, normalize), value in zip(table, raw)}


# --- the three steps ----------------------------------------------------------------------------

RawInput = tuple[str, CompiledTable, CompiledTable, list[Any], "list[Any] | None"]


def _sides(event: Event) -> tuple[str, CompiledTable, CompiledTable, dict[str, Any],
                                  dict[str, Any] | None]:
    """The OS, its two tables, the process map and its parent map (None when it has none)."""
    try:
        os_type = event["host"]["os"]["type"]
    except (KeyError, TypeError):  # (get_path's answer where a step is missing)
        os_type = get_path(event, "host.os.type")
    try:
        own, par = _TABLES[os_type]
    except (KeyError, TypeError):  # another name, or no text (a map is no key)
        raise TTPHashError(f"host.os.type must be 'linux' or 'windows', not {os_type!r}"
                           ) from None
    process = event.get("process")
    if not isinstance(process, dict):
        raise TTPHashError("the event has no 'process' map")
    parent = process.get("parent")
    return os_type, own, par, process, parent if isinstance(parent, dict) else None


def _raw_input(event: Event) -> RawInput:
    """The OS, its tables, and the raw values of the process's and its parent's fields."""
    os_type, own, par, process, parent = _sides(event)
    return (os_type, own, par, _raw(process, own),
            _raw(parent, par) if parent is not None else None)


def _input(raw: RawInput, device_map: dict[str, str] | None) -> dict[str, Any]:
    return _assemble(raw[0], _own_part(raw, device_map), _parent_part(raw, device_map))


def _own_part(raw: RawInput, device_map: dict[str, str] | None) -> dict[str, Any]:
    return _normalized(raw[3], raw[1], device_map)


def _parent_part(raw: RawInput, device_map: dict[str, str] | None) -> dict[str, Any] | None:
    parent_raw = raw[4]
    taken = _normalized(parent_raw, raw[2], device_map) if parent_raw is not None else None
    # A parent of which nothing stable is known (only its pid, say) hashes like no parent.
    return None if taken is None or all(v is None for v in taken.values()) else taken


def _assemble(os_type: str, own: dict[str, Any], parent: dict[str, Any] | None
              ) -> dict[str, Any]:
    result: dict[str, Any] = {"TTPHashVersion": VERSION, "OS": os_type,
                              "QType": QTYPE_PROCESS_CREATE}
    result.update(own)
    result["ParentProcess"] = parent
    return result


def build_input(event: Event, device_map: dict[str, str] | None = None) -> dict[str, Any]:
    """The normalized TTPHash input map for a process-create event of our schema."""
    return _input(_raw_input(event), device_map)


# RFC 8785 restricted to the TTPHash input domain (ASCII member names, strings, booleans, null,
# the integer 1) is exactly what orjson writes with sorted keys: no white space, the same
# minimal escapes (lower-case \u00xx for other controls), raw UTF-8 otherwise. It is much faster
# than a general JCS serializer on this hot path; the property tests check it against two
# independent RFC 8785 implementations (rfc8785, jcs).


def canonical_bytes(hash_input: dict[str, Any] | list[Any] | None) -> bytes:
    """RFC 8785 (JCS) serialization of a TTPHash input (or of one of its values), as UTF-8
    bytes."""
    try:
        return orjson.dumps(hash_input, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        # Only a lone surrogate (hostile JSON input) gets here; RFC 8785 rejects those too.
        raise TTPHashError(f"cannot canonicalize: text is not valid Unicode ({exc})") from exc


def is_complete(value: Any) -> bool:
    """False when any value anywhere in ``value`` is ``None``."""
    if value is None:
        return False
    if isinstance(value, dict):
        values: Any = value.values()
    elif isinstance(value, list):
        values = value
    else:
        return True
    for item in values:
        if item is None or (isinstance(item, (dict, list)) and not is_complete(item)):
            return False
    return True


def digest(canonical: bytes) -> str:
    """Upper-case hex SHA-256 of the canonical bytes."""
    return hashlib.sha256(canonical).hexdigest().upper()


def compute(event: Event, device_map: dict[str, str] | None = None) -> TTPHash:
    """Compute the TTPHash of a process-create event."""
    return _hashed(build_input(event, device_map))


def _hashed(hash_input: dict[str, Any]) -> TTPHash:
    canonical = canonical_bytes(hash_input)
    return TTPHash(value=digest(canonical), complete=is_complete(hash_input),
                   canonical=canonical, input=hash_input)


def attach(event: Event, device_map: dict[str, str] | None = None,
           memo: "Memo | None" = None, parent_cache: dict[Any, Any] | None = None) -> TTPHash:
    """Compute the hash (through ``memo`` if given) and store it as ``event["ttphash"]``.
    ``parent_cache``: see :meth:`Memo.compute`."""
    result = (memo.compute(event, device_map, parent_cache) if memo is not None
              else compute(event, device_map))
    event["ttphash"] = result.as_field()
    return result


class Memo:
    """TTPHashes remembered by the values they are computed from, read as they are in the
    event (before normalization). A host runs the same commands from the same parents again
    and again; for those, the hash costs the look-up of its fields instead of normalizing,
    serializing and hashing them. A new command of a known parent (a shell, a build, a
    spawner) still finds the parent's part normalized, and whether it is complete; and a new
    command line of a known binary, user and parent (on Linux) finds everything but its Argv
    normalized and serialized (Argv sorts first in the canonical form, so the rest is one
    remembered tail). Bounded: the oldest entry goes first, in each of the three.

    A process map is keyed by the values at the keys its fields' paths begin with (whole:
    ``real_user`` for ``real_user.name``), packed by msgpack with exact types: one C call
    instead of a walk of each path in Python, the largest part of a remembered hash's cost.
    Equal bytes are equal values of equal types (text is not bytes, true is not 1, 1 is not
    1.0, a list is not a tuple: msgpack's ``strict_types`` leaves a tuple or a subclass
    unpacked), so the values the hash reads are equal too; a value it cannot pack (a tuple,
    a lone surrogate, an int past 64 bits) leaves the event unkeyed, hashed in full. The one
    equality wider than Python's: a ``bytearray`` or ``memoryview`` packs as the bytes it
    holds (no event of ours carries either)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        # Each memo its own packer, whose buffer is used by one call at a time (the
        # collector's connections share their memo under a lock).
        self._pack = msgpack.Packer(strict_types=True, autoreset=True).pack
        # OrderedDicts: a plain dict emptied from the front makes each next(iter()) walk
        # the removed slots (2 us an eviction at 4,096 entries, against 0.13).
        self._known: OrderedDict[tuple[Any, ...], TTPHash] = OrderedDict()
        self._parents: OrderedDict[tuple[Any, ...], tuple[dict[str, Any] | None, bool]] = \
            OrderedDict()
        self._rests: OrderedDict[tuple[Any, ...], _Rest] = OrderedDict()
        self.hits = 0

    def compute(self, event: Event, device_map: dict[str, str] | None = None,
                parent_cache: dict[Any, Any] | None = None) -> TTPHash:
        """``parent_cache``: a dict the caller keeps with the parent (its process-table
        entry), where the parent's values read for the hash and their key are kept, so that
        the children of one parent read them once. Pass it only when ``process.parent`` is
        exactly what that entry gives: its values are not read again."""
        os_type, own_table, par, process, parent_map = _sides(event)  # raises as compute()
        keys = _MEMO_KEYS[os_type]
        parent_raw, parent_key = self._parent_values(parent_map, par, keys.parent, os_type,
                                                     parent_cache)
        own_key = self._key(process, keys.own)
        context = (os_type, tuple(sorted(device_map.items())) if device_map else None)
        key = None if own_key is None or parent_key is None else (context, own_key, parent_key)
        if key is not None:
            found = self._known.get(key)
            if found is not None:
                self.hits += 1
                return found
        own_raw = _raw(process, own_table)
        raw: RawInput = (os_type, own_table, par, own_raw, parent_raw)
        # A known rest (it holds the parent's part) takes Argv alone; otherwise the parent is
        # normalized only if it is new.
        rest_key = None
        if key is not None and keys.own_but_argv is not None:
            rest_own = self._key(process, keys.own_but_argv)
            rest_key = None if rest_own is None else (context, rest_own, parent_key)
            rest = self._rests.get(rest_key) if rest_key is not None else None
            if rest is not None:
                result = _with_argv(rest, own_raw[_ARGV])
                _remember(self._known, key, result, self.max_entries)
                return result
        parent, parent_complete = self._parent(raw, context, parent_key, device_map)
        own = _own_part(raw, device_map)
        hash_input = _assemble(os_type, own, parent)
        canonical = canonical_bytes(hash_input)
        result = TTPHash(value=digest(canonical), canonical=canonical, input=hash_input,
                         complete=parent_complete and _flat_complete(own))
        if key is not None:
            _remember(self._known, key, result, self.max_entries)
        if rest_key is not None:
            _remember(self._rests, rest_key, _rest_of(hash_input, parent_complete, own),
                      self.max_entries)
        return result

    def _key(self, process: dict[str, Any], keys: tuple[str, ...]) -> bytes | None:
        """The memo key of ``process``'s values at ``keys`` (see the class), or None."""
        try:
            return self._pack(list(map(process.get, keys)))
        except (TypeError, ValueError, OverflowError):  # msgpack's "cannot pack this"
            return None

    def _parent_values(self, parent: dict[str, Any] | None, table: CompiledTable,
                       keys: tuple[str, ...], os_type: str, cache: dict[Any, Any] | None
                       ) -> tuple[list[Any] | None, bytes | tuple[()] | None]:
        """The parent's raw values and their memo key (``()`` for no parent), from ``cache``
        when it holds them for ``os_type`` (kept there when it does not)."""
        if parent is None:
            return None, ()
        found = cache.get(os_type) if cache is not None else None
        if found is None:
            found = (_raw(parent, table), self._key(parent, keys))
            if cache is not None:
                cache[os_type] = found
        return found

    def _parent(self, raw: RawInput, context: tuple[Any, ...],
                parent_key: bytes | tuple[()] | None, device_map: dict[str, str] | None
                ) -> tuple[dict[str, Any] | None, bool]:
        """The normalized parent part and whether it is complete (False for no parent)."""
        key = None if parent_key is None else (context, parent_key)
        found = self._parents.get(key) if key is not None else None
        if found is None:
            part = _parent_part(raw, device_map)
            found = (part, part is not None and is_complete(part))
            if key is not None:
                _remember(self._parents, key, found, self.max_entries)
        return found


@dataclass(frozen=True)
class _Rest:
    """A Linux hash input but for its Argv: the input with Argv's slot kept (None), the
    canonical bytes of the rest after its opening brace, and whether the rest is complete."""

    input: dict[str, Any]
    tail: bytes
    complete: bool


# Where Argv is in Linux's process table (its raw value).
_ARGV = [name for name, _, _ in LINUX_PROCESS].index("Argv")


def _rest_of(hash_input: dict[str, Any], parent_complete: bool, own: dict[str, Any]) -> _Rest:
    """What a Linux input without its Argv gives every other command line of the same rest.
    Argv sorts before every other member name (RFC 8785 orders them by UTF-16 code units;
    the others begin with a later capital or a small letter), so the canonical form is
    ``{"Argv":`` + Argv + ``,`` + the rest's canonical form after its brace."""
    rest = dict(hash_input)
    del rest["Argv"]
    others = dict(own)
    del others["Argv"]
    return _Rest(input={**hash_input, "Argv": None}, tail=canonical_bytes(rest)[1:],
                 complete=parent_complete and _flat_complete(others))


def _with_argv(rest: _Rest, raw_argv: Any) -> TTPHash:
    """The hash of ``rest`` with this Argv (normalized and serialized alone)."""
    argv = _linux_argv(raw_argv, "Argv")
    canonical = b'{"Argv":' + canonical_bytes(argv) + b"," + rest.tail
    hash_input = dict(rest.input)
    hash_input["Argv"] = argv
    return TTPHash(value=digest(canonical), canonical=canonical, input=hash_input,
                   complete=rest.complete and argv is not None and None not in argv)


def _remember(known: OrderedDict[Any, Any], key: Any, value: Any, max_entries: int) -> None:
    known[key] = value
    if len(known) > max_entries:
        known.popitem(last=False)


def _flat_complete(part: dict[str, Any]) -> bool:
    """is_complete of a process part, whose values are text, booleans, null or lists of text
    (the field tables' normalizers), without the recursion."""
    for value in part.values():
        if value is None or (type(value) is list and None in value):
            return False
    return True
