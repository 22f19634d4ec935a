"""Hooks and personal channels as the official Python SDK (centrifuge-python) meets them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from centrifuge import ClientState, SubscriptionUnsubscribedError
from integration_helpers import OPEN_NAMESPACE, until
from test_client_sdk import SECRET, server_publish, value
from test_client_sdk import sdk as sdk_client

from tidings import Reject
from tidings.core.conn import Conn
from tidings.server import Server
from tidings.testing import running_server

SETTINGS: dict[str, Any] = {
    "token_hmac_secret_key": SECRET,
    "default_namespace": OPEN_NAMESPACE,
    "namespaces": {"personal": {"presence": True}},
    "subscribe_to_user_personal_channel": True,
    "personal_channel_namespace": "personal",
    "personal_single_connection": True,
}

pytestmark = [
    pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"]),
    pytest.mark.usefixtures("no_server_errors"),
]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(**SETTINGS) as srv:
        yield srv


async def test_a_connect_hook_that_closes_is_terminal_for_the_sdk(
    server: Server, use_protobuf: bool
) -> None:
    @server.app.hooks.on_connect
    def connect(conn: Conn, context: dict[str, Any]) -> None:
        if conn.user == "banned":
            raise Reject(4501, "banned")

    async with sdk_client(server, use_protobuf, "banned") as mallory:
        await mallory.client.connect()
        gone = await mallory.events.next("disconnected")
        assert (gone.code, gone.reason) == (4501, "banned")
        assert mallory.client.state == ClientState.DISCONNECTED  # 4500-4999: no reconnect


async def test_subscribe_and_publish_hooks_with_the_sdk(server: Server, use_protobuf: bool) -> None:
    hooks = server.app.hooks

    @hooks.on_connect
    async def connect(conn, context):
        context["name"] = f"user {conn.user}"

    @hooks.on_subscribe(channel=r"^vip")
    def vip(conn, context, channel):
        raise Reject(103, "members only")

    @hooks.on_publish(channel=r"^room")
    def sign(conn, context, channel, data):
        return {**data, "by": context["name"]}

    async with sdk_client(server, use_protobuf, "42") as alice:
        await alice.connect()
        sub, events = alice.subscription("vip")
        await sub.subscribe()
        with pytest.raises(SubscriptionUnsubscribedError):
            await sub.ready()
        assert (await events.next("unsubscribed")).code == 103
        room, room_events = await alice.subscribe("room")
        await room.publish(alice.body({"text": "hi"}))
        pub = (await room_events.next("publication")).pub
        assert value(pub.data) == {"text": "hi", "by": "user 42"}


async def test_personal_channel_and_single_connection(server: Server, use_protobuf: bool) -> None:
    async with sdk_client(server, use_protobuf, "42") as first:
        await first.connect()
        subscribed = await first.events.next("subscribed")
        assert subscribed.channel == "personal:#42"  # a server-side subscription
        await server_publish(server, "personal:#42", {"for": "42"})
        got = await first.events.next("publication")
        assert (got.channel, value(got.pub.data)) == ("personal:#42", {"for": "42"})
        # The same user again: the first connection is closed and doesn't come back.
        async with sdk_client(server, use_protobuf, "42") as second:
            await second.connect()
            gone = await first.events.next("disconnected")
            assert gone.code == 3504
            await until(lambda: first.client.state == ClientState.DISCONNECTED)
            assert second.client.state == ClientState.CONNECTED
            assert [c.user for c in server.app.node.clients.values()] == ["42"]
