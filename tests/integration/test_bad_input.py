"""Bad input gets a precise status or close code, and the server keeps serving everyone else."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct
from collections.abc import AsyncIterator

import pytest
from integration_helpers import (
    AUTH,
    assert_serving,
    http_client,
    publish,
    raw_connection,
    raw_request,
    raw_ws,
    read_response,
    read_to_eof,
    subscribed,
    until,
    ws_connect,
    ws_handshake,
    ws_json,
)
from websockets.exceptions import InvalidStatus
from websockets.frames import Close, Opcode

from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")
BOTH_LOOPS = True  # see conftest.py


@pytest.fixture
async def bystander(server: Server) -> AsyncIterator[None]:
    """A subscriber connected before the bad input, which must keep receiving after it."""
    async with ws_connect(server, "/ws/bystander?format=raw") as ws:
        await subscribed(server, "bystander")
        yield
        await publish(server, "bystander", "still there", text=True)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "still there"
    await assert_serving(server)


def request(line: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [line, "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# HTTP framing and limits


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /health HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /pub/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
        b"GET /sse/%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=[
        "garbage",
        "version",
        "header-line",
        "content-length",
        "cl-and-te",
        "nul",
        "bad-utf8-path",
    ],
)
async def test_malformed_http_is_400(server: Server, bystander: None, data: bytes) -> None:
    resp = await raw_request(server, data)
    assert resp.status == 400
    assert "error" in resp.json()


async def test_malformed_http_closes_the_connection(server: Server, bystander: None) -> None:
    async with raw_connection(server) as (reader, writer):
        writer.write(b"GARBAGE\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = await read_response(reader)
        assert resp.status == 400
        assert resp.headers["connection"] == "close"
        assert await read_to_eof(reader) == b""


@pytest.mark.parametrize(
    "bad",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ],
    ids=["garbage", "bad-url", "content-length"],
)
async def test_valid_request_before_a_malformed_one_is_answered(
    server: Server, bystander: None, bad: bytes
) -> None:
    """RFC 9112 §9.3.2: pipelined requests are answered in order; the malformed one gets its
    400 after the complete request before it, then the connection closes."""
    async with raw_connection(server) as (reader, writer):
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + bad)
        first = await read_response(reader)
        assert first.status == 200
        assert first.json()["status"] == "ok"
        second = await read_response(reader)
        assert second.status == 400
        assert second.headers["connection"] == "close"
        assert second.json() == {"error": "Bad Request"}
        assert await read_to_eof(reader) == b""


async def test_publish_before_an_oversized_one_is_answered(server: Server, bystander: None) -> None:
    limit = server.config.max_body_bytes
    good = request("POST /pub/pl HTTP/1.1", "Content-Length: 2", "X-API-Key: test-key", body=b"{}")
    big = request("POST /pub/pl HTTP/1.1", f"Content-Length: {limit + 1}", "X-API-Key: test-key")
    async with raw_connection(server) as (reader, writer):
        writer.write(good + big)
        first = await read_response(reader)
        assert (first.status, first.json()["offset"]) == (200, 1)
        assert (await read_response(reader)).status == 413
        assert await read_to_eof(reader) == b""


async def test_error_after_a_head_request_has_its_body(server: Server, bystander: None) -> None:
    async with raw_connection(server) as (reader, writer):
        writer.write(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 200 ")
        second = await read_response(reader)  # the HEAD response had no content
        assert second.status == 400
        assert second.json() == {"error": "Bad Request"}
        assert await read_to_eof(reader) == b""


H2C = (
    "Upgrade: h2c",
    "Connection: Upgrade, HTTP2-Settings",
    "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
)


async def test_ignored_upgrade_keeps_the_connection_http(server: Server, bystander: None) -> None:
    """``curl --http2`` asks for h2c; the server answers in HTTP/1.1 without switching, so
    what follows on the connection is HTTP (RFC 9110 §7.8), pipelined or sent later."""
    async with raw_connection(server) as (reader, writer):
        writer.write(request("GET /health HTTP/1.1", *H2C) + request("GET /health HTTP/1.1"))
        assert (await read_response(reader)).status == 200
        assert (await read_response(reader)).status == 200
        writer.write(request("GET /health HTTP/1.1", *H2C))
        assert (await read_response(reader)).status == 200
        writer.write(request("GET /nowhere HTTP/1.1"))
        assert (await read_response(reader)).status == 404


async def test_oversized_headers_are_431(server: Server, bystander: None) -> None:
    big = "X-Big: " + "a" * (server.config.max_header_bytes + 10)
    resp = await raw_request(server, request("GET /health HTTP/1.1", big))
    assert resp.status == 431
    many = [f"X-H{i}: {'b' * 100}" for i in range(server.config.max_header_bytes // 100)]
    resp = await raw_request(server, request("GET /health HTTP/1.1", *many))
    assert resp.status == 431
    long_url = "GET /sse/" + "c" * (server.config.max_header_bytes + 10) + " HTTP/1.1"
    resp = await raw_request(server, request(long_url))
    assert resp.status == 431


async def test_oversized_body_is_413(bystander: None, server: Server) -> None:
    limit = server.config.max_body_bytes
    # Declared too big: refused before the body is read.
    resp = await raw_request(
        server,
        request("POST /pub/big HTTP/1.1", f"Content-Length: {limit + 1}", "X-API-Key: test-key"),
    )
    assert resp.status == 413
    # Chunked, growing past the limit.
    body = b"".join(
        f"{1000:x}\r\n".encode() + b"a" * 1000 + b"\r\n" for _ in range(limit // 1000 + 2)
    )
    resp = await raw_request(
        server,
        request(
            "POST /pub/big HTTP/1.1", "Transfer-Encoding: chunked", "X-API-Key: test-key", body=body
        ),
    )
    assert resp.status == 413
    # At the limit it is fine.
    async with http_client(server) as c:
        ok = await c.post(
            "/pub/big", content=b"a" * limit, headers={**AUTH, "Content-Type": "text/plain"}
        )
    assert ok.status_code == 200
    assert ok.json()["offset"] == 1


async def test_half_sent_request_times_out_with_408(bystander: None) -> None:
    async with running_server(request_timeout=0.1) as srv:
        async with raw_connection(srv) as (reader, writer):
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            resp = await read_response(reader)
            assert resp.status == 408
        await assert_serving(srv)


async def test_too_many_connections_is_503() -> None:
    async with running_server(max_connections=2) as srv:
        async with ws_connect(srv, "/ws/full"), ws_connect(srv, "/ws/full"):
            resp = await raw_request(srv, request("GET /health HTTP/1.1"))
            assert resp.status == 503
        # Once they are gone, the server serves again.
        await assert_serving(srv)


# Routing, methods, channels, keys, positions


@pytest.mark.parametrize(
    "path", ["/nope", "/ws/", "/sse", "/pub/", "/stats/x", "/healthz", "/", "/stream/"]
)
async def test_unknown_path_is_404(server: Server, bystander: None, path: str) -> None:
    async with http_client(server) as c:
        resp = await c.get(path, headers=AUTH)
    assert resp.status_code == 404
    assert resp.json() == {"error": "not found"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/sse/x", "GET, OPTIONS"),
        ("DELETE", "/ws/x", "GET, OPTIONS"),
        ("PUT", "/lp/x", "GET, OPTIONS"),
        ("POST", "/stream/x", "GET, OPTIONS"),
        ("PATCH", "/pub/x", "POST, PUT, GET, DELETE, OPTIONS"),
        ("DELETE", "/stats", "GET"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    server: Server, bystander: None, method: str, path: str, allow: str
) -> None:
    async with http_client(server) as c:
        resp = await c.request(method, path, headers=AUTH)
    assert resp.status_code == 405
    assert resp.headers["allow"] == allow
    assert resp.json() == {"error": "method not allowed"}


@pytest.mark.parametrize(
    "channels",
    ["bad%20name", "a,b%22", ":leading", "trailing:", "a,,b", "x" * 256, "%C3%A9t%C3%A9", "a;b"],
)
@pytest.mark.parametrize("kind", ["ws", "sse", "lp", "stream", "pub"])
async def test_bad_channel_names_are_400(
    server: Server, bystander: None, kind: str, channels: str
) -> None:
    async with http_client(server) as c:
        if kind == "pub":
            resp = await c.post(f"/pub/{channels}", json=1, headers=AUTH)
        else:
            resp = await c.get(f"/{kind}/{channels}")
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("bad channel name")


@pytest.mark.parametrize("kind", ["ws", "sse", "lp", "stream"])
async def test_too_many_channels_is_400(server: Server, bystander: None, kind: str) -> None:
    limit = server.config.max_channels_per_connection
    names = ",".join(f"c{i}" for i in range(limit + 1))
    async with http_client(server) as c:
        resp = await c.get(f"/{kind}/{names}")
        assert resp.status_code == 400
        assert "too many channels" in resp.json()["error"]
    # The limit itself is allowed.
    names = ",".join(f"c{i}" for i in range(limit))
    async with ws_connect(server, f"/ws/{names}"):
        await subscribed(server, f"c{limit - 1}")


@pytest.mark.parametrize(
    "query",
    [
        "last_event_id=nonsense",
        "last_event_id=ch:abc:e",
        "last_event_id=ch:-1:e",
        "last_event_id=:1:e",
        "last_event_id=ch:1:x%0D%0A%0D%0Adata%0D%0Adata%0D%0A",
        "last_event_id=ch:1:a%22b",
        "last_event_id=ch:1:a%00b",
        "since=abc",
        "since=ch:x",
        "since=-5",
        "last=-1",
        "last=abc",
        "last=100001",
        "format=xml",
    ],
)
@pytest.mark.parametrize("kind", ["ws", "sse", "lp", "stream"])
async def test_bad_resume_positions_are_400(
    server: Server, bystander: None, kind: str, query: str
) -> None:
    async with http_client(server) as c:
        resp = await c.get(f"/{kind}/ch?{query}")
    assert resp.status_code == 400
    assert resp.json()["error"]


@pytest.mark.parametrize("header", ["Last-Event-ID", "If-None-Match"])
async def test_bad_resume_header_is_400(server: Server, bystander: None, header: str) -> None:
    async with http_client(server) as c:
        resp = await c.get("/lp/ch", headers={header: "garbage"})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("bad position")


async def test_missing_or_wrong_api_key_is_401(server: Server, bystander: None) -> None:
    async with http_client(server) as c:
        for headers in (
            {},
            {"X-API-Key": "nope"},
            {"X-API-Key": "test-keyy"},
            {"X-API-Key": "TEST-KEY"},
        ):
            resp = await c.post("/pub/bystander", json="intruder", headers=headers)
            assert resp.status_code == 401
            resp = await c.get("/stats", headers=headers)
            assert resp.status_code == 401
        # Nothing reached the channel: the bystander's next message is the fixture's own.
        info = await c.get("/pub/bystander", headers=AUTH)
        assert info.json()["published"] == 0


# Origins


async def test_disallowed_origin_on_ws_is_403(server: Server, bystander: None) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with ws_connect(server, "/ws/o", origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert caught.value.response.status_code == 403
    # Same origin as Host is fine.
    same = f"http://127.0.0.1:{server.port}"
    async with ws_connect(server, "/ws/o?format=raw", origin=same) as ws:  # type: ignore[arg-type]
        await subscribed(server, "o")
        await publish(server, "o", 1)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "1"
    async with http_client(server) as c:
        resp = await c.get("/sse/o", headers={"Origin": "http://evil.example"})
        assert resp.status_code == 403


async def test_allowed_origins_config() -> None:
    async with running_server(allowed_origins=["https://app.example"]) as srv:
        async with ws_connect(srv, "/ws/o", origin="https://app.example"):  # type: ignore[arg-type]
            await subscribed(srv, "o")
        with pytest.raises(InvalidStatus) as caught:
            async with ws_connect(srv, "/ws/o", origin=f"http://127.0.0.1:{srv.port}"):  # type: ignore[arg-type]
                pass
        assert caught.value.response.status_code == 403
        async with http_client(srv) as c:
            await publish(srv, "o", 1)
            resp = await c.get("/lp/o?since=0", headers={"Origin": "https://app.example"})
            assert resp.status_code == 200
            assert resp.headers["access-control-allow-origin"] == "https://app.example"
            pre = await c.options("/pub/o", headers={"Origin": "https://app.example"})
            assert pre.status_code == 204
            assert "POST" in pre.headers["access-control-allow-methods"]
            pre = await c.options("/pub/o", headers={"Origin": "https://evil.example"})
            assert pre.status_code == 403
        await assert_serving(srv)


@pytest.mark.parametrize(
    ("host", "origin", "status"),
    [
        ("app.example:443", "https://app.example", 200),  # default port written out
        ("app.example", "https://app.example", 200),
        ("app.example:80", "http://app.example", 200),
        ("app.example:443", "http://app.example", 403),  # http's default is 80
        ("app.example:8443", "https://app.example", 403),
        ("app.example", "https://evil.example", 403),
    ],
)
async def test_same_origin_with_default_ports(
    server: Server, host: str, origin: str, status: int
) -> None:
    await publish(server, "o", 1)
    async with http_client(server) as c:
        resp = await c.get("/lp/o?since=0", headers={"Host": host, "Origin": origin})
    assert resp.status_code == status


# WebSocket handshake


@pytest.mark.parametrize(
    ("omit", "replace"),
    [
        ("Sec-WebSocket-Key", {}),
        ("", {"Sec-WebSocket-Key": "not base64!"}),
        ("", {"Sec-WebSocket-Key": base64.b64encode(b"short").decode()}),
        ("Upgrade", {}),
        ("", {"Upgrade": "h2c"}),
        ("", {"Connection": "keep-alive"}),
    ],
)
async def test_bad_ws_handshake_is_400(
    server: Server, bystander: None, omit: str, replace: dict[str, str]
) -> None:
    resp = await raw_request(server, ws_handshake("/ws/hs", omit=omit, **replace))
    assert resp.status == 400
    assert resp.json()["error"]


@pytest.mark.parametrize("version", ["8", "", "14"])
async def test_bad_ws_version_is_426(server: Server, bystander: None, version: str) -> None:
    resp = await raw_request(server, ws_handshake("/ws/hs", **{"Sec-WebSocket-Version": version}))
    assert resp.status == 426
    assert resp.headers["sec-websocket-version"] == "13"


# WebSocket frames


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    head = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    assert head[1] & 0x80 == 0, "server frames are never masked"
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return head[0] & 0x0F, await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


async def read_close(reader: asyncio.StreamReader) -> int:
    """Skip frames until the close frame; return its code."""
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == Opcode.CLOSE.value:
            return Close.parse(payload).code


def frame(opcode: Opcode, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A client frame built by hand (RFC 6455 §5.2), with no check, so it can be wrong."""
    head = bytes([(0x80 if fin else 0) | opcode.value])
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([frame(Opcode.TEXT, b"\xff\xfe bad")], 1007),
        ([frame(Opcode.TEXT, "café".encode()[:-1])], 1007),
        ([frame(Opcode.TEXT, b"ok \xc3", fin=False), frame(Opcode.CONT, b"\x28")], 1007),
        ([frame(Opcode.TEXT, b"unmasked", mask=False)], 1002),
        ([frame(Opcode.CONT, b"no start")], 1002),
        ([frame(Opcode.TEXT, b"a", fin=False), frame(Opcode.TEXT, b"b")], 1002),
        ([frame(Opcode.PING, b"p" * 126)], 1002),
        ([frame(Opcode.PING, b"fragmented", fin=False)], 1002),
        ([bytes([0x83, 0x80, 0, 0, 0, 0])], 1002),  # reserved opcode 3
        ([bytes([0xC1, 0x80, 0, 0, 0, 0])], 1002),  # RSV1 without an extension
        ([frame(Opcode.TEXT, b"x" * 70000)], 1009),
        ([frame(Opcode.BINARY, b"y" * 40000, fin=False), frame(Opcode.CONT, b"y" * 40000)], 1009),
    ],
    ids=[
        "bad-utf8",
        "truncated-utf8",
        "bad-utf8-fragments",
        "unmasked",
        "orphan-continuation",
        "interleaved-data",
        "long-control",
        "fragmented-control",
        "reserved-opcode",
        "rsv1",
        "too-big",
        "too-big-fragmented",
    ],
)
async def test_bad_frames_get_close_codes(
    server: Server, bystander: None, frames: list[bytes], code: int
) -> None:
    async with raw_ws(server, "/ws/frames") as (reader, writer):
        await subscribed(server, "frames")
        writer.write(b"".join(frames))
        assert await read_close(reader) == code
        # The server closes the TCP connection after the close frame.
        assert await read_to_eof(reader) == b""
    await until(lambda: server.app.node.hub.count("frames") == 0, "the bad peer unsubscribed")


