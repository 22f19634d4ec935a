"""``/ws/<channels>`` with the ``websockets`` client (and a raw socket where it must misbehave)."""

from __future__ import annotations

import asyncio

import pytest
from integration_helpers import (
    AUTH,
    http_client,
    publish,
    raw_connection,
    raw_ws,
    read_response,
    subscribed,
    until,
    ws_close_code,
    ws_connect,
    ws_handshake,
    ws_json,
)
from websockets.frames import Frame, Opcode

from tidings.server import Server
from tidings.server.http import HttpConnection
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")
BOTH_LOOPS = True  # see conftest.py


async def test_envelope_and_raw(server: Server) -> None:
    async with (
        ws_connect(server, "/ws/room") as env,
        ws_connect(server, "/ws/room?format=raw") as raw,
    ):
        await subscribed(server, "room", 2)
        first = await publish(server, "room", {"x": 1})
        await publish(server, "room", "plain text", text=True, event="note")
        epoch = first["epoch"]
        assert await ws_json(env) == {
            "channel": "room",
            "offset": 1,
            "epoch": epoch,
            "data": {"x": 1},
        }
        assert await ws_json(env) == {
            "channel": "room",
            "offset": 2,
            "epoch": epoch,
            "event": "note",
            "data": "plain text",
        }
        assert await asyncio.wait_for(raw.recv(), TIMEOUT) == '{"x": 1}'
        assert await asyncio.wait_for(raw.recv(), TIMEOUT) == "plain text"


async def test_messages_arrive_in_order(server: Server) -> None:
    async with ws_connect(server, "/ws/seq?format=raw") as ws:
        await subscribed(server, "seq")
        for i in range(50):
            await publish(server, "seq", i)
        got = [int(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(50)]
        assert got == list(range(50))


async def test_several_channels_on_one_connection(server: Server) -> None:
    async with ws_connect(server, "/ws/a,b,ns:c") as ws:
        await subscribed(server, "a")
        await subscribed(server, "b")
        await subscribed(server, "ns:c")
        await publish(server, "b", "to b", text=True)
        await publish(server, "a", "to a", text=True)
        await publish(server, "ns:c", "to c", text=True)
        await publish(server, "d", "not subscribed", text=True)
        got = [await ws_json(ws) for _ in range(3)]
        assert [(m["channel"], m["data"], m["offset"]) for m in got] == [
            ("b", "to b", 1),
            ("a", "to a", 1),
            ("ns:c", "to c", 1),
        ]


async def test_duplicate_channels_subscribe_once(server: Server) -> None:
    async with ws_connect(server, "/ws/dup,dup?format=raw") as ws:
        await subscribed(server, "dup")
        assert server.app.node.hub.count("dup") == 1
        await publish(server, "dup", 1)
        await publish(server, "dup", 2)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "1"
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "2"


async def test_client_ping_and_ignored_messages(server: Server) -> None:
    async with ws_connect(server, "/ws/chat?format=raw") as ws:
        await subscribed(server, "chat")
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, TIMEOUT)
        # Messages from the client are ignored, text or binary, whole or fragmented.
        await ws.send("hello server")
        await ws.send(b"\x00\x01")
        await ws.send(["frag", "mented"])
        await publish(server, "chat", "after", text=True)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "after"
        pong = await ws.ping()
        await asyncio.wait_for(pong, TIMEOUT)


async def test_client_close_handshake(server: Server) -> None:
    async with ws_connect(server, "/ws/bye") as ws:
        await subscribed(server, "bye")
        await asyncio.wait_for(ws.close(1000, "done"), TIMEOUT)
        assert ws.close_code == 1000
        # The server answered with its own close frame (not an abrupt end).
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == 1000
    await until(lambda: server.app.node.hub.count("bye") == 0, "unsubscribe after close")
    await until(lambda: server.app.connection_counts()["ws"] == 0, "connection forgotten")


async def test_abrupt_disconnect_unsubscribes(server: Server) -> None:
    async with raw_ws(server, "/ws/abrupt") as (_, writer):
        await subscribed(server, "abrupt")
        writer.transport.abort()
        await until(lambda: server.app.node.hub.count("abrupt") == 0, "unsubscribe after abort")
    await until(lambda: server.app.connection_counts()["ws"] == 0, "connection forgotten")
    # Publishing to the channel now reaches no one and does not fail.
    assert (await publish(server, "abrupt", 1))["subscribers"] == 0


