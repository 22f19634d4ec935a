"""Graceful shutdown: stop accepting, tell every client, close — without waiting out the
shutdown timeout when clients behave."""

from __future__ import annotations

import asyncio
import json
from unittest.mock import ANY

import pytest
from integration_helpers import (
    http_client,
    publish,
    raw_connection,
    raw_ws,
    read_response,
    sse_connect,
    stream_connect,
    subscribed,
    ws_close_code,
    ws_connect,
)

from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")
BOTH_LOOPS = True  # see conftest.py

# Long enough that an aclose() waiting it out would miss the test's TIMEOUT.
PATIENT = {"shutdown_timeout": TIMEOUT * 3, "longpoll_timeout": TIMEOUT * 3}


async def test_every_transport_is_told_and_closed() -> None:
    async with running_server(**PATIENT) as srv:
        port = srv.port
        async with (
            ws_connect(srv, "/ws/news") as ws,
            ws_connect(srv, "/ws/news,other?format=raw") as ws_raw,
            sse_connect(srv, "/sse/news") as sse,
            stream_connect(srv, "/stream/news") as stream,
            http_client(srv) as lp_client,
            http_client(srv) as idle_client,
        ):
            # An idle keep-alive connection, and a waiting long-poll.
            assert (await idle_client.get("/health")).status_code == 200
            poll = asyncio.create_task(lp_client.get("/lp/news"))
            await subscribed(srv, "news", 5)
            last = await publish(srv, "news", "before", text=True)
            await stream.next()
            await sse.next()
            # The poll answered with the message; poll again from its position.
            first = await asyncio.wait_for(poll, TIMEOUT)
            poll = asyncio.create_task(
                lp_client.get("/lp/news", headers={"If-None-Match": first.headers["etag"]})
            )
            await subscribed(srv, "news", 5)

            await asyncio.wait_for(srv.aclose(), TIMEOUT)

            assert await ws_close_code(ws) == 1001
            assert ws.protocol.close_rcvd is not None
            assert ws.protocol.close_rcvd.reason == "shutdown"
            assert await ws_close_code(ws_raw) == 1001

            rest = await sse.wait_end()
            assert [e.event for e in rest] == ["tidings.shutdown"]
            assert json.loads(rest[0].data) == {"notice": "shutdown", "channel": ""}

            lines = await stream.wait_end()
            assert [json.loads(line) for line in lines] == [{"notice": "shutdown", "channel": ""}]

            answer = await asyncio.wait_for(poll, TIMEOUT)
            assert answer.status_code == 200
            assert answer.json() == {"id": last["id"], "messages": [], "session": ANY}
            assert answer.headers["connection"] == "close"

        assert not srv.app.connections
        assert srv.app.node.hub.count("news") == 0
        # No longer accepting.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)


async def test_aclose_is_idempotent_and_concurrent() -> None:
    async with running_server() as srv, ws_connect(srv, "/ws/x") as ws:
        await subscribed(srv, "x")
        await asyncio.wait_for(asyncio.gather(srv.aclose(), srv.aclose()), TIMEOUT)
        assert await ws_close_code(ws) == 1001


async def test_client_that_ignores_the_close_is_cut_after_the_timeout() -> None:
    async with running_server(shutdown_timeout=0.2) as srv, raw_ws(srv, "/ws/deaf") as (reader, _):
        await subscribed(srv, "deaf")
        await asyncio.wait_for(srv.aclose(), TIMEOUT)
        # Our close frame came, then the connection ended without our answer.
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        assert data[:1] == b"\x88"
        assert int.from_bytes(data[2:4], "big") == 1001
        assert not srv.app.connections


async def test_request_during_shutdown_gets_its_answer() -> None:
    """A keep-alive connection busy with a request when shutdown starts is answered and then
    closed, not cut off mid-response."""
    async with running_server(**PATIENT) as srv, raw_connection(srv) as (reader, writer):
        # A long-poll holds the request open; shutdown must answer it.
        writer.write(b"GET /lp/busy HTTP/1.1\r\nHost: x\r\n\r\n")
        await subscribed(srv, "busy")
        closing = asyncio.create_task(srv.aclose())
        resp = await read_response(reader)
        assert resp.status == 200
        assert resp.json()["messages"] == []
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        await asyncio.wait_for(closing, TIMEOUT)


async def test_longpoll_arriving_during_shutdown_is_answered_at_once() -> None:
    async with running_server(**PATIENT) as srv, raw_connection(srv) as (reader, writer):
        assert (await _get(reader, writer, "/health")).status == 200
        # The shutdown closes idle connections; a request already on its way races it
        # (RFC 9112 §9.6: clients retry), but it is never left hanging.
        closing = asyncio.create_task(srv.aclose())
        writer.write(b"GET /lp/late HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = await asyncio.wait_for(reader.read(), TIMEOUT)
        except ConnectionResetError:
            data = b""
        assert data == b"" or data.startswith(b"HTTP/1.1 200 ")
        await asyncio.wait_for(closing, TIMEOUT)


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str):  # type: ignore[no-untyped-def]
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return await read_response(reader)
