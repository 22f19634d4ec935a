"""Requests pipelined on one connection: handlers start at once (no task per request) and a
burst is answered in a loop, not by recursion; pipelined publishes reach every subscriber
complete and in order."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from integration_helpers import pipelined, subscribed
from websockets.asyncio.client import connect

from tidings.server import Server
from tidings.testing import TIMEOUT, running_server


def publish_request(channel: str, n: int) -> bytes:
    body = b'{"n":%d}' % n
    return (
        b"POST /pub/%s HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (channel.encode(), len(body), body)
    )


async def test_a_long_pipelined_burst_is_answered_in_order(server: Server) -> None:
    count = 3000  # deep enough that answering by recursion would overflow the stack
    health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * count
    answers = await pipelined(server.port, health + publish_request("burst", 1), count + 1)
    assert all(status == 200 for status, _ in answers)
    assert b'"offset":1' in answers[-1][1]


async def test_pipelined_publishes_reach_every_subscriber_in_order(server: Server) -> None:
    count = 200
    uri = f"ws://127.0.0.1:{server.port}/ws/piped?format=raw"
    async with connect(uri) as a, connect(uri) as b, connect(uri) as c:
        await subscribed(server, "piped", 3)
        burst = b"".join(publish_request("piped", i) for i in range(count))
        answers = await pipelined(server.port, burst, count)
        offsets = [json.loads(body)["offset"] for _, body in answers]
        assert offsets == list(range(1, count + 1))
        for ws in (a, b, c):
            async with asyncio.timeout(TIMEOUT):
                got = [await ws.recv() for _ in range(count)]
            assert got == [f'{{"n":{i}}}' for i in range(count)]


async def test_pipelined_publishes_to_the_sqlite_store_commit_together(tmp_path: Path) -> None:
    # A read's publishes are committed in one transaction and answered in that read
    # (core/tick.py), not one transaction (or one loop iteration) per publish.
    count = 200
    async with running_server(history_path=str(tmp_path / "h.db")) as server:
        backend = server.app.node.broker.backend  # type: ignore[attr-defined]
        real_write = backend.file.write
        transactions: list[int] = []

        def counting_write(statements):  # type: ignore[no-untyped-def]
            transactions.append(len(statements))
            real_write(statements)

        backend.file.write = counting_write
        uri = f"ws://127.0.0.1:{server.port}/ws/durable?format=raw"
        async with connect(uri) as ws:
            await subscribed(server, "durable", 1)
            burst = b"".join(publish_request("durable", i) for i in range(count))
            answers = await pipelined(server.port, burst, count)
            async with asyncio.timeout(TIMEOUT):
                got = [await ws.recv() for _ in range(count)]
        assert [json.loads(body)["offset"] for _, body in answers] == list(range(1, count + 1))
        assert got == [f'{{"n":{i}}}' for i in range(count)]
        # At most MAX_ANSWERS (16) are awaited per connection: about count / 16 commits.
        assert len(transactions) <= count // 8, transactions
