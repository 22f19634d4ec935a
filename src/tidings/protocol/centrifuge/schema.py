"""The messages of ``client.proto``, read once at import: field names, numbers and types.

Both encodings are driven by it: the JSON codec checks commands against it, and the
Protobuf codec builds its message classes from it. The reader takes the flat subset of
proto3 that file uses (messages, scalar, message, ``repeated`` and ``map<string, V>``
fields; no nesting, oneof, enums or options) and refuses anything else it finds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

__all__ = ["MAX_DEPTH", "SCALARS", "SCHEMA", "Field", "MessageType", "parse_proto"]

# The scalar types client.proto uses (and so the only ones the codecs handle).
SCALARS = frozenset({"uint32", "uint64", "int32", "int64", "bool", "string", "bytes"})

MAX_DEPTH = 32
"""The deepest nesting of messages a command may have (the tags filter's ``FilterNode`` is
recursive); deeper input is refused by both decoders."""


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
    r"^\s*(repeated\s+)?(?:map<\s*(\w+)\s*,\s*(\w+)\s*>|(\w+))\s+(\w+)\s*=\s*(\d+)\s*;\s*$", re.M
)
_HEADER = re.compile(r'\s*syntax\s*=\s*"proto3"\s*;\s*package\s+[\w.]+\s*;')


def parse_proto(text: str) -> dict[str, MessageType]:
    """The messages of a proto3 file in the subset described above; ``ValueError`` for
    anything outside it (a line the reader would otherwise skip is a field lost)."""
    text = re.sub(r"//[^\n]*", "", text)
    header = _HEADER.match(text)
    if header is None:
        raise ValueError('expected syntax = "proto3" and a package')
    types: dict[str, MessageType] = {}
    pos = header.end()
    for match in _MESSAGE.finditer(text, pos):
        if text[pos : match.start()].strip():
            raise ValueError(f"unsupported text before message {match.group(1)}")
        pos = match.end()
        msg = MessageType(match.group(1))
        body = match.group(2)
        if _FIELD.sub("", body).strip():
            raise ValueError(f"message {msg.name}: unsupported declaration")
        for f in _FIELD.finditer(body):
            repeated, key_t, value_t, plain_t, name, number = f.groups()
            if key_t:
                fld = Field(name, int(number), key_t, repeated=True, map_value=value_t)
            else:
                fld = Field(name, int(number), plain_t, repeated=bool(repeated))
            if name in msg.by_name or fld.number in msg.by_number:
                raise ValueError(f"message {msg.name}: field {name} declared twice")
            msg.by_name[name] = fld
            msg.by_number[fld.number] = fld
        types[msg.name] = msg
    if text[pos:].strip():
        raise ValueError("unsupported text after the last message")
    for msg in types.values():
        for fld in msg.by_name.values():
            for type_ in (fld.type, fld.map_value):
                if type_ is not None and type_ not in SCALARS and type_ not in types:
                    raise ValueError(f"{msg.name}.{fld.name}: unknown type {type_}")
            if fld.map_value is not None and fld.type != "string":
                raise ValueError(f"{msg.name}.{fld.name}: map keys must be strings")
    return types


SCHEMA: dict[str, MessageType] = parse_proto(
    resources.files(__package__).joinpath("client.proto").read_text()
)
