"""Connection capabilities (``caps``) and the options of a connect's server-side
subscriptions (``subs``), from an ``on_connect`` hook and from the connection token."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.core.channels import ChannelOptions, Namespaces
from tidings.core.client import Client
from tidings.core.client_types import ClientOptions
from tidings.core.hooks import Hooks
from tidings.core.node import Node
from tidings.core.permissions import Caps
from tidings.core.tokens import TokenVerifier, mint_token
from tidings.exceptions import InvalidToken
from tidings.testing import TIMEOUT, RecordingTransport, memory_node

SECRET = "unit-test-secret-0123456789abcdef"
# Nothing is allowed by the namespace: only capabilities open its channels.
LOCKED = ChannelOptions(presence=True, history_size=10, history_ttl=300)
OPEN = ChannelOptions(allow_subscribe_for_client=True, presence=True, join_leave=True)


def test_the_first_matching_object_decides() -> None:
    caps = Caps.parse(
        [
            {"channels": ["news"], "allow": ["sub"]},
            {"channels": ["news", "user_42"], "allow": ["sub", "pub", "hst", "prs"]},
            {"channels": ["chat:*"], "match": "wildcard", "allow": ["sub", "pub"]},
            {"channels": [r"^posts_\d+$"], "match": "regex", "allow": ["hst", "future"]},
        ]
    )
    assert caps.granted("news") == {"sub"}  # the second object's rights don't add up
    assert caps.granted("user_42") == {"sub", "pub", "hst", "prs"}
    assert caps.granted("chat:1") == caps.granted("chat:") == {"sub", "pub"}
    assert caps.granted("xchat:1") == frozenset()  # a wildcard covers the whole name
    assert caps.granted("posts_12") == {"hst"}  # an unknown capability grants nothing
    assert caps.granted("posts_12x") == caps.granted("other") == frozenset()


def test_wildcards_know_only_the_star_and_regexes_match_anywhere_unless_anchored() -> None:
    wild = Caps.parse([{"channels": ["a.b?[c]*"], "match": "wildcard", "allow": ["sub"]}])
    assert wild.granted("a.b?[c]") == {"sub"}
    assert wild.granted("a.b?[c]-more") == {"sub"}
    assert wild.granted("axbc") == frozenset()
    regex = Caps.parse([{"channels": ["room"], "match": "regex", "allow": ["sub"]}])
    assert regex.granted("my-room-1") == {"sub"}


@pytest.mark.parametrize(
    "bad",
    [
        {"channels": ["x"]},
        ["not an object"],
        [{"channels": "x", "allow": ["sub"]}],
        [{"channels": ["x"], "allow": "sub"}],
        [{"channels": ["x"], "allow": ["sub"], "match": "glob"}],
        [{"channels": ["("], "allow": ["sub"], "match": "regex"}],
    ],
)
def test_what_is_not_centrifugos_shape_is_refused(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        Caps.parse(bad)


def test_a_token_with_bad_caps_is_invalid() -> None:
    verifier = TokenVerifier(hmac_secret=SECRET)
    with pytest.raises(InvalidToken, match="caps"):
        verifier.connect_token(mint_token(SECRET, "42", caps=[{"match": "nope"}]))


@pytest.fixture
async def node():
    hooks = Hooks(timeout=TIMEOUT)
    n: Node = memory_node(
        namespaces=Namespaces(OPEN, {"locked": LOCKED}),
        token_verifier=TokenVerifier(hmac_secret=SECRET),
        hooks=hooks,
    )
    await n.start()
    yield n
    hooks.close()
    await n.aclose()


async def run(node: Node, *commands: dict[str, Any]) -> RecordingTransport:
    transport = RecordingTransport()
    client = Client(node, transport, ClientOptions())
    client.feed(list(commands))
    last = commands[-1]["id"]
    await transport.wait_for(lambda: transport.reply_to(last) is not None or transport.closed)
    return transport


def error(transport: RecordingTransport, cmd_id: int) -> int | None:
    answer = transport.reply_to(cmd_id)
    assert answer is not None
    return answer.get("error", {}).get("code")


CAPS = [
    {"channels": ["locked:read"], "allow": ["sub", "hst"]},
    {"channels": ["locked:all-*"], "match": "wildcard", "allow": ["sub", "pub", "prs", "hst"]},
]


async def commands_on(node: Node, connect: dict[str, Any]) -> RecordingTransport:
    return await run(
        node,
        {"id": 1, "connect": connect},
        {"id": 2, "subscribe": {"channel": "locked:other"}},
        {"id": 3, "subscribe": {"channel": "locked:read", "recoverable": True}},
        {"id": 4, "publish": {"channel": "locked:read", "data": b"1"}},
        {"id": 5, "history": {"channel": "locked:read", "limit": 1}},
        {"id": 6, "presence": {"channel": "locked:read"}},
        {"id": 7, "subscribe": {"channel": "locked:all-1"}},
        {"id": 8, "publish": {"channel": "locked:all-1", "data": b"2"}},
        {"id": 9, "presence": {"channel": "locked:all-1"}},
        {"id": 10, "history": {"channel": "locked:all-2"}},
    )


def assert_granted_as_caps_say(transport: RecordingTransport) -> None:
    assert [error(transport, i) for i in range(2, 11)] == [
        103,  # no capability for it, and the namespace allows nothing
        None,
        103,  # "sub" and "hst" only
        None,
        103,
        None,
        None,
        None,
        None,  # history needs no subscription with "hst"
    ]
    read = transport.reply_to(3)
    assert read is not None and read["subscribe"]["recoverable"] is True  # "hst"


async def test_caps_of_the_connection_token(node: Node) -> None:
    transport = await commands_on(node, {"token": mint_token(SECRET, "42", caps=CAPS)})
    assert_granted_as_caps_say(transport)


async def test_caps_of_an_on_connect_hook(node: Node) -> None:
    node.hooks.on_connect(lambda conn, context: {"user": "42", "caps": CAPS})
    assert_granted_as_caps_say(await commands_on(node, {}))


async def test_without_caps_the_namespace_decides(node: Node) -> None:
    transport = await commands_on(node, {"token": mint_token(SECRET, "42")})
    assert [error(transport, i) for i in (3, 7, 10)] == [103, 103, 103]


async def test_bad_caps_from_a_hook_are_an_internal_error(node: Node, caplog) -> None:
    node.hooks.on_connect(lambda conn, context: {"caps": [{"channels": ["x"], "match": "?"}]})
    transport = await run(node, {"id": 1, "connect": {}})
    assert error(transport, 1) == 100
    assert "on_connect hooks returned" in caplog.text
    caplog.clear()


SUBS: dict[str, Any] = {
    "news": {"info": {"seat": 1}, "data": {"welcome": "news"}},
    "sports": {"override": {"presence": {"value": False}}, "data": b'{"raw":true}'},
    "plain": None,
}


async def assert_subs_with_their_options(node: Node, transport: RecordingTransport) -> None:
    connected = transport.reply_to(1)
    assert connected is not None
    result = connected["connect"]
    subs = result["subs"]
    assert sorted(subs) == ["news", "plain", "sports"]
    assert subs["news"]["data"] == {"welcome": "news"}
    assert subs["sports"]["data"] == {"raw": True}
    assert "data" not in subs["plain"]
    news = await node.presence_manager.presence("news")
    assert news[result["client"]].chan_info == b'{"seat":1}'
    assert await node.presence_manager.presence("sports") == {}  # overridden: no presence
    assert result["client"] in await node.presence_manager.presence("plain")


async def test_subs_with_options_from_an_on_connect_hook(node: Node) -> None:
    node.hooks.on_connect(lambda conn, context: {"user": "42", "subs": SUBS})
    transport = await run(node, {"id": 1, "connect": {}})
    await assert_subs_with_their_options(node, transport)


async def test_subs_with_options_from_the_connection_token(node: Node) -> None:
    subs = {
        "news": {"info": {"seat": 1}, "data": {"welcome": "news"}},
        "sports": {"override": {"presence": {"value": False}}, "b64data": "eyJyYXciOnRydWV9"},
        "plain": {},
    }
    transport = await run(node, {"id": 1, "connect": {"token": mint_token(SECRET, "7", subs=subs)}})
    await assert_subs_with_their_options(node, transport)


async def test_an_on_subscribe_hooks_data_wins_over_the_connects(node: Node) -> None:
    node.hooks.on_connect(lambda conn, context: {"subs": {"news": {"data": {"from": "connect"}}}})
    node.hooks.on_subscribe(lambda conn, context, channel: {"data": {"from": "subscribe"}})
    transport = await run(node, {"id": 1, "connect": {}})
    connected = transport.reply_to(1)
    assert connected is not None
    assert connected["connect"]["subs"]["news"]["data"] == {"from": "subscribe"}
