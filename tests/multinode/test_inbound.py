"""Publishing from outside through Redis: the inbound channels and the inbound stream."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis
from integration_helpers import sse_connect

from tidings.brokers.redis_inbound import GROUP
from tidings.testing import TIMEOUT, running_server
from tidings.testing.redis import RedisServer


async def test_stream_entries_are_published_once_and_acknowledged(
    redis_server: RedisServer,
) -> None:
    async with (
        running_server(broker=redis_server.url, inbound_stream="tidings:inbound") as server,
        sse_connect(server, "/sse/news?positions=1") as events,
    ):
        # The position notice comes once the subscription is live: nothing after is missed.
        assert (await events.next()).event == "tidings.position"
        r = aioredis.Redis.from_url(redis_server.url)
        try:
            await r.xadd("tidings:inbound", {"channel": "news", "data": json.dumps({"n": 1})})
            # The same key twice (a sender that retried): published once.
            for _ in range(2):
                await r.xadd(
                    "tidings:inbound",
                    {"channel": "news", "data": "second", "event": "note", "idempotency_key": "k"},
                )
            await r.xadd("tidings:inbound", {"channel": "bad channel!", "data": "x"})
            await r.xadd("tidings:inbound", {"channel": "news", "data": json.dumps("last")})
            got = [await events.next() for _ in range(3)]
            assert [json.loads(e.data)["data"] for e in got] == [{"n": 1}, "second", "last"]
            assert got[1].event == "note"
            assert [json.loads(e.data)["offset"] for e in got] == [1, 2, 3]

            async def all_acknowledged() -> bool:
                pending = await r.xpending("tidings:inbound", GROUP)
                return pending["pending"] == 0

            async with asyncio.timeout(TIMEOUT):
                while not await all_acknowledged():
                    await asyncio.sleep(0.05)  # acknowledged right after publishing
        finally:
            await r.aclose()


async def test_a_bad_inbound_message_is_refused_and_the_next_one_goes_through(
    redis_server: RedisServer,
) -> None:
    async with (
        running_server(broker=redis_server.url) as server,
        sse_connect(server, "/sse/news?positions=1") as events,
    ):
        assert (await events.next()).event == "tidings.position"
        r = aioredis.Redis.from_url(redis_server.url)
        try:
            async with asyncio.timeout(TIMEOUT):
                while await r.publish("tidings:publish", b"{not json") == 0:
                    await asyncio.sleep(0.05)  # until this node holds the lease
            await r.publish("tidings:publish", json.dumps({"channel": "news"}))  # no data
            await r.publish("tidings:publish:news", b"\xff\xfe")  # not UTF-8, not JSON
            await r.publish("tidings:publish:news", json.dumps({"ok": True}))
            event = await events.next()
            assert json.loads(event.data)["data"] == {"ok": True}
            assert json.loads(event.data)["offset"] == 1  # nothing before it was published
        finally:
            await r.aclose()
