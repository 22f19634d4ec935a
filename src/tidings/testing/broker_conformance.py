"""The contract every ``Broker`` must keep, as a pytest class to subclass.

Subclass ``BrokerConformance`` in a test module and provide an async ``make_broker``
fixture-like method returning a started broker; every test here then runs against it::

    class TestMemoryBroker(BrokerConformance):
        async def make_broker(self) -> Broker:
            return MemoryBroker()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tidings.core.broker import Broker
from tidings.core.channels import ChannelOptions
from tidings.core.publication import ClientInfo, Publication
from tidings.testing import TIMEOUT

__all__ = ["BrokerConformance", "RecordingHandler"]

KEEP = ChannelOptions(history_size=10, history_ttl=300)


class RecordingHandler:
    """Records broker events and lets a test wait for them."""

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self.deleted: list[str] = []
        self.joins: list[tuple[str, ClientInfo]] = []
        self.leaves: list[tuple[str, ClientInfo]] = []
        self._changed = asyncio.Event()

    def on_publication(self, pub: Publication) -> None:
        self.publications.append(pub)
        self._changed.set()

    def on_channel_deleted(self, channel: str) -> None:
        self.deleted.append(channel)
        self._changed.set()

    def on_join(self, channel: str, info: ClientInfo) -> None:
        self.joins.append((channel, info))
        self._changed.set()

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        self.leaves.append((channel, info))
        self._changed.set()

    async def wait_for(self, count: int) -> list[Publication]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.publications) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.publications

    async def wait_deleted(self, channel: str) -> None:
        async with asyncio.timeout(TIMEOUT):
            while channel not in self.deleted:
                self._changed.clear()
                await self._changed.wait()


class BrokerConformance:
    """Tests every broker passes."""

    async def make_broker(self) -> Broker:
        raise NotImplementedError

    @pytest.fixture
    async def broker(self) -> AsyncIterator[Broker]:
        broker = await self.make_broker()
        broker.set_handler(RecordingHandler())
        await broker.start()
        try:
            yield broker
        finally:
            await broker.aclose()

    @staticmethod
    def handler(broker: Broker) -> RecordingHandler:
        assert isinstance(broker.handler, RecordingHandler)
        return broker.handler

    async def test_offsets_grow_by_one_in_one_epoch(self, broker: Broker) -> None:
        pubs = [await broker.publish("c1", b'{"n":%d}' % i, options=KEEP) for i in range(3)]
        assert [p.offset for p in pubs] == [1, 2, 3]
        assert len({p.epoch for p in pubs}) == 1
        other = await broker.publish("c2", b"1", options=KEEP)
        assert other.offset == 1

    async def test_publication_keeps_payload_kind_and_event(self, broker: Broker) -> None:
        await broker.subscribe("k")
        await broker.publish("k", "héllo".encode(), options=KEEP, is_json=False, event="ev")
        result = await broker.history("k")
        (pub,) = result.publications
        assert (pub.data, pub.is_json, pub.event) == ("héllo".encode(), False, "ev")

    async def test_subscribed_node_receives_in_order(self, broker: Broker) -> None:
        await broker.subscribe("ordered")
        for i in range(20):
            await broker.publish("ordered", str(i).encode(), options=KEEP)
        got = await self.handler(broker).wait_for(20)
        assert [p.offset for p in got if p.channel == "ordered"] == list(range(1, 21))

    async def test_history_since_limit_reverse(self, broker: Broker) -> None:
        for i in range(5):
            await broker.publish("h", str(i).encode(), options=KEEP)
        result = await broker.history("h")
        assert [p.offset for p in result.publications] == [1, 2, 3, 4, 5]
        assert result.position.offset == 5
        since = await broker.history("h", since_offset=3)
        assert [p.offset for p in since.publications] == [4, 5]
        assert (await broker.history("h", since_offset=5)).publications == []
        limited = await broker.history("h", since_offset=1, limit=2)
        assert [p.offset for p in limited.publications] == [2, 3]
        newest = await broker.history("h", limit=2, reverse=True)
        assert [p.offset for p in newest.publications] == [5, 4]
        top = await broker.history("h", limit=0)
        assert top.publications == [] and top.position == result.position

    async def test_history_is_bounded_by_size(self, broker: Broker) -> None:
        small = ChannelOptions(history_size=3, history_ttl=300)
        for i in range(7):
            await broker.publish("bounded", str(i).encode(), options=small)
        result = await broker.history("bounded")
        assert [p.offset for p in result.publications] == [5, 6, 7]

    async def test_no_history_still_counts_offsets(self, broker: Broker) -> None:
        none = ChannelOptions(history_size=0, history_ttl=0)
        await broker.publish("nohist", b"1", options=none)
        await broker.publish("nohist", b"2", options=none)
        result = await broker.history("nohist")
        assert result.publications == [] and result.position.offset == 2

    async def test_unknown_channel_history_is_empty(self, broker: Broker) -> None:
        result = await broker.history("never")
        assert result.publications == [] and result.position.offset == 0
        assert await broker.stream_info("never") is None

    async def test_remove_history_keeps_offsets(self, broker: Broker) -> None:
        for i in range(3):
            await broker.publish("rm", str(i).encode(), options=KEEP)
        await broker.remove_history("rm")
        assert (await broker.history("rm")).publications == []
        nxt = await broker.publish("rm", b"x", options=KEEP)
        assert nxt.offset == 4

    async def test_delete_channel_tells_nodes(self, broker: Broker) -> None:
        await broker.subscribe("gone")
        await broker.publish("gone", b"1", options=KEEP)
        await broker.delete_channel("gone")
        await self.handler(broker).wait_deleted("gone")
        assert (await broker.history("gone")).publications == []

    async def test_join_and_leave_reach_subscribed_nodes(self, broker: Broker) -> None:
        await broker.subscribe("room")
        info = ClientInfo("42", "client-1", b'{"name":"Ann"}')
        await broker.publish_join("room", info)
        await broker.publish_leave("room", info)
        handler = self.handler(broker)
        async with asyncio.timeout(TIMEOUT):
            while len(handler.leaves) < 1:
                handler._changed.clear()
                await handler._changed.wait()
        assert handler.joins == [("room", info)] and handler.leaves == [("room", info)]

    async def test_publication_carries_publisher_info_and_tags(self, broker: Broker) -> None:
        info = ClientInfo("7", "c7")
        await broker.publish("tagged", b"1", options=KEEP, info=info, tags={"k": "v"})
        (pub,) = (await broker.history("tagged")).publications
        assert pub.info == info and pub.tags == {"k": "v"}

    async def test_stream_info_and_channels(self, broker: Broker) -> None:
        await broker.publish("room:1", b"1", options=KEEP)
        await broker.publish("room:1", b"2", options=KEEP)
        await broker.publish("room:2", b"1", options=KEEP)
        await broker.publish("other", b"1", options=KEEP)
        info = await broker.stream_info("room:1")
        assert info is not None and info.position.offset == 2 and info.stored == 2
        assert sorted(await broker.channels("room:")) == ["room:1", "room:2"]
