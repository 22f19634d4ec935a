"""Protocol Buffers wire format (proto3) for the client protocol, driven by ``client.proto``.

Messages are plain dicts keyed by field name (the same names the JSON encoding uses), so the
core handles both encodings alike; ``bytes`` fields are ``bytes``. Zero values are omitted
when encoding, as proto3 does. Unknown fields are skipped when decoding; malformed input
raises ``ProtobufError``. On the wire several messages share one frame, each preceded by its
length as a varint ("varint-delimited").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "Field",
    "MessageType",
    "ProtobufError",
    "decode",
    "decode_delimited",
    "encode",
    "encode_delimited",
    "parse_proto",
    "schema",
]

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_SCALARS = {
    "uint32": VARINT,
    "uint64": VARINT,
    "int32": VARINT,
    "int64": VARINT,
    "sint64": VARINT,
    "bool": VARINT,
    "string": LEN,
    "bytes": LEN,
}
MAX_DEPTH = 32


class ProtobufError(ValueError):
    """Bytes that are not a valid encoding of the expected message."""


@dataclass(slots=True, frozen=True)
class Field:
    name: str
    number: int
    type: str  # a scalar name, or a message name
    repeated: bool = False
    map_value: str | None = None  # map<string, map_value>: ``type`` is then the key type


@dataclass(slots=True)
class MessageType:
    name: str
    by_name: dict[str, Field] = field(default_factory=dict)
    by_number: dict[int, Field] = field(default_factory=dict)


_MESSAGE = re.compile(r"message\s+(\w+)\s*\{([^{}]*)\}", re.S)
_FIELD = re.compile(
    r"^\s*(repeated\s+)?(?:map<\s*(\w+)\s*,\s*(\w+)\s*>|(\w+))\s+(\w+)\s*=\s*(\d+)\s*;", re.M
)


def parse_proto(text: str) -> dict[str, MessageType]:
    """Read the messages of a flat proto3 file (no nesting, no oneof, no enums needed)."""
    text = re.sub(r"//[^\n]*", "", text)
    types: dict[str, MessageType] = {}
    for match in _MESSAGE.finditer(text):
        msg = MessageType(match.group(1))
        for f in _FIELD.finditer(match.group(2)):
            repeated, key_t, value_t, plain_t, name, number = f.groups()
            if key_t:
                fld = Field(name, int(number), key_t, repeated=True, map_value=value_t)
            else:
                fld = Field(name, int(number), plain_t, repeated=bool(repeated))
            msg.by_name[name] = fld
            msg.by_number[fld.number] = fld
        types[msg.name] = msg
    return types


_SCHEMA: dict[str, MessageType] = parse_proto(
    resources.files(__package__).joinpath("client.proto").read_text()
)


def schema() -> dict[str, MessageType]:
    return _SCHEMA


# encoding
def _varint(value: int, out: bytearray) -> None:
    if value < 0:
        value += 1 << 64  # negative int32/int64: ten bytes, two's complement
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _key(number: int, wire: int, out: bytearray) -> None:
    _varint((number << 3) | wire, out)


def _scalar(type_: str, number: int, value: Any, out: bytearray) -> None:
    if type_ == "string":
        raw = value.encode()
        _key(number, LEN, out)
        _varint(len(raw), out)
        out += raw
    elif type_ == "bytes":
        _key(number, LEN, out)
        _varint(len(value), out)
        out += value
    elif type_ == "sint64":
        _key(number, VARINT, out)
        _varint((value << 1) ^ (value >> 63), out)
    else:
        _key(number, VARINT, out)
        _varint(int(value), out)


def _embedded(type_: str, number: int, value: Any, out: bytearray, depth: int) -> None:
    if type_ in _SCALARS:
        _scalar(type_, number, value, out)
        return
    inner = _encode(type_, value, depth + 1)
    _key(number, LEN, out)
    _varint(len(inner), out)
    out += inner


def _encode(name: str, value: dict[str, Any], depth: int = 0) -> bytearray:
    if depth > MAX_DEPTH:
        raise ProtobufError("message nested too deeply")
    msg = _SCHEMA[name]
    out = bytearray()
    for key, item in value.items():
        fld = msg.by_name.get(key)
        if fld is None or item is None:
            continue
        if fld.map_value is not None:
            for map_key, map_value in item.items():
                entry = bytearray()
                _scalar(fld.type, 1, map_key, entry)
                _embedded(fld.map_value, 2, map_value, entry, depth)
                _key(fld.number, LEN, out)
                _varint(len(entry), out)
                out += entry
        elif fld.repeated:
            for element in item:
                _embedded(fld.type, fld.number, element, out, depth)
        elif fld.type in _SCALARS:
            if item:  # proto3: zero values are not written
                _scalar(fld.type, fld.number, item, out)
        else:
            _embedded(fld.type, fld.number, item, out, depth)
    return out


def encode(name: str, value: dict[str, Any]) -> bytes:
    """Encode ``value`` as message ``name``."""
    return bytes(_encode(name, value))


def encode_delimited(name: str, value: dict[str, Any]) -> bytes:
    """Encode with a varint length prefix."""
    body = _encode(name, value)
    out = bytearray()
    _varint(len(body), out)
    return bytes(out + body)


# decoding
def _read_varint(data: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint too long")


def _convert(type_: str, raw: Any, depth: int) -> Any:
    if type_ == "string":
        try:
            return bytes(raw).decode()
        except UnicodeDecodeError:
            raise ProtobufError("string field is not UTF-8") from None
    if type_ == "bytes":
        return bytes(raw)
    if type_ in ("int32", "int64"):
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    if type_ == "sint64":
        return (raw >> 1) ^ -(raw & 1)
    if type_ == "bool":
        return bool(raw)
    if type_ in _SCALARS:
        return raw
    return _decode(type_, raw, depth + 1)


def _fields(data: bytes | memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, raw value) of each field; fixed-size values are skipped
    (None): no field of ours has one."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        key, pos = _read_varint(view, pos, end)
        wire = key & 7
        raw: Any = None
        if wire == VARINT:
            raw, pos = _read_varint(view, pos, end)
        elif wire == LEN:
            length, pos = _read_varint(view, pos, end)
            raw = view[pos : pos + length]
            pos += length
        elif wire == I64:
            pos += 8
        elif wire == I32:
            pos += 4
        else:
            raise ProtobufError(f"unknown wire type {wire}")
        if pos > end:
            raise ProtobufError("truncated field")
        yield key >> 3, wire, raw


def _decode(name: str, data: bytes | memoryview, depth: int = 0) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise ProtobufError("message nested too deeply")
    msg = _SCHEMA[name]
    result: dict[str, Any] = {}
    for number, wire, raw in _fields(data):
        fld = msg.by_number.get(number)
        if fld is None or raw is None:
            continue  # unknown field: skipped (proto3 rules)
        # Repeated scalars are never packed in our schema: one value per field, as usual.
        scalar = fld.map_value is None and fld.type in _SCALARS
        if wire != (_SCALARS[fld.type] if scalar else LEN):
            raise ProtobufError(f"field {fld.name}: wrong wire type")
        if fld.map_value is not None:
            entry = _decode_map_entry(fld, raw, depth)
            result.setdefault(fld.name, {}).update([entry])
        elif fld.repeated:
            result.setdefault(fld.name, []).append(_convert(fld.type, raw, depth))
        else:
            result[fld.name] = _convert(fld.type, raw, depth)
    return result


def _decode_map_entry(fld: Field, raw: memoryview, depth: int) -> tuple[Any, Any]:
    assert fld.map_value is not None
    key: Any = "" if fld.type == "string" else 0
    value: Any = None
    for number, wire, item in _fields(raw):
        if wire not in (VARINT, LEN):
            raise ProtobufError("bad map entry")
        if number == 1:
            key = _convert(fld.type, item, depth)
        elif number == 2:
            value = _convert(fld.map_value, item, depth)
    if value is None:
        value = {} if fld.map_value not in _SCALARS else _convert(fld.map_value, b"", depth)
    return key, value


def decode(name: str, data: bytes) -> dict[str, Any]:
    """Decode one message ``name`` from ``data``."""
    return _decode(name, data)


def decode_delimited(name: str, data: bytes) -> list[dict[str, Any]]:
    """Decode a frame of varint-delimited messages."""
    messages = []
    pos, end = 0, len(data)
    view = memoryview(data)
    while pos < end:
        length, pos = _read_varint(view, pos, end)
        if pos + length > end:
            raise ProtobufError("truncated message")
        messages.append(_decode(name, view[pos : pos + length]))
        pos += length
    return messages
