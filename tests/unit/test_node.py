"""The node's recovery rules, with the memory broker and a recording subscriber."""

from __future__ import annotations

import pytest

from tidings.core.channels import ChannelOptions, Namespaces
from tidings.core.hub import Formatter
from tidings.core.node import Node
from tidings.core.publication import Publication, StreamPosition
from tidings.exceptions import InvalidChannel
from tidings.testing import RecordingSubscriber, memory_node


class Counting(Formatter):
    __slots__ = ()
    builds = 0

    def build(self, pub: Publication) -> bytes:
        Counting.builds += 1
        return pub.data


COUNTING = Counting()


@pytest.fixture
async def node():
    n = memory_node(namespaces=Namespaces(ChannelOptions(history_size=5, history_ttl=300)))
    await n.start()
    yield n
    await n.aclose()


async def publish(node: Node, channel: str, count: int) -> None:
    for i in range(count):
        await node.publish(channel, str(i).encode())


async def join(
    node: Node,
    sub: RecordingSubscriber,
    channel: str,
    since: StreamPosition | None = None,
    limit: int | None = None,
) -> StreamPosition | None:
    """Subscribe as the simple endpoints do: the gap notice, then what history gave."""
    handle = await node.subscribe(sub, channel, since, limit)
    handle.replay()
    return handle.go_live()


async def closed(node: Node, channel: str) -> bool:
    """Wait for the channel's broker unsubscribe; True once the node forgot the channel."""
    state = node.subscriptions.states.get(channel)
    if state is not None and state.closing is not None:
        await state.closing
    return channel not in node.subscriptions.states


async def epoch(node: Node, channel: str) -> str:
    return (await node.stream_info([channel]))[channel].position.epoch


async def test_live_delivery_and_reach_count(node):
    a, b = RecordingSubscriber(), RecordingSubscriber()
    assert await join(node, a, "c") is None
    await join(node, b, "c")
    done = await node.publish("c", b"1")
    assert done.subscribers == 2 and done.position.offset == 1
    assert a.offsets == b.offsets == [("c", 1)]


async def test_each_publication_is_encoded_once_for_many_subscribers(node):
    subs = [RecordingSubscriber(COUNTING) for _ in range(50)]
    for s in subs:
        await join(node, s, "many")
    before = Counting.builds
    await node.publish("many", b"x")
    assert Counting.builds - before == 1
    assert all(s.offsets == [("many", 1)] for s in subs)


async def test_resume_delivers_exactly_what_was_missed(node):
    await publish(node, "r", 4)
    sub = RecordingSubscriber()
    pos = await join(node, sub, "r", StreamPosition(2, await epoch(node, "r")))
    assert sub.offsets == [("r", 3), ("r", 4)]
    assert sub.notices == []
    assert pos is not None and pos.offset == 4
    await node.publish("r", b"live")
    assert sub.offsets[-1] == ("r", 5)


async def test_resume_when_up_to_date_delivers_nothing(node):
    await publish(node, "u", 2)
    sub = RecordingSubscriber()
    handle = await node.subscribe(sub, "u", StreamPosition(2, ""))
    assert handle.recovered and handle.publications == [] and handle.gap is None
    handle.go_live()


async def test_gap_when_history_was_trimmed(node):
    await publish(node, "g", 9)  # history keeps 5..9
    sub = RecordingSubscriber()
    await join(node, sub, "g", StreamPosition(2, ""))
    ((kind, channel, fields),) = sub.notices
    assert (kind, channel, fields["reason"]) == ("gap", "g", "history")
    assert fields["expected"] == 3 and fields["resumed_from"] == 5
    assert sub.offsets == [("g", o) for o in range(5, 10)]


async def test_gap_when_epoch_changed(node):
    await publish(node, "e", 3)
    sub = RecordingSubscriber()
    await join(node, sub, "e", StreamPosition(1, "older-epoch"))
    assert sub.notices[0][2]["reason"] == "epoch"
    assert sub.offsets == [("e", 1), ("e", 2), ("e", 3)]


async def test_gap_when_position_is_ahead_of_the_stream(node):
    await publish(node, "p", 1)
    sub = RecordingSubscriber()
    await join(node, sub, "p", StreamPosition(50, ""))
    assert sub.notices[0][2]["reason"] == "position"
    assert sub.offsets == []


