"""``Publisher("redis://…")``: publishing straight into the hub's Redis, no node in the path,
with the same offsets, history and idempotency as a node's publish."""

from __future__ import annotations

import asyncio

import pytest
from integration_helpers import sse_connect

from tidings import Publisher
from tidings.config import Config
from tidings.core.broker import HistoryQuery
from tidings.exceptions import PublishError
from tidings.testing import running_server
from tidings.testing.redis import RedisServer


async def test_sync_and_async_publishes_reach_subscribers_with_offsets(
    redis_server: RedisServer,
) -> None:
    async with (
        running_server(broker=redis_server.url) as server,
        sse_connect(server, "/sse/news") as events,
    ):
        publisher = Publisher(redis_server.url)
        # Blocking code (a Django view, a Celery task) runs off the event loop.
        first = await asyncio.to_thread(publisher.publish, "news", {"n": 1})
        assert (first.channel, first.offset, first.duplicate) == ("news", 1, False)

        def in_new_loops() -> list[int]:
            # One asyncio.run after another, as Django's async_to_sync bridges do.
            return [asyncio.run(publisher.apublish("news", {"n": n})).offset for n in (2, 3)]

        assert await asyncio.to_thread(in_new_loops) == [2, 3]
        again = await publisher.apublish("news", {"n": 4}, idempotency_key="once")
        repeat = await publisher.apublish("news", {"n": 4}, idempotency_key="once")
        assert repeat.duplicate and (repeat.offset, repeat.epoch) == (again.offset, again.epoch)
        got = [await events.next() for _ in range(4)]
        assert [e.id for e in got] == [f"news:{n}:{first.epoch}" for n in range(1, 5)]
        kept = await server.app.node.history("news", HistoryQuery())
        assert [p.offset for p in kept.publications] == [1, 2, 3, 4]
        await publisher.aclose()
        publisher.close()


async def test_the_hubs_namespaces_decide_what_history_keeps(redis_server: RedisServer) -> None:
    config = Config(broker=redis_server.url, namespaces={"brief": {"history_size": 2}})
    async with running_server(broker=redis_server.url, namespaces=config.namespaces) as server:
        publisher = Publisher(redis_server.url, config=config)
        for n in range(5):
            await publisher.apublish("brief:x", {"n": n})
        kept = await server.app.node.history("brief:x", HistoryQuery())
        assert [p.offset for p in kept.publications] == [4, 5]
        await publisher.aclose()


def test_a_bad_channel_is_refused_without_reaching_redis(redis_server: RedisServer) -> None:
    publisher = Publisher(redis_server.url)
    with pytest.raises(PublishError) as refused:
        publisher.publish("no spaces allowed", "x")
    assert refused.value.status == 400 and not refused.value.retryable
    publisher.close()
