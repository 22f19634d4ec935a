"""Hooks against a real server: the simple endpoints (bidirectional ``/ws``), out-of-band
messages through ``Publisher`` and the server API, several nodes, loading hook modules."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration_helpers import (
    http_client,
    sse_connect,
    stream_connect,
    subscribed,
    until,
    ws_close_code,
    ws_connect,
    ws_json,
)
from test_cli import read_until

from tidings import Publish, Publisher, Reject
from tidings.app import App, Backend
from tidings.brokers import MemoryBackend, MemoryBroker, MemoryController, MemoryPresenceManager
from tidings.config import Config
from tidings.core.broker import HistoryQuery
from tidings.core.conn import Conn
from tidings.core.hooks import Hooks
from tidings.core.tokens import mint_token
from tidings.exceptions import NoSuchConnection
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

SECRET = "tidings-hooks-tests-hmac-secret-0123456789"
CHAT = {"simple_subscribe": True, "simple_publish": True}
SETTINGS: dict[str, Any] = {
    "api_key": "test-key",
    "token_hmac_secret_key": SECRET,
    "default_namespace": {"allow_subscribe_for_client": True},
    "namespaces": {"chat": CHAT},
}

pytestmark = pytest.mark.usefixtures("no_server_errors")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(**SETTINGS) as srv:
        yield srv


def publisher(server: Server) -> Publisher:
    return Publisher(server.url, "test-key", timeout=TIMEOUT)


async def client_protocol(ws: Any, user: str, *channels: str) -> str:
    """Connect a client-protocol WebSocket as ``user``; its client id."""
    commands = [{"id": 1, "connect": {"token": mint_token(SECRET, user)}}]
    commands += [{"id": i + 2, "subscribe": {"channel": ch}} for i, ch in enumerate(channels)]
    await ws.send("\n".join(json.dumps(c) for c in commands))
    replies: dict[int, Any] = {}
    while len(replies) < len(commands):
        for line in str(await asyncio.wait_for(ws.recv(), TIMEOUT)).split("\n"):
            message = json.loads(line)
            if "id" in message:
                replies[message["id"]] = message
    client: str = replies[1]["connect"]["client"]
    return client


# the bidirectional /ws


async def test_ws_messages_go_to_on_message_per_channel_and_publish_where_allowed(server):
    got: asyncio.Queue[tuple[str, Any, str]] = asyncio.Queue()

    @server.app.hooks.on_message
    def message(conn: Conn, context: dict[str, Any], channel: str, data: Any) -> None:
        got.put_nowait((channel, data, conn.kind))

    async with (
        sse_connect(server, "/sse/chat:1") as chat,
        sse_connect(server, "/sse/news") as news,
        ws_connect(server, "/ws/chat:1,news") as ws,
    ):
        await subscribed(server, "chat:1", 2)
        await subscribed(server, "news", 2)
        await ws.send(json.dumps({"text": "hi"}))
        first = [await asyncio.wait_for(got.get(), TIMEOUT) for _ in range(2)]
        assert first == [("chat:1", {"text": "hi"}, "ws"), ("news", {"text": "hi"}, "ws")]
        # chat allows client publishing: every subscriber gets it, the sender too.
        event = await chat.next()
        envelope = json.loads(event.data)
        assert (envelope["channel"], envelope["data"]) == ("chat:1", {"text": "hi"})
        assert (await ws_json(ws))["data"] == {"text": "hi"}
        # news (default options) doesn't: its next event is the next publication.
        async with publisher(server) as pub:
            await pub.apublish("news", {"marker": 1})
        assert json.loads((await news.next()).data)["data"] == {"marker": 1}


async def test_ws_messages_without_hooks_publish_where_allowed_and_are_ignored_elsewhere(server):
    async with (
        ws_connect(server, "/ws/chat:2") as sender,
        ws_connect(server, "/ws/chat:2,other") as reader,
        ws_connect(server, "/ws/other") as elsewhere,
    ):
        await subscribed(server, "chat:2", 2)
        await subscribed(server, "other", 2)
        await sender.send("plain text")
        assert (await ws_json(reader))["data"] == "plain text"
        await elsewhere.send("to other: not published")
        await sender.send("second")
        assert (await ws_json(reader))["data"] == "second"


async def test_an_on_publish_hook_says_how_to_publish_what_a_ws_client_sends(server):
    @server.app.hooks.on_publish(channel=r"^chat:")
    def how(conn, context, channel, data):
        key = str(data["n"])
        return Publish(skip_history=data["draft"], tags={"n": key}, idempotency_key=key)

    async with ws_connect(server, "/ws/chat:7") as ws:
        await subscribed(server, "chat:7")
        for n, draft in ((1, True), (2, False), (2, False), (3, False)):
            await ws.send(json.dumps({"n": n, "draft": draft}))
        got = [(await ws_json(ws))["data"]["n"] for _ in range(3)]
        assert got == [1, 2, 3]  # the second 2 had the same idempotency key
    kept = (await server.app.node.history("chat:7", HistoryQuery(limit=10))).publications
    assert [json.loads(p.data)["n"] for p in kept] == [2, 3]  # 1 skipped history
    assert [p.tags for p in kept] == [{"n": "2"}, {"n": "3"}]


async def test_ws_messages_past_the_rate_close_the_connection():
    settings = {**SETTINGS, "client_command_rate": 1.0, "client_command_burst": 3}
    async with running_server(**settings) as server, ws_connect(server, "/ws/chat:3") as ws:
        await subscribed(server, "chat:3")
        for n in range(10):
            await ws.send(str(n))
        assert await ws_close_code(ws) == 1008


async def test_on_publish_may_replace_or_refuse_a_ws_message(server):
    @server.app.hooks.on_publish(channel=r"^chat:")
    async def moderate(conn, context, channel, data):
        if "spam" in str(data):
            raise Reject(1002, "no spam")
        if data == "close me":
            raise Reject(4500, "bye")
        return {"text": data, "by": conn.id}

    async with ws_connect(server, "/ws/chat:4") as ws:
        await subscribed(server, "chat:4")
        await ws.send("spam!")
        assert await ws_json(ws) == {
            "notice": "error",
            "channel": "",
            "code": 1002,
            "reason": "no spam",
        }
        await ws.send("hello")
        published = await ws_json(ws)
        assert published["data"]["text"] == "hello"
        await ws.send("close me")
        assert await ws_close_code(ws) == 4500


# opening a simple connection


async def test_on_connect_sees_the_request_and_may_refuse_every_kind(server):
    seen: list[tuple[str, str, str, str]] = []

    @server.app.hooks.on_connect
    def connect(conn: Conn, context: dict[str, Any]) -> None:
        seen.append((conn.kind, conn.remote_addr, conn.headers.get("x-app", ""), conn.id))
        if conn.cookies.get("session") != "ok":
            raise Reject(4001, "log in first")
        conn.user = "alice"

    # Refused: a WebSocket is closed with the code, the others get 403 with it.
    async with ws_connect(server, "/ws/news") as ws:
        assert await ws_close_code(ws) == 4001
        assert ws.close_reason == "log in first"
    async with http_client(server) as http:
        for path in ("/sse/news", "/stream/news", "/lp/news"):
            resp = await http.get(path)
            assert resp.status_code == 403
            assert resp.json() == {"error": "log in first", "code": 4001}
        # Accepted with the cookie; the hook saw the request.
        headers = {"Cookie": "session=ok", "X-App": "tests"}
        async with stream_connect(server, "/stream/news", headers=headers) as lines:
            await subscribed(server, "news")
            async with publisher(server) as pub:
                await pub.apublish("news", {"n": 1})
            assert json.loads(await lines.next())["data"] == {"n": 1}
    assert [s[:2] for s in seen] == [
        ("ws", "127.0.0.1"),
        ("sse", "127.0.0.1"),
        ("stream", "127.0.0.1"),
        ("lp", "127.0.0.1"),
        ("stream", "127.0.0.1"),
    ]
    assert seen[-1][2] == "tests"


async def test_on_subscribe_refuses_a_channel_of_a_simple_connection(server):
    @server.app.hooks.on_subscribe(channel=r"^secret")
    def secret(conn, context, channel):
        raise Reject(103, "not for you")

    async with http_client(server) as http:
        resp = await http.get("/sse/news,secret")
        assert (resp.status_code, resp.json()["code"]) == (403, 103)
    async with ws_connect(server, "/ws/news,secret") as ws:
        assert await ws_close_code(ws) == 1008  # an error code: policy violation, the reason
        assert ws.close_reason == "not for you"


async def test_a_failing_or_hanging_opening_hook_is_an_internal_error(caplog):
    async with running_server(**SETTINGS, hook_timeout=0.3) as server:
        release = asyncio.Event()

        @server.app.hooks.on_connect
        async def connect(conn, context):
            if conn.kind == "sse":
                await release.wait()
            raise RuntimeError("boom")

        async with http_client(server) as http:
            resp = await http.get("/sse/news")
            assert (resp.status_code, resp.json()) == (500, {"error": "internal error"})
        async with ws_connect(server, "/ws/news") as ws:
            assert await ws_close_code(ws) == 1011
        release.set()
    assert "boom" in caplog.text and "no answer within" in caplog.text
    caplog.clear()  # the errors were the point (no_server_errors)


async def test_simple_connections_end_with_disconnect_and_finish(server):
    events: asyncio.Queue[tuple[str, str, list[str]]] = asyncio.Queue()
    for name in ("disconnect", "finish"):
        server.app.hooks.add(
            name,
            lambda conn, context, name=name: events.put_nowait((name, conn.kind, conn.channels)),
        )
    async with ws_connect(server, "/ws/a,b"):
        await subscribed(server, "b")
    got = [await asyncio.wait_for(events.get(), TIMEOUT) for _ in range(2)]
    assert got == [("disconnect", "ws", ["a", "b"]), ("finish", "ws", ["a", "b"])]


# out of band


async def test_send_broadcast_and_exclude_client_through_the_publisher(server):
    ids: dict[str, str] = {}

    @server.app.hooks.on_connect
    def connect(conn, context):
        ids[conn.kind] = conn.id

    async with (
        ws_connect(server, "/ws/news") as ws,
        sse_connect(server, "/sse/news") as sse,
        ws_connect(server, "/connection/websocket") as cp,
        publisher(server) as pub,
    ):
        client_id = await client_protocol(cp, "42", "news")
        await subscribed(server, "news", 3)
        await pub.asend(ids["ws"], {"to": "ws"})
        assert await ws_json(ws) == {"notice": "message", "channel": "", "data": {"to": "ws"}}
        await pub.asend(ids["sse"], {"to": "sse"})
        event = await sse.next()
        assert (event.event, json.loads(event.data)["data"]) == ("tidings.message", {"to": "sse"})
        await pub.asend(client_id, {"to": "client"})
        assert json.loads(await cp.recv()) == {"push": {"message": {"data": {"to": "client"}}}}
        with pytest.raises(NoSuchConnection, match="gone"):
            await pub.asend("gone", {})
        assert await pub.abroadcast("everyone") == 3
        assert (await ws_json(ws))["data"] == "everyone"
        # A publication that skips the WebSocket: the others get it, the WebSocket only the
        # next one.
        await pub.apublish("news", {"n": 1}, exclude_client=ids["ws"])
        result = await pub.abroadcast_channel({"n": 2}, "news", exclude_client=client_id)
        assert result.offset == 2
        assert [json.loads((await sse.next()).data)["data"] for _ in range(3)] == [
            "everyone",
            {"n": 1},
            {"n": 2},
        ]
        assert (await ws_json(ws))["data"] == {"n": 2}
        pushes = [json.loads(await cp.recv()) for _ in range(2)]
        assert [p["push"].get("message", p["push"].get("pub"))["data"] for p in pushes] == [
            "everyone",
            {"n": 1},
        ]
    # The server API directly, the way any language's HTTP client would call it.
    async with http_client(server) as http:
        answer = await http.post(
            "/api/send", json={"client": "gone", "data": 1}, headers={"X-API-Key": "test-key"}
        )
        assert answer.json() == {"error": {"code": 108, "message": "no such connection"}}
    with publisher(server) as blocking, pytest.raises(NoSuchConnection):
        await asyncio.to_thread(blocking.send, "gone", {})  # the blocking client, in a thread


# several nodes


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Server, Server]]:
    backend = MemoryBackend()
    async with AsyncExitStack() as stack:
        servers = []
        for _ in range(2):
            parts = Backend(
                MemoryBroker(backend), MemoryPresenceManager(backend), MemoryController(backend)
            )
            app = App(Config(host="127.0.0.1", port=0, **SETTINGS), backend=parts)
            server = Server(app)
            await server.start()
            stack.push_async_callback(server.aclose)
            servers.append(server)
        yield servers[0], servers[1]


async def test_out_of_band_and_hook_broadcasts_reach_connections_on_other_nodes(cluster):
    a, b = cluster
    ids: dict[str, str] = {}

    @a.app.hooks.on_connect
    def connect(conn, context):
        ids["a"] = conn.id

    @a.app.hooks.on_message
    def chat(conn, context, channel, data):
        conn.broadcast_channel({"said": data}, "room")

    async with (
        ws_connect(a, "/ws/room") as on_a,
        ws_connect(b, "/connection/websocket") as on_b,
        publisher(b) as pub,
    ):
        client_id = await client_protocol(on_b, "42", "room")
        await subscribed(a, "room")
        await subscribed(b, "room")
        await pub.asend(ids["a"], "from b's publisher")  # the connection is on a
        assert (await ws_json(on_a))["data"] == "from b's publisher"
        async with publisher(a) as pub_a:
            await pub_a.asend(client_id, "from a's publisher")
        assert json.loads(await on_b.recv())["push"]["message"]["data"] == "from a's publisher"
        await on_a.send("hello")  # on_message on a publishes for every subscriber but it
        push = json.loads(await asyncio.wait_for(on_b.recv(), TIMEOUT))
        assert push["push"]["pub"]["data"] == {"said": "hello"}
        assert await pub.abroadcast("all") == 2
        assert (await ws_json(on_a))["data"] == "all"  # not its own broadcast_channel
        with pytest.raises(NoSuchConnection):
            await pub.asend("nowhere", 1)


# loading hooks


HOOK_MODULE = """
from tidings import hooks, Reject

