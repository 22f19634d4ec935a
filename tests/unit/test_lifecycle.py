"""The channel lifecycle on several nodes sharing one memory backend, with faults injected:
subscriptions that take time to become live, lost deliveries, nodes that die."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tidings.brokers import MemoryBackend, MemoryBroker, MemoryController, MemoryPresenceManager
from tidings.core.channels import ChannelOptions, Namespaces
from tidings.core.node import Node
from tidings.core.publication import ClientInfo, StreamPosition
from tidings.exceptions import BrokerUnavailable
from tidings.testing import FakeClock, RecordingSubscriber, memory_node

KEEP = Namespaces(ChannelOptions(history_size=50, history_ttl=300))


@pytest.fixture
async def backend() -> AsyncIterator[MemoryBackend]:
    yield MemoryBackend()


async def started(*nodes: Node) -> None:
    for node in nodes:
        await node.start()


async def join(
    node: Node, sub: RecordingSubscriber, channel: str, since: StreamPosition | None = None
) -> None:
    handle = await node.subscribe(sub, channel, since)
    handle.replay()
    handle.go_live()


class GatedBroker(MemoryBroker):
    """A broker whose SUBSCRIBE completes only when the test opens the gate, as Redis
    PUB/SUB delivers nothing to a connection until its SUBSCRIBE is done."""

    def __init__(self, backend: MemoryBackend) -> None:
        super().__init__(backend)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def subscribe(self, channel: str) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().subscribe(channel)


async def test_every_subscriber_waits_for_the_broker_subscription(backend):
    """Regression (defect 2): a second local subscriber resuming from offset 0 was declared
    live before the broker delivered anything and missed offset 1, with no gap notice,
    although history held it."""
    gated = GatedBroker(backend)
    node = Node(gated, MemoryPresenceManager(backend), MemoryController(backend), KEEP)
    other = memory_node(backend, namespaces=KEEP)
    await started(node, other)
    first, second = RecordingSubscriber(), RecordingSubscriber()
    one = asyncio.ensure_future(join(node, first, "c"))
    await gated.entered.wait()  # the first subscriber's SUBSCRIBE is in flight
    two = asyncio.ensure_future(join(node, second, "c", StreamPosition(0, "")))
    await asyncio.sleep(0)  # one loop step: the second subscribe runs up to its first wait
    await other.publish("c", b"1")  # not delivered to `node`: its SUBSCRIBE isn't done
    gated.gate.set()
    await asyncio.gather(one, two)
    await other.publish("c", b"2")
    await second.wait_for(lambda: len(second.publications) == 2)
    assert second.offsets == [("c", 1), ("c", 2)] and second.notices == []
    await first.wait_for(lambda: len(first.publications) == 1)
    assert first.offsets == [("c", 2)]  # it asked for no history
    await node.aclose()
    await other.aclose()


async def test_a_failed_broker_subscription_fails_every_waiter_and_leaves_nothing(backend):
    gated = GatedBroker(backend)
    node = Node(gated, MemoryPresenceManager(backend), MemoryController(backend), KEEP)
    await node.start()
    subs = [RecordingSubscriber(), RecordingSubscriber()]
    tasks = [asyncio.ensure_future(node.subscribe(s, "f")) for s in subs]
    await gated.entered.wait()

    async def refuse(*args: object) -> None:
        raise BrokerUnavailable("no broker")

    # The SUBSCRIBE succeeds; reading the stream's position after it fails.
    gated.history = refuse  # type: ignore[assignment,method-assign]
    gated.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, BrokerUnavailable) for r in results)
    assert "f" not in node.subscriptions.states and node.hub.count("f") == 0
    await node.drain()
    assert "f" not in backend.subscribers  # the half-made subscription was undone
    await node.aclose()


async def test_a_lost_delivery_is_filled_from_history_in_order(backend):
    a, b = memory_node(backend, namespaces=KEEP), memory_node(backend, namespaces=KEEP)
    await started(a, b)
    sub = RecordingSubscriber()
    await join(b, sub, "c")
    backend.lose = lambda pub, receiver: pub.offset in (2, 3) and receiver is b.broker
    for i in range(5):
        await a.publish("c", b"%d" % i)
    await sub.wait_for(lambda: len(sub.publications) == 5)
    assert sub.offsets == [("c", o) for o in range(1, 6)]
    assert sub.notices == []  # nothing was lost for the subscriber: no gap to tell
    await a.aclose()
    await b.aclose()


async def test_a_gap_history_cannot_fill_is_told_then_delivery_goes_on(backend):
    none = Namespaces(ChannelOptions(history_size=0, history_ttl=0))
    a, b = memory_node(backend, namespaces=none), memory_node(backend, namespaces=none)
    await started(a, b)
    sub = RecordingSubscriber()
    await join(b, sub, "c")
    backend.lose = lambda pub, receiver: pub.offset == 2 and receiver is b.broker
    for i in range(3):
        await a.publish("c", b"%d" % i)
    await sub.wait_for(lambda: len(sub.publications) == 2)
    assert sub.offsets == [("c", 1), ("c", 3)]
    ((kind, channel, fields),) = sub.notices
    assert (kind, channel, fields["reason"], fields["expected"]) == ("gap", "c", "history", 2)
    assert fields["resumed_from"] == 3
    await a.aclose()
    await b.aclose()


async def test_a_repeated_delivery_is_dropped(backend):
    node = memory_node(backend, namespaces=KEEP)
    await node.start()
    sub = RecordingSubscriber()
    await join(node, sub, "c")
    await node.publish("c", b"1")
    (pub,) = sub.publications
    node.on_publication(pub)  # delivered twice by an at-most-once broker's resubscribe
    await node.publish("c", b"2")
    assert sub.offsets == [("c", 1), ("c", 2)]
    await node.aclose()


async def test_publications_reach_subscribers_on_every_node_with_delays(backend):
    backend.delivery_delay = 0.002
    backend.subscribe_delay = 0.002
    nodes = [memory_node(backend, namespaces=KEEP) for _ in range(3)]
    await started(*nodes)
    subs = [RecordingSubscriber() for _ in nodes]
    for node, sub in zip(nodes, subs, strict=True):
        await join(node, sub, "all")
    await asyncio.gather(*(n.publish("all", b"%d" % i) for i, n in enumerate(nodes * 5)))
    for sub in subs:
        await sub.wait_for(lambda s=sub: len(s.publications) == 15)  # type: ignore[misc]
        assert [o for _, o in sub.offsets] == list(range(1, 16))
    for node in nodes:
        await node.aclose()


async def test_presence_of_a_node_that_died_expires():
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    alive = memory_node(backend, clock=clock, presence_ttl=30)
    dying = memory_node(backend, clock=clock, presence_ttl=30)
    await started(alive, dying)
    await alive.add_presence("room", ClientInfo("ann", "c-ann"))
    await dying.add_presence("room", ClientInfo("bob", "c-bob"))
    backend.kill(dying.broker, dying.presence_manager, dying.controller)
    for _ in range(6):  # a minute: two TTLs, the alive node refreshing every 10 s
        clock.advance(10)
        await alive.drain()
        await dying.drain()
    assert set(await alive.presence_manager.presence("room")) == {"c-ann"}
    await alive.aclose()
    assert await alive.presence_manager.presence("room") == {}  # removed at shutdown


async def test_info_and_commands_reach_every_node(backend):
    a, b = memory_node(backend, name="a"), memory_node(backend, name="b")
    await started(a, b)
    answers = await a.controller.broadcast({"method": "info"})
    assert sorted(n["name"] for n in answers) == ["a", "b"]
    assert sorted(await b.controller.nodes()) == sorted([a.id, b.id])
    assert (await a.controller.send(b.id, {"method": "channels"})) == {"channels": {}}
    assert (await a.controller.send(b.id, {"method": "nope"}))["error"]
    await b.aclose()
    assert await a.controller.nodes() == [a.id]
    await a.aclose()
