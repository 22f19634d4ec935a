"""The two encodings of the client protocol: JSON and Protobuf, behind one interface.

Commands decode to dicts keyed by field name, with every ``bytes`` field of the schema as
``bytes`` (in JSON the raw JSON text of the value, since JSON mode embeds payloads as JSON).
Replies are dicts of the same shape. JSON frames hold newline-separated objects; Protobuf
frames hold varint-delimited messages.

Whatever a client sends either decodes to commands that encode again, in either encoding,
or raises ``DecodeError``. The limits are the same in both encodings: messages nest at most
``schema.MAX_DEPTH`` deep, and a payload (a ``bytes`` field) that is JSON nests at most
``envelope.MAX_JSON_DEPTH`` (254) levels of arrays and objects, the deepest orjson encodes
(JSON clients receive every payload as JSON).
"""

from __future__ import annotations

from typing import Any

import orjson

from tidings.exceptions import DecodeError, InvalidPayload
from tidings.protocol.envelope import json_payload, payload_json

from . import protobuf
from .protobuf import ProtobufError
from .schema import MAX_DEPTH, SCALARS, SCHEMA, MessageType

__all__ = [
    "ALWAYS",
    "JSON",
    "PROTOBUF",
    "Codec",
    "JsonCodec",
    "ProtobufCodec",
]

_SCHEMA = SCHEMA


class Codec:
    name = ""
    binary = False

    def decode_commands(self, data: bytes) -> list[dict[str, Any]]:
        raise NotImplementedError

    def encode_reply(self, reply: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def encode_push(self, push: dict[str, Any]) -> bytes:
        """A push without the Reply wrapper (unidirectional transports)."""
        raise NotImplementedError

    def join(self, replies: list[bytes]) -> bytes:
        raise NotImplementedError

    def payload(self, data: bytes, is_json: bool) -> bytes:
        """A publication payload as this encoding carries it in a ``bytes`` field."""
        raise NotImplementedError

    def decode_emulation(self, body: bytes) -> dict[str, Any]:
        raise NotImplementedError


def _from_json(msg: MessageType, value: Any, depth: int = 0) -> dict[str, Any]:
    """Check a parsed JSON object against the schema; ``bytes`` fields become raw JSON."""
    if not isinstance(value, dict):
        raise DecodeError("expected an object")
    if depth > MAX_DEPTH:
        raise DecodeError("message nested too deeply")
    out: dict[str, Any] = {}
    for key, item in value.items():
        fld = msg.by_name.get(key)
        if fld is None or item is None:
            continue
        if fld.map_value is not None:
            if not isinstance(item, dict):
                raise DecodeError(f"{key}: expected an object")
            out[key] = {k: _json_value(fld.map_value, v, depth) for k, v in item.items()}
        elif fld.repeated:
            if not isinstance(item, list):
                raise DecodeError(f"{key}: expected a list")
            out[key] = [_json_value(fld.type, v, depth) for v in item]
        else:
            out[key] = _json_value(fld.type, item, depth)
    return out


# What each integer type holds (Centrifugo's JSON decoding refuses anything outside).
_INT_RANGES = {
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "sint64": (-(2**63), 2**63 - 1),
}


def _json_value(type_: str, value: Any, depth: int) -> Any:
    if type_ == "bytes":
        try:
            return json_payload(value)
        except InvalidPayload as exc:
            raise DecodeError(str(exc)) from None
    if type_ == "string":
        if not isinstance(value, str):
            raise DecodeError("expected a string")
        return value
    if type_ == "bool":
        if not isinstance(value, bool):
            raise DecodeError("expected true or false")
        return value
    bounds = _INT_RANGES.get(type_)
    if bounds is not None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise DecodeError("expected an integer")
        if not bounds[0] <= value <= bounds[1]:
            raise DecodeError(f"{type_} out of range")
        return value
    return _from_json(_SCHEMA[type_], value, depth + 1)


# Fields written even when zero, as Centrifugo's JSON does (the SDKs index them directly),
# with the zero value to write: message name -> field -> value.
ALWAYS: dict[str, dict[str, Any]] = {
    "ClientInfo": {"user": "", "client": ""},
    "PresenceStatsResult": {"num_clients": 0, "num_users": 0},
    "PresenceResult": {"presence": {}},
    "HistoryResult": {"publications": [], "epoch": "", "offset": 0},
}


def _to_json(msg: MessageType, value: dict[str, Any]) -> dict[str, Any]:
    """Prepare a reply for orjson: zero values omitted (except ``ALWAYS``), ``bytes``
    fields embedded as raw JSON."""
    always = ALWAYS.get(msg.name, {})
    out: dict[str, Any] = {k: v for k, v in always.items() if value.get(k) is None}
    for key, item in value.items():
        if item is None:
            continue
        fld = msg.by_name[key]
        if not item and key not in always and (fld.repeated or fld.type in SCALARS):
            continue  # zero values (and empty lists and maps) are omitted
        if fld.map_value is not None:
            out[key] = {k: _json_out(fld.map_value, v) for k, v in item.items()}
        elif fld.repeated:
            out[key] = [_json_out(fld.type, v) for v in item]
        else:
            out[key] = _json_out(fld.type, item)
    return out


def _json_out(type_: str, value: Any) -> Any:
    if type_ == "bytes":
        return orjson.Fragment(value)
    if type_ in SCALARS:
        return value
    return _to_json(_SCHEMA[type_], value)


class JsonCodec(Codec):
    name = "json"
    binary = False

    def decode_commands(self, data: bytes) -> list[dict[str, Any]]:
        commands = []
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise DecodeError("malformed JSON") from None
            commands.append(_from_json(_SCHEMA["Command"], parsed))
        return commands

    def encode_reply(self, reply: dict[str, Any]) -> bytes:
        return orjson.dumps(_to_json(_SCHEMA["Reply"], reply))

    def encode_push(self, push: dict[str, Any]) -> bytes:
        """A push without the Reply wrapper (unidirectional transports)."""
        return orjson.dumps(_to_json(_SCHEMA["Push"], push))

    def join(self, replies: list[bytes]) -> bytes:
        return b"\n".join(replies)

    def payload(self, data: bytes, is_json: bool) -> bytes:
        return payload_json(data, is_json)

    def decode_emulation(self, body: bytes) -> dict[str, Any]:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise DecodeError("malformed JSON") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("data", ""), str):
            raise DecodeError("bad emulation request")
        req = _from_json(_SCHEMA["EmulationRequest"], {**parsed, "data": None})
        req["data"] = parsed.get("data", "").encode()
        return req


class ProtobufCodec(Codec):
    name = "protobuf"
    binary = True

    def decode_commands(self, data: bytes) -> list[dict[str, Any]]:
        try:
            return protobuf.decode_delimited("Command", data)
        except ProtobufError as exc:
            raise DecodeError(str(exc)) from None

    def encode_reply(self, reply: dict[str, Any]) -> bytes:
        return protobuf.encode_delimited("Reply", reply)

    def encode_push(self, push: dict[str, Any]) -> bytes:
        return protobuf.encode_delimited("Push", push)

    def join(self, replies: list[bytes]) -> bytes:
        return b"".join(replies)

    def payload(self, data: bytes, is_json: bool) -> bytes:
        return data

    def decode_emulation(self, body: bytes) -> dict[str, Any]:
        try:
            return protobuf.decode("EmulationRequest", body)
        except ProtobufError as exc:
            raise DecodeError(str(exc)) from None


JSON = JsonCodec()
PROTOBUF = ProtobufCodec()
