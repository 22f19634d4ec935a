"""Hooks on the client protocol, through a recording transport, and the registry itself."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import pytest

from tidings.brokers import MemoryBackend
from tidings.core.channels import ChannelOptions, Namespaces
from tidings.core.client import Client
from tidings.core.client_types import ClientOptions
from tidings.core.conn import Conn, Publish, decode_data, encode_data
from tidings.core.hooks import Hooks
from tidings.core.node import Node
from tidings.core.tokens import TokenVerifier, mint_token
from tidings.exceptions import InvalidChannel, NoSuchConnection, Reject
from tidings.protocol.centrifuge import codes
from tidings.testing import TIMEOUT, RecordingTransport, memory_node

SECRET = "unit-test-secret-0123456789abcdef"
OPEN = ChannelOptions(allow_subscribe_for_client=True, allow_publish_for_subscriber=True)


def make_node(backend: MemoryBackend | None = None, hooks: Hooks | None = None) -> Node:
    return memory_node(
        backend,
        namespaces=Namespaces(OPEN, {"room": OPEN}),
        token_verifier=TokenVerifier(hmac_secret=SECRET),
        hooks=hooks if hooks is not None else Hooks(timeout=TIMEOUT),
    )


@pytest.fixture
async def node():
    n = make_node()
    await n.start()
    yield n
    n.hooks.close()
    await n.aclose()


def client(node: Node, **options: Any) -> tuple[Client, RecordingTransport]:
    transport = RecordingTransport()
    return Client(node, transport, ClientOptions(**options)), transport


async def connected(
    node: Node, user: str = "42", *channels: str
) -> tuple[Client, RecordingTransport]:
    c, transport = client(node)
    commands: list[dict[str, Any]] = [{"id": 1, "connect": {"token": mint_token(SECRET, user)}}]
    commands += [{"id": 2 + i, "subscribe": {"channel": ch}} for i, ch in enumerate(channels)]
    c.feed(commands)
    last = 1 + len(channels)
    await transport.wait_for(lambda: transport.reply_to(last) is not None or transport.closed)
    return c, transport


async def reply(c: Client, transport: RecordingTransport, cmd: dict[str, Any]) -> dict[str, Any]:
    c.feed([cmd])
    await transport.wait_for(lambda: transport.reply_to(cmd["id"]) is not None)
    answer = transport.reply_to(cmd["id"])
    assert answer is not None
    return answer


# the registry


def test_decorators_bare_and_called_and_their_checks():
    hooks = Hooks()

    @hooks.on_connect
    def a(conn, context): ...

    @hooks.on_subscribe(channel=r"^room:")
    async def b(conn, context, channel): ...

    @hooks.on_rpc("echo")
    def c(conn, context, data): ...

    assert [h.fn for h in hooks.lists["connect"]] == [a]
    sub = hooks.lists["subscribe"][0]
    assert sub.is_async and sub.matches("room:1", list) and not sub.matches("lobby", list)
    assert hooks.lists["rpc"][0].method == "echo" and not hooks.lists["rpc"][0].is_async
    assert hooks and not Hooks()
    with pytest.raises(ValueError, match="unknown hook event"):
        hooks.add("connected", a)
    with pytest.raises(ValueError, match="channels"):
        hooks.add("connect", a, channel="x")
    with pytest.raises(ValueError, match="method"):
        hooks.add("rpc", a)
    with pytest.raises(TypeError):
        hooks.add("message", "not a function")  # type: ignore[arg-type]


def test_of_module_takes_the_hooks_defined_in_a_module_and_below():
    hooks = Hooks()

    def here(conn, context): ...

    def elsewhere(conn, context): ...

    elsewhere.__module__ = "someapp.realtime.chat"
    hooks.on_connect(here)
    hooks.on_disconnect(elsewhere)
    assert [h.fn for h in hooks.of_module("someapp.realtime")] == [elsewhere]
    assert hooks.of_module("someapp.real") == []


@pytest.mark.parametrize("code", [99, 2000, 2999, 5000, -1])
def test_reject_codes_outside_the_ranges_are_refused(code):
    with pytest.raises(ValueError, match="100-1999"):
        Reject(code, "x")
    assert Reject(1999).closes is False and Reject(3000).closes is True


def test_data_codec():
    assert encode_data({"a": [1]}) == (b'{"a":[1]}', True)
    assert encode_data(b"plain") == (b"plain", False)
    assert encode_data(b"[1]") == (b"[1]", True)
    with pytest.raises(TypeError, match="JSON"):
        encode_data(object())
    assert decode_data(b'{"a":1}', True) == {"a": 1}
    assert decode_data(b"hi", False) == "hi"
    assert decode_data(b"\xff", False) == b"\xff"


# connect


async def test_on_connect_sees_the_user_and_keeps_a_context_for_later_events(node):
    seen: list[Any] = []

    @node.hooks.on_connect
    def connect(conn: Conn, context: dict[str, Any]) -> None:
        context["greeted"] = conn.user
        seen.append((conn.kind, conn.transport, conn.user, threading.current_thread().name))

    @node.hooks.on_subscribe
    async def subscribe(conn: Conn, context: dict[str, Any], channel: str) -> None:
        seen.append((context["greeted"], channel, conn.channels))

    _c, transport = await connected(node, "42", "room:1", "room:2")
    assert "subscribe" in transport.reply_to(3)
    kind, name, user, thread = seen[0]
    assert (kind, name, user) == ("client", "recording", "42")
    assert thread.startswith("tidings-hook")  # a plain def runs in the thread pool
    assert seen[1:] == [("42", "room:1", []), ("42", "room:2", ["room:1"])]


@pytest.mark.parametrize(
    ("code", "closes"), [(4001, True), (4501, True), (1001, False), (103, False)]
)
async def test_a_rejected_connect(node, code, closes):
    @node.hooks.on_connect
    async def connect(conn, context):
        raise Reject(code, "log in first")

    c, transport = await connected(node)
    if closes:
        assert transport.closed_with == codes.Disconnect(code, "log in first")
    else:
        error = transport.reply_to(1)["error"]
        assert error == {"code": code, "message": "log in first"}
        assert c.connect_failed and not c.connected
    assert not node.clients


async def test_with_connect_hooks_a_connection_without_token_reaches_them(node):
    @node.hooks.on_connect
    def connect(conn, context):
        session = conn.cookies.get("sessionid")
        if session != "s3cret":
            raise Reject(4403, "log in first")
        conn.user = "7"

    anonymous, transport = client(node)
    anonymous.feed([{"id": 1, "connect": {}}])
    await transport.wait_for(lambda: transport.closed)
    assert transport.closed_with == codes.Disconnect(4403, "log in first")

    from tidings.protocol.http import Request

    request = Request("GET", "/", "/", {}, {"cookie": "a=1; sessionid=s3cret"})
    c = Client(node, RecordingTransport(), ClientOptions(), request)
    c.feed([{"id": 1, "connect": {}}])
    await c.transport.wait_for(lambda: c.transport.reply_to(1) is not None)  # type: ignore[attr-defined]
    assert "connect" in c.transport.reply_to(1)  # type: ignore[attr-defined]
    assert c.user == "7" and node.users["7"] == {c}


async def test_without_connect_hooks_a_connection_without_token_is_refused(node):
    @node.hooks.on_rpc("x")
    def x(conn, context, data): ...

    c, transport = client(node)
    c.feed([{"id": 1, "connect": {}}])
    await transport.wait_for(lambda: transport.closed)
    assert transport.closed_with == codes.BAD_REQUEST_DISCONNECT


# failures


async def test_a_failing_hook_is_an_internal_error_its_text_unsaid_and_on_error_told(node):
    errors: list[Exception] = []

    @node.hooks.on_subscribe(channel=r"^room:")
    def subscribe(conn, context, channel):
        raise RuntimeError("database password is hunter2")

    @node.hooks.on_error
    def error(conn, context, exc):
        errors.append(exc)

    c, transport = await connected(node, "42", "room:1")
    answer = transport.reply_to(2)
    assert answer["error"]["code"] == 100
    assert "hunter2" not in str(transport.messages)
    assert [str(e) for e in errors] == ["database password is hunter2"]
    assert "room:1" not in c.subs and not node.hub.count("room:1")
    # The connection goes on, and the pattern leaves other channels alone.
    assert "subscribe" in await reply(c, transport, {"id": 9, "subscribe": {"channel": "lobby"}})


async def test_hooks_that_hang_are_answered_as_errors():
    hooks = Hooks(timeout=0.2)
    node = make_node(hooks=hooks)
    await node.start()
    release = threading.Event()

    @hooks.on_rpc("async")
    async def hang(conn, context, data):
        await asyncio.Event().wait()

    @hooks.on_rpc("plain")
    def block(conn, context, data):
        release.wait(TIMEOUT)

    try:
        c, transport = await connected(node)
        for n, method in enumerate(["async", "plain"], 2):
            answer = await reply(c, transport, {"id": n, "rpc": {"method": method}})
            assert answer["error"]["code"] == 100
    finally:
        release.set()
        hooks.close()
        await node.aclose()


# subscribe, publish, rpc, send


async def test_on_subscribe_is_bound_by_its_pattern_and_may_refuse(node):
    @node.hooks.on_subscribe(channel=r"^room:vip")
    def vip(conn, context, channel):
        if conn.user != "1":
            raise Reject(103, "members only")

    c, transport = await connected(node, "42", "room:vip", "room:1")
    assert transport.reply_to(2)["error"] == {"code": 103, "message": "members only"}
    assert "subscribe" in transport.reply_to(3)
    assert list(c.subs) == ["room:1"]


async def test_on_publish_may_replace_the_data_or_refuse_it(node):
    @node.hooks.on_publish(channel=r"^room:")
    def stamp(conn, context, channel, data):
        if data.get("bad"):
            raise Reject(1003, "no")
        return {**data, "from": conn.user}

    c, transport = await connected(node, "42", "room:1")
    ok = await reply(c, transport, {"id": 5, "publish": {"channel": "room:1", "data": b'{"t":1}'}})
    assert ok == {"id": 5, "publish": {}}
    bad = {"id": 6, "publish": {"channel": "room:1", "data": b'{"bad":1}'}}
    assert (await reply(c, transport, bad))["error"] == {"code": 1003, "message": "no"}
    pubs = [p["pub"]["data"] for p in transport.pushes("pub")]
    assert pubs == [{"t": 1, "from": "42"}]


async def test_rpc_hooks(node):
    @node.hooks.on_rpc("echo")
    async def first(conn, context, data):
        return None  # lets the next one answer

    @node.hooks.on_rpc("echo")
    def second(conn, context, data):
        return {"echo": data, "user": conn.user}

    @node.hooks.on_rpc("rooms", channel=r"^room:")
    def rooms(conn, context, data):
        return conn.channels

    c, transport = await connected(node, "42")
    answer = await reply(c, transport, {"id": 2, "rpc": {"method": "echo", "data": b"[1]"}})
    assert answer == {"id": 2, "rpc": {"data": {"echo": [1], "user": "42"}}}
    # A hook bound to channels serves connections in a matching channel only.
    assert (await reply(c, transport, {"id": 3, "rpc": {"method": "rooms"}}))["error"][
        "code"
    ] == 104
    await reply(c, transport, {"id": 4, "subscribe": {"channel": "room:1"}})
    assert (await reply(c, transport, {"id": 5, "rpc": {"method": "rooms"}}))["rpc"] == {
        "data": ["room:1"]
    }
    assert (await reply(c, transport, {"id": 6, "rpc": {"method": "nope"}}))["error"]["code"] == 104


async def test_send_reaches_on_message_and_its_hooks_may_answer(node):
    got: asyncio.Queue[Any] = asyncio.Queue()

    @node.hooks.on_message
    async def message(conn, context, channel, data):
        got.put_nowait((channel, data))
        conn.send({"ack": data["n"]})

    c, transport = await connected(node)
    c.feed([{"send": {"data": b'{"n":3}'}}])
    assert await asyncio.wait_for(got.get(), TIMEOUT) == (None, {"n": 3})
    await transport.wait_for(lambda: bool(transport.pushes("message")))
    assert transport.pushes("message") == [{"message": {"data": {"ack": 3}}}]


async def test_send_without_message_hooks_is_3508(node):
    @node.hooks.on_connect
    def connect(conn, context): ...

    c, transport = await connected(node)
    c.feed([{"send": {"data": b"{}"}}])
    await transport.wait_for(lambda: transport.closed)
    assert transport.closed_with == codes.NOT_AVAILABLE_DISCONNECT


# the end of a connection


async def test_unsubscribe_disconnect_and_finish_in_order_with_the_channels_it_had(node):
    events: asyncio.Queue[Any] = asyncio.Queue()

    @node.hooks.on_unsubscribe
    def unsubscribe(conn, context, channel):
        events.put_nowait(("unsubscribe", channel))

    @node.hooks.on_disconnect
    async def disconnect(conn, context):
        events.put_nowait(("disconnect", conn.channels, conn.closed))

    @node.hooks.on_finish
    def finish(conn, context):
        events.put_nowait(("finish",))
        with pytest.raises(NoSuchConnection):
            conn.send("too late")

    c, transport = await connected(node, "42", "room:1", "room:2")
    await reply(c, transport, {"id": 9, "unsubscribe": {"channel": "room:1"}})
    c.disconnect(codes.FORCE_DISCONNECT)
    got = [await asyncio.wait_for(events.get(), TIMEOUT) for _ in range(3)]
    assert got == [("unsubscribe", "room:1"), ("disconnect", ["room:2"], True), ("finish",)]


async def test_a_refused_connection_gets_finish_but_no_disconnect(node):
    events: asyncio.Queue[str] = asyncio.Queue()

    @node.hooks.on_connect
    def connect(conn, context):
        raise Reject(1001, "no")

    node.hooks.on_disconnect(lambda conn, context: events.put_nowait("disconnect"))
    node.hooks.on_finish(lambda conn, context: events.put_nowait("finish"))
    c, _transport = await connected(node)
    c.disconnect(codes.FORCE_DISCONNECT)
    assert await asyncio.wait_for(events.get(), TIMEOUT) == "finish"
    assert events.empty()


# what conn does


async def test_broadcast_channel_skips_the_connection_and_send_and_broadcast_does_not(node):
    @node.hooks.on_message
    def chat(conn, context, channel, data):
        if data["all"]:
            conn.send_and_broadcast_channel({"text": data["text"]}, "room:1")
        else:
            conn.broadcast_channel({"text": data["text"]})  # every channel of conn

    alice, a = await connected(node, "1", "room:1")
    _bob, b = await connected(node, "2", "room:1")
    alice.feed([{"send": {"data": b'{"all":false,"text":"hi"}'}}])
    await b.wait_for(lambda: len(b.pushes("pub")) == 1)
    alice.feed([{"send": {"data": b'{"all":true,"text":"all"}'}}])
    await b.wait_for(lambda: len(b.pushes("pub")) == 2)
    await a.wait_for(lambda: len(a.pushes("pub")) == 1)
    assert [p["pub"]["data"]["text"] for p in a.pushes("pub")] == ["all"]
    assert [p["pub"]["data"]["text"] for p in b.pushes("pub")] == ["hi", "all"]


async def test_send_and_broadcast_to_a_channel_the_connection_is_not_in(node):
    @node.hooks.on_message
    def chat(conn, context, channel, data):
        conn.send_and_broadcast_channel(data, "room:2")

    alice, a = await connected(node, "1")
    _bob, b = await connected(node, "2", "room:2")
    alice.feed([{"send": {"data": b'{"x":1}'}}])
    await b.wait_for(lambda: bool(b.pushes("pub")))
    await a.wait_for(lambda: bool(a.pushes("message")))
    assert a.pushes("message") == [{"message": {"data": {"x": 1}}}]
    assert not a.pushes("pub")


async def test_conn_methods_from_a_thread_and_their_checks(node):
    done = threading.Event()
    problems: list[Exception] = []

    @node.hooks.on_rpc("bye")
    def bye(conn, context, data):
        for call in (
            lambda: conn.broadcast_channel({}, "bad channel"),
            lambda: conn.disconnect(1000),
        ):
            try:
                call()
            except (InvalidChannel, ValueError) as exc:
                problems.append(exc)
        conn.send({"last": True})
        done.set()
        conn.disconnect(4002, "bye")
        return {}

    c, transport = await connected(node)
    c.feed([{"id": 2, "rpc": {"method": "bye"}}])
    await transport.wait_for(lambda: transport.closed)
    assert done.is_set()
    assert [type(p) for p in problems] == [InvalidChannel, ValueError]
    assert transport.pushes("message") == [{"message": {"data": {"last": True}}}]
    assert transport.closed_with == codes.Disconnect(4002, "bye")


# out of band, across nodes


async def test_send_and_send_all_reach_connections_on_other_nodes():
    backend = MemoryBackend()
    a, b = make_node(backend), make_node(backend)
    await a.start()
    await b.start()
    try:
        on_b, transport = await connected(b, "42")
        await a.send(on_b.id, b'{"hi":1}')
        await transport.wait_for(lambda: bool(transport.pushes("message")))
        assert transport.pushes("message") == [{"message": {"data": {"hi": 1}}}]
        with pytest.raises(NoSuchConnection, match="nope"):
            await a.send("nope", b"{}")
        await connected(a, "43")
        assert await b.send_all(b'"all"') == 2
        on_b.disconnect(codes.FORCE_DISCONNECT)
        with pytest.raises(NoSuchConnection):
            await a.send(on_b.id, b"{}")
    finally:
        await a.aclose()
        await b.aclose()


async def test_exclude_client_skips_that_connection_on_every_node():
    backend = MemoryBackend()
    a, b = make_node(backend), make_node(backend)
    await a.start()
    await b.start()
    try:
        _alice, ta = await connected(a, "1", "room:1")
        bob, tb = await connected(b, "2", "room:1")
        done = await a.publish("room:1", b'{"n":1}', exclude_client=bob.id)
        assert done.subscribers == 1  # a's local subscriber count
        await b.publish("room:1", b'{"n":2}')
        await tb.wait_for(lambda: bool(tb.pushes("pub")))
        await ta.wait_for(lambda: len(ta.pushes("pub")) == 2)
        assert [p["pub"]["data"]["n"] for p in tb.pushes("pub")] == [2]
    finally:
        await a.aclose()
        await b.aclose()


# personal channels


async def test_personal_channel_and_single_connection_across_nodes():
    backend = MemoryBackend()
    personal = {"personal_channels": True, "personal_namespace": "room"}
    a, b = make_node(backend), make_node(backend)
    await a.start()
    await b.start()
    try:
        first, t1 = client(a, **personal, personal_single_connection=True)
        first.feed([{"id": 1, "connect": {"token": mint_token(SECRET, "42")}}])
        await t1.wait_for(lambda: t1.reply_to(1) is not None)
        subs = t1.reply_to(1)["connect"]["subs"]
        assert list(subs) == ["room:#42"]
        await b.publish("room:#42", b'{"for":"you"}')
        await t1.wait_for(lambda: bool(t1.pushes("pub")))
        # The same user connects on the other node: the first connection goes, for good.
        second, t2 = client(b, **personal, personal_single_connection=True)
        second.feed([{"id": 1, "connect": {"token": mint_token(SECRET, "42")}}])
        await t1.wait_for(lambda: t1.closed)
        assert t1.closed_with == codes.CONNECTION_LIMIT and not t1.closed_with.reconnect
        assert not t2.closed and second.connected
        # Anonymous connections have no personal channel.
        anon, t3 = client(a, **personal, allow_anonymous_connect_without_token=True)
        anon.feed([{"id": 1, "connect": {}}])
        await t3.wait_for(lambda: t3.reply_to(1) is not None)
        assert "subs" not in t3.reply_to(1)["connect"]
    finally:
        await a.aclose()
        await b.aclose()


# the message log


async def test_the_message_log_writes_a_line_per_message(caplog):
    from tidings.core.message_log import MessageLog
    from tidings.protocol.http import Request

    log = MessageLog(
        '{remote_addr} {user} {client} [{type}:{channel}] "{headers[User-Agent]}" {message}'
    )
    node = memory_node(
        namespaces=Namespaces(ChannelOptions(allow_publish_for_client=True)),
        token_verifier=TokenVerifier(hmac_secret=SECRET),
        message_log=log,
    )
    await node.start()
    try:
        request = Request("GET", "/", "/", {}, {"user-agent": "tests/1"}, remote_addr="10.0.0.9")
        transport = RecordingTransport()
        c = Client(node, transport, ClientOptions(), request)
        c.feed([{"id": 1, "connect": {"token": mint_token(SECRET, "42")}}])
        await transport.wait_for(lambda: transport.reply_to(1) is not None)
        caplog.set_level("INFO", "tidings.messages")
        data = b'{"text":"hi"}'
        await reply(c, transport, {"id": 2, "publish": {"channel": "news", "data": data}})
        # A message with a line break can't forge a second line.
        c.feed([{"send": {"data": b"[1,\n2]"}}])
        await transport.wait_for(lambda: transport.closed)  # no message hooks: 3508
        lines = [r.getMessage() for r in caplog.records if r.name == "tidings.messages"]
        assert lines == [
            f'10.0.0.9 42 {c.id} [publish:news] "tests/1" {{"text":"hi"}}',
            f'10.0.0.9 42 {c.id} [send:] "tests/1" [1,\\n2]',
        ]
    finally:
        await node.aclose()


def test_a_bad_message_log_format_is_a_configuration_error():
    from tidings.config import Config
    from tidings.exceptions import ConfigError

    with pytest.raises(ConfigError, match="message_log_format"):
        Config(message_log_format="{nope}").validate()
    with pytest.raises(ConfigError, match="personal_channel_namespace"):
        Config(personal_channel_namespace="personal").validate()
    with pytest.raises(ConfigError, match="module path"):
        Config(hooks=["my-project.realtime"]).validate()


async def delta_subscriber(node: Node) -> tuple[Client, RecordingTransport]:
    """A client connected as user 42 and subscribed to ``d`` with fossil deltas."""
    c, transport = client(node)
    c.feed(
        [
            {"id": 1, "connect": {"token": mint_token(SECRET, "42")}},
            {"id": 2, "subscribe": {"channel": "d", "delta": "fossil"}},
        ]
    )
    await transport.wait_for(lambda: transport.reply_to(2) is not None)
    return c, transport


async def test_an_excluded_delta_subscriber_gets_the_next_publication_in_full():
    delta = ChannelOptions(allow_subscribe_for_client=True, allowed_delta_types=("fossil",))
    node = memory_node(
        namespaces=Namespaces(delta), token_verifier=TokenVerifier(hmac_secret=SECRET)
    )
    await node.start()
    try:
        c, transport = await delta_subscriber(node)
        text = b'"' + b"x" * 200 + b'"'
        await node.publish("d", text, delta=True)
        await node.publish("d", text[:-1] + b'y"', delta=True, exclude_client=c.id)
        await node.publish("d", text[:-1] + b'z"', delta=True)
        await transport.wait_for(lambda: len(transport.pushes("pub")) == 2)
        pubs = [p["pub"] for p in transport.pushes("pub")]
        # Had the third come as a delta, it would patch a payload this client never got.
        assert [p.get("delta", False) for p in pubs] == [False, False]
    finally:
        await node.aclose()


async def test_connect_grants_and_refresh_hooks_on_a_fake_clock():
    from tidings.testing import FakeClock

    clock = FakeClock()
    node = memory_node(
        clock=clock,
        namespaces=Namespaces(OPEN),
        token_verifier=TokenVerifier(hmac_secret=SECRET),
        hooks=Hooks(timeout=TIMEOUT),
    )
    await node.start()
    asked: asyncio.Queue[str] = asyncio.Queue()
    calls: list[str] = []

    @node.hooks.on_connect
    async def connect(conn, context):
        return {
            "user": "9",
            "info": {"n": 1},
            "data": {"hello": 1},
            "channels": ["news"],
            "expire_at": int(clock.time()) + 60,
        }

    @node.hooks.on_refresh
    async def refresh(conn, context):
        asked.put_nowait(conn.user)
        calls.append(conn.user)
        if len(calls) == 1:
            return {"expire_at": int(clock.time()) + 60, "info": {"n": 2}}
        return None  # nothing: the connection expires

    try:
        c, transport = client(node)
        c.feed([{"id": 1, "connect": {}}])
        await transport.wait_for(lambda: transport.reply_to(1) is not None)
        result = transport.reply_to(1)["connect"]
        assert (result["data"], list(result["subs"]), result["expires"]) == (
            {"hello": 1},
            ["news"],
            True,
        )
        assert (c.user, c.info) == ("9", b'{"n":1}')
        clock.advance(61)
        assert await asyncio.wait_for(asked.get(), TIMEOUT) == "9"
        await transport.wait_for(lambda: c.info == b'{"n":2}')
        assert not transport.closed
        clock.advance(61)
        await transport.wait_for(lambda: transport.closed)
        assert transport.closed_with == codes.CONNECTION_EXPIRED
    finally:
        node.hooks.close()
        await node.aclose()


async def test_while_every_hook_thread_is_held_past_its_timeout_plain_hooks_fail_at_once():
    hooks = Hooks(timeout=0.2, threads=2)
    node = make_node(hooks=hooks)
    await node.start()
    release = threading.Event()
    calls = []

    @hooks.on_rpc("block")
    def block(conn, context, data):
        calls.append("block")
        release.wait(TIMEOUT)

    @hooks.on_rpc("quick")
    def quick(conn, context, data):
        calls.append("quick")
        return {"ok": True}

    try:
        c, transport = await connected(node)
        for n in (2, 3):  # each holds a thread past its timeout
            answer = await reply(c, transport, {"id": n, "rpc": {"method": "block"}})
            assert answer["error"]["code"] == 100
        assert hooks.stuck == 2
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await reply(c, transport, {"id": 4, "rpc": {"method": "quick"}})
        assert answer["error"]["code"] == 100
        assert loop.time() - started < 0.2  # refused at once, not after the timeout
        assert calls == ["block", "block"]  # never queued behind them to run later
        release.set()
        # Wait for the held threads to end: their ends are reported on the loop before this
        # wait's own answer arrives.
        pool = hooks._executor
        assert pool is not None
        hooks.close()
        await loop.run_in_executor(None, pool.shutdown)
        assert hooks.stuck == 0
        answer = await reply(c, transport, {"id": 5, "rpc": {"method": "quick"}})
        assert answer["rpc"]["data"] == {"ok": True}
    finally:
        release.set()
        hooks.close()
        await node.aclose()


def test_publish_checks_its_fields_and_later_hooks_add_to_earlier_ones():
    for bad in ({"tags": {"a": 1}}, {"skip_history": "yes"}, {"idempotency_key": "x" * 129}):
        with pytest.raises(TypeError):
            Publish(**bad)
    first = Publish(tags={"a": "1"}, idempotency_key="k")
    later = Publish({"new": 1}, skip_history=True, tags={"b": "2"})
    assert first.then(later) == Publish({"new": 1}, True, {"a": "1", "b": "2"}, "k")
    assert not first.changes_data and later.changes_data
    assert Publish(delta=True).then(Publish(tags={"c": "3"})).delta  # once set, it stays
    with pytest.raises(TypeError, match="delta must be a bool"):
        Publish(delta="yes")  # type: ignore[arg-type]


async def test_a_publish_hooks_publish_is_how_the_client_protocol_publishes(node):
    @node.hooks.on_publish
    def keep_out(conn, context, channel, data):
        return Publish(skip_history=True, tags={"by": conn.user})

    @node.hooks.on_publish
    def then_replace(conn, context, channel, data):
        return {"replaced": data}

    c, transport = await connected(node, "42", "room:1")
    assert "publish" in await reply(
        c, transport, {"id": 9, "publish": {"channel": "room:1", "data": b"1"}}
    )
    await transport.wait_for(lambda: bool(transport.pushes("pub")))
    pub = transport.pushes("pub")[0]["pub"]
    assert (pub["data"], pub["tags"]) == ({"replaced": 1}, {"by": "42"})


async def test_a_publish_hook_may_send_a_clients_publication_as_a_delta():
    # Centrifugo's publish proxy result `delta`: subscribers that asked for fossil deltas
    # get the second publication as a patch against the first.
    options = dataclasses.replace(OPEN, allowed_delta_types=("fossil",))
    node = memory_node(
        namespaces=Namespaces(options),
        token_verifier=TokenVerifier(hmac_secret=SECRET),
        hooks=Hooks(timeout=TIMEOUT),
    )
    await node.start()
    try:

        @node.hooks.on_publish
        def as_delta(conn, context, channel, data):
            return Publish(delta=True)

        c, transport = await delta_subscriber(node)
        text = b'"' + b"x" * 200 + b'"'
        for i, payload in enumerate((text, text[:-1] + b'y"')):
            await reply(c, transport, {"id": 3 + i, "publish": {"channel": "d", "data": payload}})
        await transport.wait_for(lambda: len(transport.pushes("pub")) == 2)
        pubs = [p["pub"] for p in transport.pushes("pub")]
        assert [p.get("delta", False) for p in pubs] == [False, True]
        assert len(pubs[1]["data"]) < 50  # a patch, not the 202 bytes again
    finally:
        node.hooks.close()
        await node.aclose()
