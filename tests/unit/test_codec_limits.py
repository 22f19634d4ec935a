"""Hostile input to the client-protocol decoders: lengths that lie, malformed varints and
wire types, deep nesting, and JSON payloads deeper than the JSON encoding can carry.

Each case is decoded under ``tracemalloc``: what a decoder allocates must stay within a
small multiple of the bytes it was given, whatever lengths those bytes claim.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from collections.abc import Callable

import orjson
import pytest

from tidings.exceptions import DecodeError, InvalidPayload
from tidings.protocol.centrifuge.codec import JSON, PROTOBUF
from tidings.protocol.centrifuge.protobuf import encode, encode_delimited, varint
from tidings.protocol.centrifuge.schema import MAX_DEPTH
from tidings.protocol.envelope import MAX_JSON_DEPTH, check_json_payload, json_payload
from tidings.server.centrifuge_uni import connect_request


def fld(number: int, wire: int, payload: bytes = b"") -> bytes:
    """One field (https://protobuf.dev/programming-guides/encoding/#structure): the key
    varint, then a length prefix for wire type 2 (LEN)."""
    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def delimited(body: bytes) -> bytes:
    return varint(len(body)) + body


def peak_allocated(decode: Callable[[bytes], object], data: bytes) -> int:
    """Peak bytes allocated while decoding (``DecodeError`` or not)."""
    tracemalloc.start()
    try:
        decode(data)
    except DecodeError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# Protobuf: the finding's frame, and lengths that lie everywhere a length is written

ATTACK = bytes.fromhex("0b080122071a050880a3c347")


def test_the_reported_frame_allocates_nothing_in_proportion_to_its_lengths() -> None:
    # Command{id: 1, connect: {subs: {entry whose key is a varint of 150,000,000}}}: the
    # entry's key has the wrong wire type, so the entry is dropped, not materialised.
    assert PROTOBUF.decode_commands(ATTACK) == [{"id": 1, "connect": {}}]
    assert peak_allocated(PROTOBUF.decode_commands, ATTACK) < 64 * 1024


HUGE = 150_000_000


def lying(length: int) -> dict[str, bytes]:
    """Frames that each write ``length`` where the bytes that follow are far fewer."""
    big = varint(length)
    return {
        "the frame's message length": big + b"\x08\x01",
        "a nested message's length": delimited(b"\x2a" + big + b"\x0a\x00"),
        "a string's length": delimited(fld(7, 2, b"\x0a" + big)),
        "a map entry's length": delimited(fld(4, 2, b"\x1a" + big + b"\x0a\x00")),
        "a map entry's key length": delimited(fld(4, 2, fld(3, 2, b"\x0a" + big))),
        "a map entry's value length": delimited(fld(4, 2, fld(3, 2, b"\x0a\x01k\x12" + big))),
        "a repeated element's length": delimited(
            fld(5, 2, fld(13, 2, fld(5, 2, b"a") + b"\x2a" + big))
        ),
        "an unknown field's length": delimited(b"\xfa\x01" + big + b"x"),
        "an emulation request's data length": b"\x1a" + big,
    }


LYING = {
    f"{name}, {length:#x}": frame
    for length in (HUGE, 2**31, 2**64 - 1)
    for name, frame in lying(length).items()
}


@pytest.mark.parametrize("frame", LYING.values(), ids=LYING.keys())
def test_a_length_past_the_end_is_a_decode_error_and_allocates_nothing(frame: bytes) -> None:
    decode = PROTOBUF.decode_emulation if frame.startswith(b"\x1a") else PROTOBUF.decode_commands
    with pytest.raises(DecodeError):
        decode(frame)
    assert peak_allocated(decode, frame) < 64 * 1024


CHILD = """
import resource, sys
from google.protobuf.message import DecodeError
from tidings.protocol.centrifuge.protobuf import CLASSES, encode

def failure(frame):
    try:
        CLASSES["Command"].FromString(frame)
    except DecodeError as exc:
        return str(exc).lower()
    return "decoded"

control = encode("Command", {"publish": {"data": b"x" * 100 * 2**20}})
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 64 * 2**20, resource.RLIM_INFINITY))
# The limit holds: a real 100 MB payload can't be copied any more.
assert "alloc" in failure(control), failure(control)
for frame in sys.stdin.read().split():
    why = failure(bytes.fromhex(frame))
    assert "corrupt" in why and "alloc" not in why, (frame, why)
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_lengths_are_checked_before_upb_allocates() -> None:
    # tracemalloc doesn't see upb's allocations (C arenas). A child process whose address
    # space can't hold what the lengths claim decodes every lying Command: had upb
    # allocated first, it would fail for want of memory, not find the bytes corrupt.
    frames = lying(2**31)
    bodies = [
        frame[1:]  # each body is shorter than 128 bytes: a one-byte length prefix
        for name, frame in frames.items()
        if name not in ("the frame's message length", "an emulation request's data length")
    ]
    assert all(len(body) < 128 for body in bodies)
    child = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=" ".join(body.hex() for body in bodies),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.stdout.strip() == "ok", child.stderr[-2000:]


