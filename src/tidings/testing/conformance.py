"""Conformance suites every broker and presence manager passes, on several nodes.

``factory()`` returns a new, unstarted member (a ``Broker`` or a ``PresenceManager``) on
the *same* shared backend each time it is called, as another node would have: the checks
start as many as they need, play nodes with them, and close them. Run all checks::

    await check_broker(lambda: MemoryBroker(backend))

or one by one, for one test per check: ``for name in BROKER_CHECKS: await
check_broker(factory, only=[name])``. A failing check raises ``AssertionError`` (or
``TimeoutError`` when an expected event never came). Times are real: expiry checks use
TTLs of a fraction of a second and wait for them, so a remote store can pass them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from tidings.core.broker import (
    TOP,
    Broker,
    HistoryQuery,
    PublishOptions,
    PublishResult,
)
from tidings.core.presence import PresenceManager
from tidings.core.publication import ClientInfo, Publication, StreamPosition

from . import TIMEOUT
from .recording import Waiting

__all__ = [
    "BROKER_CHECKS",
    "PRESENCE_CHECKS",
    "RecordingHandler",
    "check_broker",
    "check_presence",
]

_KEEP = PublishOptions(history_size=10, history_ttl=300)
_NONE = PublishOptions()

BrokerFactory = Callable[[], Broker | Awaitable[Broker]]
MakePresence = Callable[[float], Awaitable[PresenceManager]]
PresenceFactory = Callable[[float], PresenceManager | Awaitable[PresenceManager]]


class RecordingHandler(Waiting):
    """A node as a broker sees it: records broker events; ``wait_for`` waits on them."""

    def __init__(self) -> None:
        super().__init__()
        self.publications: list[Publication] = []
        self.deleted: list[str] = []
        self.joins: list[tuple[str, ClientInfo]] = []
        self.leaves: list[tuple[str, ClientInfo]] = []
        self.resyncs: list[str] = []

    def on_publication(self, pub: Publication) -> None:
        self.publications.append(pub)
        self.changed()

    def on_channel_deleted(self, channel: str) -> None:
        self.deleted.append(channel)
        self.changed()

    def on_join(self, channel: str, info: ClientInfo) -> None:
        self.joins.append((channel, info))
        self.changed()

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        self.leaves.append((channel, info))
        self.changed()

    def on_resync(self, channels: list[str]) -> None:
        self.resyncs.extend(channels)
        self.changed()

    def offsets(self, channel: str) -> list[int]:
        return [p.offset for p in self.publications if p.channel == channel]


async def _eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``condition()`` holds. For expiry only: there is no event for "time has
    passed" in a remote store, so this polls it, within ``TIMEOUT``."""
    async with asyncio.timeout(TIMEOUT):
        while not await condition():  # noqa: ASYNC110 - polling a clock, not an event
            await asyncio.sleep(0.05)


async def _made(value: Any) -> Any:
    return await value if isinstance(value, Awaitable) else value


class _Nodes:
    """Brokers started from one factory, each with a ``RecordingHandler``."""

    def __init__(self, factory: BrokerFactory) -> None:
        self.factory = factory
        self.started: list[Broker] = []

    async def node(self) -> tuple[Broker, RecordingHandler]:
        broker: Broker = await _made(self.factory())
        handler = RecordingHandler()
        broker.set_handler(handler)
        await broker.start()
        self.started.append(broker)
        return broker, handler

    async def aclose(self) -> None:
        for broker in self.started:
            await broker.aclose()


@contextlib.asynccontextmanager
async def _nodes(factory: BrokerFactory) -> AsyncIterator[_Nodes]:
    nodes = _Nodes(factory)
    try:
        yield nodes
    finally:
        await nodes.aclose()


async def _marker(publisher: Broker, handler: RecordingHandler, channel: str) -> None:
    """Publish on ``channel`` (which ``handler``'s node subscribes to) and wait for it: all
    that was published before it to that node has been delivered by then."""
    result = await publisher.publish(channel, b'"marker"', _NONE)
    await handler.wait_for(lambda: result.position.offset in handler.offsets(channel))


