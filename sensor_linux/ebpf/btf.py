"""Member offsets of kernel structs, read from the running kernel's BTF.

BCC has no CO-RE: it compiles the probes against whatever header tree is installed, which need
not match the running kernel. So the probes read kernel structs only at offsets computed here,
from ``/sys/kernel/btf/vmlinux`` (the running kernel's own type information), and passed to the
compiler as macros.

Written by hand because no maintained Python library reads BTF; the format is small and fixed
(``include/uapi/linux/btf.h``, Documentation/bpf/btf.rst). Only what offset lookups need is
decoded: struct and union members, and the typedef/qualifier chains in front of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F

# BTF kinds (btf.h BTF_KIND_*)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)

_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_MEMBER = struct.Struct("<III")
_QUALIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


class BtfError(RuntimeError):
    """The BTF is missing, malformed, or lacks a member the probes need."""


@dataclass(frozen=True)
class Member:
    """Where a member lives: ``offset`` bytes from the start of its outermost struct."""

    offset: int
    size: int
    type_id: int


@dataclass
class _Type:
    kind: int
    size_or_type: int
    members: list[tuple[str, int, int]]  # (name, type id, bit offset), structs and unions only
    nelems: int = 0                       # arrays


# Bytes that follow the common header, per kind and per vlen unit: (fixed, per member).
_EXTRA = {INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
          FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12),
          PTR: (0, 0), FWD: (0, 0), TYPEDEF: (0, 0), VOLATILE: (0, 0), CONST: (0, 0),
          RESTRICT: (0, 0), FUNC: (0, 0), FLOAT: (0, 0), TYPE_TAG: (0, 0)}


class Btf:
    """The types of one BTF blob, indexed by name for structs and unions."""

    def __init__(self, data: bytes) -> None:
        if len(data) < _HEADER.size:
            raise BtfError("BTF too short for its header")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
            _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise BtfError(f"not BTF (magic {magic:#x}, or another byte order)")
        strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
        types = data[hdr_len + type_off:hdr_len + type_off + type_len]
        if len(strings) != str_len or len(types) != type_len:
            raise BtfError("BTF sections run past the end of the data")
        self._strings = strings
        self.by_name: dict[str, int] = {}
        self._parse(types)

    @classmethod
    def load(cls, path: Path = VMLINUX) -> "Btf":
        try:
            return cls(path.read_bytes())
        except FileNotFoundError as exc:
            raise BtfError(
                f"{path} does not exist: this kernel was built without CONFIG_DEBUG_INFO_BTF, "
                "so struct offsets cannot be known exactly; use --source audit") from exc
        except OSError as exc:
            raise BtfError(f"cannot read {path}: {exc}") from exc

    def _name(self, offset: int) -> str:
        end = self._strings.find(b"\0", offset)
        return self._strings[offset:end].decode("ascii", "replace")

    def _parse(self, types: bytes) -> None:
        """Find where each type starts (every type must be walked to find the next); decode a
        type only when a lookup reaches it. Struct and union names are indexed."""
        self._data = types
        starts = self._starts = [0]  # type id 0 is void
        pos = 0
        end = len(types)
        unpack_type = _TYPE.unpack_from
        extra = _EXTRA
        by_name = self.by_name
        strings = self._strings
        while pos < end:
            name_off, info, _ = unpack_type(types, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            try:
                fixed, per = extra[kind]
            except KeyError:
                raise BtfError(f"unknown BTF kind {kind} at type {len(starts)}") from None
            starts.append(pos)
            if (kind == STRUCT or kind == UNION) and vlen and name_off:
                name = strings[name_off:strings.find(b"\0", name_off)].decode("ascii", "replace")
                by_name.setdefault(name, len(starts) - 1)  # the definition, not a forward one
            pos += 12 + fixed + per * vlen
        if pos != end:
            raise BtfError("BTF type section ends inside a type")
        self._decoded: dict[int, _Type] = {}

    def _type(self, type_id: int) -> _Type | None:
        if type_id == 0 or type_id >= len(self._starts):
            return None
        found = self._decoded.get(type_id)
        if found is not None:
            return found
        pos = self._starts[type_id]
        _name_off, info, size_or_type = _TYPE.unpack_from(self._data, pos)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kind_flag = info >> 31
        members: list[tuple[str, int, int]] = []
        nelems = 0
        pos += _TYPE.size
        if kind in (STRUCT, UNION):
            for _ in range(vlen):
                m_name, m_type, m_offset = _MEMBER.unpack_from(self._data, pos)
                pos += _MEMBER.size
                # With kind_flag the offset word is bitfield_size << 24 | bit offset.
                bit_offset = m_offset & 0xFFFFFF if kind_flag else m_offset
                members.append((self._name(m_name) if m_name else "", m_type, bit_offset))
        elif kind == ARRAY:
            size_or_type, _index, nelems = struct.unpack_from("<III", self._data, pos)
        found = self._decoded[type_id] = _Type(kind, size_or_type, members, nelems)
        return found

    def _resolve(self, type_id: int) -> int:
        """Skip typedefs and qualifiers."""
        for _ in range(64):
            t = self._type(type_id)
            if t is None or t.kind not in _QUALIFIERS:
                return type_id
            type_id = t.size_or_type
        raise BtfError("typedef chain too long")

    def size_of(self, type_id: int) -> int:
        type_id = self._resolve(type_id)
        t = self._type(type_id)
        if t is None:
            return 0
        if t.kind in (INT, STRUCT, UNION, ENUM, FLOAT, ENUM64):
            return t.size_or_type
        if t.kind == PTR:
            return 8
        if t.kind == ARRAY:
            return t.nelems * self.size_of(t.size_or_type)
        return 0

    def _find(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of member ``name``, looking inside anonymous members."""
        t = self._type(self._resolve(type_id))
        if t is None or t.kind not in (STRUCT, UNION):
            return None
        for m_name, m_type, bit_offset in t.members:
            if m_name == name:
                return bit_offset, m_type
            if not m_name:
                inner = self._find(m_type, name)
                if inner is not None:
                    return bit_offset + inner[0], inner[1]
        return None

    def has_struct(self, name: str) -> bool:
        return name in self.by_name

    def member(self, struct_name: str, path: str) -> Member:
        """Offset of ``path`` (``"d_name.name"``: members of embedded structs, dot-separated)
        in ``struct struct_name``; raises :class:`BtfError` when it does not exist."""
        if struct_name not in self.by_name:
            raise BtfError(f"the running kernel's BTF has no struct {struct_name}")
        type_id = self.by_name[struct_name]
        bits = 0
        for part in path.split("."):
            found = self._find(type_id, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path} in the running "
                               "kernel's BTF")
            bits += found[0]
            type_id = found[1]
        if bits % 8:
            raise BtfError(f"{struct_name}.{path} is a bit field")
        return Member(bits // 8, self.size_of(type_id), type_id)

    def has_member(self, struct_name: str, path: str) -> bool:
        try:
            self.member(struct_name, path)
        except BtfError:
            return False
        return True
