"""``/stream/<channels>``: a chunked body, one line per message, and message templates."""

from __future__ import annotations

import asyncio
import json

import pytest
from integration_helpers import (
    chunks_connect,
    http_client,
    publish,
    raw_connection,
    stream_connect,
    subscribed,
)

from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")
BOTH_LOOPS = True  # see conftest.py


async def test_envelope_lines(server: Server) -> None:
    async with stream_connect(server, "/stream/news") as stream:
        headers = stream.response.headers
        assert headers["content-type"] == "application/x-ndjson"
        assert headers["transfer-encoding"] == "chunked"
        assert headers["x-accel-buffering"] == "no"
        await subscribed(server, "news")
        first = await publish(server, "news", {"text": "hello"})
        await publish(server, "news", "two\nlines", text=True, event="e")
        epoch = first["epoch"]
        one, two = await stream.take(2)
        assert json.loads(one) == {
            "channel": "news",
            "offset": 1,
            "epoch": epoch,
            "data": {"text": "hello"},
        }
        assert json.loads(two) == {
            "channel": "news",
            "offset": 2,
            "epoch": epoch,
            "event": "e",
            "data": "two\nlines",
        }


async def test_raw_lines(server: Server) -> None:
    async with stream_connect(server, "/stream/raw?format=raw") as stream:
        assert stream.response.headers["content-type"] == "text/plain; charset=utf-8"
        await subscribed(server, "raw")
        await publish(server, "raw", {"a": 1})
        await publish(server, "raw", "text", text=True)
        assert await stream.take(2) == ['{"a": 1}', "text"]


async def test_each_message_is_its_own_chunk(server: Server) -> None:
    """Raw HTTP: the body is chunked and every message is a complete chunk."""
    async with raw_connection(server) as (reader, writer):
        writer.write(b"GET /stream/chunks?format=raw HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Transfer-Encoding: chunked" in head
        await subscribed(server, "chunks")
        await publish(server, "chunks", "abc", text=True)
        size = await asyncio.wait_for(reader.readuntil(b"\r\n"), TIMEOUT)
        assert size == b"4\r\n"
        assert await asyncio.wait_for(reader.readexactly(6), TIMEOUT) == b"abc\n\r\n"
        await server.aclose()
        # The last chunk ends the body after the shutdown notice.
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)
        assert rest.endswith(b"\r\n0\r\n\r\n")


async def test_several_channels(server: Server) -> None:
    async with stream_connect(server, "/stream/s1,s2") as stream:
        await subscribed(server, "s1")
        await subscribed(server, "s2")
        await publish(server, "s2", 2)
        await publish(server, "s1", 1)
        got = [json.loads(line) for line in await stream.take(2)]
        assert [(m["channel"], m["data"]) for m in got] == [("s2", 2), ("s1", 1)]


TEMPLATES = {
    "js": {
        "template": ("<script>p(~text~, ~channel~, ~id~, ~event~, ~offset~, ~epoch~);</script>\n"),
        "content_type": "text/html; charset=utf-8",
        "header": "<html><body>\n",
        "footer": "</body></html>\n",
    },
    "plain": {"template": "[~channel~] ~text~\n"},
}


async def test_template() -> None:
    async with (
        running_server(templates=TEMPLATES) as srv,
        chunks_connect(srv, "/stream/tpl?template=js") as stream,
    ):
        assert stream.response.headers["content-type"] == "text/html; charset=utf-8"
        assert await stream.next() == b"<html><body>\n"
        await subscribed(srv, "tpl")
        first = await publish(srv, "tpl", {"x": 1}, event="ev")
        epoch = first["epoch"]
        assert await stream.next() == (
            f'<script>p({{"x": 1}}, "tpl", "tpl:1:{epoch}", "ev", 1, "{epoch}");'
            "</script>\n".encode()
        )
        await publish(srv, "tpl", "plain", text=True)
        assert await stream.next() == (
            f'<script>p("plain", "tpl", "tpl:2:{epoch}", "", 2, "{epoch}");</script>\n'.encode()
        )