async def _offsets_unique_gap_free_ordered_across_nodes(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, _ = await nodes.node()
    c, seen = await nodes.node()
    await c.subscribe("count")

    async def publish_many(broker: Broker) -> list[PublishResult]:
        return [await broker.publish("count", b"%d" % i, _KEEP) for i in range(25)]

    results = await asyncio.gather(publish_many(a), publish_many(b))
    offsets = sorted(r.position.offset for batch in results for r in batch)
    assert offsets == list(range(1, 51)), offsets
    assert len({r.position.epoch for batch in results for r in batch}) == 1
    await seen.wait_for(lambda: len(seen.offsets("count")) == 50)
    assert seen.offsets("count") == list(range(1, 51))
    other = await a.publish("count-2", b"1", _KEEP)
    assert other.position.offset == 1


async def _publication_reaches_subscribed_nodes_only(nodes: _Nodes) -> None:
    a, got_a = await nodes.node()
    b, got_b = await nodes.node()
    c, got_c = await nodes.node()
    await b.subscribe("news")
    await c.subscribe("other")
    await a.publish("news", "héllo".encode(), _KEEP, is_json=False, event="ev")
    await b.publish("news", b'{"n":2}', _KEEP)
    await got_b.wait_for(lambda: len(got_b.offsets("news")) == 2)
    first = got_b.publications[0]
    assert (first.data, first.is_json, first.event) == ("héllo".encode(), False, "ev")
    await _marker(a, got_c, "other")
    assert got_c.offsets("news") == [] and got_a.offsets("news") == []


async def _subscribe_is_live_when_it_returns(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, got = await nodes.node()
    for i in range(5):
        channel = f"live-{i}"
        await b.subscribe(channel)
        await a.publish(channel, b"1", _NONE)
        await got.wait_for(lambda ch=channel: got.offsets(ch) == [1])  # type: ignore[misc]


async def _unsubscribe_stops_delivery(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, got = await nodes.node()
    await b.subscribe("gone")
    await b.subscribe("stays")
    await b.unsubscribe("gone")
    await a.publish("gone", b"1", _KEEP)
    await _marker(a, got, "stays")
    assert got.offsets("gone") == []


async def _history_is_shared_and_queried(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, _ = await nodes.node()
    for i in range(5):
        await a.publish("h", b"%d" % i, _KEEP)
    every = await b.history("h", HistoryQuery())
    assert [p.offset for p in every.publications] == [1, 2, 3, 4, 5]
    assert every.position.offset == 5
    epoch = every.position.epoch

    async def offsets(query: HistoryQuery) -> list[int]:
        return [p.offset for p in (await b.history("h", query)).publications]

    assert await offsets(HistoryQuery(since=StreamPosition(3, epoch))) == [4, 5]
    assert await offsets(HistoryQuery(since=StreamPosition(3, ""))) == [4, 5]
    assert await offsets(HistoryQuery(since=StreamPosition(5, epoch))) == []
    assert await offsets(HistoryQuery(since=StreamPosition(1, epoch), limit=2)) == [2, 3]
    assert await offsets(HistoryQuery(limit=2, reverse=True)) == [5, 4]
    since = StreamPosition(4, epoch)
    assert await offsets(HistoryQuery(since=since, reverse=True)) == [3, 2, 1]
    assert await offsets(HistoryQuery(since=since, limit=2, reverse=True)) == [3, 2]
    assert await offsets(HistoryQuery(since=StreamPosition(1, "another-epoch"))) == []
    top = await b.history("h", TOP)
    assert top.publications == [] and top.position == every.position
    (pub,) = (await b.history("h", HistoryQuery(since=StreamPosition(4, ""), limit=1))).publications
    assert pub.data == b"4"


async def _history_is_bounded_by_size(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, _ = await nodes.node()
    small = PublishOptions(history_size=3, history_ttl=300)
    for i in range(4):
        await a.publish("bounded", b"%d" % i, small)
        await b.publish("bounded", b"%d" % i, small)
    result = await a.history("bounded", HistoryQuery())
    assert [p.offset for p in result.publications] == [6, 7, 8]


async def _history_expires_by_ttl(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, _ = await nodes.node()
    ttl = 0.3
    short = PublishOptions(history_size=10, history_ttl=ttl)
    first = time.monotonic()
    await a.publish("ttl", b"1", short)
    await b.publish("ttl", b"2", short)
    kept = (await a.history("ttl", HistoryQuery())).publications
    if time.monotonic() - first < ttl:  # a slow machine may have let the first one age out
        assert len(kept) == 2
    else:
        assert len(kept) <= 2

    async def expired() -> bool:
        return not (await a.history("ttl", HistoryQuery())).publications

    await _eventually(expired)
    assert (await b.history("ttl", TOP)).position.offset == 2  # the offsets stay


async def _history_expires_entry_by_entry(nodes: _Nodes) -> None:
    # The first publication ages out while the second still counts: reads drop the first
    # and keep the second (or, on a slow machine, have dropped both), and never fail.
    a, _ = await nodes.node()
    ttl = 1.0
    options = PublishOptions(history_size=10, history_ttl=ttl)
    await a.publish("aging", b"1", options)
    first = time.monotonic()

    async def half_gone() -> bool:
        return time.monotonic() - first >= ttl / 2

    await _eventually(half_gone)
    second = await a.publish("aging", b"2", options)

    async def first_expired() -> bool:
        pubs = (await a.history("aging", HistoryQuery())).publications
        return b"1" not in [p.data for p in pubs]

    await _eventually(first_expired)
    result = await a.history("aging", HistoryQuery())
    assert [p.data for p in result.publications] in ([b"2"], [])
    assert result.position == second.position


async def _no_history_still_counts_offsets(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    await a.publish("nohist", b"1", _NONE)
    second = await a.publish("nohist", b"2", _NONE)
    result = await a.history("nohist", HistoryQuery())
    assert result.publications == [] and result.position == second.position


async def _reading_a_position_fixes_the_epoch(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, _ = await nodes.node()
    assert await a.stream_info(["fresh"]) == {}
    top = (await a.history("fresh", TOP)).position
    assert top.offset == 0 and top.epoch
    first = await b.publish("fresh", b"1", _KEEP)
    assert first.position == StreamPosition(1, top.epoch)


async def _expired_stream_starts_a_new_epoch(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, _ = await nodes.node()
    brief = PublishOptions(meta_ttl=0.3)
    old = await a.publish("brief", b"1", brief)
    await a.publish("brief", b"2", brief)

    async def forgotten() -> bool:
        return not await b.stream_info(["brief"])

    await _eventually(forgotten)
    new = await b.publish("brief", b"3", brief)
    assert new.position.offset == 1
    assert new.position.epoch != old.position.epoch  # (1, epoch) never names two publications


async def _remove_history_keeps_offsets(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, _ = await nodes.node()
    for i in range(3):
        await a.publish("rm", b"%d" % i, _KEEP)
    await b.remove_history("rm")
    assert (await a.history("rm", HistoryQuery())).publications == []
    nxt = await a.publish("rm", b"x", _KEEP)
    assert nxt.position.offset == 4


async def _delete_reaches_every_node_and_resets_the_stream(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, got = await nodes.node()
    await b.subscribe("deleted")
    old = await a.publish("deleted", b"1", _KEEP)
    await a.delete_channel("deleted")
    await got.wait_for(lambda: "deleted" in got.deleted)
    assert (await b.history("deleted", HistoryQuery())).publications == []
    new = await a.publish("deleted", b"2", _KEEP)
    assert new.position != old.position and new.position.epoch != old.position.epoch


async def _idempotent_publish_across_nodes(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, got = await nodes.node()
    await b.subscribe("once")
    keyed = PublishOptions(history_size=10, history_ttl=300, idempotency_key="k-1")
    first = await a.publish("once", b"1", keyed)
    again = await b.publish("once", b"1", keyed)
    assert not first.duplicate and again.duplicate
    assert again.position == first.position
    other = await a.publish("once", b"2", PublishOptions(10, 300, idempotency_key="k-2"))
    assert other.position.offset == 2
    history = await a.history("once", HistoryQuery())
    assert [p.offset for p in history.publications] == [1, 2]
    await _marker(a, got, "once")
    assert got.offsets("once")[:2] == [1, 2]


async def _join_and_leave_reach_subscribed_nodes(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, got = await nodes.node()
    await b.subscribe("room")
    info = ClientInfo("42", "client-1", b'{"name":"Ann"}')
    await a.publish_join("room", info)
    await a.publish_leave("room", info)
    await got.wait_for(lambda: len(got.leaves) == 1)
    assert got.joins == [("room", info)] and got.leaves == [("room", info)]


async def _publication_carries_info_and_tags(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, _ = await nodes.node()
    info = ClientInfo("7", "c7", b'{"a":1}', b'{"b":2}')
    await a.publish("tagged", b"1", _KEEP, info=info, tags={"k": "v"})
    (pub,) = (await b.history("tagged", HistoryQuery())).publications
    assert pub.info == info and pub.tags == {"k": "v"}


async def _exclude_client_reaches_every_node(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, got = await nodes.node()
    await b.subscribe("skip")
    await a.publish("skip", b"1", PublishOptions(exclude_client="c9"))
    await got.wait_for(lambda: len(got.publications) == 1)
    assert got.publications[0].exclude_client == "c9"


async def _stream_info_batched_and_channels(nodes: _Nodes) -> None:
    a, _ = await nodes.node()
    b, _ = await nodes.node()
    await a.publish("room:1", b"1", _KEEP)
    await b.publish("room:1", b"2", _KEEP)
    await a.publish("room:2", b"1", _NONE)
    await a.publish("other", b"1", _KEEP)
    infos = await b.stream_info(["room:1", "room:2", "missing"])
    assert set(infos) == {"room:1", "room:2"}
    assert infos["room:1"].position.offset == 2 and infos["room:1"].stored == 2
    assert infos["room:2"].position.offset == 1 and infos["room:2"].stored == 0
    assert sorted(await b.channels("room:")) == ["room:1", "room:2"]


BROKER_CHECKS: dict[str, Callable[[_Nodes], Awaitable[None]]] = {
    f.__name__[1:]: f
    for f in (
        _offsets_unique_gap_free_ordered_across_nodes,
        _publication_reaches_subscribed_nodes_only,
        _subscribe_is_live_when_it_returns,
        _unsubscribe_stops_delivery,
        _history_is_shared_and_queried,
        _history_is_bounded_by_size,
        _history_expires_by_ttl,
        _history_expires_entry_by_entry,
        _no_history_still_counts_offsets,
        _reading_a_position_fixes_the_epoch,
        _expired_stream_starts_a_new_epoch,
        _remove_history_keeps_offsets,
        _delete_reaches_every_node_and_resets_the_stream,
        _idempotent_publish_across_nodes,
        _join_and_leave_reach_subscribed_nodes,
        _publication_carries_info_and_tags,
        _exclude_client_reaches_every_node,
        _stream_info_batched_and_channels,
    )
}


async def check_broker(factory: BrokerFactory, *, only: Iterable[str] | None = None) -> None:
    """Run the broker checks (all, or those named in ``only``) against ``factory``."""
    for name in only if only is not None else BROKER_CHECKS:
        async with _nodes(factory) as nodes:
            await BROKER_CHECKS[name](nodes)


# presence
async def _presence_is_shared(make: Callable[[float], Awaitable[PresenceManager]]) -> None:
    a, b = await make(60.0), await make(60.0)
    ann, bob = ClientInfo("ann", "c1", b'{"x":1}'), ClientInfo("bob", "c2")
    await a.add("room", ann)
    await b.add("room", bob)
    await b.add("room", ClientInfo("ann", "c3"))
    assert set(await b.presence("room")) == {"c1", "c2", "c3"}
    assert (await a.presence("room"))["c1"] == ann
    stats = await a.stats("room")
    assert (stats.num_clients, stats.num_users) == (3, 2)
    await a.remove("room", "c3")
    assert set(await b.presence("room")) == {"c1", "c2"}
    assert await a.presence("empty") == {}
    assert (await a.stats("empty")).num_clients == 0


async def _entries_of_a_silent_node_expire(
    make: Callable[[float], Awaitable[PresenceManager]],
) -> None:
    dying, living = await make(0.4), await make(0.4)
    await dying.add("room", ClientInfo("ann", "gone"))
    await living.add("room", ClientInfo("bob", "here"))

    async def expired() -> bool:
        await living.add("room", ClientInfo("bob", "here"))  # the living node refreshes
        return "gone" not in await living.presence("room")

    await _eventually(expired)
    assert set(await living.presence("room")) == {"here"}


PRESENCE_CHECKS: dict[
    str, Callable[[Callable[[float], Awaitable[PresenceManager]]], Awaitable[None]]
] = {f.__name__[1:]: f for f in (_presence_is_shared, _entries_of_a_silent_node_expire)}


async def check_presence(factory: PresenceFactory, *, only: Iterable[str] | None = None) -> None:
    """Run the presence checks against ``factory(ttl)``, which returns a new, unstarted
    manager with that entry TTL on the shared backend."""
    for name in only if only is not None else PRESENCE_CHECKS:
        started: list[PresenceManager] = []
        try:
            await PRESENCE_CHECKS[name](_presence_maker(factory, started))
        finally:
            for manager in started:
                await manager.aclose()


def _presence_maker(factory: PresenceFactory, started: list[PresenceManager]) -> MakePresence:
    async def make(ttl: float) -> PresenceManager:
        manager: PresenceManager = await _made(factory(ttl))
        await manager.start()
        started.append(manager)
        return manager

    return make