MALFORMED = {
    "a truncated varint length": b"\x80",
    "an eleven-byte varint length": b"\xff" * 10 + b"\x01",
    "an eleven-byte varint value": delimited(b"\x08" + b"\xff" * 10 + b"\x01"),
    "a truncated key": delimited(b"\x80"),
    "field number 0": delimited(b"\x00\x01"),
    "wire type 6": delimited(b"\x0e"),
    "wire type 7": delimited(b"\x0f"),
    "a group never ended": delimited(b"\xfb\x01\x08\x01"),
    "a group ended twice": delimited(b"\xfb\x01\xfc\x01\xfc\x01"),
    "a string that is not UTF-8": delimited(fld(7, 2, fld(1, 2, b"\xc3\x28"))),
    "a map key that is not UTF-8": delimited(fld(4, 2, fld(6, 2, fld(1, 2, b"\xff")))),
    "a repeated string that is not UTF-8": delimited(
        fld(5, 2, fld(13, 2, fld(5, 2, b"ok") + fld(5, 2, b"\xff")))
    ),
}


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_are_decode_errors(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        PROTOBUF.decode_commands(frame)


WRONG_WIRE_TYPES = {
    # Where the schema says message, string, map or repeated, these carry something else;
    # each such field is skipped as an unknown one (the old decoder raised TypeError).
    "a varint where a message is expected": fld(4, 0, varint(5)),
    "fixed32 where a message is expected": fld(4, 5, b"1234"),
    "a varint as a map entry's value": fld(4, 2, fld(3, 2, fld(1, 2, b"a") + fld(2, 0, b"\x05"))),
    "a varint as a map entry's key": fld(4, 2, fld(3, 2, fld(1, 0, varint(HUGE)))),
    "a packed list for a singular varint": fld(1, 2, b"\x01\x02"),
    "a varint in a repeated string": fld(5, 2, fld(13, 2, fld(5, 0, b"\x01"))),
}


@pytest.mark.parametrize("body", WRONG_WIRE_TYPES.values(), ids=WRONG_WIRE_TYPES.keys())
def test_wrong_wire_types_are_skipped_and_the_rest_encodes_again(body: bytes) -> None:
    (command,) = PROTOBUF.decode_commands(delimited(body + fld(1, 0, b"\x09")))
    assert command["id"] == 9
    assert "subs" not in command.get("connect", {})
    encode("Command", command)


def filter_node(depth: int) -> bytes:
    """A SubscribeRequest.tf of ``depth`` FilterNodes, each the only child of the last."""
    node = b""
    for _ in range(depth - 1):
        node = fld(6, 2, node)
    return fld(5, 2, fld(13, 2, node))


def json_filter_node(depth: int) -> bytes:
    node = b'{"nodes":[' * (depth - 1) + b"{}" + b"]}" * (depth - 1)
    return b'{"id":1,"subscribe":{"channel":"c","tf":' + node + b"}}"


def test_messages_nest_at_most_max_depth() -> None:
    # Command (0) > SubscribeRequest (1) > FilterNode (2) > ...: MAX_DEPTH is the deepest,
    # in both encodings.
    (command,) = PROTOBUF.decode_commands(delimited(filter_node(MAX_DEPTH - 1)))
    assert "tf" in command["subscribe"]
    (command,) = JSON.decode_commands(json_filter_node(MAX_DEPTH - 1))
    assert "tf" in command["subscribe"]
    for depth in (MAX_DEPTH, 100, 10_000):
        with pytest.raises(DecodeError):
            PROTOBUF.decode_commands(delimited(filter_node(depth)))
    for depth in (MAX_DEPTH, 100, 400):
        with pytest.raises(DecodeError):
            JSON.decode_commands(json_filter_node(depth))


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00" * 4096,  # 4,096 empty commands
        delimited(fld(5, 2, fld(13, 2, b"\x32\x00" * 2048))),  # 2,048 empty FilterNodes
        delimited(fld(5, 2, fld(13, 2, b"\x2a\x02ab" * 1024))),  # 1,024 strings
        delimited(fld(4, 2, b"".join(fld(3, 2, fld(1, 2, b"%03d" % i)) for i in range(1000)))),
    ],
    ids=["empty commands", "empty nodes", "strings", "map entries"],
)
def test_memory_stays_proportional_to_the_frame(frame: bytes) -> None:
    # The worst ratios the fuzz targets found are near one dict (~64 bytes) per input byte.
    assert PROTOBUF.decode_commands(frame)
    assert peak_allocated(PROTOBUF.decode_commands, frame) < 100 * len(frame) + 64 * 1024