@hooks.on_connect
def connect(conn, context):
    if conn.headers.get("x-token") != "letmein":
        raise Reject(4001, "log in first")

@hooks.on_message(channel=r"^chat:")
def chat(conn, context, channel, message):
    conn.send({"echo": message})
"""


async def test_an_app_loads_the_hooks_of_the_modules_it_is_given(tmp_path, monkeypatch):
    package = tmp_path / "myproject_hooks_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "realtime.py").write_text(HOOK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    app = App(Config(host="127.0.0.1", port=0, hooks=["myproject_hooks_test.realtime"]))
    assert [h.event for hooks in app.hooks.lists.values() for h in hooks] == ["connect", "message"]
    server = Server(app)
    await server.start()
    try:
        async with ws_connect(server, "/ws/chat:1") as ws:
            assert await ws_close_code(ws) == 4001
        async with ws_connect(
            server, "/ws/chat:1", additional_headers={"X-Token": "letmein"}
        ) as ws:
            await subscribed(server, "chat:1")
            await ws.send('{"x":1}')
            assert (await ws_json(ws))["data"] == {"echo": {"x": 1}}
    finally:
        await server.aclose()
    # Another app in the same process: hooks registered in code only, none from the module.
    assert not App(Config(), hooks=Hooks()).hooks


async def test_tidings_serve_hooks(tmp_path):
    (tmp_path / "chat_hooks_cli.py").write_text(HOOK_MODULE)
    (tmp_path / "broken_hooks_cli.py").write_text("import nowhere_to_be_found\n")
    code, _, err = await run_in(tmp_path, "serve", "--port", "0", "--hooks", "broken_hooks_cli")
    assert code == 2
    assert "can't import 'broken_hooks_cli'" in err and "nowhere_to_be_found" in err
    async with running_in(tmp_path, "serve", "--port", "0", "--hooks", "chat_hooks_cli") as proc:
        assert proc.stdout is not None
        url = (await read_until(proc.stdout, r"serving on (http://\S+)")).group(1)
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, trust_env=False) as http:
            resp = await http.get("/sse/news")
        assert resp.json() == {"error": "log in first", "code": 4001}


def _env() -> dict[str, str]:
    """This checkout's sources first, wherever the process starts."""
    import os

    import tidings

    src = str(Path(tidings.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


async def run_in(cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.cli",
        *args,
        cwd=cwd,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def running_in(cwd: Path, *args: str) -> Any:
    import contextlib

    @contextlib.asynccontextmanager
    async def go() -> AsyncIterator[asyncio.subprocess.Process]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tidings.cli",
            *args,
            cwd=cwd,
            env=_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    return go()


# the message log


async def test_the_message_log_on_the_simple_websocket(caplog):
    caplog.set_level("INFO", "tidings.messages")
    fmt = "{remote_addr} {type} {channel} {headers[x-app]} {message}"
    async with (
        running_server(**SETTINGS, message_log_format=fmt) as server,
        ws_connect(server, "/ws/chat:9", additional_headers={"X-App": "t"}) as ws,
    ):
        await subscribed(server, "chat:9")
        await ws.send("line one\nline two")
        await ws_json(ws)  # published back: the line was written before
        await until(lambda: any(r.name == "tidings.messages" for r in caplog.records))
    lines = [r.getMessage() for r in caplog.records if r.name == "tidings.messages"]
    assert lines == ["127.0.0.1 message chat:9 t line one\\nline two"]


async def test_what_a_hook_sends_before_it_disconnects_reaches_the_client(server):
    # The message is queued for the connection's next write, which a busy server may
    # hold for a few milliseconds; the disconnect must not drop it.
    @server.app.hooks.on_message
    async def last_word(conn: Conn, context: dict[str, Any], channel: str, data: Any) -> None:
        conn.send({"bye": data["n"]})
        conn.disconnect(4000, "done")

    async with ws_connect(server, "/ws/news") as ws:
        await subscribed(server, "news", 1)
        await ws.send(json.dumps({"n": 7}))
        said = await ws_json(ws)
        assert said.get("data", said) == {"bye": 7}, said
        assert await ws_close_code(ws) == 4000
