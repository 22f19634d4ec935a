"""Property tests: whatever bytes a peer sends, the sans-I/O parsers answer with their own
documented errors (or events), never with an unexpected exception."""

from __future__ import annotations

import contextlib

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.exceptions import DecodeError, HttpError, InvalidPosition
from tidings.protocol.centrifuge import protobuf
from tidings.protocol.centrifuge.codec import JSON, PROTOBUF
from tidings.protocol.centrifuge.fossil import DeltaError, apply_delta
from tidings.protocol.http import RequestParser
from tidings.protocol.positions import parse_positions, parse_since
from tidings.protocol.websocket import WebSocketReader

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_http_parser_only_reports_http_errors(chunks):
    parser = RequestParser(max_header_bytes=512, max_body=256)
    for chunk in chunks:
        parser.feed(b"GET / HTTP/1.1\r\n" + chunk if chunk is chunks[0] else chunk)
    if parser.error is not None:
        assert isinstance(parser.error, HttpError)
        assert parser.error.status in (400, 413, 431)


@SETTINGS
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_websocket_reader_never_raises(chunks):
    reader = WebSocketReader(1024)
    for chunk in chunks:
        messages, out = reader.receive_data(chunk)
        assert isinstance(out, bytes)
        assert all(isinstance(m.data, bytes) for m in messages)
        if reader.closed:
            assert reader.close_code is not None
            break


@SETTINGS
@given(st.binary(max_size=400))
def test_protobuf_commands_decode_or_decode_error(data):
    try:
        commands = PROTOBUF.decode_commands(data)
    except DecodeError:
        return
    for command in commands:
        # Whatever decoded must encode again, to the same command.
        assert protobuf.decode("Command", protobuf.encode("Command", command)) == command


@SETTINGS
@given(st.lists(json_values, min_size=1, max_size=3))
def test_json_commands_decode_or_decode_error(values):
    frame = b"\n".join(orjson.dumps(v) for v in values)
    with contextlib.suppress(DecodeError):
        JSON.decode_commands(frame)


@SETTINGS
@given(st.integers(1, 1100), st.sampled_from([b"[", b'{"a":']), st.sampled_from(["rpc", "send"]))
def test_json_payloads_of_any_depth_decode_and_encode_again_or_decode_error(levels, opener, method):
    closer = b"]" if opener == b"[" else b"}"
    payload = opener * (levels - 1) + b"[]" + closer * (levels - 1)
    line = b'{"id":1,"' + method.encode() + b'":{"data":' + payload + b"}}"
    try:
        (command,) = JSON.decode_commands(line)
    except DecodeError:
        assert levels > 254
        return
    assert levels <= 254
    assert orjson.dumps(orjson.loads(command[method]["data"])) == payload


@SETTINGS
@given(st.binary(max_size=200))
def test_json_frames_of_raw_bytes(data):
    with contextlib.suppress(DecodeError):
        JSON.decode_commands(data)


@SETTINGS
@given(st.text(max_size=80))
def test_positions_parse_or_invalid_position(text):
    for parse in (parse_positions, lambda t: parse_since(t, ["a", "b:c"])):
        with contextlib.suppress(InvalidPosition):
            parse(text)


@SETTINGS
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_fossil_apply_of_garbage_raises_delta_error(source, delta):
    with contextlib.suppress(DeltaError):
        apply_delta(source, delta)
