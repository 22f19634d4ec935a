"""The server API (``POST /api/<method>``) driven by the PyPI ``cent`` client, every method
with its effect checked on real connections: centrifuge-python SDK clients, a simple
``/ws/<channel>`` subscriber and unidirectional HTTP streams.

SDK event handlers put what they see into queues; a test waits on them with ``TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from cent import (
    AsyncClient,
    BatchRequest,
    BroadcastRequest,
    CentApiResponseError,
    CentUnauthorizedError,
    ChannelsRequest,
    Disconnect,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    StreamPosition,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent import Client as SyncClient
from centrifuge import Client, ClientEventHandler, ClientState, SubscriptionEventHandler
from integration_helpers import Recorder, http_client, publish, ws_connect, ws_json

from tidings import Publisher
from tidings.core.broker import TOP
from tidings.core.tokens import mint_token
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

API_KEY = "test-key"
SECRET = "tidings-api-tests-hmac-secret-0123456789"
OPEN = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_subscriber": True,
    "force_recovery": True,
}
SETTINGS: dict[str, Any] = {
    "token_hmac_secret_key": SECRET,
    "default_namespace": OPEN,
    "namespaces": {
        "room": {**OPEN, "presence": True, "join_leave": True},
        "nohist": {**OPEN, "history_size": 0},
    },
}


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(**SETTINGS) as srv:
        yield srv


def api_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}/api"


@pytest.fixture
async def api(server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(api_url(server), API_KEY, timeout=TIMEOUT) as client:
        yield client


# SDK clients


def _recording(base: type, kinds: list[str]) -> type:
    """A handler class of ``base`` whose ``on_<kind>`` methods record into ``self.rec``."""

    def method(kind: str) -> Any:
        async def handler(self: Any, ctx: Any) -> None:
            self.rec.put(kind, ctx)

        return handler

    def init(self: Any, rec: Recorder) -> None:
        self.rec = rec

    body = {f"on_{kind}": method(kind) for kind in kinds}
    return type(f"Recording{base.__name__}", (base,), {"__init__": init, **body})


ClientEvents = _recording(
    ClientEventHandler,
    ["connecting", "connected", "disconnected", "subscribed", "unsubscribed", "publication"],
)
SubEvents = _recording(SubscriptionEventHandler, ["subscribed", "unsubscribed", "publication"])


@dataclass
class Sdk:
    client: Client
    events: Recorder
    id: str = ""
    subs: dict[str, Recorder] = field(default_factory=dict)

    async def subscribe(self, channel: str) -> Recorder:
        rec = self.subs[channel] = Recorder()
        sub = self.client.new_subscription(channel, SubEvents(rec))
        await sub.subscribe()
        await sub.ready()
        return rec


@asynccontextmanager
async def sdk(
    server: Server, user: str = "alice", *, use_protobuf: bool = False
) -> AsyncIterator[Sdk]:
    """A connected centrifuge-python client of ``user``."""
    events = Recorder()
    client = Client(
        f"ws://127.0.0.1:{server.port}/connection/websocket",
        events=ClientEvents(events),
        token=mint_token(SECRET, user),
        use_protobuf=use_protobuf,
        timeout=TIMEOUT,
        proxy=None,
        min_reconnect_delay=0.05,
    )
    try:
        await client.connect()
        await client.ready()
        connected = await events.next("connected")
        yield Sdk(client, events, connected.client)
    finally:
        await client.disconnect()


async def eventually(probe: Callable[[], Awaitable[Any]], expected: Any) -> None:
    """Wait (bounded by ``TIMEOUT``) until ``probe()`` returns ``expected``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while (got := await probe()) != expected:
        assert loop.time() < deadline, f"still {got!r}, expected {expected!r}"
        await asyncio.sleep(0.005)


def history_offsets(result: Any) -> list[int]:
    return [p.offset for p in result.publications]


# publish and broadcast


