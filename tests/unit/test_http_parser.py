import time

import pytest

from tidings.exceptions import HttpError
from tidings.protocol.http import RequestParser


def parse(data: bytes, **limits) -> RequestParser:
    parser = RequestParser(**limits)
    parser.feed(data)
    return parser


def test_request_with_query_headers_and_body():
    parser = parse(
        b"POST /pub/chat%3A1?event=new&x= HTTP/1.1\r\nHost: h\r\nX-API-Key: k\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}'
    )
    (req,) = parser.requests
    assert req.method == "POST"
    assert req.path == "/pub/chat:1"
    assert req.query == {"event": "new", "x": ""}
    assert req.header("x-api-key") == "k"
    assert req.body == b'{"a":1}'
    assert req.keep_alive


def test_pipelined_requests_arrive_in_order():
    parser = parse(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [r.path for r in parser.requests] == ["/a", "/b"]


def test_request_split_across_feeds():
    parser = RequestParser()
    parser.feed(b"GET /health HT")
    assert not parser.requests and parser.pending()
    parser.feed(b"TP/1.1\r\nHost: h\r\n\r\n")
    assert parser.requests[0].path == "/health"
    assert not parser.pending()


def test_repeated_headers_are_joined():
    (req,) = parse(b"GET / HTTP/1.1\r\nA: 1\r\nA: 2\r\n\r\n").requests
    assert req.header("a") == "1,2"


def test_connection_close_and_http10():
    (req,) = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").requests
    assert not req.keep_alive
    (req,) = parse(b"GET / HTTP/1.0\r\n\r\n").requests
    assert not req.keep_alive and req.http_minor == 0


def test_upgrade_keeps_bytes_after_the_request():
    parser = parse(
        b"GET /ws/x HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x85"
    )
    assert parser.requests[0].upgrade
    assert parser.upgrade_data == b"\x81\x85"


def refused(data: bytes, **limits) -> int:
    """The status of the error that ended parsing ``data``."""
    parser = parse(data, **limits)
    assert isinstance(parser.error, HttpError)
    return parser.error.status


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /%ff HTTP/1.1\r\n\r\n",
    ],
)
def test_malformed_requests_are_400(data):
    assert refused(data) == 400


def test_headers_over_the_limit_are_431():
    assert (
        refused(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n", max_header_bytes=1024) == 431
    )


def test_declared_body_over_the_limit_is_413():
    assert refused(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n", max_body=10) == 413


def test_chunked_body_over_the_limit_is_413():
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"8\r\n12345678\r\n" * 3
    assert refused(data, max_body=16) == 413


# Pipelining (RFC 9112 §9.3.2): an error keeps the complete requests before it.


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /%ff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ],
    ids=["garbage", "bad-url", "413", "431"],
)
def test_complete_requests_before_an_error_are_kept(bad, status):
    parser = parse(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\nGET /a HTTP/1.1\r\n\r\n" + bad)
    assert [r.path for r in parser.requests] == ["/health", "/a"]
    assert parser.error is not None and parser.error.status == status


def test_nothing_is_parsed_after_an_error():
    parser = parse(b"GARBAGE\r\n\r\n")
    parser.feed(b"GET /late HTTP/1.1\r\n\r\n")
    assert not parser.requests
    assert parser.error is not None and parser.error.status == 400


def test_no_error_for_good_input():
    parser = parse(b"GET / HTTP/1.1\r\n\r\n")
    assert parser.error is None


@pytest.mark.parametrize("version", [b"HTTP/0.9", b"HTTP/2.0"])
def test_versions_other_than_1_0_and_1_1_are_400(version):
    # llhttp takes these; HTTP/0.9 came out as http_minor 9, HTTP/2.0 as HTTP/1.0.
    assert refused(b"GET / " + version + b"\r\nHost: h\r\n\r\n") == 400


UPGRADE = b"GET /ws/x HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def test_bytes_after_an_upgrade_in_later_feeds_are_kept():
    parser = RequestParser()
    parser.feed(UPGRADE[:-1])
    parser.feed(UPGRADE[-1:] + b"\x89")
    parser.feed(b"\x80")
    parser.feed(b"abcd")
    assert parser.error is None
    assert parser.upgrade_data == b"\x89\x80abcd"


def test_an_upgrade_answered_without_switching_goes_on_as_http():
    parser = parse(UPGRADE + b"GET /a HTTP/1.1\r\n\r\nGET /b HT")
    assert [r.path for r in parser.requests] == ["/ws/x"]
    parser.requests.clear()
    parser.continue_http()
    assert parser.upgrade_data is None
    parser.feed(b"TP/1.1\r\n\r\n")
    assert [r.path for r in parser.requests] == ["/a", "/b"]
    assert parser.error is None


def test_repeated_headers_are_joined_in_linear_time():
    # Appending to the joined text per repeat was quadratic (~10 s for 600,000 repeats).
    # Compared with itself, so a slow machine or coverage doesn't matter: four times the
    # repeats may take about four times as long, never sixteen.
    def seconds(n: int) -> float:
        data = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * n + b"\r\n"
        start = time.perf_counter()
        parser = parse(data, max_header_bytes=len(data))
        took = time.perf_counter() - start
        assert parser.requests[0].header("x") == ",".join(["y"] * n)
        return took

    small = min(seconds(100_000) for _ in range(2))
    large = min(seconds(400_000) for _ in range(2))
    assert large < 8 * small + 0.05, (small, large)


@pytest.mark.parametrize(
    "start",
    [b"GET / HTTP/1.1\r\nX: ", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nA: b\r\nX-"],
    ids=["value", "name", "after-a-header"],
)
def test_a_header_line_that_never_ends_is_431(start):
    # httptools keeps an incomplete header line and reports it only once complete: 4 MB
    # streamed into one header value took ~6 s (quadratic) and all that memory, unrefused.
    parser = RequestParser(max_header_bytes=1024)
    parser.feed(start)
    reads = 0
    while parser.error is None and reads < 4000:
        parser.feed(b"a" * 1024)
        reads += 1
    assert parser.error is not None and parser.error.status == 431
    assert reads <= 3  # twice the limit, in reads after the first


def test_a_head_split_over_reads_within_the_limit_is_fine():
    data = b"GET / HTTP/1.1\r\nX: " + b"a" * 900 + b"\r\n\r\n"
    parser = RequestParser(max_header_bytes=1024)
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
    assert parser.error is None and parser.requests[0].header("x") == "a" * 900
