"""Slow consumers: a client that stops reading is cut off ("slow", WebSocket close 3008), the
server's memory for it stays bounded, everyone else keeps receiving, and the cut-off client
can resume from history."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from integration_helpers import (
    AUTH,
    http_client,
    subscribed,
    until,
    ws_connect,
    ws_handshake,
)
from websockets.exceptions import ConnectionClosed

from tidings.server import Server
from tidings.server.sessions import Session
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")
BOTH_LOOPS = True  # see conftest.py

LIMIT = 64 * 1024
MESSAGE = 16 * 1024
# Enough to fill any loopback socket buffers (Linux autotunes them up to a few MiB) and the
# server's own bound many times over; the test stops as soon as the cut-off happens.
MAX_MESSAGES = 2000


def small_receive_buffer() -> socket.socket:
    """A client socket with a small receive window, so a non-reader backs up quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def connected(server: Server) -> AsyncIterator[socket.socket]:
    sock = small_receive_buffer()
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        yield sock
    finally:
        sock.close()


def session_of(server: Server, sock: socket.socket) -> Session:
    """The server's session for the client socket ``sock``."""
    [session] = [
        c
        for c in server.app.connections
        if isinstance(c, Session) and c.transport.get_extra_info("peername") == sock.getsockname()
    ]
    return session


class Reader:
    """A healthy subscriber that reads everything as it comes."""

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.grew = asyncio.Event()

    async def run(self, ws: Any) -> None:
        async for message in ws:
            self.offsets.append(json.loads(message)["offset"])
            self.grew.set()

    async def until_count(self, n: int) -> None:
        while len(self.offsets) < n:
            self.grew.clear()
            await asyncio.wait_for(self.grew.wait(), TIMEOUT)


async def drain(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            if not await loop.sock_recv(sock, 1 << 16):
                return
        except ConnectionResetError:
            return


async def flood(
    server: Server, client: httpx.AsyncClient, channel: str, stop: Any, check: Any = None
) -> int:
    """Publish big messages until ``stop()``; return how many. ``check()`` runs after each."""
    payload = "x" * MESSAGE
    for count in range(1, MAX_MESSAGES + 1):
        resp = await client.post(
            f"/pub/{channel}", content=payload, headers={**AUTH, "Content-Type": "text/plain"}
        )
        assert resp.status_code == 200
        if check is not None:
            check()
        if stop():
            return count
    raise AssertionError("the slow consumer was never cut off")


@pytest.mark.parametrize(
    ("kind", "request_bytes"),
    [
        ("ws", ws_handshake("/ws/flood")),
        ("sse", b"GET /sse/flood HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("stream", b"GET /stream/flood HTTP/1.1\r\nHost: x\r\n\r\n"),
    ],
    ids=["ws", "sse", "stream"],
)
async def test_non_reader_is_cut_off_with_bounded_memory(kind: str, request_bytes: bytes) -> None:
    async with (
        running_server(max_outgoing_bytes=LIMIT, shutdown_timeout=0.5) as srv,
        http_client(srv) as client,
        ws_connect(srv, "/ws/flood", max_size=None) as good,
        connected(srv) as sock,
    ):
        loop = asyncio.get_running_loop()
        reader = Reader()
        reading = asyncio.create_task(reader.run(good))
        await subscribed(srv, "flood")
        # The slow client sends its request and then never reads.
        await loop.sock_sendall(sock, request_bytes)
        await subscribed(srv, "flood", 2)
        slow = session_of(srv, sock)
        assert slow.kind == kind
        peak = 0

        def check() -> None:
            nonlocal peak
            if not slow.transport.is_closing():
                peak = max(peak, slow.transport.get_write_buffer_size())

        sent = await flood(srv, client, "flood", lambda: srv.app.slow_disconnects > 0, check)
        assert srv.app.slow_disconnects == 1
        # What the server held for it never went far past the bound (one message over at most).
        assert peak <= LIMIT + MESSAGE + 1024
        # Gone from the server: connection registry and channel.
        await until(lambda: slow not in srv.app.connections, "slow session forgotten")
        assert srv.app.node.hub.count("flood") == 1
        # Its connection is over: reading again ends in EOF or a reset.
        await asyncio.wait_for(drain(sock), TIMEOUT)
        # The healthy subscriber got everything, in order.
        await reader.until_count(sent)
        assert reader.offsets == list(range(1, sent + 1))
        stats = (await client.get("/stats", headers=AUTH)).json()
        assert stats["slow_disconnects"] == 1
        assert stats["connections"][kind] == (1 if kind == "ws" else 0)
        reading.cancel()


async def test_slow_websocket_client_sees_3008_and_resumes() -> None:
    """A real client that stops reading for a while: when it reads again it finds the
    messages it had, then close 3008; it reconnects from its last position and gets the rest
    from history, nothing missed and nothing twice."""
    async with (
        running_server(
            max_outgoing_bytes=LIMIT, shutdown_timeout=TIMEOUT, history_size=MAX_MESSAGES
        ) as srv,
        http_client(srv) as client,
    ):
        sock = small_receive_buffer()
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
        # max_queue=1: the client library stops reading the socket once a message waits.
        async with ws_connect(srv, "/ws/lag", sock=sock, max_queue=1, max_size=None) as ws:
            await subscribed(srv, "lag")
            sent = await flood(srv, client, "lag", lambda: srv.app.slow_disconnects > 0)
            got: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed):
                while True:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))
            assert ws.close_code == 3008
            assert ws.protocol.close_rcvd is not None
            assert ws.protocol.close_rcvd.reason == "slow"
        offsets = [m["offset"] for m in got]
        assert offsets == list(range(1, len(offsets) + 1))
        assert len(offsets) < sent
        last = got[-1]
        ident = f"lag:{last['offset']}:{last['epoch']}"
        async with ws_connect(srv, f"/ws/lag?last_event_id={ident}", max_size=None) as ws:
            rest = [
                json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                for _ in range(sent - len(got))
            ]
        assert offsets + [m["offset"] for m in rest] == list(range(1, sent + 1))
        assert not any("notice" in m for m in rest)