async def test_publish_reaches_subscribers_with_tags(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as alice:
        news = await alice.subscribe("news")
        result = await api.publish(
            PublishRequest(channel="news", data={"n": 1}, tags={"kind": "greeting"})
        )
        assert result.offset == 1
        assert result.epoch
        pub = (await news.next("publication")).pub
        assert (pub.data, pub.offset, pub.tags, pub.info) == (
            {"n": 1},
            1,
            {"kind": "greeting"},
            None,
        )
        history = await api.history(HistoryRequest(channel="news", limit=10))
        assert [(p.data, p.tags) for p in history.publications] == [
            ({"n": 1}, {"kind": "greeting"})
        ]
        assert history.epoch == result.epoch


async def test_publish_skip_history(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as alice:
        news = await alice.subscribe("news")
        await api.publish(PublishRequest(channel="news", data={"kept": True}))
        await api.publish(PublishRequest(channel="news", data={"kept": False}, skip_history=True))
        got = [(await news.next("publication")).pub.data for _ in range(2)]
        assert got == [{"kept": True}, {"kept": False}]
        history = await api.history(HistoryRequest(channel="news", limit=-1))
        assert [p.data for p in history.publications] == [{"kept": True}]


async def test_publish_b64data_delivers_the_exact_bytes(server: Server, api: AsyncClient) -> None:
    raw = b"\x00\xffbinary\n"
    async with sdk(server, use_protobuf=True) as binary, sdk(server, "bob") as text:
        bin_news = await binary.subscribe("news")
        text_news = await text.subscribe("news")
        b64 = base64.b64encode(raw).decode()
        await api.publish(PublishRequest(channel="news", data=None, b64data=b64))
        assert (await bin_news.next("publication")).pub.data == raw
        # Bytes that are not UTF-8 reach a JSON client wrapped as {"base64": ...}.
        assert (await text_news.next("publication")).pub.data == {"base64": b64}
        # b64data holding JSON is JSON for everyone.
        doc = base64.b64encode(b'{"b":64}').decode()
        await api.publish(PublishRequest(channel="news", data=None, b64data=doc))
        assert (await bin_news.next("publication")).pub.data == b'{"b":64}'
        assert (await text_news.next("publication")).pub.data == {"b": 64}
    with pytest.raises(CentApiResponseError) as exc:
        await api.publish(PublishRequest(channel="news", data=None, b64data="%%%"))
    assert exc.value.code == 107


async def test_publish_idempotency_key_publishes_once(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as alice:
        news = await alice.subscribe("news")
        first = await api.publish(
            PublishRequest(channel="news", data={"order": 1}, idempotency_key="order-1")
        )
        again = await api.publish(
            PublishRequest(channel="news", data={"order": 1}, idempotency_key="order-1")
        )
        assert (again.offset, again.epoch) == (first.offset, first.epoch) == (1, first.epoch)
        # The key is per channel: the same key elsewhere publishes.
        other = await api.publish(
            PublishRequest(channel="other", data={"order": 1}, idempotency_key="order-1")
        )
        assert other.offset == 1
        marker = await api.publish(PublishRequest(channel="news", data={"marker": True}))
        assert marker.offset == 2
        got = [(await news.next("publication")).pub for _ in range(2)]
        assert [(p.offset, p.data) for p in got] == [(1, {"order": 1}), (2, {"marker": True})]
        history = await api.history(HistoryRequest(channel="news", limit=-1))
        assert history_offsets(history) == [1, 2]


async def test_publish_errors(api: AsyncClient) -> None:
    for request, code in [
        (PublishRequest(channel="nowhere:x", data={}), 102),
        (PublishRequest(channel="", data={}), 107),
        (PublishRequest(channel="news", data=None), 107),
        (PublishRequest(channel="bad channel", data={}), 107),
    ]:
        with pytest.raises(CentApiResponseError) as exc:
            await api.publish(request)
        assert exc.value.code == code, request


async def test_broadcast(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as alice:
        a = await alice.subscribe("a")
        b = await alice.subscribe("room:b")
        await api.publish(PublishRequest(channel="a", data={"before": 1}))
        assert (await a.next("publication")).pub.offset == 1
        result = await api.broadcast(
            BroadcastRequest(channels=["a", "nowhere:x", "room:b"], data={"all": True})
        )
        first, bad, last = result.responses
        assert first.result is not None and first.result.offset == 2
        assert bad.error is not None and bad.error.code == 102
        assert last.result is not None and last.result.offset == 1
        assert first.result.epoch != "" and last.result.epoch != ""  # one per stream
        assert (await a.next("publication")).pub.data == {"all": True}
        assert (await b.next("publication")).pub.data == {"all": True}
    with pytest.raises(CentApiResponseError) as exc:
        await api.broadcast(BroadcastRequest(channels=[], data={}))
    assert exc.value.code == 107


# subscribe, unsubscribe, disconnect, refresh


async def test_subscribe_makes_a_server_side_subscription(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as alice, sdk(server, "bob") as bob:
        await api.subscribe(SubscribeRequest(user="alice", channel="news", data={"hello": 1}))
        subscribed = await alice.events.next("subscribed")
        assert subscribed.channel == "news"
        assert subscribed.recoverable and subscribed.positioned
        assert subscribed.data == {"hello": 1}
        await api.publish(PublishRequest(channel="news", data={"n": 1}))
        got = await alice.events.next("publication")
        assert (got.channel, got.pub.data, got.pub.offset) == ("news", {"n": 1}, 1)
        # Only alice's connections were subscribed.
        assert bob.events.waiting("subscribed") == []
        assert server.app.node.hub.count("news") == 1
        # Already subscribed: nothing changes, no second subscribe push.
        await api.subscribe(SubscribeRequest(user="alice", channel="news"))
        await api.publish(PublishRequest(channel="news", data={"n": 2}))
        assert (await alice.events.next("publication")).pub.offset == 2
        assert alice.events.waiting("subscribed") == []

    with pytest.raises(CentApiResponseError) as exc:
        await api.subscribe(SubscribeRequest(user="alice", channel="nowhere:x"))
    assert exc.value.code == 102


async def test_subscribe_targets_one_client_and_recovers(server: Server, api: AsyncClient) -> None:
    for n in (1, 2):
        await api.publish(PublishRequest(channel="news", data={"n": n}))
    epoch = (await api.history(HistoryRequest(channel="news"))).epoch
    async with sdk(server) as first, sdk(server) as second:
        await api.subscribe(
            SubscribeRequest(
                user="alice",
                client=second.id,
                channel="news",
                recover_since=StreamPosition(offset=0, epoch=epoch),
            )
        )
        assert (await second.events.next("subscribed")).channel == "news"
        recovered = [(await second.events.next("publication")).pub for _ in range(2)]
        assert [(p.offset, p.data) for p in recovered] == [(1, {"n": 1}), (2, {"n": 2})]
        await api.publish(PublishRequest(channel="news", data={"n": 3}))
        assert (await second.events.next("publication")).pub.offset == 3
        assert first.events.waiting("subscribed") == []
        assert server.app.node.hub.count("news") == 1


async def test_subscribe_info_shows_in_presence(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as alice:
        await api.subscribe(SubscribeRequest(user="alice", channel="room:1", info={"role": "mod"}))
        await alice.events.next("subscribed")
        presence = await api.presence(PresenceRequest(channel="room:1"))
        (info,) = presence.presence.values()
        assert (info.user, info.client, info.chan_info) == ("alice", alice.id, {"role": "mod"})


async def test_unsubscribe(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as alice:
        news = await alice.subscribe("news")
        await api.subscribe(SubscribeRequest(user="alice", channel="sports"))
        await alice.events.next("subscribed")
        assert server.app.node.hub.count("news") == server.app.node.hub.count("sports") == 1

        await api.unsubscribe(UnsubscribeRequest(user="alice", channel="news"))
        unsubscribed = await news.next("unsubscribed")
        assert unsubscribed.code == 2000  # server unsubscribe: final, no resubscribe
        await api.unsubscribe(UnsubscribeRequest(user="alice", channel="sports"))
        assert (await alice.events.next("unsubscribed")).channel == "sports"
        assert server.app.node.hub.count("news") == server.app.node.hub.count("sports") == 0

        # Nothing more arrives; a publication on a channel still subscribed does.
        await api.publish(PublishRequest(channel="news", data={"gone": True}))
        await api.publish(PublishRequest(channel="sports", data={"gone": True}))
        await api.subscribe(SubscribeRequest(user="alice", channel="later"))
        await alice.events.next("subscribed")
        await api.publish(PublishRequest(channel="later", data={"here": True}))
        assert (await alice.events.next("publication")).channel == "later"
        assert news.waiting("publication") == []


async def test_disconnect(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as kept, sdk(server) as gone, sdk(server, "bob") as bob:
        await api.disconnect(DisconnectRequest(user="alice", whitelist=[kept.id]))
        disconnected = await gone.events.next("disconnected")
        assert (disconnected.code, disconnected.reason) == (3503, "force disconnect")
        assert gone.client.state == ClientState.DISCONNECTED
        assert set(server.app.node.clients) == {kept.id, bob.id}

        # A custom code; one of 4500-4999 tells the client not to reconnect.
        await api.disconnect(
            DisconnectRequest(
                user="alice", client=kept.id, disconnect=Disconnect(code=4501, reason="bye")
            )
        )
        disconnected = await kept.events.next("disconnected")
        assert (disconnected.code, disconnected.reason) == (4501, "bye")

        # 4000-4499: the client reconnects.
        await api.disconnect(
            DisconnectRequest(user="bob", disconnect=Disconnect(code=4000, reason="again"))
        )
        connecting = await bob.events.next("connecting", lambda c: c.code != 0)
        assert (connecting.code, connecting.reason) == (4000, "again")
        await bob.events.next("connected")
        assert bob.client.state == ClientState.CONNECTED

    with pytest.raises(CentApiResponseError) as exc:
        await api.disconnect(
            DisconnectRequest(user="bob", disconnect=Disconnect(code=1000, reason="x"))
        )
    assert exc.value.code == 107


async def test_refresh(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as alice:
        # Expired: disconnected with 3005; the SDK reconnects with its (valid) token.
        await api.refresh(RefreshRequest(user="alice", expired=True))
        connecting = await alice.events.next("connecting", lambda c: c.code != 0)
        assert connecting.code == 3005
        reconnected = await alice.events.next("connected")
        # An expiry time in the past expires it just the same.
        await api.refresh(RefreshRequest(user="alice", expire_at=int(time.time()) - 1))
        assert (await alice.events.next("connecting", lambda c: c.code != 0)).code == 3005
        again = await alice.events.next("connected")
        assert again.client != reconnected.client


async def test_refresh_extends_a_uni_connection(server: Server, api: AsyncClient) -> None:
    token = mint_token(SECRET, "carol", ttl=3600)
    async with (
        http_client(server) as c,
        c.stream("POST", "/connection/uni_http_stream", json={"token": token}) as resp,
    ):
        lines = resp.aiter_lines()
        connect = json.loads(await asyncio.wait_for(anext(lines), TIMEOUT))["connect"]
        assert connect["expires"] is True
        expire_at = int(time.time()) + 7200
        await api.refresh(RefreshRequest(user="carol", expire_at=expire_at))
        refresh = json.loads(await asyncio.wait_for(anext(lines), TIMEOUT))["refresh"]
        assert refresh["expires"] is True
        assert 7100 < refresh["ttl"] <= 7200
        assert server.app.node.clients[connect["client"]].exp == expire_at


# presence, history, channels, info


async def test_presence_and_presence_stats(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as a1, sdk(server) as a2, sdk(server, "bob") as bob:
        for client in (a1, a2, bob):
            await client.subscribe("room:1")
        presence = await api.presence(PresenceRequest(channel="room:1"))
        assert {cid: (i.user, i.client) for cid, i in presence.presence.items()} == {
            a1.id: ("alice", a1.id),
            a2.id: ("alice", a2.id),
            bob.id: ("bob", bob.id),
        }
        stats = await api.presence_stats(PresenceStatsRequest(channel="room:1"))
        assert (stats.num_clients, stats.num_users) == (3, 2)

    # Gone clients leave presence (once the server has seen them go).
    async def stats() -> tuple[int, int]:
        result = await api.presence_stats(PresenceStatsRequest(channel="room:1"))
        return result.num_clients, result.num_users

    await eventually(stats, (0, 0))
    assert (await api.presence(PresenceRequest(channel="room:1"))).presence == {}
    for call in (
        api.presence(PresenceRequest(channel="news")),
        api.presence_stats(PresenceStatsRequest(channel="news")),
    ):
        with pytest.raises(CentApiResponseError) as exc:
            await call
        assert exc.value.code == 108  # presence is off in the default namespace


async def test_history(server: Server, api: AsyncClient) -> None:
    for n in range(1, 6):
        await api.publish(PublishRequest(channel="news", data={"n": n}))

    async def history(**kwargs: Any) -> Any:
        return await api.history(HistoryRequest(channel="news", **kwargs))

    position = await history()
    assert (history_offsets(position), position.offset) == ([], 5)
    epoch = position.epoch
    assert epoch
    assert history_offsets(await history(limit=2)) == [1, 2]
    assert [p.data for p in (await history(limit=-1)).publications] == [
        {"n": n} for n in range(1, 6)
    ]
    assert history_offsets(await history(limit=2, reverse=True)) == [5, 4]
    since = StreamPosition(offset=2, epoch=epoch)
    assert history_offsets(await history(limit=10, since=since)) == [3, 4, 5]
    assert history_offsets(await history(limit=1, since=since)) == [3]
    assert history_offsets(await history(limit=10, since=since, reverse=True)) == [1]
    assert history_offsets(await history(limit=10, since=StreamPosition(offset=5))) == []
    with pytest.raises(CentApiResponseError) as exc:
        await history(limit=10, since=StreamPosition(offset=2, epoch="another"))
    assert exc.value.code == 112
    for request, code in [
        (HistoryRequest(channel="nohist:x", limit=1), 108),
        (HistoryRequest(channel="nowhere:x"), 102),
    ]:
        with pytest.raises(CentApiResponseError) as exc:
            await api.history(request)
        assert exc.value.code == code


async def test_history_keeps_client_info(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as alice:
        await alice.subscribe("news")
        await alice.client.publish("news", {"from": "sdk"})
        (pub,) = (await api.history(HistoryRequest(channel="news", limit=10))).publications
        assert pub.data == {"from": "sdk"}
        assert pub.info is not None
        assert (pub.info.user, pub.info.client) == ("alice", alice.id)


async def test_history_remove(server: Server, api: AsyncClient) -> None:
    for n in (1, 2, 3):
        await api.publish(PublishRequest(channel="news", data={"n": n}))
    before = await api.history(HistoryRequest(channel="news"))
    await api.history_remove(HistoryRemoveRequest(channel="news"))
    after = await api.history(HistoryRequest(channel="news", limit=-1))
    # The publications go; the stream position stays, so clients keep their place.
    assert history_offsets(after) == []
    assert (after.offset, after.epoch) == (3, before.epoch)
    assert (await api.publish(PublishRequest(channel="news", data={"n": 4}))).offset == 4
    assert history_offsets(await api.history(HistoryRequest(channel="news", limit=-1))) == [4]
    with pytest.raises(CentApiResponseError) as exc:
        await api.history_remove(HistoryRemoveRequest(channel="nohist:x"))
    assert exc.value.code == 108


async def test_channels(server: Server, api: AsyncClient) -> None:
    assert (await api.channels(ChannelsRequest())).channels == {}
    async with sdk(server) as alice, sdk(server, "bob") as bob:
        for channel in ("news", "room:1", "room:2"):
            await alice.subscribe(channel)
        await bob.subscribe("room:1")
        everything = await api.channels(ChannelsRequest())
        assert {ch: i.num_clients for ch, i in everything.channels.items()} == {
            "news": 1,
            "room:1": 2,
            "room:2": 1,
        }
        rooms = await api.channels(ChannelsRequest(pattern="room:*"))
        assert set(rooms.channels) == {"room:1", "room:2"}
        assert set((await api.channels(ChannelsRequest(pattern="room:?"))).channels) == {
            "room:1",
            "room:2",
        }
        assert (await api.channels(ChannelsRequest(pattern="sport*"))).channels == {}


async def test_info(server: Server, api: AsyncClient) -> None:
    async with sdk(server) as alice, sdk(server), sdk(server, "bob") as bob:
        await alice.subscribe("news")
        await bob.subscribe("news")
        await bob.subscribe("room:1")
        (node,) = (await api.info(InfoRequest())).nodes
        assert node.uid == server.app.node.id
        assert node.name and node.version
        assert (node.num_clients, node.num_users, node.num_subs, node.num_channels) == (3, 2, 3, 2)
        assert node.uptime >= 0


async def test_sync_client(server: Server) -> None:
    """cent's blocking client, run in a thread (the server runs in this loop)."""

    def work() -> tuple[Any, Any]:
        session = requests.Session()
        session.trust_env = False  # no proxy from the environment for 127.0.0.1
        with SyncClient(api_url(server), API_KEY, timeout=TIMEOUT, session=session) as client:
            published = client.publish(PublishRequest(channel="news", data={"sync": 1}))
            return published, client.history(HistoryRequest(channel="news", limit=5))

    published, history = await asyncio.to_thread(work)
    assert published.offset == 1
    assert [p.data for p in history.publications] == [{"sync": 1}]


# batch


async def test_batch_sequential(server: Server, api: AsyncClient) -> None:
    result = await api.batch(
        BatchRequest(
            requests=[
                PublishRequest(channel="news", data={"n": 1}),
                PublishRequest(channel="news", data={"n": 2}),
                HistoryRequest(channel="news", limit=-1),
                PresenceStatsRequest(channel="room:1"),
                InfoRequest(),
            ]
        )
    )
    first, second, history, stats, info = result.replies
    assert (first.offset, second.offset) == (1, 2)
    # In order: the history sees both publications.
    assert history_offsets(history) == [1, 2]
    assert (stats.num_clients, stats.num_users) == (0, 0)
    assert info.nodes[0].uid == server.app.node.id


async def test_batch_parallel(server: Server, api: AsyncClient) -> None:
    channels = [f"par{i}" for i in range(8)]
    result = await api.batch(
        BatchRequest(
            requests=[PublishRequest(channel=ch, data={"ch": ch}) for ch in channels],
            parallel=True,
        )
    )
    assert [r.offset for r in result.replies] == [1] * 8
    for ch in channels:
        (pub,) = (await api.history(HistoryRequest(channel=ch, limit=5))).publications
        assert pub.data == {"ch": ch}


async def test_batch_wire_shape(server: Server) -> None:
    """Errors sit in their slot; the batch has no ``result`` wrapper."""
    body = {
        "commands": [
            {"publish": {"channel": "news", "data": 1}},
            {"no_such_method": {}},
            {"publish": {"channel": "nowhere:x", "data": 1}},
            {"history": {"channel": "news", "limit": 5}},
        ]
    }
    async with http_client(server) as c:
        resp = await c.post("/api/batch", json=body, headers={"X-API-Key": API_KEY})
    assert resp.status_code == 200
    replies = resp.json()["replies"]
    assert replies[0]["publish"]["offset"] == 1
    assert replies[1]["error"]["code"] == 104
    assert replies[2]["error"]["code"] == 102
    assert [p["data"] for p in replies[3]["history"]["publications"]] == [1]


# errors


async def test_wrong_or_missing_key(server: Server) -> None:
    for key in ("wrong", ""):
        async with AsyncClient(api_url(server), key, timeout=TIMEOUT) as client:
            with pytest.raises(CentUnauthorizedError):
                await client.publish(PublishRequest(channel="news", data={}))
    async with http_client(server) as c:
        resp = await c.post("/api/info", json={})
        assert resp.status_code == 401
        resp = await c.post("/api/info", json={}, headers={"Authorization": f"apikey {API_KEY}"})
        assert resp.status_code == 200
        assert resp.json()["result"]["nodes"][0]["uid"] == server.app.node.id
    assert (await server.app.node.history("news", TOP)).position.offset == 0


async def test_malformed_body_and_unknown_method(server: Server) -> None:
    auth = {"X-API-Key": API_KEY}
    async with http_client(server) as c:
        resp = await c.post("/api/publish", content=b'{"channel": "news", "data"', headers=auth)
        assert resp.status_code == 400
        resp = await c.post("/api/no_such_method", json={}, headers=auth)
        assert resp.status_code == 200
        assert resp.json()["error"]["code"] == 104
        resp = await c.post("/api/publish", json=["not", "an", "object"], headers=auth)
        assert resp.json()["error"]["code"] == 107
        resp = await c.get("/api/info", headers=auth)
        assert resp.status_code == 405


# one stream for every way of publishing


async def test_pub_endpoint_api_and_publisher_share_one_stream(
    server: Server, api: AsyncClient
) -> None:
    async with ws_connect(server, "/ws/shared") as ws, sdk(server) as alice:
        shared = await alice.subscribe("shared")
        assert server.app.node.hub.count("shared") == 2
        via_pub = await publish(server, "shared", {"via": "pub"})
        via_api = await api.publish(PublishRequest(channel="shared", data={"via": "api"}))
        async with Publisher(server.url, API_KEY) as publisher:
            via_publisher = await publisher.apublish("shared", {"via": "publisher"})
        assert [via_pub["offset"], via_api.offset, via_publisher.offset] == [1, 2, 3]
        assert via_pub["epoch"] == via_api.epoch == via_publisher.epoch

        envelopes = [await ws_json(ws) for _ in range(3)]
        assert [(e["offset"], e["epoch"], e["data"]["via"]) for e in envelopes] == [
            (1, via_api.epoch, "pub"),
            (2, via_api.epoch, "api"),
            (3, via_api.epoch, "publisher"),
        ]
        pubs = [(await shared.next("publication")).pub for _ in range(3)]
        assert [(p.offset, p.data["via"]) for p in pubs] == [
            (1, "pub"),
            (2, "api"),
            (3, "publisher"),
        ]


async def test_malformed_positions_are_bad_requests(server: Server) -> None:
    async with http_client(server) as client:
        for body in (
            {"channel": "news", "limit": 1, "since": {"offset": "x"}},
            {"channel": "news", "limit": 1, "since": {"offset": -1}},
            {"channel": "news", "limit": 1, "since": {"offset": 1, "epoch": 5}},
        ):
            response = await client.post(
                f"{server.url}/api/history", json=body, headers={"X-API-Key": API_KEY}
            )
            assert response.status_code == 200
            assert response.json()["error"]["code"] == 107
