"""Requests pipelined on one connection: handlers start at once (no task per request) and a
burst is answered in a loop, not by recursion; pipelined publishes reach every subscriber
complete and in order."""

from __future__ import annotations

import asyncio
import json

from integration_helpers import read_responses, subscribed
from websockets.asyncio.client import connect

from tidings.server import Server
from tidings.testing import TIMEOUT


def publish_request(channel: str, n: int) -> bytes:
    body = b'{"n":%d}' % n
    return (
        b"POST /pub/%s HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (channel.encode(), len(body), body)
    )


async def test_a_long_pipelined_burst_is_answered_in_order(server: Server) -> None:
    count = 3000  # deep enough that answering by recursion would overflow the stack
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * count)
        writer.write(publish_request("burst", 1))
        answers = await read_responses(reader, count + 1)
    finally:
        writer.close()
    assert all(status == 200 for status, _ in answers)
    assert b'"offset":1' in answers[-1][1]


async def test_pipelined_publishes_reach_every_subscriber_in_order(server: Server) -> None:
    count = 200
    uri = f"ws://127.0.0.1:{server.port}/ws/piped?format=raw"
    async with connect(uri) as a, connect(uri) as b, connect(uri) as c:
        await subscribed(server, "piped", 3)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"".join(publish_request("piped", i) for i in range(count)))
            answers = await read_responses(reader, count)
        finally:
            writer.close()
        offsets = [json.loads(body)["offset"] for _, body in answers]
        assert offsets == list(range(1, count + 1))
        for ws in (a, b, c):
            async with asyncio.timeout(TIMEOUT):
                got = [await ws.recv() for _ in range(count)]
            assert got == [f'{{"n":{i}}}' for i in range(count)]
