"""``tidings.asgi`` under uvicorn with real clients: the simple endpoints (resume included),
publishing, ``/stats``, hooks, the client protocol through the official SDK, the server API
through ``cent``, and the application mounted under a prefix in Starlette and Django."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from asgi_helpers import Served, uvicorn_serving
from cent import AsyncClient, PublishRequest
from centrifuge import Client, PublicationContext, SubscriptionEventHandler
from django.http import HttpRequest, HttpResponse
from django.urls import path
from integration_helpers import (
    AUTH,
    OPEN_NAMESPACE,
    http_client,
    publish,
    sse_connect,
    stream_connect,
    subscribed,
    until,
    ws_close_code,
    ws_connect,
    ws_handshake,
    ws_json,
)
from websockets.exceptions import InvalidStatus

from tidings.app import App
from tidings.asgi import TidingsASGI
from tidings.config import Config
from tidings.core.conn import Conn
from tidings.core.tokens import mint_token
from tidings.exceptions import Reject
from tidings.testing import TIMEOUT, FakeClock

SECRET = "tidings-asgi-tests-hmac-secret-0123456789"

pytestmark = pytest.mark.usefixtures("no_server_errors")


def make_asgi(**settings: Any) -> TidingsASGI:
    settings.setdefault("api_key", "test-key")
    settings.setdefault("token_hmac_secret_key", SECRET)
    settings.setdefault("default_namespace", OPEN_NAMESPACE)
    return TidingsASGI(Config(**settings))


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    asgi = make_asgi()
    async with uvicorn_serving(asgi, asgi.app) as s:
        yield s


async def test_sse_delivers_and_resumes_after_last_event_id(served):
    async with sse_connect(served, "/sse/news") as events:
        await subscribed(served, "news")
        await publish(served, "news", {"n": 1})
        first = await events.next()
        assert json.loads(first.data)["data"] == {"n": 1}
    await publish(served, "news", {"n": 2})
    await publish(served, "news", {"n": 3})
    # Resuming from the first id gives what was missed, in order, then live ones.
    async with sse_connect(served, "/sse/news", {"Last-Event-ID": first.id}) as events:
        missed = [json.loads((await events.next()).data)["data"] for _ in range(2)]
        assert missed == [{"n": 2}, {"n": 3}]
        await publish(served, "news", {"n": 4})
        assert json.loads((await events.next()).data)["data"] == {"n": 4}


async def test_stream_websocket_and_longpoll_get_the_same_publication(served):
    async with (
        stream_connect(served, "/stream/news") as lines,
        ws_connect(served, "/ws/news") as ws,
        http_client(served) as http,
    ):
        await subscribed(served, "news", 2)
        poll = asyncio.create_task(http.get("/lp/news"))
        await subscribed(served, "news", 3)
        result = await publish(served, "news", {"hello": "all"})
        assert json.loads(await lines.next())["data"] == {"hello": "all"}
        assert (await ws_json(ws))["data"] == {"hello": "all"}
        resp = await asyncio.wait_for(poll, TIMEOUT)
        assert resp.status_code == 200
        body = resp.json()
        assert [m["data"] for m in body["messages"]] == [{"hello": "all"}]
        assert body["id"] == f"news:{result['offset']}:{result['epoch']}"
        # The next poll resumes from the ETag and waits for what comes after it.
        poll = asyncio.create_task(http.get("/lp/news", headers={"If-None-Match": body["id"]}))
        await subscribed(served, "news", 3)
        await publish(served, "news", {"after": 1})
        resp = await asyncio.wait_for(poll, TIMEOUT)
        assert [m["data"] for m in resp.json()["messages"]] == [{"after": 1}]


async def test_a_long_poll_session_gets_what_is_sent_between_polls(served):
    async with http_client(served) as http:
        poll = asyncio.create_task(http.get("/lp/news"))
        await subscribed(served, "news")
        [session] = served.app.longpoll_sessions.by_secret.values()
        await served.app.node.send(session.id, b'{"first":1}')
        answer = (await asyncio.wait_for(poll, TIMEOUT)).json()
        assert answer["notices"] == [{"notice": "message", "channel": "", "data": {"first": 1}}]
        await served.app.node.send(session.id, b'"between"')
        again = await http.get("/lp/news", params={"session": answer["session"]})
        notice = {"notice": "message", "channel": "", "data": "between"}
        assert again.json()["notices"] == [notice]


async def test_bad_input_gets_statuses_and_stats_need_the_key(served):
    async with http_client(served) as http:
        assert (await http.get("/sse/bad name!")).status_code == 400
        assert (await http.get("/nowhere")).status_code == 404
        assert (await http.post("/pub/news", content=b"{}")).status_code == 401
        assert (await http.get("/stats")).status_code == 401
        resp = await http.get("/stats", headers=AUTH)
        assert resp.status_code == 200
        assert "connections" in resp.text
        big = b'"' + b"x" * (Config().max_body_bytes + 10) + b'"'
        resp = await http.post("/pub/news", content=big, headers=AUTH)
        assert resp.status_code == 413
        assert resp.json() == {"error": "Content Too Large"}
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(served, "/ws/bad name!"):
            pass
    assert refused.value.response.status_code == 400
    # A browser page of another origin is refused before the handshake, as natively.
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(served, "/connection/websocket", origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403


async def test_hooks_refuse_and_admit_simple_connections():
    asgi = make_asgi()

    @asgi.app.hooks.on_connect
    def connect(conn: Conn, context: dict[str, Any]) -> None:
        if conn.cookies.get("session") != "ok":
            raise Reject(4001, "log in first")
        conn.user = "alice"

    async with uvicorn_serving(asgi, asgi.app) as served:
        async with ws_connect(served, "/ws/news") as ws:
            assert await ws_close_code(ws) == 4001
        async with http_client(served) as http:
            resp = await http.get("/sse/news")
            assert resp.status_code == 403
            assert resp.json() == {"error": "log in first", "code": 4001}
        async with sse_connect(served, "/sse/news", {"Cookie": "session=ok"}) as events:
            await subscribed(served, "news")
            await publish(served, "news", {"n": 1})
            assert json.loads((await events.next()).data)["data"] == {"n": 1}


class Publications(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[PublicationContext] = asyncio.Queue()

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.queue.put_nowait(ctx)


@pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"])
async def test_the_sdk_and_cent_over_asgi(served, use_protobuf):
    host = served.url.replace("http", "ws", 1)
    client = Client(
        f"{host}/connection/websocket",
        token=mint_token(SECRET, "42"),
        use_protobuf=use_protobuf,
        timeout=TIMEOUT,
    )
    events = Publications()
    try:
        await client.connect()
        await client.ready()
        sub = client.new_subscription("room", events)
        await sub.subscribe()
        await sub.ready()
        async with AsyncClient(f"{served.url}/api", "test-key", timeout=TIMEOUT) as api:
            await api.publish(PublishRequest(channel="room", data={"from": "cent"}))
        ctx = await asyncio.wait_for(events.queue.get(), TIMEOUT)
        data = json.loads(ctx.pub.data) if isinstance(ctx.pub.data, bytes) else ctx.pub.data
        assert data == {"from": "cent"}
        # The SDK publishes itself (the namespace allows subscribers to), and receives it.
        body = json.dumps({"from": "sdk"}).encode() if use_protobuf else {"from": "sdk"}
        await sub.publish(body)
        ctx = await asyncio.wait_for(events.queue.get(), TIMEOUT)
        data = json.loads(ctx.pub.data) if isinstance(ctx.pub.data, bytes) else ctx.pub.data
        assert data == {"from": "sdk"}
    finally:
        await client.disconnect()


async def test_client_protocol_over_http_stream_with_emulation(served):
    connect = json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, "7")}})
    async with (
        http_client(served) as http,
        http.stream("POST", "/connection/http_stream", content=connect) as resp,
    ):
        assert resp.status_code == 200
        lines = resp.aiter_lines()
        reply = json.loads(await asyncio.wait_for(anext(lines), TIMEOUT))
        session = reply["connect"]["session"]
        command = json.dumps({"id": 2, "subscribe": {"channel": "room"}}).encode()
        emul = {"session": session, "node": reply["connect"]["node"], "data": command.decode()}
        answer = await http.post("/emulation", content=json.dumps(emul))
        assert answer.status_code == 204
        assert json.loads(await asyncio.wait_for(anext(lines), TIMEOUT))["id"] == 2
        await publish(served, "room", {"emulated": True})
        push = json.loads(await asyncio.wait_for(anext(lines), TIMEOUT))
        assert push["push"]["pub"]["data"] == {"emulated": True}


async def test_lifespan_shutdown_tells_streaming_clients():
    asgi = make_asgi()
    async with (
        uvicorn_serving(asgi, asgi.app) as served,
        sse_connect(served, "/sse/news") as events,
    ):
        await subscribed(served, "news")
        await asgi.aclose()  # what the lifespan's shutdown runs
        assert (await events.next()).event == "tidings.shutdown"
        await events.wait_end()
    assert asgi.app.stopping


async def test_mounted_in_starlette_under_a_prefix():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    asgi = make_asgi()

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("host page")

    host = Starlette(
        routes=[Route("/", home), Mount("/realtime", app=asgi)],
        lifespan=asgi.lifespan,  # the host owns lifespan; Mount doesn't pass it on
    )
    async with uvicorn_serving(host, asgi.app, prefix="/realtime") as served:
        async with http_client(served) as http:
            assert (await http.get(served.url.removesuffix("/realtime") + "/")).text == "host page"
        async with ws_connect(served, "/ws/news") as ws, sse_connect(served, "/sse/news") as ev:
            await subscribed(served, "news", 2)
            await publish(served, "news", {"mounted": True})
            assert (await ws_json(ws))["data"] == {"mounted": True}
            assert json.loads((await ev.next()).data)["data"] == {"mounted": True}


async def test_mounted_beside_django_asgi():
    import django
    from django.conf import settings
    from django.test import override_settings

    if not settings.configured:
        settings.configure(SECRET_KEY="asgi-tests", MIDDLEWARE=[], INSTALLED_APPS=[])
        django.setup()
    from django.core.asgi import get_asgi_application

    asgi = make_asgi()
    django_app = get_asgi_application()

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # The pattern of docs/asgi.md: /tidings/ to tidings, the rest to Django.
        if scope["type"] == "lifespan":
            await asgi(scope, receive, send)
        elif scope["path"].startswith("/tidings/"):
            root = scope.get("root_path", "") + "/tidings"
            await asgi({**scope, "root_path": root}, receive, send)
        else:
            await django_app(scope, receive, send)

    with override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["127.0.0.1"], DEBUG=False):
        async with uvicorn_serving(application, asgi.app, prefix="/tidings") as served:
            async with http_client(served) as http:
                page = await http.get(served.url.removesuffix("/tidings") + "/hello/")
                assert page.text == "from django"
            async with stream_connect(served, "/stream/news") as lines:
                await subscribed(served, "news")
                await publish(served, "news", {"beside": "django"})
                assert json.loads(await lines.next())["data"] == {"beside": "django"}


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("from django")


urlpatterns = [path("hello/", hello)]  # ROOT_URLCONF of the Django test above


@pytest.mark.parametrize(
    ("kind", "request_bytes"),
    [
        ("ws", ws_handshake("/ws/flood")),
        ("sse", b"GET /sse/flood HTTP/1.1\r\nHost: x\r\n\r\n"),
    ],
    ids=["ws", "sse"],
)
async def test_a_client_that_does_not_read_is_cut_off_as_slow(kind, request_bytes):
    limit, message = 64 * 1024, 16 * 1024
    asgi = make_asgi(max_outgoing_bytes=limit, shutdown_timeout=0.5)
    async with uvicorn_serving(asgi, asgi.app) as served, http_client(served) as http:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            port = int(served.url.rsplit(":", 1)[1])
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, request_bytes)  # and never reads
            await subscribed(served, "flood")
            [slow] = [c for c in asgi.app.connections if c.kind == kind]
            peak = 0
            for _ in range(2000):
                resp = await http.post(
                    "/pub/flood",
                    content="x" * message,
                    headers={**AUTH, "Content-Type": "text/plain"},
                )
                assert resp.status_code == 200
                if asgi.app.slow_disconnects:
                    break
                peak = max(peak, slow.transport.get_write_buffer_size())  # type: ignore[attr-defined]
            assert asgi.app.slow_disconnects == 1
            # What tidings held for it stayed within the bound (one message over at most).
            assert peak <= limit + message + 1024
            await until(lambda: slow not in asgi.app.connections, "slow connection forgotten")
            assert asgi.app.node.hub.count("flood") == 0
        finally:
            sock.close()


async def test_heartbeat_rounds_leave_a_quiet_websocket_connected():
    # ASGI has no ping message: the host pings the peer; the session's heartbeat must not
    # take the missing answers for a dead client.
    clock = FakeClock()
    asgi = TidingsASGI(App(Config(api_key="test-key"), clock=clock))
    async with uvicorn_serving(asgi, asgi.app) as served, ws_connect(served, "/ws/news") as ws:
        await subscribed(served, "news")
        [session] = [c for c in asgi.app.connections if c.kind == "ws"]
        for _ in range(3):
            clock.advance(asgi.config.ping_interval)
            await until(lambda: session.seen, "the heartbeat answered")  # type: ignore[attr-defined]
        assert not session.closed
        await publish(served, "news", {"still": "here"})
        assert (await ws_json(ws))["data"] == {"still": "here"}


async def test_unidirectional_transports_over_asgi(served):
    connect = json.dumps({"token": mint_token(SECRET, "9"), "subs": {"room": {}}})
    async with ws_connect(served, "/connection/uni_websocket") as ws:
        await ws.send(connect)
        assert "connect" in await ws_json(ws)
        async with sse_connect(served, f"/connection/uni_sse?cf_connect={quote(connect)}") as ev:
            assert "connect" in json.loads((await ev.next()).data)
            await subscribed(served, "room", 2)
            await publish(served, "room", {"uni": True})
            assert json.loads((await ev.next()).data)["pub"]["data"] == {"uni": True}
        assert (await ws_json(ws))["pub"]["data"] == {"uni": True}


async def test_the_asgi_lifespan_starts_and_stops_the_app():
    asgi = make_asgi()
    async with uvicorn_serving(asgi, asgi.app) as served, http_client(served) as http:
        assert (await http.get("/health")).status_code == 200
        assert not asgi.app.stopping
    # uvicorn has stopped: its lifespan.shutdown closed the App.
    assert asgi.app.stopping
    assert not asgi.app.connections