async def test_handshake_with_leftover_frame_bytes(server: Server) -> None:
    """Frame bytes sent right behind the handshake (same packet) are not lost."""
    async with raw_connection(server) as (reader, writer):
        ping = Frame(Opcode.PING, b"early").serialize(mask=True)
        writer.write(ws_handshake("/ws/early") + ping)
        assert (await read_response(reader)).status == 101
        head = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
        assert head[0] == 0x8A  # FIN + pong
        payload = await asyncio.wait_for(reader.readexactly(head[1] & 0x7F), TIMEOUT)
        assert payload == b"early"


async def test_handshake_behind_a_long_poll_keeps_frames_of_a_later_packet(
    server: Server,
) -> None:
    """A handshake pipelined behind a waiting long-poll waits its turn (the connection is
    not read meanwhile); frame bytes sent in a later packet belong to the WebSocket."""
    async with raw_connection(server) as (reader, writer):
        writer.write(b"GET /lp/lpw HTTP/1.1\r\nHost: x\r\n\r\n" + ws_handshake("/ws/later"))
        await subscribed(server, "lpw")
        ping = Frame(Opcode.PING, b"later").serialize(mask=True)
        writer.write(ping)

        def held() -> bool:
            conns = [c for c in server.app.connections if isinstance(c, HttpConnection)]
            return any(not c.reading for c in conns)

        await until(held, "reading paused behind the long-poll")
        await publish(server, "lpw", 1)
        assert (await read_response(reader)).status == 200  # the long-poll, first
        assert (await read_response(reader)).status == 101
        head = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
        assert head == b"\x8a\x05"  # FIN + pong, 5 bytes
        assert await asyncio.wait_for(reader.readexactly(5), TIMEOUT) == b"later"


async def test_server_pings_and_cuts_off_silent_clients() -> None:
    async with (
        # The shortest interval allowed (a second): the silent client goes after two.
        running_server(ping_interval=1) as srv,
        # A well-behaved client answers pings and stays connected.
        ws_connect(srv, "/ws/hb?format=raw", ping_interval=None) as ws,
    ):
        await subscribed(srv, "hb")
        # A raw client that never answers.
        async with raw_ws(srv, "/ws/hb") as (reader, _):
            await subscribed(srv, "hb", 2)
            # The silent one receives pings, then is aborted: read to EOF.
            data = await asyncio.wait_for(reader.read(), TIMEOUT)
            assert data.startswith(b"\x89\x00")
        await until(lambda: srv.app.node.hub.count("hb") == 1, "silent client dropped")
        await publish(srv, "hb", "alive", text=True)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "alive"


async def test_close_frame_reason_is_sent_on_delete(server: Server) -> None:
    async with ws_connect(server, "/ws/del") as ws:
        await subscribed(server, "del")
        await publish(server, "del", 1)
        assert (await ws_json(ws))["data"] == 1
        async with http_client(server) as c:
            assert (await c.delete("/pub/del", headers=AUTH)).status_code == 200
        assert await ws_json(ws) == {"notice": "deleted", "channel": "del"}
        assert await ws_close_code(ws) == 4404
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.reason == "channel deleted"


@pytest.mark.parametrize(
    "request_bytes",
    [
        ws_handshake("/ws/churn,other"),
        ws_handshake("/ws/churn,other?since=0"),
        b"GET /sse/churn,other?last=5 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /stream/churn,other HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /lp/churn,other?since=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["ws", "ws-resume", "sse-last", "stream", "lp"],
)
async def test_clients_that_vanish_at_once_leave_nothing_behind(
    server: Server, request_bytes: bytes
) -> None:
    """Connections dropped right after (or while) subscribing, with or without a history
    replay, must not leave subscribers in the hub or entries in the registry."""
    for i in range(3):
        await publish(server, "churn", i)
    for _ in range(30):
        async with raw_connection(server) as (_, writer):
            writer.write(request_bytes)
            writer.transport.abort()
    # Some subscribed before their loss was seen, some didn't: in the end, none is left.
    await until(lambda: server.app.node.hub.count("churn") == 0, "no subscriber left")
    await until(lambda: server.app.node.hub.count("other") == 0, "no subscriber left")
    await until(lambda: not server.app.connections, "no connection left")
    async with ws_connect(server, "/ws/churn?format=raw") as ws:
        await subscribed(server, "churn")
        assert (await publish(server, "churn", "x", text=True))["subscribers"] == 1
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "x"


async def test_idle_keep_alive_connection_is_closed() -> None:
    async with (
        running_server(keepalive_timeout=0.05) as srv,
        raw_connection(srv) as (reader, writer),
    ):
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader)).status == 200
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        await until(lambda: not srv.app.connections, "connection forgotten")
