"""A minimal reader of kernel BTF (/sys/kernel/btf/vmlinux): the layout of named structs and the
values of enums, which the bcc backend compiles against (probe/bcc_source.py).

Only what that needs: struct/union members (through anonymous members, with bit offsets and
bitfield sizes), type sizes, enum values. Format: the kernel's Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 0xEB9F
# kinds
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
# bytes that follow struct btf_type, per kind: (fixed, per vlen entry)
_TRAILER = {INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
            FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12)}
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


class BtfError(Exception):
    pass


@dataclass(frozen=True)
class Field:
    bit_offset: int  # from the start of the struct
    bitfield_size: int  # 0: not a bitfield
    size: int  # bytes of the member's type

    @property
    def offset(self) -> int:
        return self.bit_offset // 8


@dataclass(frozen=True)
class Layout:
    size: int
    fields: dict[str, Field]


class Btf:
    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BtfError("BTF too short")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != MAGIC:
            raise BtfError(f"not BTF (magic {magic:#x})")
        self._strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
        self._data = data
        self._offsets = [0]  # type id -> offset of its struct btf_type (id 0 is void)
        self._by_name: dict[tuple[int, str], list[int]] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack = struct.Struct("<III").unpack_from
        while pos < end:
            name_off, info, _ = unpack(data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self._offsets.append(pos)
            if name_off and kind in (STRUCT, UNION, ENUM, ENUM64):
                self._by_name.setdefault((kind, self._name(name_off)), []).append(len(self._offsets) - 1)
            fixed, each = _TRAILER.get(kind, (0, 0))
            pos += 12 + fixed + each * vlen

    @classmethod
    def load(cls, path: str) -> "Btf":
        with open(path, "rb") as f:
            return cls(f.read())

    def _name(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _type(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(kind, vlen, kind_flag, size_or_type, offset of the trailer)"""
        pos = self._offsets[type_id]
        _, info, size_or_type = struct.unpack_from("<III", self._data, pos)
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, size_or_type, pos + 12

    def type_size(self, type_id: int) -> int:
        kind, _, _, size_or_type, trailer = self._type(type_id)
        if kind in _MODIFIERS:
            return self.type_size(size_or_type)
        if kind == ARRAY:
            elem, _index, count = struct.unpack_from("<III", self._data, trailer)
            return count * self.type_size(elem)
        if kind == PTR:
            return 8
        return size_or_type

    def _members(self, type_id: int):
        kind, vlen, kind_flag, _, trailer = self._type(type_id)
        for i in range(vlen):
            name_off, member_type, offset = struct.unpack_from("<III", self._data, trailer + 12 * i)
            if kind_flag:
                yield name_off, member_type, offset & 0xFFFFFF, offset >> 24
            else:
                yield name_off, member_type, offset, 0

    def _strip(self, type_id: int) -> int:
        kind, _, _, size_or_type, _ = self._type(type_id)
        return self._strip(size_or_type) if kind in _MODIFIERS else type_id

    def struct_layout(self, name: str) -> Layout | None:
        """The named struct's size and every member, those of anonymous members included (at
        their offset in the named struct); None when the kernel has no such struct."""
        candidates = [t for t in self._by_name.get((STRUCT, name), []) if self._type(t)[1]]
        if not candidates:
            return None
        type_id = candidates[0]
        fields: dict[str, Field] = {}
        self._collect(type_id, 0, fields)
        return Layout(self._type(type_id)[3], fields)

    def _collect(self, type_id: int, base: int, fields: dict[str, Field]) -> None:
        for name_off, member_type, bit_offset, bitfield_size in self._members(type_id):
            if name_off:
                name = self._name(name_off)
                fields.setdefault(name, Field(base + bit_offset, bitfield_size, self.type_size(member_type)))
            else:  # an anonymous struct or union: its members are the struct's
                inner = self._strip(member_type)
                if self._type(inner)[0] in (STRUCT, UNION):
                    self._collect(inner, base + bit_offset, fields)

    def enum_values(self, name: str) -> dict[str, int] | None:
        for kind, each in ((ENUM, 8), (ENUM64, 12)):
            for type_id in self._by_name.get((kind, name), []):
                _, vlen, kind_flag, _, trailer = self._type(type_id)
                values = {}
                for i in range(vlen):
                    if kind == ENUM:
                        name_off, value = struct.unpack_from("<Ii" if kind_flag else "<II", self._data, trailer + 8 * i)
                    else:
                        name_off, low, high = struct.unpack_from("<III", self._data, trailer + 12 * i)
                        value = high << 32 | low
                    values[self._name(name_off)] = value
                return values
        return None
