"""Sans-I/O tests of the client protocol encodings (``codec.py``, ``protobuf.py``, ``schema.py``).

The Protobuf side is cross-checked against the classes generated from Centrifugo's own
``client.proto`` that ship with centrifuge-python: what we encode, they parse to the same
message, and the other way round.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from centrifuge.protocol import client_pb2 as pb
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tidings.exceptions import DecodeError
from tidings.protocol.centrifuge.codec import JSON, PROTOBUF
from tidings.protocol.centrifuge.protobuf import (
    CLASSES,
    ProtobufError,
    decode,
    decode_delimited,
    encode,
    encode_delimited,
)

# JSON: decoding commands


def test_json_decodes_newline_separated_commands() -> None:
    frame = (
        b'{"id":1,"connect":{"token":"t","data":{"a": [1, 2]},"name":"py"}}\n'
        b"\n"
        b"   \n"
        b'{"id":2,"subscribe":{"channel":"news","recover":true,"offset":5,"epoch":"e"}}\r\n'
        b'{"id":3,"publish":{"channel":"news","data":"text"}}\n'
    )
    assert JSON.decode_commands(frame) == [
        {"id": 1, "connect": {"token": "t", "data": b'{"a":[1,2]}', "name": "py"}},
        {"id": 2, "subscribe": {"channel": "news", "recover": True, "offset": 5, "epoch": "e"}},
        {"id": 3, "publish": {"channel": "news", "data": b'"text"'}},
    ]
    assert JSON.decode_commands(b"") == []
    assert JSON.decode_commands(b"\n\n") == []


def test_json_bytes_fields_become_raw_json_of_any_value() -> None:
    for value, raw in [
        ({"k": "v"}, b'{"k":"v"}'),
        ([1, "x"], b'[1,"x"]'),
        ("é\n", b'"\xc3\xa9\\n"'),
        (12.5, b"12.5"),
        (False, b"false"),
    ]:
        line = orjson.dumps({"id": 7, "rpc": {"method": "m", "data": value}})
        (cmd,) = JSON.decode_commands(line)
        assert cmd == {"id": 7, "rpc": {"method": "m", "data": raw}}
        assert orjson.loads(cmd["rpc"]["data"]) == value
        assert b"\n" not in cmd["rpc"]["data"]  # stays safe for newline framing


def test_json_decodes_maps_nested_messages_and_skips_unknown_fields_and_nulls() -> None:
    line = orjson.dumps(
        {
            "id": 1,
            "future_field": {"x": 1},
            "connect": {
                "token": None,
                "subs": {"a": {"recover": True, "offset": 3, "epoch": "e1"}, "b": {}},
                "headers": {"X-One": "1"},
                "unknown": [1, 2],
            },
        }
    )
    assert JSON.decode_commands(line) == [
        {
            "id": 1,
            "connect": {
                "subs": {"a": {"recover": True, "offset": 3, "epoch": "e1"}, "b": {}},
                "headers": {"X-One": "1"},
            },
        }
    ]
    (cmd,) = JSON.decode_commands(
        b'{"id":4,"history":{"channel":"c","limit":-1,"since":{"offset":2,"epoch":"x"},'
        b'"reverse":true}}'
    )
    assert cmd["history"] == {
        "channel": "c",
        "limit": -1,
        "since": {"offset": 2, "epoch": "x"},
        "reverse": True,
    }


def test_json_keeps_the_subscribe_flag_and_tags_filter() -> None:
    # The SDKs send ``flag`` (bit 2: reject an unrecoverable position) and may send ``tf``.
    (cmd,) = JSON.decode_commands(
        b'{"id":2,"subscribe":{"channel":"c","flag":3,"tf":{"key":"k","cmp":"eq","val":"v"}}}'
    )
    assert cmd["subscribe"]["flag"] == 3
    assert cmd["subscribe"]["tf"] == {"key": "k", "cmp": "eq", "val": "v"}


@pytest.mark.parametrize(
    "line",
    [
        b"{not json",
        b'{"id":1}{"id":2}',
        b"[1, 2]",
        b'"connect"',
        b"true",
        b'{"id":"1","ping":{}}',
        b'{"id":1.5,"ping":{}}',
        b'{"id":-1,"ping":{}}',
        b'{"id":true,"ping":{}}',
        b'{"id":4294967296,"ping":{}}',
        b'{"id":1,"subscribe":"news"}',
        b'{"id":1,"subscribe":{"channel":5}}',
        b'{"id":1,"subscribe":{"channel":"c","recover":"yes"}}',
        b'{"id":1,"subscribe":{"channel":"c","offset":-3}}',
        b'{"id":1,"subscribe":{"channel":"c","offset":18446744073709551616}}',
        b'{"id":1,"connect":{"subs":["a"]}}',
        b'{"id":1,"connect":{"subs":{"a":1}}}',
        b'{"id":1,"connect":{"headers":{"a":1}}}',
        b'{"id":1,"history":{"channel":"c","limit":2147483648}}',
        b'{"id":1,"history":{"channel":"c","since":5}}',
    ],
)
def test_json_type_errors_are_decode_errors(line: bytes) -> None:
    with pytest.raises(DecodeError):
        JSON.decode_commands(b'{"id":9,"ping":{}}\n' + line)


def test_json_emulation_request_carries_commands_as_a_string() -> None:
    body = orjson.dumps({"node": "n1", "session": "s1", "data": '{"id":1,"ping":{}}'})
    assert JSON.decode_emulation(body) == {
        "node": "n1",
        "session": "s1",
        "data": b'{"id":1,"ping":{}}',
    }
    for bad in (b"{", b"[]", b'{"session":"s","data":{"id":1}}', b'{"session":5,"data":""}'):
        with pytest.raises(DecodeError):
            JSON.decode_emulation(bad)


# JSON: encoding replies and pushes


def encoded(reply: dict[str, Any]) -> Any:
    raw = JSON.encode_reply(reply)
    assert b"\n" not in raw
    return orjson.loads(raw)


def test_json_encoding_omits_zero_values() -> None:
    assert JSON.encode_reply({"id": 1, "publish": {}}) == b'{"id":1,"publish":{}}'
    assert encoded(
        {
            "id": 2,
            "subscribe": {
                "recoverable": False,
                "epoch": "",
                "offset": 0,
                "publications": [],
                "positioned": True,
                "data": b"",
                "expires": None,
            },
        }
    ) == {"id": 2, "subscribe": {"positioned": True}}
    assert encoded({"id": 3, "connect": {"client": "c", "subs": {}, "ttl": 0, "pong": True}}) == {
        "id": 3,
        "connect": {"client": "c", "pong": True},
    }
    assert encoded({"id": 4, "error": {"code": 107, "message": "bad request"}}) == {
        "id": 4,
        "error": {"code": 107, "message": "bad request"},
    }


def test_json_always_writes_the_fields_centrifugo_always_writes() -> None:
    # ClientInfo user/client (even an anonymous user), presence stats counts, history's
    # publications/epoch/offset: the SDKs index these directly.
    assert encoded({"id": 1, "presence_stats": {}}) == {
        "id": 1,
        "presence_stats": {"num_clients": 0, "num_users": 0},
    }
    assert encoded({"id": 2, "history": {}}) == {
        "id": 2,
        "history": {"publications": [], "epoch": "", "offset": 0},
    }
    assert encoded({"id": 3, "presence": {}}) == {"id": 3, "presence": {"presence": {}}}
    assert encoded({"id": 4, "presence": {"presence": {"c1": {"client": "c1"}}}}) == {
        "id": 4,
        "presence": {"presence": {"c1": {"user": "", "client": "c1"}}},
    }
    join = {"channel": "ch", "join": {"info": {"user": "", "client": "c2"}}}
    assert orjson.loads(JSON.encode_push(join)) == join


def test_json_embeds_data_as_raw_json() -> None:
    pub = {
        "data": b'{"n":1,"s":"x"}',
        "offset": 3,
        "info": {"user": "u", "client": "c", "conn_info": b'{"name":"alice"}', "chan_info": b"7"},
        "tags": {"k": "v"},
    }
    raw = JSON.encode_reply({"push": {"channel": "news", "pub": pub}})
    assert raw.startswith(b'{"push":{"channel":"news","pub":{"data":{"n":1,"s":"x"},')
    assert orjson.loads(raw)["push"]["pub"] == {
        "data": {"n": 1, "s": "x"},
        "offset": 3,
        "info": {"user": "u", "client": "c", "conn_info": {"name": "alice"}, "chan_info": 7},
        "tags": {"k": "v"},
    }
    # Unidirectional transports: the bare push, no Reply wrapper.
    assert orjson.loads(JSON.encode_push({"channel": "news", "pub": pub}))["pub"]["offset"] == 3
    assert JSON.encode_push({}) == b"{}"


def test_json_join_and_payloads() -> None:
    assert JSON.join([b'{"id":1}', b'{"id":2}']) == b'{"id":1}\n{"id":2}'
    assert JSON.join([b"{}"]) == b"{}"
    assert JSON.payload(b'{"a":1}', True) == b'{"a":1}'
    assert JSON.payload("tëxt".encode(), False) == orjson.dumps("tëxt")
    assert orjson.loads(JSON.payload(b"\xff\x00", False)) == {"base64": "/wA="}
    assert PROTOBUF.payload(b"\xff\x00", False) == b"\xff\x00"


# Protobuf: against our own schema

CONNECT_CMD: dict[str, Any] = {
    "id": 1,
    "connect": {
        "token": "tok",
        "data": b"\x00\xffbinary",
        "subs": {
            "news": {"recover": True, "offset": 2**40, "epoch": "ep"},
            "chat": {"recover": True},
        },
        "name": "js",
        "version": "5.0",
        "headers": {"X-A": "1", "X-B": ""},
    },
}

CONNECT_REPLY: dict[str, Any] = {
    "id": 1,
    "connect": {
        "client": "cid",
        "version": "0.1",
        "expires": True,
        "ttl": 3600,
        "subs": {
            "news": {
                "recoverable": True,
                "epoch": "ep",
                "offset": 7,
                "recovered": True,
                "was_recovering": True,
                "positioned": True,
                "publications": [
                    {
                        "data": b'{"n":6}',
                        "offset": 6,
                        "tags": {"a": "1", "b": "2"},
                        "info": {"user": "u", "client": "c", "conn_info": b"{}"},
                    },
                    {"data": b'{"n":7}', "offset": 7, "time": -5},
                ],
            }
        },
        "ping": 25,
        "pong": True,
        "session": "s",
        "node": "n",
    },
}

PRESENCE_REPLY: dict[str, Any] = {
    "id": 3,
    "presence": {
        "presence": {
            "c1": {"user": "u1", "client": "c1", "chan_info": b'{"x":1}'},
            "c2": {"user": "u2", "client": "c2"},
        }
    },
}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Command", CONNECT_CMD),
        ("Reply", CONNECT_REPLY),
        ("Reply", PRESENCE_REPLY),
        ("Command", {"id": 5, "history": {"channel": "c", "limit": -1, "reverse": True}}),
        ("Reply", {"push": {"id": -3, "channel": "c", "unsubscribe": {"code": 2000}}}),
        ("Reply", {"id": 9, "error": {"code": 100, "message": "oops", "temporary": True}}),
        ("Reply", {"id": 2**32 - 1, "ping": {}}),
    ],
)
def test_protobuf_round_trip(name: str, message: dict[str, Any]) -> None:
    assert decode(name, encode(name, message)) == message


def test_protobuf_omits_zero_values() -> None:
    assert encode("Reply", {"id": 0, "ping": {}}) == b"\x62\x00"
    assert encode("SubscribeResult", {"recoverable": False, "epoch": "", "offset": 0}) == b""
    assert encode("Publication", {"data": b"", "tags": {}}) == b""
    # The empty reply (a ping) is a zero-length message: one byte on the wire (§12.2).
    assert PROTOBUF.encode_reply({}) == b"\x00"


def test_protobuf_negative_int32_takes_ten_bytes() -> None:
    raw = encode("HistoryRequest", {"limit": -1})
    assert raw == b"\x38" + b"\xff" * 9 + b"\x01"
    assert decode("HistoryRequest", raw) == {"limit": -1}
    assert decode("HistoryRequest", encode("HistoryRequest", {"limit": -(2**31)})) == {
        "limit": -(2**31)
    }


def test_protobuf_skips_unknown_fields_of_every_wire_type() -> None:
    known = encode("PublishRequest", {"channel": "c", "data": b"d"})
    unknown = (
        b"\xf8\x01\x96\x01"  # field 31, varint 150
        + b"\xf9\x01"
        + b"\x01" * 8  # field 31, fixed64
        + b"\xfa\x01\x03abc"  # field 31, length-delimited
        + b"\xfd\x01"
        + b"\x02" * 4  # field 31, fixed32
    )
    assert decode("PublishRequest", unknown + known + unknown) == {"channel": "c", "data": b"d"}


def test_protobuf_skips_known_fields_of_the_wrong_wire_type() -> None:
    # As the reference implementation does: such a field is an unknown one.
    for raw in (b"\x08\x01", b"\x0d\x01\x02\x03\x04", b"\x0b\x08\x01\x0c"):
        assert decode("PublishRequest", raw + b"\x12\x01d") == {"data": b"d"}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x0a\x05abc", "a length past the end"),
        (b"\x0a", "a key without its value"),
        (b"\x08\x80", "a varint cut short"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "a varint longer than ten bytes"),
        (b"\xf9\x01\x00\x00", "fixed64 cut short"),
        (b"\xfd\x01\x00", "fixed32 cut short"),
        (b"\x0b", "a group (wire type 3) never ended"),
        (b"\x0c", "the end of a group never started"),
        (b"\x0e", "wire type 6"),
        (b"\x0f", "wire type 7"),
        (b"\x00\x01", "field number 0"),
        (b"\x0a\x02\xc3\x28", "a string that is not UTF-8"),
    ],
)
def test_protobuf_malformed_input_raises(raw: bytes, why: str) -> None:
    with pytest.raises(ProtobufError):
        decode("PublishRequest", raw)


def test_protobuf_every_truncation_of_a_frame_raises() -> None:
    frame = encode_delimited("Command", CONNECT_CMD)
    for cut in range(1, len(frame)):
        with pytest.raises(ProtobufError):
            decode_delimited("Command", frame[:cut])
        with pytest.raises(DecodeError):
            PROTOBUF.decode_commands(frame[:cut])


def test_protobuf_varint_delimited_frames() -> None:
    big = {"id": 300, "rpc": {"data": b"x" * 200}}
    frame = PROTOBUF.join(
        [
            PROTOBUF.encode_reply({"id": 1, "publish": {}}),
            PROTOBUF.encode_reply({}),
            encode_delimited("Reply", big),
        ]
    )
    body = encode("Reply", big)
    assert len(body) > 127
    assert frame.endswith(bytes([len(body) & 0x7F | 0x80, len(body) >> 7]) + body)
    assert decode_delimited("Reply", frame) == [{"id": 1, "publish": {}}, {}, big]
    assert decode_delimited("Reply", b"") == []
    assert PROTOBUF.decode_commands(encode_delimited("Command", CONNECT_CMD) * 2) == [
        CONNECT_CMD,
        CONNECT_CMD,
    ]
    push = PROTOBUF.encode_push({"channel": "c", "pub": {"data": b"\x01", "offset": 1}})
    assert decode_delimited("Push", push) == [
        {"channel": "c", "pub": {"data": b"\x01", "offset": 1}}
    ]


def test_protobuf_emulation_request() -> None:
    inner = encode_delimited("Command", {"id": 1, "ping": {}})
    body = encode("EmulationRequest", {"node": "n", "session": "s", "data": inner})
    assert PROTOBUF.decode_emulation(body) == {"node": "n", "session": "s", "data": inner}
    with pytest.raises(DecodeError):
        PROTOBUF.decode_emulation(b"\x0a\x09n")


# Protobuf: cross-checked with the generated classes of centrifuge-python


def to_pb(value: dict[str, Any], msg: Message) -> Message:
    """Fill ``msg`` (a generated message) from one of our dicts."""
    for key, item in value.items():
        fld = msg.DESCRIPTOR.fields_by_name[key]
        target = getattr(msg, key)
        if fld.message_type is not None and fld.message_type.GetOptions().map_entry:
            value_fld = fld.message_type.fields_by_name["value"]
            for map_key, map_value in item.items():
                if value_fld.message_type is not None:
                    to_pb(map_value, target[map_key])
                else:
                    target[map_key] = map_value
        elif fld.is_repeated:
            for element in item:
                if fld.message_type is not None:
                    to_pb(element, target.add())
                else:
                    target.append(element)
        elif fld.message_type is not None:
            target.SetInParent()
            to_pb(item, target)
        else:
            setattr(msg, key, item)
    return msg


def from_pb(msg: Message) -> dict[str, Any]:
    """One of our dicts from a generated message: the fields it has set."""
    out: dict[str, Any] = {}
    for fld, item in msg.ListFields():
        if fld.message_type is not None and fld.message_type.GetOptions().map_entry:
            value_fld = fld.message_type.fields_by_name["value"]
            out[fld.name] = {
                k: from_pb(v) if value_fld.message_type is not None else v for k, v in item.items()
            }
        elif fld.is_repeated:
            out[fld.name] = [from_pb(v) if fld.message_type is not None else v for v in item]
        elif fld.type == FieldDescriptor.TYPE_MESSAGE:
            out[fld.name] = from_pb(item)
        else:
            out[fld.name] = item
    return out


CROSS = [
    (pb.Command, CONNECT_CMD),
    (pb.Reply, CONNECT_REPLY),
    (pb.Reply, PRESENCE_REPLY),
    (pb.Command, {"id": 2, "history": {"channel": "c", "limit": -1, "since": {"offset": 4}}}),
    (pb.Command, {"id": 3, "subscribe": {"channel": "c", "delta": "fossil", "flag": 3}}),
    (pb.Command, {"id": 4, "rpc": {"method": "m", "data": b"\x00\x01"}}),
    (pb.Command, {"id": 5, "sub_refresh": {"channel": "$c", "token": "t"}}),
    (pb.Reply, {"id": 6, "history": {"publications": [{"data": b"1", "offset": 1}], "epoch": "e"}}),
    (pb.Reply, {"id": 7, "presence_stats": {"num_clients": 3, "num_users": 2}}),
    (pb.Reply, {"id": 8, "refresh": {"client": "c", "expires": True, "ttl": 10}}),
    (pb.Reply, {"push": {"channel": "c", "join": {"info": {"user": "u", "client": "c"}}}}),
    (pb.Reply, {"push": {"channel": "c", "subscribe": {"recoverable": True, "offset": 3}}}),
    (pb.Reply, {"push": {"disconnect": {"code": 3503, "reason": "force"}}}),
    (pb.Reply, {"push": {"channel": "c", "pub": {"data": b"\xff", "offset": 2**63}}}),
    (pb.Reply, {"push": {"connect": {"client": "c", "subs": {"a": {"epoch": "e"}}}}}),
    (pb.Reply, {"push": {"refresh": {"expires": True, "ttl": 5}}}),
    (pb.Reply, {"push": {"message": {"data": b"m"}}}),
]


@pytest.mark.parametrize(("cls", "message"), CROSS)
def test_protobuf_ours_parsed_by_theirs(cls: type[Message], message: dict[str, Any]) -> None:
    name = cls.DESCRIPTOR.name
    theirs = cls()
    theirs.ParseFromString(encode(name, message))
    assert from_pb(theirs) == message
    assert theirs == to_pb(message, cls())


@pytest.mark.parametrize(("cls", "message"), CROSS)
def test_protobuf_theirs_parsed_by_ours(cls: type[Message], message: dict[str, Any]) -> None:
    name = cls.DESCRIPTOR.name
    raw = to_pb(message, cls()).SerializeToString()
    assert decode(name, raw) == message
    assert decode_delimited(name, encode_delimited(name, message) * 2) == [message, message]


def test_protobuf_fields_we_do_not_know_are_skipped() -> None:
    # Fields of newer protocol versions than ours (SubscribeResult.id, ConnectRequest.flag,
    # Publication.delta on a command) don't break decoding.
    cmd = pb.Command(id=1, connect=pb.ConnectRequest(token="t", flag=1))
    assert decode("Command", cmd.SerializeToString()) == {"id": 1, "connect": {"token": "t"}}
    result = pb.SubscribeResult(id=5, recoverable=True)
    assert decode("SubscribeResult", result.SerializeToString()) == {"recoverable": True}


def test_protobuf_classes_match_the_official_schema() -> None:
    # Every field we build from client.proto has the name, number, type and cardinality of
    # the same field in Centrifugo's own schema (as generated for centrifuge-python).
    for name, cls in CLASSES.items():
        theirs = pb.DESCRIPTOR.message_types_by_name[name]
        for fld in cls.DESCRIPTOR.fields:
            other = theirs.fields_by_number[fld.number]
            assert (other.name, other.type, other.is_repeated) == (
                fld.name,
                fld.type,
                fld.is_repeated,
            ), f"{name}.{fld.name}"
            if fld.message_type is not None:
                assert other.message_type.name == fld.message_type.name or (
                    fld.message_type.GetOptions().map_entry
                    and other.message_type.GetOptions().map_entry
                ), f"{name}.{fld.name}"
            if fld.message_type is not None and fld.message_type.GetOptions().map_entry:
                for part in ("key", "value"):
                    mine = fld.message_type.fields_by_name[part]
                    them = other.message_type.fields_by_name[part]
                    assert mine.type == them.type
                    if mine.message_type is not None:
                        assert mine.message_type.name == them.message_type.name
