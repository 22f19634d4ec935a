"""The Publisher's response reader: pipelined responses, every way a body is delimited,
bytes arriving one at a time, and the inputs it refuses."""

from __future__ import annotations

import pytest

from tidings.protocol.http_response import MAX_HEAD, ResponseReader


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


CHUNKED = (
    b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
)


def test_pipelined_responses_come_out_in_order_whatever_the_split() -> None:
    stream = ok(b'{"a":1}') + CHUNKED + b"HTTP/1.1 204 No Content\r\n\r\n" + ok(b"last")
    for step in (1, 3, 7, len(stream)):
        reader = ResponseReader()
        got = []
        for i in range(0, len(stream), step):
            got += reader.feed(stream[i : i + step])
        assert [(r.status_code, r.content) for r in got] == [
            (200, b'{"a":1}'),
            (503, b"hello world"),
            (204, b""),
            (200, b"last"),
        ]
        assert got[1].reason_phrase == "Service Unavailable"
        assert all(r.keep_alive for r in got)


def test_interim_responses_are_skipped_and_connection_close_is_seen() -> None:
    reader = ResponseReader()
    got = reader.feed(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"x", b"Connection: close"))
    assert [(r.status_code, r.keep_alive) for r in got] == [(200, False)]
    old = ResponseReader().feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert old[0].keep_alive is False  # HTTP/1.0 closes unless it says keep-alive


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\n\r\nno length",  # delimited only by the connection closing
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_HEAD,
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
    ],
)
def test_what_it_refuses(data: bytes) -> None:
    with pytest.raises(ValueError):
        ResponseReader().feed(data)