async def test_html_template_payload_cannot_end_the_script_element() -> None:
    """In a text/html template the payload is an escaped JS literal: ``</script>`` in it
    can't close the element, and the message is still the intended call."""
    xss = "</script><script>alert(1)</script>"
    async with (
        running_server(templates=TEMPLATES) as srv,
        chunks_connect(srv, "/stream/x?template=js") as stream,
    ):
        assert await stream.next() == b"<html><body>\n"
        await subscribed(srv, "x")
        first = await publish(srv, "x", xss, text=True)
        await publish(srv, "x", {"html": xss})
        epoch = first["epoch"]
        escaped = "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)\\u003c/script\\u003e"
        assert await stream.next() == (
            f'<script>p("{escaped}", "x", "x:1:{epoch}", "", 1, "{epoch}");</script>\n'.encode()
        )
        second = await stream.next()
        assert second.count(b"<") == 2  # the template's own <script> and </script>
        assert second.startswith(b'<script>p({"html": "\\u003c/script\\u003e')


async def test_template_footer_on_shutdown() -> None:
    async with (
        running_server(templates=TEMPLATES) as srv,
        chunks_connect(srv, "/stream/foot?template=plain") as stream,
    ):
        await subscribed(srv, "foot")
        await publish(srv, "foot", "hi", text=True)
        assert await stream.next() == b"[foot] hi\n"
        await srv.aclose()
        rest = b"".join(await stream.wait_end())
        # A shutdown notice rendered through the template, then the body ends.
        assert rest.startswith(b"[] ")
        assert json.loads(rest[3:].decode()) == {"notice": "shutdown", "channel": ""}


async def test_template_with_header_and_footer_on_delete() -> None:
    async with (
        running_server(templates=TEMPLATES) as srv,
        chunks_connect(srv, "/stream/del?template=js") as stream,
    ):
        assert await stream.next() == b"<html><body>\n"
        await subscribed(srv, "del")
        async with http_client(srv) as c:
            assert (
                await c.delete("/pub/del", headers={"X-API-Key": "test-key"})
            ).status_code == 200
        rest = b"".join(await stream.wait_end())
        assert rest.endswith(b"</body></html>\n")
        assert b'"notice":"deleted"' in rest
        assert b"tidings.deleted" in rest


async def test_unknown_template_is_refused(server: Server) -> None:
    async with http_client(server) as c:
        resp = await c.get("/stream/x?template=nope")
    assert resp.status_code == 400
    assert resp.json() == {"error": "unknown template"}


async def test_http10_client_gets_a_plain_body(server: Server) -> None:
    """HTTP/1.0 has no chunked coding (RFC 9112 §7.1): such a client gets a close-delimited
    body with the same lines."""
    async with raw_connection(server) as (reader, writer):
        writer.write(b"GET /stream/old?format=raw HTTP/1.0\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert b" 200 " in head
        assert b"chunked" not in head.lower()
        assert b"Connection: close" in head
        await subscribed(server, "old")
        await publish(server, "old", "one", text=True)
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"one\n"
        await server.aclose()
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)
        assert json.loads(rest) == {"notice": "shutdown", "channel": ""}


async def test_http10_template_stream() -> None:
    async with (
        running_server(templates=TEMPLATES) as srv,
        raw_connection(srv) as (reader, writer),
    ):
        writer.write(b"GET /stream/old?template=js HTTP/1.0\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert b"chunked" not in head.lower()
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"<html><body>\n"
        await subscribed(srv, "old")
        await publish(srv, "old", "x", text=True)
        assert (await asyncio.wait_for(reader.readline(), TIMEOUT)).startswith(
            b'<script>p("x", "old"'
        )
        await srv.aclose()
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)
        assert rest.endswith(b"</body></html>\n")


async def test_positions_are_announced_on_request(server: Server, client) -> None:
    await publish(server, "a", 1)
    await publish(server, "a", 2)
    async with stream_connect(server, "/stream/a,b?positions=1&since=a:1") as lines:
        # After what history gives (a:2), each channel's position, then live messages.
        replayed, pos_a, pos_b = [json.loads(line) for line in await lines.take(3)]
        await subscribed(server, "b")
        await publish(server, "b", "first")
        live = json.loads(await lines.next())
    assert replayed["offset"] == 2
    epoch = replayed["epoch"]
    assert pos_a == {"notice": "position", "channel": "a", "offset": 2, "epoch": epoch}
    assert pos_b["notice"] == "position" and pos_b["channel"] == "b" and pos_b["offset"] == 0
    assert (live["channel"], live["offset"], live["epoch"]) == ("b", 1, pos_b["epoch"])
    resp = await client.get("/stream/a?positions=yes")
    assert resp.status_code == 400
