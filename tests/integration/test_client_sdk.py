"""The official Python SDK (``centrifuge-python``) against ``/connection/websocket``.

Every scenario runs in JSON and in Protobuf, as the SDKs' own suites do. The SDK's event
handlers put what they see into queues; a test waits for the next event with ``TIMEOUT``
and never sleeps to synchronise. Token expiry needs real seconds to pass: those tests wait
for a control connection (or subscription) that doesn't refresh to be cut off, then check
that the one that refreshed is still there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from centrifuge import (
    Client,
    ClientEventHandler,
    ClientState,
    ConnectedContext,
    ConnectingContext,
    DeltaType,
    DisconnectedContext,
    ErrorContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    ReplyError,
    ServerPublicationContext,
    ServerSubscribedContext,
    StreamPosition,
    SubscribedContext,
    SubscribingContext,
    Subscription,
    SubscriptionErrorContext,
    SubscriptionEventHandler,
    SubscriptionState,
    SubscriptionUnsubscribedError,
    UnsubscribedContext,
)
from integration_helpers import OPEN_NAMESPACE, Recorder

from tidings.core.conn import Conn
from tidings.core.tokens import mint_token
from tidings.exceptions import Reject
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

SECRET = "tidings-sdk-tests-hmac-secret-0123456789"
# Short-lived tokens: ``exp`` has whole seconds, so this leaves 2-3 s to connect and subscribe.
SHORT_TTL = 3

OPEN = OPEN_NAMESPACE
SETTINGS: dict[str, Any] = {
    "token_hmac_secret_key": SECRET,
    "default_namespace": OPEN,
    "namespaces": {
        "small": {**OPEN, "history_size": 2},
        "closed": {},
        "dm": {"allow_user_limited_channels": True},
        "deltas": {**OPEN, "allowed_delta_types": ["fossil"], "delta_publish": True},
    },
}

pytestmark = [
    pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"]),
    pytest.mark.usefixtures("no_server_errors"),
]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(**SETTINGS) as srv:
        yield srv


class ClientEvents(ClientEventHandler):
    """Records client events; with ``gate``, a lost connection reconnects only once it's set."""

    def __init__(self, rec: Recorder, gate: asyncio.Event | None = None) -> None:
        self.rec = rec
        self.gate = gate

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.rec.put("connecting", ctx)
        if self.gate is not None and ctx.code != 0:  # 0: connect() called
            await self.gate.wait()

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.rec.put("connected", ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.rec.put("disconnected", ctx)

    async def on_error(self, ctx: ErrorContext) -> None:
        self.rec.put("error", ctx)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.rec.put("subscribed", ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        self.rec.put("publication", ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def on_subscribing(self, ctx: SubscribingContext) -> None:
        self.rec.put("subscribing", ctx)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.rec.put("subscribed", ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.rec.put("unsubscribed", ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.rec.put("publication", ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        self.rec.put("join", ctx)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.rec.put("leave", ctx)

    async def on_error(self, ctx: SubscriptionErrorContext) -> None:
        self.rec.put("error", ctx)


class Sdk:
    """One SDK client and its events."""

    def __init__(self, client: Client, events: Recorder, use_protobuf: bool) -> None:
        self.client = client
        self.events = events
        self.use_protobuf = use_protobuf

    async def connect(self) -> ConnectedContext:
        await self.client.connect()
        await self.client.ready()
        ctx: ConnectedContext = await self.events.next("connected")
        return ctx

    def subscription(self, channel: str, **kwargs: Any) -> tuple[Subscription, Recorder]:
        rec = Recorder()
        return self.client.new_subscription(channel, SubEvents(rec), **kwargs), rec

    async def subscribe(self, channel: str, **kwargs: Any) -> tuple[Subscription, Recorder]:
        sub, rec = self.subscription(channel, **kwargs)
        await sub.subscribe()
        await sub.ready()
        return sub, rec

    def body(self, value: Any) -> Any:
        """``value`` as the SDK publishes it: JSON itself, or bytes in Protobuf mode."""
        return json.dumps(value).encode() if self.use_protobuf else value


def url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/connection/websocket"


def value(data: Any) -> Any:
    """A received payload as a Python value (Protobuf mode delivers bytes)."""
    return json.loads(data) if isinstance(data, bytes) else data


def json_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


@asynccontextmanager
async def sdk(
    server: Server,
    use_protobuf: bool,
    user: str = "42",
    *,
    token: str | None = None,
    get_token: Callable[[], Awaitable[str]] | None = None,
    gate: asyncio.Event | None = None,
) -> AsyncIterator[Sdk]:
    events = Recorder()
    client = Client(
        url(server),
        events=ClientEvents(events, gate),
        token=mint_token(SECRET, user) if token is None else token,
        get_token=get_token,
        use_protobuf=use_protobuf,
        timeout=TIMEOUT,
        proxy=None,
        min_reconnect_delay=0.05,
    )
    try:
        yield Sdk(client, events, use_protobuf)
    finally:
        if gate is not None:
            gate.set()
        await client.disconnect()


async def server_publish(server: Server, channel: str, value: Any) -> int:
    done = await server.app.node.publish(channel, json.dumps(value).encode())
    return done.position.offset


async def test_connect_subscribe_publish(server: Server, use_protobuf: bool) -> None:
    token = mint_token(SECRET, "42", info={"name": "Alice"})
    async with sdk(server, use_protobuf, token=token) as alice:
        connected = await alice.connect()
        assert connected.version
        assert server.app.node.clients[connected.client].user == "42"
        sub, events = await alice.subscribe("news")
        subscribed = await events.next("subscribed")
        assert subscribed.channel == "news"
        assert subscribed.recoverable  # force_recovery
        assert subscribed.stream_position is not None
        assert subscribed.stream_position.offset == 0

        await sub.publish(alice.body({"from": "sdk"}))
        pub = (await events.next("publication")).pub
        assert value(pub.data) == {"from": "sdk"}
        assert pub.offset == 1
        assert pub.info is not None
        assert (pub.info.user, pub.info.client) == ("42", connected.client)
        assert value(pub.info.conn_info) == {"name": "Alice"}  # the token's info claim

        assert await server_publish(server, "news", {"from": "server"}) == 2
        pub = (await events.next("publication")).pub
        assert (value(pub.data), pub.offset, pub.info) == ({"from": "server"}, 2, None)

        await sub.unsubscribe()
        assert (await events.next("unsubscribed")).code == 0  # unsubscribe() called
        await server_publish(server, "news", {"after": "unsubscribe"})
        # No longer a subscriber on the server: publishing (for subscribers) is refused. The
        # reply comes after any push of the earlier publication, and there was none.
        with pytest.raises(ReplyError) as exc:
            await alice.client.publish("news", alice.body({"ping": 1}))
        assert exc.value.code == 103
        assert events.waiting("publication") == []


async def test_server_side_subscriptions_from_token(server: Server, use_protobuf: bool) -> None:
    token = mint_token(SECRET, "7", channels=["news"])
    async with sdk(server, use_protobuf, token=token) as bob:
        await bob.connect()
        subscribed = await bob.events.next("subscribed")
        assert subscribed.channel == "news"
        await server_publish(server, "news", {"n": 1})
        got = await bob.events.next("publication")
        assert (got.channel, value(got.pub.data), got.pub.offset) == ("news", {"n": 1}, 1)


async def test_token_with_channel_of_unknown_namespace(server: Server, use_protobuf: bool) -> None:
    # Centrifugo refuses such a token at connect with error 102 (a terminal one for SDKs).
    token = mint_token(SECRET, "7", channels=["news", "unknown:ns"])
    async with sdk(server, use_protobuf, token=token) as bob:
        await bob.client.connect()
        gone = await bob.events.next("disconnected")
        assert gone.code == 102
        assert bob.events.waiting("subscribed") == []


async def test_history(server: Server, use_protobuf: bool) -> None:
    async with sdk(server, use_protobuf) as alice:
        await alice.connect()
        sub, _ = await alice.subscribe("hist")
        for n in range(1, 6):
            await server_publish(server, "hist", {"n": n})

        def numbers(result: Any) -> list[int]:
            offsets = [p.offset for p in result.publications]
            assert [value(p.data)["n"] for p in result.publications] == offsets
            return offsets

        first = await sub.history(limit=2)
        assert numbers(first) == [1, 2]
        assert first.offset == 5
        epoch = first.epoch
        assert epoch
        assert numbers(await sub.history(limit=-1)) == [1, 2, 3, 4, 5]
        assert numbers(await sub.history(limit=0)) == []
        assert numbers(await sub.history(since=StreamPosition(2, epoch), limit=10)) == [3, 4, 5]
        assert numbers(await sub.history(since=StreamPosition(2, epoch), limit=1)) == [3]
        assert numbers(await sub.history(since=StreamPosition(5, epoch), limit=10)) == []
        assert numbers(await sub.history(limit=2, reverse=True)) == [5, 4]
        # Reverse from a position: what came before it, newest first (as Centrifugo).
        back = await sub.history(since=StreamPosition(4, epoch), limit=2, reverse=True)
        assert numbers(back) == [3, 2]
        with pytest.raises(ReplyError) as exc:
            await sub.history(since=StreamPosition(1, "another-epoch"), limit=10)
        assert exc.value.code == 112  # unrecoverable position


async def test_presence_and_stats(server: Server, use_protobuf: bool) -> None:
    async with (
        sdk(server, use_protobuf, "1") as one,
        sdk(server, use_protobuf, "2") as two,
        sdk(server, use_protobuf, "1") as again,
    ):
        ids = {}
        for member in (one, two, again):
            ids[(await member.connect()).client] = member
            await member.subscribe("room")
        sub = one.client.get_subscription("room")
        assert sub is not None
        presence = await sub.presence()
        assert set(presence.clients) == set(ids)
        assert {c: info.user for c, info in presence.clients.items()} == {
            c: ("2" if m is two else "1") for c, m in ids.items()
        }
        stats = await sub.presence_stats()
        assert (stats.num_clients, stats.num_users) == (3, 2)

        await again.client.disconnect()
        stats = await sub.presence_stats()
        assert (stats.num_clients, stats.num_users) == (2, 2)


async def test_join_and_leave(server: Server, use_protobuf: bool) -> None:
    async with sdk(server, use_protobuf, "1") as one, sdk(server, use_protobuf, "2") as two:
        one_id = (await one.connect()).client
        _, watcher = await one.subscribe("lobby", join_leave=True)
        # As in Centrifugo, the join goes to every subscriber asking for joins, the
        # joining client included, after its subscribe reply.
        own = await watcher.next("join")
        assert (own.info.client, own.info.user) == (one_id, "1")
        two_id = (await two.connect()).client
        sub, _ = await two.subscribe("lobby")

        join = await watcher.next("join", lambda ctx: ctx.info.client == two_id)
        assert join.info.user == "2"
        await sub.unsubscribe()
        leave = await watcher.next("leave")
        assert (leave.info.client, leave.info.user) == (two_id, "2")

        # A connection that drops leaves too.
        await sub.subscribe()
        await watcher.next("join", lambda ctx: ctx.info.client == two_id)
        await two.client.disconnect()
        leave = await watcher.next("leave")
        assert leave.info.client == two_id


async def drop(server: Server, sdk: Sdk) -> None:
    """Cut the SDK's TCP connection from the server side, without a close frame."""
    conn = server.app.node.clients[sdk.client.client_id].transport
    conn.transport.abort()  # type: ignore[attr-defined]
    ctx = await sdk.events.next("connecting", lambda ctx: ctx.code != 0)
    assert ctx.code == 1  # transport closed: the SDK will reconnect


@pytest.mark.parametrize(
    ("channel", "recovered"), [("feed", True), ("small:feed", False)], ids=["full", "gap"]
)
async def test_recovery_after_dropped_connection(
    server: Server, use_protobuf: bool, channel: str, recovered: bool
) -> None:
    gate = asyncio.Event()
    async with sdk(server, use_protobuf, gate=gate) as alice:
        await alice.connect()
        _, events = await alice.subscribe(channel)
        first = await events.next("subscribed")
        assert not first.was_recovering

        await server_publish(server, channel, {"n": 1})
        got = [(await events.next("publication")).pub]

        await drop(server, alice)
        lost = await events.next("subscribing", lambda ctx: ctx.code != 0)
        assert lost.code == 1  # transport closed
        for n in range(2, 6):  # missed while away: "small" keeps only the last two
            await server_publish(server, channel, {"n": n})
        gate.set()

        again = await events.next("subscribed")
        assert again.was_recovering
        assert again.recovered is recovered
        assert again.stream_position is not None
        assert again.stream_position.epoch == first.stream_position.epoch
        if not recovered:
            assert again.stream_position.offset == 5  # where the stream is now
        await server_publish(server, channel, {"n": 6})
        while got[-1].offset != 6:
            got.append((await events.next("publication")).pub)
        expected = [1, 2, 3, 4, 5, 6] if recovered else [1, 6]
        assert [p.offset for p in got] == expected
        assert [value(p.data)["n"] for p in got] == expected
        assert events.waiting("publication") == []

        # Recovered publications keep the publisher's info (none here: server publishes).
        assert all(p.info is None for p in got)


async def test_connection_token_refresh(server: Server, use_protobuf: bool) -> None:
    server.app.client_options.expired_grace = 0.2  # Centrifugo's expired_close_delay, shortened
    short = mint_token(SECRET, "42", ttl=SHORT_TTL)
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return mint_token(SECRET, "42", ttl=3600)

    async with (
        sdk(server, use_protobuf, token=short, get_token=get_token) as refreshing,
        sdk(server, use_protobuf, token=short) as control,
    ):
        client_id = (await refreshing.connect()).client
        await control.connect()
        sub, events = await refreshing.subscribe("news")
        # The control has no way to refresh: the server closes it once the token expired.
        lost = await control.events.next("connecting", lambda ctx: ctx.code != 0)
        assert (lost.code, lost.reason) == (3005, "connection expired")
        assert time.time() >= json_claims(short)["exp"]

        assert calls == 1
        assert refreshing.client.state == ClientState.CONNECTED
        # Only the first connect (code 0): the connection was never lost.
        assert [ctx.code for ctx in refreshing.events.waiting("connecting")] == [0]
        assert server.app.node.clients[client_id].exp > time.time() + 3000
        await sub.publish(refreshing.body({"still": "here"}))
        assert value((await events.next("publication")).pub.data) == {"still": "here"}


async def test_private_channel_subscription_token_and_refresh(
    server: Server, use_protobuf: bool
) -> None:
    server.app.client_options.expired_grace = 0.2
    asked: list[str] = []

    async def sub_token(channel: str) -> str:
        asked.append(channel)
        # The first token is short-lived; the refreshed one lasts.
        ttl = SHORT_TTL if len(asked) == 1 else 3600
        return mint_token(SECRET, "42", channel=channel, ttl=ttl, info={"token": len(asked)})

    async with sdk(server, use_protobuf) as alice:
        client_id = (await alice.connect()).client
        sub, events = await alice.subscribe("$secret", get_token=sub_token)
        assert asked == ["$secret"]
        # A private channel of a namespace: "$" isn't part of the namespace's name, and
        # the token admits even where the namespace doesn't allow subscribing.
        _, closed = await alice.subscribe(
            "$closed:room", token=mint_token(SECRET, "42", channel="$closed:room")
        )
        assert (await closed.next("subscribed")).channel == "$closed:room"
        static = mint_token(SECRET, "42", channel="$static", ttl=SHORT_TTL)
        _, control = await alice.subscribe("$static", token=static)

        # The subscription without get_token is unsubscribed by the server once expired.
        expired = await control.next("subscribing", lambda ctx: ctx.code != 0)
        assert (expired.code, expired.reason) == (2501, "subscription expired")

        assert asked == ["$secret", "$secret"]
        assert sub.state == SubscriptionState.SUBSCRIBED
        assert server.app.node.clients[client_id].subs["$secret"].expires_at > time.time() + 3000
        await server_publish(server, "$secret", {"for": "42"})
        assert value((await events.next("publication")).pub.data) == {"for": "42"}
        # The refreshed token's info is the channel info from now on.
        await sub.publish(alice.body({"from": "42"}))
        pub = (await events.next("publication")).pub
        assert pub.info is not None
        assert value(pub.info.chan_info) == {"token": 2}


async def test_private_channel_token_of_another_user(server: Server, use_protobuf: bool) -> None:
    async with sdk(server, use_protobuf, "42") as alice:
        await alice.connect()
        # A token minted for user 43: the server treats it as an attack and disconnects.
        stolen = mint_token(SECRET, "43", channel="$secret")
        sub, _ = alice.subscription("$secret", token=stolen)
        await sub.subscribe()
        gone = await alice.events.next("disconnected")
        assert gone.code == 3500


async def test_rpc(server: Server, use_protobuf: bool) -> None:
    async def echo(conn: Conn, context: dict[str, Any], data: Any) -> Any:
        return {"echo": data, "user": conn.user}

    def fail(conn: Conn, context: dict[str, Any], data: Any) -> Any:  # a plain hook
        raise Reject(1001, "not today")

    server.app.hooks.on_rpc("echo")(echo)
    server.app.hooks.on_rpc("fail")(fail)
    async with sdk(server, use_protobuf, "42") as alice:
        await alice.connect()
        result = await alice.client.rpc("echo", alice.body({"x": [1, 2]}))
        assert value(result.data) == {"echo": {"x": [1, 2]}, "user": "42"}
        with pytest.raises(ReplyError) as exc:
            await alice.client.rpc("missing", alice.body({}))
        assert exc.value.code == 104
        with pytest.raises(ReplyError) as exc:
            await alice.client.rpc("fail", alice.body({}))
        assert (exc.value.code, exc.value.message) == (1001, "not today")
        # Errors don't end the connection.
        assert value((await alice.client.rpc("echo", alice.body(1))).data)["echo"] == 1


async def test_subscribe_errors(server: Server, use_protobuf: bool) -> None:
    async with sdk(server, use_protobuf, "42") as alice:
        await alice.connect()

        async def refused(channel: str) -> int:
            sub, events = alice.subscription(channel)
            await sub.subscribe()
            with pytest.raises(SubscriptionUnsubscribedError):
                await sub.ready()
            code: int = (await events.next("unsubscribed")).code
            alice.client.remove_subscription(sub)
            return code

        assert await refused("closed:room") == 103  # namespace doesn't allow subscribing
        assert await refused("nowhere:room") == 102  # unknown namespace
        assert await refused("$secret") == 103  # private channel without a token
        assert await refused("dm:#43") == 103  # another user's channel
        assert await refused("dm:room#43") == 103
        assert await refused("dm:#42#43") == 103  # the users are after the last '#'
        await alice.subscribe("dm:#42")
        await alice.subscribe("dm:room#42")

        with pytest.raises(ReplyError) as exc:
            await alice.client.publish("closed:room", alice.body({}))
        assert exc.value.code == 103
        with pytest.raises(ReplyError) as exc:
            await alice.client.history("news", limit=10)  # history for subscribers only
        assert exc.value.code == 103
        assert alice.client.state == ClientState.CONNECTED


async def test_invalid_connection_token_is_terminal(server: Server, use_protobuf: bool) -> None:
    forged = mint_token("another-secret-of-sufficient-length-000", "42")
    async with sdk(server, use_protobuf, token=forged) as mallory:
        await mallory.client.connect()
        gone = await mallory.events.next("disconnected")
        assert (gone.code, gone.reason) == (3500, "invalid token")
        assert mallory.client.state == ClientState.DISCONNECTED


async def test_fossil_delta_publications(server: Server, use_protobuf: bool) -> None:
    channel = "deltas:prices"
    async with (
        sdk(server, use_protobuf, "1") as delta_client,
        sdk(server, use_protobuf, "2") as plain_client,
    ):
        await delta_client.connect()
        await plain_client.connect()
        _, delta_events = await delta_client.subscribe(channel, delta=DeltaType.FOSSIL)
        _, plain_events = await plain_client.subscribe(channel)
        doc = {"items": [{"id": i, "price": i * 1.5, "name": f"item {i}"} for i in range(40)]}
        flags = []
        for step in range(4):
            doc["items"][step]["price"] = 1000 + step
            await server_publish(server, channel, doc)
            got = (await delta_events.next("publication")).pub
            plain = (await plain_events.next("publication")).pub
            assert value(got.data) == value(plain.data) == doc
            assert not plain.delta
            flags.append(got.delta)
        # The first publication after subscribing is full, the following ones are deltas.
        assert flags == [False, True, True, True]


async def test_user_limited_channel_with_several_users(server: Server, use_protobuf: bool) -> None:
    channel = "dm:dialog#42,43"
    async with sdk(server, use_protobuf, "43") as listed, sdk(server, use_protobuf, "44") as other:
        await listed.connect()
        await other.connect()
        _, events = await listed.subscribe(channel)
        assert (await events.next("subscribed")).channel == channel
        sub, other_events = other.subscription(channel)
        await sub.subscribe()
        with pytest.raises(SubscriptionUnsubscribedError):
            await sub.ready()
        assert (await other_events.next("unsubscribed")).code == 103


async def test_subscription_token_override(server: Server, use_protobuf: bool) -> None:
    async with sdk(server, use_protobuf) as alice:
        client_id = (await alice.connect()).client
        plain = mint_token(SECRET, "42", channel="$closed:a")
        forced = mint_token(
            SECRET,
            "42",
            channel="$closed:b",
            override={"presence": {"value": True}, "force_recovery": {"value": True}},
        )
        _, events_a = await alice.subscribe("$closed:a", token=plain)
        _, events_b = await alice.subscribe("$closed:b", token=forced)
        assert not (await events_a.next("subscribed")).recoverable
        assert (await events_b.next("subscribed")).recoverable
        presence = server.app.node.presence_manager
        assert await presence.presence("$closed:a") == {}
        assert list(await presence.presence("$closed:b")) == [client_id]
