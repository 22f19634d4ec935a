"""The chat demo's presence: pages that go silent leave, on the demo's clock."""

from __future__ import annotations

import orjson

from tidings.core.broker import HistoryQuery
from tidings.core.channels import Namespaces
from tidings.core.node import Node
from tidings.server.chat import PRESENCE_TIMEOUT, ChatDemo, chat_namespaces
from tidings.testing import FakeClock, memory_node

ANN, BOB = "a" * 16, "b" * 16


async def presence(node: Node) -> list[tuple[str, str, list[str]]]:
    history = await node.history("chat:lobby", HistoryQuery(limit=100))
    found = []
    for pub in history.publications:
        body = orjson.loads(pub.data)
        if body["type"] == "presence":
            found.append((body["event"], body["nick"], body["members"]))
    return found


async def test_a_silent_page_leaves_and_one_that_pings_stays() -> None:
    clock = FakeClock()
    node = memory_node(clock=clock, namespaces=chat_namespaces(Namespaces()))
    chat = ChatDemo(node, clock)
    try:
        assert await chat.handle("lobby", {"type": "join", "key": ANN, "nick": "ann"}) == ""
        assert await chat.handle("lobby", {"type": "join", "key": BOB, "nick": "bob"}) == ""
        for _ in range(4):
            clock.advance(PRESENCE_TIMEOUT / 3)
            await chat.handle("lobby", {"type": "ping", "key": BOB, "nick": "bob"})
        await node.drain()
        assert await presence(node) == [
            ("join", "ann", ["ann"]),
            ("join", "bob", ["ann", "bob"]),
            ("leave", "ann", ["bob"]),
        ]
        # A page that comes back after it was dropped joins again.
        assert await chat.handle("lobby", {"type": "ping", "key": ANN, "nick": "ann"}) == ""
        assert (await presence(node))[-1] == ("join", "ann", ["ann", "bob"])
    finally:
        chat.close()
        await node.aclose()


def test_configured_namespaces_win() -> None:
    mine = Namespaces.from_mapping({"namespaces": {"chat": {"history_size": 5}}})
    merged = chat_namespaces(mine)
    assert merged.options("chat:x").history_size == 5
    assert merged.options("typing:x").history_size == 0
    assert merged.options("typing:x").simple_subscribe
    assert not merged.options("chat:x").simple_publish
