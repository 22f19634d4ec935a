import base64
import os
import struct

import pytest

from tidings.exceptions import WebSocketError
from tidings.protocol.http import RequestParser
from tidings.protocol.websocket import (
    WebSocketReader,
    accept_response,
    check_handshake,
    close_frame,
    text_frame,
)


def client_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """A client frame per RFC 6455 §5.2 (test helper: the server never builds masked ones)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def handshake(**overrides: str) -> bytes:
    headers = {
        "Host": "h",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
        "Sec-WebSocket-Version": "13",
    }
    headers.update(overrides)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if v is not None)
    return f"GET /ws/x HTTP/1.1\r\n{lines}\r\n".encode()


def request(**overrides: str):
    parser = RequestParser()
    parser.feed(handshake(**overrides))
    return parser.requests[0]


def test_handshake_accept_key_rfc6455_example():
    # RFC 6455 §1.3: this key must be answered with this accept value.
    key = check_handshake(request(**{"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}))
    response = accept_response(key)
    assert response.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in response


@pytest.mark.parametrize(
    "overrides",
    [
        {"Upgrade": "h2c"},
        {"Connection": "keep-alive"},
        {"Sec-WebSocket-Version": "8"},
        {"Sec-WebSocket-Key": "short"},
        {"Sec-WebSocket-Key": "!!!notbase64!!!!!!!!!!!!"},
    ],
)
def test_bad_handshakes_are_refused(overrides):
    with pytest.raises(WebSocketError):
        check_handshake(request(**overrides))


def test_text_and_binary_messages():
    reader = WebSocketReader(1024)
    msgs, out = reader.receive_data(client_frame(1, b"hi") + client_frame(2, b"\x00\x01"))
    assert [(m.data, m.text) for m in msgs] == [(b"hi", True), (b"\x00\x01", False)]
    assert out == b""


def test_fragmented_message_is_reassembled_with_a_ping_between():
    reader = WebSocketReader(1024)
    data = client_frame(1, b"hel", fin=False) + client_frame(9, b"p") + client_frame(0, b"lo")
    msgs, out = reader.receive_data(data)
    assert [m.data for m in msgs] == [b"hello"]
    assert out == b"\x8a\x01p"  # the pong, unmasked (§5.5.3)


def test_invalid_utf8_fails_with_1007():
    reader = WebSocketReader(1024)
    msgs, out = reader.receive_data(client_frame(1, b"\xff\xfe"))
    assert msgs == []
    assert reader.closed and reader.close_code == 1007
    assert out[:1] == b"\x88" and out[2:4] == struct.pack("!H", 1007)


def test_utf8_split_across_fragments_is_valid():
    reader = WebSocketReader(1024)
    euro = "€".encode()
    msgs, _ = reader.receive_data(client_frame(1, euro[:1], fin=False) + client_frame(0, euro[1:]))
    assert msgs[0].data.decode() == "€"


def test_message_over_max_size_fails_with_1009():
    reader = WebSocketReader(16)
    reader.receive_data(client_frame(1, b"x" * 17))
    assert reader.closed and reader.close_code == 1009


def test_unmasked_client_frame_fails_with_1002():
    reader = WebSocketReader(1024)
    reader.receive_data(client_frame(1, b"x", mask=False))
    assert reader.closed and reader.close_code == 1002


def test_client_close_is_answered():
    reader = WebSocketReader(1024)
    _, out = reader.receive_data(client_frame(8, struct.pack("!H", 1000) + b"bye"))
    assert reader.closed and reader.close_code == 1000
    assert out.startswith(b"\x88")


def test_server_frames():
    assert text_frame(b"abc") == b"\x81\x03abc"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    frame = close_frame(3008, "slow")
    assert frame == b"\x88\x06" + struct.pack("!H", 3008) + b"slow"


def test_close_reason_is_cut_to_fit_a_control_frame():
    frame = close_frame(1001, "é" * 100)
    assert len(frame) <= 2 + 125
    frame[4:].decode()  # still valid UTF-8 after cutting


# Found by tests/fuzz/test_fuzz_websocket.py.


def test_nothing_after_invalid_utf8_is_delivered_or_answered():
    # §7.1.7: after failing the connection, no more data from the peer is processed.
    reader = WebSocketReader(1024)
    data = client_frame(1, b"\xff") + client_frame(9, b"ping") + client_frame(1, b"after")
    msgs, out = reader.receive_data(data)
    assert msgs == []
    assert reader.close_code == 1007
    assert out[:1] == b"\x88"  # the close frame only, no pong


def test_the_close_code_does_not_depend_on_how_bytes_arrive():
    data = client_frame(1, b"\xff") + client_frame(3, b"")  # invalid UTF-8, then opcode 3
    whole = WebSocketReader(1024)
    whole.receive_data(data)
    split = WebSocketReader(1024)
    for i in range(len(data)):
        split.receive_data(data[i : i + 1])
    assert whole.close_code == split.close_code == 1007


def test_invalid_utf8_fails_as_soon_as_a_fragment_shows_it():
    reader = WebSocketReader(1024)
    _, out = reader.receive_data(client_frame(1, b"ok \xc3\x28", fin=False))
    assert reader.close_code == 1007 and out[:1] == b"\x88"


def test_a_ping_between_fragments_does_not_count_against_the_message_size():
    # §5.4: control frames may come between fragments; they aren't part of the message.
    reader = WebSocketReader(125)
    data = client_frame(2, b"x" * 100, fin=False) + client_frame(9, b"p" * 100)
    msgs, out = reader.receive_data(data + client_frame(0, b"y" * 25))
    assert not reader.closed
    assert msgs[0].data == b"x" * 100 + b"y" * 25
    assert out == b"\x8a\x64" + b"p" * 100


def test_a_fragmented_message_over_max_size_fails_with_1009():
    reader = WebSocketReader(125)
    reader.receive_data(client_frame(2, b"x" * 100, fin=False) + client_frame(0, b"y" * 26))
    assert reader.close_code == 1009


def test_bytes_after_eof_are_ignored():
    reader = WebSocketReader(1024)
    reader.receive_eof()
    assert reader.receive_data(client_frame(1, b"late")) == ([], b"")
    assert reader.closed and reader.close_code == 1006
