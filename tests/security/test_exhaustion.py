"""Holding the server's resources without credentials: every attack here was found against
a default-config server (issue "Security hardening", items 1-3). Each must be answered in
bounded time and memory, and other clients must go on being served."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from integration_helpers import (
    assert_serving,
    raw_connection,
    raw_ws,
    read_response,
    read_to_eof,
    until,
)

from tidings.server.http import HttpConnection
from tidings.testing import TIMEOUT, running_server

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def http_connections(srv) -> list[HttpConnection]:
    return [c for c in srv.app.connections if isinstance(c, HttpConnection)]


async def test_slowloris_gets_408_from_the_first_byte_on() -> None:
    """A request trickled a byte at a time used to re-arm its deadline with every byte."""
    async with running_server(request_timeout=0.5) as srv, raw_connection(srv) as (r, w):
        started = asyncio.get_running_loop().time()

        async def trickle() -> None:
            for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:
                w.write(bytes([byte]))
                await asyncio.sleep(0.02)  # the attack's own pace

        dripping = asyncio.ensure_future(trickle())
        try:
            response = await read_response(r)
        finally:
            dripping.cancel()
        assert response.status == 408
        assert asyncio.get_running_loop().time() - started < 0.5 + TIMEOUT / 2
        assert await read_to_eof(r) == b""
        await assert_serving(srv)


async def test_a_silent_new_connection_is_closed_after_the_request_timeout() -> None:
    async with running_server(request_timeout=0.3) as srv, raw_connection(srv) as (r, _):
        assert await read_to_eof(r) == b""


async def test_pipelined_requests_whose_answers_are_never_read_stop_being_read() -> None:
    """Answers never read used to pile up in the server (89 MB held for 8.5 MB sent)."""
    async with running_server() as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        sock.setblocking(False)
        _, writer = await asyncio.open_connection(sock=sock)
        # 3.3 MB of requests, 12 MB of answers: more than the kernel buffers hold.
        flood = HEALTH * 100_000

        async def send() -> None:
            writer.write(flood)
            await writer.drain()  # blocks: the server stopped reading

        sending = asyncio.ensure_future(send())
        try:
            await until(lambda: any(not c.reading for c in http_connections(srv)), "paused")
            (conn,) = http_connections(srv)
            assert conn.transport is not None
            held = conn.transport.get_write_buffer_size()
            assert held < 1 << 20, held  # the transport's high-water mark, plus one batch
            assert len(conn.parser.requests) < 20_000  # what one read of the socket holds
            await assert_serving(srv)  # another client is answered at once
        finally:
            sending.cancel()
            writer.close()


async def test_requests_queued_behind_a_long_poll_are_not_read() -> None:
    async with running_server(longpoll_timeout=30) as srv, raw_connection(srv) as (_, w):
        w.write(b"GET /lp/quiet HTTP/1.1\r\nHost: x\r\n\r\n" + HEALTH * 5_000)
        await until(lambda: any(not c.reading for c in http_connections(srv)), "paused")
        (conn,) = http_connections(srv)
        assert conn.lp is not None and len(conn.parser.requests) < 5_000
        await assert_serving(srv)


def masked_ping(payload: bytes) -> bytes:
    """A client ping frame (RFC 6455 §5.5.2: clients mask every frame)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x89, 0x80 | len(payload)) + mask + body


async def test_pings_whose_pongs_are_never_read_count_against_the_bound() -> None:
    async with (
        running_server(max_outgoing_bytes=65536, shutdown_timeout=0.5) as srv,
        raw_ws(srv, "/ws/pinged") as (_, w),
    ):
        ping = masked_ping(b"p" * 125)

        async def pinger() -> None:
            while True:
                w.write(ping * 64)
                await w.drain()

        pinging = asyncio.ensure_future(pinger())
        try:
            await until(lambda: srv.app.slow_disconnects == 1, "cut off as slow")
            await until(lambda: srv.app.connection_counts()["ws"] == 0, "the socket closed")
        finally:
            pinging.cancel()
        await assert_serving(srv)
