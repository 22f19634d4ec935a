"""The node's resume rules, with the memory broker and a recording subscriber."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.brokers.memory import MemoryBroker
from tidings.core.channels import ChannelOptions, Namespaces
from tidings.core.hub import Formatter
from tidings.core.node import Node, Resume
from tidings.core.publication import Publication
from tidings.exceptions import InvalidChannel


class Raw(Formatter):
    __slots__ = ()
    builds = 0

    def build(self, pub: Publication) -> bytes:
        Raw.builds += 1
        return pub.data


RAW = Raw()


class Recorder:
    def __init__(self) -> None:
        self.formatter = RAW
        self.closed = False
        self.got: list[tuple[str, int]] = []
        self.notices: list[tuple[str, str, dict[str, Any]]] = []
        self.deleted: list[str] = []

    def deliver(self, pub: Publication, data: bytes) -> None:
        assert data == pub.data
        self.got.append((pub.channel, pub.offset))

    def notice(self, kind: str, channel: str, fields: dict[str, Any]) -> None:
        self.notices.append((kind, channel, fields))

    def channel_deleted(self, channel: str) -> None:
        self.deleted.append(channel)


@pytest.fixture
async def node():
    n = Node(MemoryBroker(), Namespaces(ChannelOptions(history_size=5, history_ttl=300)))
    await n.start()
    yield n
    await n.aclose()


async def publish(node: Node, channel: str, count: int) -> None:
    for i in range(count):
        await node.publish(channel, str(i).encode())


async def test_live_delivery_and_reach_count(node):
    a, b = Recorder(), Recorder()
    assert await node.subscribe(a, "c") is None
    await node.subscribe(b, "c")
    _pub, reached = await node.publish("c", b"1")
    assert reached == 2
    assert a.got == b.got == [("c", 1)]


async def test_each_publication_is_encoded_once_for_many_subscribers(node):
    subs = [Recorder() for _ in range(50)]
    for s in subs:
        await node.subscribe(s, "many")
    before = Raw.builds
    await node.publish("many", b"x")
    assert Raw.builds - before == 1
    assert all(s.got == [("many", 1)] for s in subs)


async def test_resume_delivers_exactly_what_was_missed(node):
    await publish(node, "r", 4)
    sub = Recorder()
    pos = await node.subscribe(sub, "r", Resume(2, (await node.stream_info("r")).position.epoch))
    assert sub.got == [("r", 3), ("r", 4)]
    assert sub.notices == []
    assert pos[0] == 4
    await node.publish("r", b"live")
    assert sub.got[-1] == ("r", 5)


async def test_resume_when_up_to_date_delivers_nothing(node):
    await publish(node, "u", 2)
    sub = Recorder()
    await node.subscribe(sub, "u", Resume(2, ""))
    assert sub.got == [] and sub.notices == []


async def test_gap_when_history_was_trimmed(node):
    await publish(node, "g", 9)  # history keeps 5..9
    sub = Recorder()
    await node.subscribe(sub, "g", Resume(2, ""))
    ((kind, channel, fields),) = sub.notices
    assert (kind, channel, fields["reason"]) == ("gap", "g", "history")
    assert fields["expected"] == 3 and fields["resumed_from"] == 5
    assert sub.got == [("g", o) for o in range(5, 10)]


async def test_gap_when_epoch_changed(node):
    await publish(node, "e", 3)
    sub = Recorder()
    await node.subscribe(sub, "e", Resume(1, "older-epoch"))
    assert sub.notices[0][2]["reason"] == "epoch"
    assert sub.got == [("e", 1), ("e", 2), ("e", 3)]


async def test_gap_when_position_is_ahead_of_the_stream(node):
    await publish(node, "p", 1)
    sub = Recorder()
    await node.subscribe(sub, "p", Resume(50, ""))
    assert sub.notices[0][2]["reason"] == "position"
    assert sub.got == []


async def test_last_n(node):
    await publish(node, "l", 4)
    sub = Recorder()
    pos = await node.subscribe(sub, "l", Resume(last=2))
    assert sub.got == [("l", 3), ("l", 4)]
    assert pos[0] == 4
    empty = Recorder()
    assert (await node.subscribe(empty, "l", Resume(last=0)))[0] == 4
    assert empty.got == []


async def test_publications_during_history_read_are_not_lost_or_repeated(node):
    """A slow history read (as with a remote broker) overlaps with live publications."""
    await publish(node, "race", 3)
    broker = node.broker
    real_history = broker.history

    async def slow_history(channel, **kw):
        result = await real_history(channel, **kw)
        # While this read is "in flight", two more publications arrive live.
        await node.publish(channel, b"x")
        await node.publish(channel, b"y")
        return result

    broker.history = slow_history  # fault injection: widen the race window
    sub = Recorder()
    await node.subscribe(sub, "race", Resume(1, ""))
    broker.history = real_history
    assert sub.got == [("race", o) for o in (2, 3, 4, 5)]
    await node.publish("race", b"z")
    assert sub.got[-1] == ("race", 6)


async def test_unsubscribe_and_delete(node):
    a, b = Recorder(), Recorder()
    await node.subscribe(a, "d")
    await node.subscribe(b, "d")
    node.unsubscribe(a, "d")
    _, reached = await node.publish("d", b"1")
    assert reached == 1 and a.got == []
    assert await node.delete_channel("d") == 1
    assert b.deleted == ["d"]
    assert node.hub.count("d") == 0
    assert (await node.broker.history("d")).publications == []


async def test_publish_to_a_bad_channel_raises(node):
    with pytest.raises(InvalidChannel):
        await node.publish("bad name", b"1")
