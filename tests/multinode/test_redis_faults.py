"""What a node on Redis does when Redis fails: a dropped PUB/SUB connection, a hung
server, a restart that loses everything. Every subscriber receives every publication or is
told that it could not (a gap notice) — never a silent loss."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tidings.brokers.redis import RedisBroker
from tidings.brokers.redis_backend import RedisBackend
from tidings.brokers.redis_control import RedisController, RedisPresenceManager
from tidings.brokers.redis_settings import RedisSettings
from tidings.core.node import Node
from tidings.exceptions import BrokerError
from tidings.testing import TIMEOUT, RecordingSubscriber, running_server
from tidings.testing.redis import RedisServer, redis_server


def redis_node(settings: RedisSettings) -> Node:
    backend = RedisBackend(settings)
    return Node(
        RedisBroker(backend), RedisPresenceManager(backend), RedisController(backend, timeout=2)
    )


@pytest.fixture
async def server():
    async with redis_server() as srv:
        yield srv


@pytest.fixture
def settings(server: RedisServer) -> RedisSettings:
    return RedisSettings(urls=(server.url,), health_interval=0.2, timeout=2, connect_timeout=2)


async def nodes(settings: RedisSettings, count: int) -> list[Node]:
    started = []
    for _ in range(count):
        node = redis_node(settings)
        await node.start()
        started.append(node)
    return started


async def subscribe(node: Node, channel: str) -> RecordingSubscriber:
    sub = RecordingSubscriber()
    handle = await node.subscribe(sub, channel)
    handle.go_live()
    return sub


def pubsub_clients_killed(server: RedisServer) -> None:
    server.command("CLIENT", "KILL", "TYPE", "pubsub")


async def wait_until(condition, timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_publications_made_while_pubsub_was_down_are_filled_from_history(
    server: RedisServer, settings: RedisSettings
) -> None:
    reader, writer = await nodes(settings, 2)
    try:
        sub = await subscribe(reader, "news")
        await writer.publish("news", b"1")
        await sub.wait_for(lambda: len(sub.publications) == 1)
        pubsub_clients_killed(server)
        # Published before the reader's connection is back: PUB/SUB drops them, and no
        # later publication reveals the gap. The reader finds them after resubscribing.
        for i in range(2, 6):
            await writer.publish("news", b"%d" % i)
        await sub.wait_for(lambda: len(sub.publications) == 5)
        assert [p.offset for p in sub.publications] == [1, 2, 3, 4, 5]
        assert [p.data for p in sub.publications] == [b"1", b"2", b"3", b"4", b"5"]
        assert sub.notices == []
    finally:
        for node in (reader, writer):
            await node.aclose()


async def test_a_hung_server_is_noticed_and_reported_then_recovered(
    server: RedisServer, settings: RedisSettings
) -> None:
    (node,) = await nodes(settings, 1)
    try:
        sub = await subscribe(node, "news")
        assert node.broker.health() == ""
        server.pause()  # the socket stays open: only the missing PONGs tell
        try:
            await wait_until(lambda: node.broker.health() != "")
            assert "PUB/SUB" in node.broker.health()
        finally:
            server.resume()
        await wait_until(lambda: node.broker.health() == "")
        await node.publish("news", b"after")
        await sub.wait_for(lambda: [p.data for p in sub.publications] == [b"after"])
    finally:
        await node.aclose()


async def test_a_restart_that_lost_the_streams_is_told_to_subscribers(
    server: RedisServer, settings: RedisSettings
) -> None:
    reader, writer = await nodes(settings, 2)
    try:
        sub = await subscribe(reader, "news")
        first = await writer.publish("news", b"1")
        await sub.wait_for(lambda: len(sub.publications) == 1)
        await server.arestart(wipe=True)  # no persistence: offsets and epochs are gone

        async def published_again() -> None:
            while True:
                try:
                    return await writer.publish("news", b"after")
                except BrokerError:
                    await asyncio.sleep(0.05)  # Redis coming back: retry

        async with asyncio.timeout(TIMEOUT):
            again = await published_again()
        assert again.position.epoch != first.position.epoch
        await sub.wait_for(lambda: any(p.data == b"after" for p in sub.publications))
        # The stream was recreated: the subscriber was told before anything of the new one.
        kinds = [kind for kind, _, _ in sub.notices]
        assert kinds and kinds[0] == "gap"
        assert sub.notices[0][2]["reason"] == "epoch"
        last = sub.publications[-1]
        assert (last.offset, last.epoch) == (1, again.position.epoch)
    finally:
        for node in (reader, writer):
            await node.aclose()


async def test_subscribe_and_publish_fail_cleanly_while_redis_is_down(
    server: RedisServer, settings: RedisSettings
) -> None:
    (node,) = await nodes(settings, 1)
    try:
        server.stop()
        with pytest.raises(BrokerError):
            await node.publish("news", b"1")
        sub = RecordingSubscriber()
        with pytest.raises(BrokerError):
            await node.subscribe(sub, "news")
        assert "news" not in node.subscriptions.states  # nothing half-made left behind
        assert node.broker.health() != ""
        await server.astart()
        await wait_until(lambda: node.broker.health() == "")
        sub = await subscribe(node, "news")
        await node.publish("news", b"back")
        await sub.wait_for(lambda: [p.data for p in sub.publications] == [b"back"])
    finally:
        await node.aclose()


async def test_a_sentinel_failover_moves_the_node_to_the_new_master() -> None:
    from tidings.testing.redis import redis_sentinel

    async with redis_sentinel() as group:
        urls = tuple(f"redis://{h}:{p}" for h, p in group.sentinel_addresses)
        settings = RedisSettings(
            urls=urls, sentinel_master=group.master_name, health_interval=0.2, timeout=2
        )
        reader, writer = await nodes(settings, 2)
        try:
            sub = await subscribe(reader, "news")
            await writer.publish("news", b"1")
            await sub.wait_for(lambda: len(sub.publications) == 1)
            await group.afailover()

            async def published_again() -> None:
                while True:
                    try:
                        await writer.publish("news", b"2")
                        return
                    except BrokerError:
                        await asyncio.sleep(0.05)  # the old master refuses writes: retry

            async with asyncio.timeout(TIMEOUT):
                await published_again()
            # The replica had the stream: the offsets go on, nothing is told, nothing lost.
            await sub.wait_for(lambda: len(sub.publications) == 2)
            assert [(p.offset, p.data) for p in sub.publications] == [(1, b"1"), (2, b"2")]
            assert sub.notices == []
        finally:
            for node in (reader, writer):
                await node.aclose()


async def test_a_cluster_slot_moving_to_another_master_keeps_the_stream_going() -> None:
    from tidings.testing.redis import redis_cluster

    async with redis_cluster(masters=3) as cluster:
        settings = RedisSettings(
            urls=tuple(cluster.urls), cluster=True, health_interval=0.2, timeout=2
        )
        reader, writer = await nodes(settings, 2)
        try:
            sub = await subscribe(reader, "news")
            await writer.publish("news", b"1")
            await sub.wait_for(lambda: len(sub.publications) == 1)
            slot = cluster.key_slot("{news}")  # the channel's keys and shard channel
            source = cluster.master_for_slot(slot)
            target = next(m for m in cluster.nodes[:3] if m is not source)
            cluster.move_slot(slot, target)

            async def published_again() -> None:
                while True:
                    try:
                        await writer.publish("news", b"2")
                        return
                    except BrokerError:
                        await asyncio.sleep(0.05)  # the cluster's map is settling: retry

            async with asyncio.timeout(TIMEOUT):
                await published_again()
            # The stream's keys moved with the slot; the subscriber was moved to the new
            # master (sunsubscribe, then SSUBSCRIBE there) and resynced from history.
            await sub.wait_for(lambda: len(sub.publications) == 2)
            assert [(p.offset, p.data) for p in sub.publications] == [(1, b"1"), (2, b"2")]
            assert len({p.epoch for p in sub.publications}) == 1
            assert sub.notices == []
            assert cluster.master_for_key("{news}") is target
        finally:
            for node in (reader, writer):
                await node.aclose()


async def test_health_answers_503_while_redis_is_down(server: RedisServer) -> None:
    async with (
        running_server(broker=server.url, redis_health_interval=0.2) as hub,
        httpx.AsyncClient(base_url=hub.url) as http,
    ):
        assert (await http.get("/health")).status_code == 200
        server.stop()

        async def status() -> int:
            return (await http.get("/health")).status_code

        async with asyncio.timeout(TIMEOUT):
            while (answer := await http.get("/health")).status_code != 503:
                await asyncio.sleep(0.05)  # Redis' state is outside this process: poll
        assert answer.json()["reason"] == "redis PUB/SUB connection down"
        assert "127.0.0.1" not in answer.text  # no internals to clients
        await server.astart()
        async with asyncio.timeout(TIMEOUT):
            while await status() != 200:
                await asyncio.sleep(0.05)