# JSON payloads: at most MAX_JSON_DEPTH levels, in both encodings


def nested(levels: int, kind: str) -> bytes:
    if kind == "arrays":
        return b"[" * levels + b"]" * levels
    return b'{"a":' * (levels - 1) + b"{}" + b"}" * (levels - 1)


LEVELS = [(254, True), (255, False), (1024, False), (1025, False)]


@pytest.mark.parametrize("kind", ["arrays", "objects"])
@pytest.mark.parametrize(("levels", "accepted"), LEVELS)
def test_json_commands_carry_payloads_of_at_most_254_levels(
    levels: int, accepted: bool, kind: str
) -> None:
    payload = nested(levels, kind)
    for line in (
        b'{"id":1,"publish":{"channel":"c","data":' + payload + b"}}",
        b'{"id":2,"connect":{"subs":{"c":{"data":' + payload + b"}}}}",
        b'{"id":3,"rpc":{"data":' + payload + b"}}",
    ):
        if accepted:
            (command,) = JSON.decode_commands(line)
            request = (
                command.get("publish") or command.get("rpc") or command["connect"]["subs"]["c"]
            )
            assert request["data"] == payload
            encode("Command", command)
        else:
            with pytest.raises(DecodeError):
                JSON.decode_commands(line)
    uni = b'{"subs":{"c":{"data":' + payload + b"}}}"
    if accepted:
        assert connect_request(uni)["subs"]["c"]["data"] == payload
    else:
        with pytest.raises(DecodeError):
            connect_request(uni)


@pytest.mark.parametrize("kind", ["arrays", "objects"])
@pytest.mark.parametrize(("levels", "accepted"), LEVELS)
def test_protobuf_payloads_that_are_json_are_held_to_the_same_depth(
    levels: int, accepted: bool, kind: str
) -> None:
    payload = nested(levels, kind)
    for command in (
        {"id": 1, "publish": {"channel": "c", "data": payload}},
        {"id": 2, "connect": {"subs": {"c": {"data": payload}}}},
        {"id": 3, "send": {"data": payload}},
    ):
        frame = encode_delimited("Command", command)
        if levels == 1025:
            # Not JSON to orjson (too deep to read at all): an opaque binary payload, which
            # JSON clients receive as a JSON string.
            assert PROTOBUF.decode_commands(frame) == [command]
            assert orjson.loads(JSON.payload(payload, False)) == payload.decode()
        elif accepted:
            assert PROTOBUF.decode_commands(frame) == [command]
        else:
            with pytest.raises(DecodeError):
                PROTOBUF.decode_commands(frame)


def test_json_payload_helper() -> None:
    for levels in (1, 254):
        for kind in ("arrays", "objects"):
            value = orjson.loads(nested(levels, kind))
            assert json_payload(value) == nested(levels, kind)
            check_json_payload(nested(levels, kind))
    for levels in (255, 1024):
        for kind in ("arrays", "objects"):
            with pytest.raises(InvalidPayload):
                json_payload(orjson.loads(nested(levels, kind)))
            with pytest.raises(InvalidPayload):
                check_json_payload(nested(levels, kind))
    assert MAX_JSON_DEPTH == 254
    # Bytes that are not JSON pass, however many brackets they hold.
    check_json_payload(nested(1025, "arrays"))
    check_json_payload(b"[" * 300)
    check_json_payload(b'"' + b"[" * 300 + b'"')
