"""Protocol Buffers wire format (proto3) of the client protocol, by PyPI ``protobuf`` (upb).

The message classes are built at import from ``client.proto`` (through ``schema``: no code
generation step). Messages are plain dicts keyed by field name, the same names the JSON
encoding uses, so the core handles both encodings alike; ``bytes`` fields are ``bytes``.
Zero values are omitted when encoding, as proto3 does. When decoding, unknown fields are
skipped, and so is a known field of the wrong wire type, as the reference implementation
does (https://protobuf.dev/programming-guides/encoding/); malformed input raises
``ProtobufError``: a length past the end of its data (checked before anything is
allocated), a varint of more than ten bytes, field number 0, wire types 6 and 7, strings
that are not UTF-8, messages nested deeper than ``MAX_DEPTH``, and ``bytes`` fields holding
JSON nested deeper than the JSON encoding carries (``envelope.MAX_JSON_DEPTH``). On the wire
several messages share one frame, each preceded by its length as a varint.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from tidings.exceptions import InvalidPayload
from tidings.protocol.envelope import MAX_JSON_DEPTH, check_json_payload

from .schema import MAX_DEPTH, SCHEMA, MessageType

__all__ = [
    "CLASSES",
    "ProtobufError",
    "decode",
    "decode_delimited",
    "encode",
    "encode_delimited",
    "varint",
]


class ProtobufError(ValueError):
    """Bytes that are not a valid encoding of the expected message."""


# Building the descriptors: one FileDescriptorProto from the schema, in a pool of our own.
_FDP = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "uint32": _FDP.TYPE_UINT32,
    "uint64": _FDP.TYPE_UINT64,
    "int32": _FDP.TYPE_INT32,
    "int64": _FDP.TYPE_INT64,
    "bool": _FDP.TYPE_BOOL,
    "string": _FDP.TYPE_STRING,
    "bytes": _FDP.TYPE_BYTES,
}
_PACKAGE = "tidings.centrifuge"


def _add_field(msg: descriptor_pb2.DescriptorProto, name: str, number: int, type_: str) -> Any:
    fld = msg.field.add(name=name, number=number, json_name=name, label=_FDP.LABEL_OPTIONAL)
    if type_ in _TYPES:
        fld.type = _TYPES[type_]
    else:
        fld.type = _FDP.TYPE_MESSAGE
        fld.type_name = f".{_PACKAGE}.{type_}"
    return fld


def _describe(msg: MessageType, out: descriptor_pb2.DescriptorProto) -> None:
    out.name = msg.name
    for fld in msg.by_number.values():
        if fld.map_value is None:
            added = _add_field(out, fld.name, fld.number, fld.type)
            if fld.repeated:
                added.label = _FDP.LABEL_REPEATED
            continue
        # A map is a repeated nested message {key = 1; value = 2} marked as a map entry.
        entry = out.nested_type.add(name=fld.name.title().replace("_", "") + "Entry")
        entry.options.map_entry = True
        _add_field(entry, "key", 1, fld.type)
        _add_field(entry, "value", 2, fld.map_value)
        added = _add_field(out, fld.name, fld.number, f"{msg.name}.{entry.name}")
        added.label = _FDP.LABEL_REPEATED


def _message_classes() -> dict[str, type[Message]]:
    file = descriptor_pb2.FileDescriptorProto(
        name="tidings/protocol/centrifuge/client.proto", package=_PACKAGE, syntax="proto3"
    )
    for msg in SCHEMA.values():
        _describe(msg, file.message_type.add())
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    found = pool.FindFileByName(file.name)
    return {
        name: message_factory.GetMessageClass(d) for name, d in found.message_types_by_name.items()
    }


CLASSES = _message_classes()

# From a parsed message to a dict: what to do with each field, looked up by its descriptor.
_SCALAR, _BYTES, _MESSAGE, _SCALAR_LIST, _MESSAGE_LIST, _SCALAR_MAP, _MESSAGE_MAP = range(7)


def _kind(fld: Any) -> int:  # a FieldDescriptor (upb's own class, which the stubs tell apart)
    sub = fld.message_type
    if sub is not None and sub.GetOptions().map_entry:
        return _MESSAGE_MAP if sub.fields_by_name["value"].message_type else _SCALAR_MAP
    if fld.is_repeated:
        return _MESSAGE_LIST if sub is not None else _SCALAR_LIST
    if sub is not None:
        return _MESSAGE
    return _BYTES if fld.type == FieldDescriptor.TYPE_BYTES else _SCALAR


_PLAN: dict[Any, tuple[str, int]] = {
    fld: (fld.name, _kind(fld)) for cls in CLASSES.values() for fld in cls.DESCRIPTOR.fields
}


def _to_dict(msg: Message, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise ProtobufError("message nested too deeply")
    out: dict[str, Any] = {}
    plan = _PLAN
    for fld, value in msg.ListFields():
        name, kind = plan[fld]
        if kind == _SCALAR:
            out[name] = value
        elif kind == _MESSAGE:
            out[name] = _to_dict(value, depth + 1)
        elif kind == _BYTES:
            # The JSON encoding embeds payloads as JSON: refuse what it couldn't re-encode
            # (check_json_payload's own shortcut, inlined: this is the hot path).
            if value.count(b"[") + value.count(b"{") > MAX_JSON_DEPTH:
                try:
                    check_json_payload(value)
                except InvalidPayload as exc:
                    raise ProtobufError(f"{name}: {exc}") from None
            out[name] = value
        elif kind == _MESSAGE_MAP:
            out[name] = {key: _to_dict(item, depth + 1) for key, item in value.items()}
        elif kind == _MESSAGE_LIST:
            out[name] = [_to_dict(item, depth + 1) for item in value]
        elif kind == _SCALAR_MAP:
            out[name] = dict(value)
        else:
            out[name] = list(value)
    return out


def encode(name: str, value: dict[str, Any]) -> bytes:
    """Encode ``value`` as message ``name``."""
    data: bytes = CLASSES[name](**value).SerializeToString()
    return data


def varint(value: int) -> bytes:
    """``value`` as a Protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_delimited(name: str, value: dict[str, Any]) -> bytes:
    """Encode with a varint length prefix."""
    body = encode(name, value)
    return varint(len(body)) + body


def decode(name: str, data: bytes) -> dict[str, Any]:
    """Decode one message ``name`` from ``data``."""
    try:
        msg = CLASSES[name].FromString(data)
    except DecodeError:
        raise ProtobufError(f"malformed {name}") from None
    return _to_dict(msg, 0)


def _read_length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` (at most ten bytes) and the position after it; the value must
    fit in what is left of the frame."""
    result = data[pos] if pos < end else 0x80
    if result < 0x80:  # the common case: a message shorter than 128 bytes
        if result > end - pos - 1:
            raise ProtobufError("message length past the end of the frame")
        return result, pos + 1
    result = shift = 0
    for i in range(pos, min(pos + 10, end)):
        byte = data[i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result > end - i - 1:
                raise ProtobufError("message length past the end of the frame")
            return result, i + 1
        shift += 7
    raise ProtobufError("truncated varint" if end - pos < 10 else "varint too long")


def decode_delimited(name: str, data: bytes) -> list[dict[str, Any]]:
    """Decode a frame of varint-delimited messages."""
    messages = []
    pos, end = 0, len(data)
    while pos < end:
        length, pos = _read_length(data, pos, end)
        messages.append(decode(name, data[pos : pos + length]))
        pos += length
    return messages