async def test_more_than_the_recovery_limit_is_a_gap_with_the_newest():
    n = memory_node(
        namespaces=Namespaces(ChannelOptions(history_size=50, history_ttl=300)),
        recovery_limit=10,
    )
    await n.start()
    try:
        await publish(n, "big", 30)
        sub = RecordingSubscriber()
        handle = await n.subscribe(sub, "big", StreamPosition(5, ""))
        assert not handle.recovered and handle.gap is not None
        assert handle.gap.reason == "limit"
        assert [p.offset for p in handle.publications] == list(range(21, 31))
        handle.abort()
    finally:
        await n.aclose()


async def test_last_n(node):
    await publish(node, "l", 4)
    sub = RecordingSubscriber()
    pos = await join(node, sub, "l", limit=2)
    assert sub.offsets == [("l", 3), ("l", 4)]
    assert pos is not None and pos.offset == 4
    empty = RecordingSubscriber()
    pos = await join(node, empty, "l", limit=0)
    assert pos is not None and pos.offset == 4 and empty.offsets == []


async def test_publications_during_history_read_are_not_lost_or_repeated(node):
    """A slow history read (as with a remote broker) overlaps with live publications."""
    await publish(node, "race", 3)
    broker = node.broker
    real_history = broker.history

    async def slow_history(channel, query):
        result = await real_history(channel, query)
        if query.since is not None:
            # While the recovery read is "in flight", two more publications arrive live.
            await node.publish(channel, b"x")
            await node.publish(channel, b"y")
        return result

    broker.history = slow_history  # fault injection: widen the race window
    sub = RecordingSubscriber()
    await join(node, sub, "race", StreamPosition(1, ""))
    broker.history = real_history
    assert sub.offsets == [("race", o) for o in (2, 3, 4, 5)]
    await node.publish("race", b"z")
    assert sub.offsets[-1] == ("race", 6)


async def test_abort_leaves_nothing_behind(node):
    sub = RecordingSubscriber()
    handle = await node.subscribe(sub, "a", StreamPosition(0, ""))
    handle.abort()
    await node.publish("a", b"1")
    assert sub.offsets == []
    assert node.hub.count("a") == 0
    assert await closed(node, "a")


async def test_unsubscribe_during_catch_up_drops_the_subscriber(node):
    sub = RecordingSubscriber()
    handle = await node.subscribe(sub, "u", StreamPosition(0, ""))
    node.unsubscribe(sub, "u")
    handle.go_live()
    await node.publish("u", b"1")
    assert sub.offsets == [] and node.hub.count("u") == 0


async def test_unsubscribe_and_delete(node):
    a, b = RecordingSubscriber(), RecordingSubscriber()
    await join(node, a, "d")
    await join(node, b, "d")
    node.unsubscribe(a, "d")
    done = await node.publish("d", b"1")
    assert done.subscribers == 1 and a.offsets == []
    assert await node.delete_channel("d") == 1
    assert b.deleted == ["d"]
    assert node.hub.count("d") == 0
    assert await node.stream_info(["d"]) == {}


async def test_delta_bookkeeping_goes_with_the_last_subscriber():
    opts = ChannelOptions(history_size=5, history_ttl=300, allowed_delta_types=("fossil",))
    n = memory_node(namespaces=Namespaces(opts))
    await n.start()
    try:
        sub = RecordingSubscriber()
        await join(n, sub, "delta")
        await n.publish("delta", b'"one"')
        await n.publish("delta", b'"two"')
        assert sub.publications[1].prev == (b'"one"', True)
        n.unsubscribe(sub, "delta")
        assert await closed(n, "delta")
    finally:
        await n.aclose()


async def test_publish_to_a_bad_channel_raises(node):
    with pytest.raises(InvalidChannel):
        await node.publish("bad name", b"1")


async def test_idempotent_publish_through_the_node(node):
    first = await node.publish("i", b"1", idempotency_key="abc")
    again = await node.publish("i", b"1", idempotency_key="abc")
    assert again.duplicate and again.position == first.position
    assert node.published == 1
