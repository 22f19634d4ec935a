"""Requests pipelined on one connection to a node on Redis, where a publish has to wait for
Redis: publishes and server API calls are awaited together, and every answer still comes
in request order — other requests in between included."""

from __future__ import annotations

import asyncio
import json

from integration_helpers import pipelined, read_responses, subscribed
from test_pipelined_publish import publish_request
from websockets.asyncio.client import connect

from tidings.testing import TIMEOUT, running_server
from tidings.testing.redis import RedisServer


def request(method: str, path: str, body: bytes = b"", *, close: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\n"
    if close:
        head += "Connection: close\r\n"
    if body or method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


publish = publish_request


async def test_pipelined_publishes_on_redis_are_answered_and_delivered_in_order(
    redis_server: RedisServer,
) -> None:
    count = 300
    async with running_server(broker=redis_server.url) as server:
        uri = f"ws://127.0.0.1:{server.port}/ws/piped?format=raw"
        async with connect(uri) as ws:
            await subscribed(server, "piped", 1)
            burst = b"".join(publish("piped", i) for i in range(count))
            answers = await pipelined(server.port, burst, count)
            offsets = [json.loads(body)["offset"] for _, body in answers]
            assert offsets == list(range(1, count + 1))
            async with asyncio.timeout(TIMEOUT):
                got = [await ws.recv() for _ in range(count)]
            assert got == [f'{{"n":{i}}}' for i in range(count)]


async def test_other_requests_between_pipelined_publishes_keep_their_turn(
    redis_server: RedisServer,
) -> None:
    async with running_server(broker=redis_server.url) as server:
        burst = [
            publish("mixed", 0),
            request("POST", "/pub/bad%20channel", b"{}"),  # refused at once: 400
            publish("mixed", 1),
            request("GET", "/health"),  # not a publish: waits for the two before it
            request("POST", "/api/info", b"{}"),
            request("GET", "/nowhere"),  # 404
            publish("mixed", 2),
            publish("mixed", 3),
        ]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"".join(burst) + request("POST", "/pub/mixed", b'"last"', close=True))
            answers = await read_responses(reader, len(burst) + 1)
            async with asyncio.timeout(TIMEOUT):
                assert await reader.read() == b""  # Connection: close honoured after it
        finally:
            writer.close()
        statuses = [status for status, _ in answers]
        assert statuses == [200, 400, 200, 200, 200, 404, 200, 200, 200]
        bodies = [json.loads(body) for _, body in answers]
        assert [bodies[i]["offset"] for i in (0, 2, 6, 7, 8)] == [1, 2, 3, 4, 5]
        assert bodies[3]["status"] == "ok"
        assert "nodes" in bodies[4]["result"]


async def test_a_client_that_goes_away_with_publishes_in_flight_leaves_the_node_serving(
    redis_server: RedisServer,
) -> None:
    async with running_server(broker=redis_server.url) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(publish("gone", i) for i in range(50)))
        await writer.drain()
        writer.transport.abort()
        # The node goes on: a new connection publishes and gets an offset after theirs.
        (answer,) = await pipelined(server.port, publish("gone", 99), 1)
        assert answer[0] == 200
        assert 1 <= json.loads(answer[1])["offset"] <= 51
