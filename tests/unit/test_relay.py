"""``protocol/relay.py``: what tidings writes, read back as an ASGI server wants it."""

from __future__ import annotations

import pytest

from tidings.protocol.http import chunk, response_head
from tidings.protocol.relay import ChunkReader, ServerFrameReader, client_frame, split_head
from tidings.protocol.websocket import WebSocketReader, binary_frame, close_frame, text_frame


def test_split_head_gives_status_headers_and_the_body_after_it():
    head = response_head(200, [("Content-Type", "text/event-stream"), ("X-A", "b: c")])
    status, headers, rest = split_head(head + b"retry: 1\n\n")
    assert status == 200
    assert headers == [("Content-Type", "text/event-stream"), ("X-A", "b: c")]
    assert rest == b"retry: 1\n\n"
    with pytest.raises(ValueError):
        split_head(b"HTTP/1.1 200 OK\r\n")


def test_chunks_are_read_back_whatever_the_pieces():
    body = chunk(b"one\n") + chunk(b"x" * 300) + chunk(b"") + b"ignored"
    for size in (1, 2, 7, len(body)):
        reader = ChunkReader()
        out = b"".join(reader.feed(body[i : i + size]) for i in range(0, len(body), size))
        assert out == b"one\n" + b"x" * 300
        assert reader.ended


def test_server_frames_of_every_length_are_read_back():
    payloads = [b"", b"a" * 125, b"b" * 126, b"c" * 70000]
    wire = b"".join(text_frame(p) for p in payloads) + binary_frame(b"\x00\x01")
    wire += close_frame(3008, "slow")
    for size in (1, 3, 1000, len(wire)):
        reader = ServerFrameReader()
        frames = [f for i in range(0, len(wire), size) for f in reader.feed(wire[i : i + size])]
        assert frames[:4] == [(0x1, p) for p in payloads]
        assert frames[4] == (0x2, b"\x00\x01")
        assert frames[5] == (0x8, (3008).to_bytes(2, "big") + b"slow")
    with pytest.raises(ValueError):
        ServerFrameReader().feed(client_frame(b"masked", True))


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_client_frames_are_what_the_server_reader_accepts(size):
    reader = WebSocketReader(1 << 20)
    messages, out = reader.receive_data(
        client_frame(b"t" * size, True) + client_frame(b"\xff" * size, False)
    )
    assert [(m.data, m.text) for m in messages] == [(b"t" * size, True), (b"\xff" * size, False)]
    assert out == b""
    assert not reader.closed