async def test_oversized_message_with_websockets_client(server: Server, bystander: None) -> None:
    async with ws_connect(server, "/ws/big") as ws:
        await subscribed(server, "big")
        await ws.send("z" * (server.config.max_message_bytes + 1))
        with pytest.raises(Exception):  # noqa: B017 - ConnectionClosedError
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1009


async def test_message_at_the_limit_is_fine(server: Server, bystander: None) -> None:
    async with ws_connect(server, "/ws/limit?format=raw") as ws:
        await subscribed(server, "limit")
        await ws.send("z" * server.config.max_message_bytes)
        await publish(server, "limit", "ok", text=True)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "ok"


async def test_unknown_close_code_from_client_is_answered(server: Server, bystander: None) -> None:
    async with raw_ws(server, "/ws/cc") as (reader, writer):
        # 1005 must never be sent on the wire (RFC 6455 §7.4.1).
        writer.write(frame(Opcode.CLOSE, struct.pack("!H", 1005)))
        assert await read_close(reader) == 1002


async def test_ws_subscribers_on_other_channels_unaffected_by_bad_peer(server: Server) -> None:
    async with ws_connect(server, "/ws/good") as good:
        await subscribed(server, "good")
        async with raw_ws(server, "/ws/good") as (reader, writer):
            await subscribed(server, "good", 2)
            writer.write(frame(Opcode.TEXT, b"\xff"))
            assert await read_close(reader) == 1007
        await publish(server, "good", "fine", text=True)
        assert (await ws_json(good))["data"] == "fine"


async def test_bad_input_is_logged(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tidings"):
        assert (await raw_request(server, b"GARBAGE\r\n\r\n")).status == 400
        assert (await raw_request(server, request("GET /nope HTTP/1.1"))).status == 404
        async with raw_ws(server, "/ws/logged") as (reader, writer):
            writer.write(frame(Opcode.TEXT, b"\xff"))
            assert await read_close(reader) == 1007
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("tidings")]
    assert any("400" in line for line in lines), lines
    assert any("/nope" in line and "404" in line for line in lines), lines
    assert any("1007" in line for line in lines), lines
