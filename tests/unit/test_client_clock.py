"""The client-protocol state machine on a fake clock, through a recording transport."""

from __future__ import annotations

import pytest

from tidings.core.channels import ChannelOptions, Namespaces
from tidings.core.client import Client
from tidings.core.client_types import ClientOptions
from tidings.core.tokens import TokenVerifier, mint_token
from tidings.protocol.centrifuge import codes
from tidings.testing import FakeClock, RecordingTransport, memory_node

SECRET = "unit-test-secret-0123456789abcdef"


@pytest.fixture
async def node():
    clock = FakeClock()
    n = memory_node(
        clock=clock,
        namespaces=Namespaces(ChannelOptions(allow_subscribe_for_client=True)),
        token_verifier=TokenVerifier(hmac_secret=SECRET),
    )
    await n.start()
    yield n
    await n.aclose()


def client(node, **options) -> tuple[Client, RecordingTransport]:
    transport = RecordingTransport()
    return Client(node, transport, ClientOptions(**options)), transport


async def test_a_client_that_never_connects_is_closed_as_stale(node):
    c, transport = client(node, connect_timeout=10)
    node.clock.advance(9.9)
    assert not transport.closed
    node.clock.advance(0.2)
    assert transport.closed_with == codes.STALE and c.closed


async def test_a_connected_client_is_not_stale(node):
    c, transport = client(node, connect_timeout=10)
    c.feed([{"id": 1, "connect": {"token": mint_token(SECRET, "42", ttl=None)}}])
    await transport.wait_for(lambda: transport.reply_to(1) is not None)
    assert "connect" in transport.reply_to(1)
    node.clock.advance(3600)
    assert not transport.closed


async def test_an_expired_connection_is_closed_after_the_grace_period(node):
    c, transport = client(node, expired_grace=5)
    token = mint_token(SECRET, "42", ttl=60)
    c.feed([{"id": 1, "connect": {"token": token}}])
    await transport.wait_for(lambda: transport.reply_to(1) is not None)
    assert transport.reply_to(1)["connect"]["expires"] is True
    node.clock.advance(64)
    assert not transport.closed
    node.clock.advance(2)
    assert transport.closed_with == codes.CONNECTION_EXPIRED


async def test_subscribe_reply_comes_before_the_first_publication(node):
    c, transport = client(node)
    c.feed(
        [
            {"id": 1, "connect": {"token": mint_token(SECRET, "42")}},
            {"id": 2, "subscribe": {"channel": "news"}},
        ]
    )
    await transport.wait_for(lambda: transport.reply_to(2) is not None)
    await node.publish("news", b'{"n":1}')
    kinds = ["pub" if "push" in m else m.get("id") for m in transport.messages]
    assert kinds == [1, 2, "pub"]
    assert transport.pushes("pub") == [{"channel": "news", "pub": {"data": {"n": 1}, "offset": 1}}]


async def test_commands_past_the_rate_get_111_then_a_flood_is_cut_off(node):
    c, transport = client(node, command_rate=1, command_burst=5)
    rpc = [{"id": i, "rpc": {"method": "none"}} for i in range(2, 9)]
    c.feed([{"id": 1, "connect": {"token": mint_token(SECRET, "42")}}, *rpc])
    await transport.wait_for(lambda: all(transport.reply_to(i) for i in range(1, 9)))
    codes_of = {i: transport.reply_to(i).get("error", {}).get("code") for i in range(2, 9)}
    assert codes_of == {2: 104, 3: 104, 4: 104, 5: 104, 6: 111, 7: 111, 8: 111}
    assert transport.reply_to(6)["error"]["temporary"] is True
    node.clock.advance(2)  # two tokens back
    c.feed([{"id": 9, "rpc": {"method": "none"}}, {"id": 10, "rpc": {"method": "none"}}])
    await transport.wait_for(lambda: transport.reply_to(10) is not None)
    assert transport.reply_to(10)["error"]["code"] == 104
    c.feed([{"id": 11 + i, "rpc": {"method": "none"}} for i in range(6)])  # 6 > burst refusals
    assert transport.closed_with == codes.TOO_MANY_REQUESTS_DISCONNECT
