"""Unidirectional transports of the client protocol with raw clients: ``websockets`` for
``/connection/uni_websocket``, ``httpx`` streaming for ``/connection/uni_sse`` and
``/connection/uni_http_stream``.

The client sends one bare ConnectRequest and only listens: a ``{"connect": ...}`` push
first, then bare pushes (``{"channel", "pub"}``, subscribe/unsubscribe, disconnect, ``{}``
pings). Readers fill queues in the background; a test waits on them with ``TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from integration_helpers import http_client, publish, ws_close_code, ws_connect, ws_json

from tidings.core.tokens import mint_token
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

SECRET = "tidings-uni-tests-hmac-secret-0123456789"
SETTINGS: dict[str, Any] = {
    "token_hmac_secret_key": SECRET,
    "default_namespace": {"allow_subscribe_for_client": True, "force_recovery": True},
}
HTTP_TRANSPORTS = ["uni_sse", "uni_http_stream"]
TRANSPORTS = ["uni_websocket", *HTTP_TRANSPORTS]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(**SETTINGS) as srv:
        yield srv


def token(user: str = "u1", **claims: Any) -> str:
    return mint_token(SECRET, user, **claims)


_END = object()


@dataclass
class PushStream:
    """The pushes of an HTTP uni stream, framing checked byte for byte."""

    response: httpx.Response
    sse: bool
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        buffer = b""
        first = True
        try:
            async for part in self.response.aiter_raw():
                buffer += part
                if self.sse and first and len(buffer) >= 2:
                    # uni_sse opens with a bare CRLF before the first event.
                    assert buffer.startswith(b"\r\n"), buffer
                    buffer, first = buffer[2:], False
                separator = b"\n\n" if self.sse else b"\n"
                while separator in buffer:
                    item, buffer = buffer.split(separator, 1)
                    if self.sse:
                        assert item.startswith(b"data: "), item
                        item = item[6:]
                    assert item and b"\n" not in item, item
                    self.queue.put_nowait(json.loads(item))
        except httpx.HTTPError:
            pass
        finally:
            self.queue.put_nowait(_END)
            self.ended.set()

    async def next(self) -> Any:
        item = await asyncio.wait_for(self.queue.get(), TIMEOUT)
        if item is _END:
            raise AssertionError("stream ended")
        return item

    async def rest(self) -> list[Any]:
        """Wait for the server to end the stream; what came before the end."""
        await asyncio.wait_for(self.ended.wait(), TIMEOUT)
        items = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not _END:
                items.append(item)
        return items


@asynccontextmanager
async def uni_http(
    server: Server, name: str, request: Any = None, *, method: str = "POST"
) -> AsyncIterator[PushStream]:
    """Open ``/connection/<name>``: POST the connect request as the body, or GET it as
    ``cf_connect`` (``request=None``: no parameter at all)."""
    path = f"/connection/{name}"
    async with http_client(server) as c:
        if method == "GET":
            params = {} if request is None else {"cf_connect": json.dumps(request)}
            stream = c.stream("GET", path, params=params)
        else:
            stream = c.stream("POST", path, content=json.dumps(request))
        async with stream as resp:
            assert resp.status_code == 200, (resp.status_code, await resp.aread())
            ctype = "text/event-stream" if name == "uni_sse" else "application/json"
            assert resp.headers["content-type"].startswith(ctype)
            pushes = PushStream(resp, sse=name == "uni_sse")
            task = asyncio.create_task(pushes.read())
            try:
                yield pushes
            finally:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task


class WsPushes:
    """The same interface over a uni WebSocket: one push per text frame."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def next(self) -> Any:
        return await ws_json(self.ws)


@asynccontextmanager
async def uni(server: Server, transport: str, request: Any) -> AsyncIterator[Any]:
    """A connected uni client of any transport; ``next()`` gives its pushes."""
    if transport == "uni_websocket":
        async with ws_connect(server, "/connection/uni_websocket") as ws:
            await ws.send(json.dumps(request))
            yield WsPushes(ws)
    else:
        async with uni_http(server, transport, request) as pushes:
            yield pushes


def check_connect(push: Any, server: Server, ping: int = 25) -> dict[str, Any]:
    assert set(push) == {"connect"}, push
    connect: dict[str, Any] = push["connect"]
    assert connect["client"] in server.app.node.clients
    assert connect["session"]
    assert connect["version"]
    assert connect["ping"] == ping
    assert "pong" not in connect  # no pong is expected from a uni client
    return connect


# connecting and receiving


@pytest.mark.parametrize("how", ["message", "query"])
async def test_uni_websocket_connect(server: Server, how: str) -> None:
    request = {"token": token(channels=["news", "alerts"])}
    query = f"?cf_connect={quote(json.dumps(request))}" if how == "query" else ""
    async with ws_connect(server, f"/connection/uni_websocket{query}") as ws:
        if how == "message":
            await ws.send(json.dumps(request))
        connect = check_connect(await ws_json(ws), server)
        assert server.app.node.clients[connect["client"]].user == "u1"
        assert set(connect["subs"]) == {"news", "alerts"}
        news = connect["subs"]["news"]
        assert news["recoverable"] and news["positioned"] and news["epoch"]
        # Whatever the client says after connecting is read and ignored.
        await ws.send("ignored")
        await ws.send(b"\x00ignored too")
        result = await publish(server, "news", {"n": 1})
        assert await ws_json(ws) == {
            "channel": "news",
            "pub": {"data": {"n": 1}, "offset": 1},
        }
        assert result["epoch"] == news["epoch"]
        await publish(server, "alerts", "text")
        assert await ws_json(ws) == {"channel": "alerts", "pub": {"data": "text", "offset": 1}}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_uni_sse(server: Server, method: str) -> None:
    request = {"token": token(channels=["news"])}
    async with uni_http(server, "uni_sse", request, method=method) as pushes:
        connect = check_connect(await pushes.next(), server)
        assert set(connect["subs"]) == {"news"}
        await publish(server, "news", {"n": 1})
        await publish(server, "news", {"n": 2})
        assert await pushes.next() == {"channel": "news", "pub": {"data": {"n": 1}, "offset": 1}}
        assert await pushes.next() == {"channel": "news", "pub": {"data": {"n": 2}, "offset": 2}}


async def test_uni_sse_without_cf_connect_is_an_empty_request() -> None:
    anonymous = {**SETTINGS, "allow_anonymous_connect_without_token": True}
    async with (
        running_server(**anonymous) as srv,
        uni_http(srv, "uni_sse", None, method="GET") as pushes,
    ):
        connect = check_connect(await pushes.next(), srv)
        assert srv.app.node.clients[connect["client"]].user == ""
        assert "subs" not in connect
    # Where credentials are required, the empty request is refused.
    async with (
        running_server(**SETTINGS) as srv,
        uni_http(srv, "uni_sse", None, method="GET") as pushes,
    ):
        assert await pushes.rest() == [{"disconnect": {"code": 3501, "reason": "bad request"}}]


async def test_uni_http_stream(server: Server) -> None:
    async with uni_http(server, "uni_http_stream", {"token": token(channels=["news"])}) as pushes:
        connect = check_connect(await pushes.next(), server)
        assert connect["subs"]["news"]["recoverable"]
        await publish(server, "news", [1, 2, 3])
        assert await pushes.next() == {"channel": "news", "pub": {"data": [1, 2, 3], "offset": 1}}
    async with http_client(server) as c:
        resp = await c.get("/connection/uni_http_stream")
        assert resp.status_code == 405
        assert "POST" in resp.headers["allow"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_recovery_through_the_connect_request(server: Server, transport: str) -> None:
    for n in range(1, 5):
        result = await publish(server, "news", {"n": n})
    epoch = result["epoch"]
    request = {
        "token": token(channels=["news", "other"]),
        "subs": {
            "news": {"recover": True, "offset": 2, "epoch": epoch},
            "other": {"recover": True, "offset": 7, "epoch": "lost"},
        },
    }
    async with uni(server, transport, request) as pushes:
        subs = check_connect(await pushes.next(), server)["subs"]
        news = subs["news"]
        assert news["recovered"] and news["was_recovering"]
        assert news["epoch"] == epoch
        assert news["publications"] == [
            {"data": {"n": 3}, "offset": 3},
            {"data": {"n": 4}, "offset": 4},
        ]
        # A position that can't be recovered: nothing recovered, told so.
        other = subs["other"]
        assert other["was_recovering"]
        assert "recovered" not in other
        assert "publications" not in other
        await publish(server, "news", {"n": 5})
        assert await pushes.next() == {"channel": "news", "pub": {"data": {"n": 5}, "offset": 5}}


async def test_server_api_subscribe_and_unsubscribe(server: Server) -> None:
    auth = {"X-API-Key": "test-key"}
    async with (
        uni_http(server, "uni_http_stream", {"token": token("carol")}) as pushes,
        http_client(server) as api,
    ):
        assert "subs" not in check_connect(await pushes.next(), server)
        resp = await api.post(
            "/api/subscribe", json={"user": "carol", "channel": "extra"}, headers=auth
        )
        assert resp.json() == {"result": {}}
        subscribe = await pushes.next()
        assert subscribe["channel"] == "extra"
        assert subscribe["subscribe"]["recoverable"]
        await publish(server, "extra", {"x": 1})
        assert await pushes.next() == {"channel": "extra", "pub": {"data": {"x": 1}, "offset": 1}}
        await api.post("/api/unsubscribe", json={"user": "carol", "channel": "extra"}, headers=auth)
        assert await pushes.next() == {
            "channel": "extra",
            "unsubscribe": {"code": 2000, "reason": "server unsubscribe"},
        }
        assert server.app.node.hub.count("extra") == 0


# refusals


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("bad_token", "code", "reason"),
    [
        (mint_token("not-the-secret-but-long-enough-for-hs256-0123", "u1"), 3500, "invalid token"),
        (mint_token(SECRET, "u1", ttl=-60), 3005, "connection expired"),
    ],
    ids=["invalid", "expired"],
)
async def test_refused_token(
    server: Server, transport: str, bad_token: str, code: int, reason: str
) -> None:
    request = {"token": bad_token}
    if transport == "uni_websocket":
        async with ws_connect(server, "/connection/uni_websocket") as ws:
            await ws.send(json.dumps(request))
            assert await ws_close_code(ws) == code
            assert ws.close_reason == reason
    else:
        async with uni_http(server, transport, request) as pushes:
            disconnect = {"code": code, "reason": reason}
            if code < 3500:
                disconnect["reconnect"] = True
            assert await pushes.rest() == [{"disconnect": disconnect}]
    assert server.app.node.clients == {}


@pytest.mark.parametrize("how", ["message", "query"])
@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '{"token": 5}'])
async def test_uni_websocket_malformed_connect(server: Server, how: str, body: str) -> None:
    query = f"?cf_connect={quote(body)}" if how == "query" else ""
    async with ws_connect(server, f"/connection/uni_websocket{query}") as ws:
        if how == "message":
            await ws.send(body)
        assert await ws_close_code(ws) == 3501
        assert ws.close_reason == "bad request"


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '{"subs": {"news": 1}}'])
async def test_uni_http_malformed_connect(server: Server, body: str) -> None:
    async with http_client(server) as c:
        for path in ("/connection/uni_sse", "/connection/uni_http_stream"):
            resp = await c.post(path, content=body)
            assert resp.status_code == 400, path
        resp = await c.get("/connection/uni_sse", params={"cf_connect": body})
        assert resp.status_code == 400
    assert server.app.node.clients == {}


# pings and shutdown


async def test_pings_are_empty_pushes() -> None:
    async with running_server(**SETTINGS, ping_interval=1) as srv:
        request = {"token": token(channels=["news"])}
        async with (
            uni(srv, "uni_websocket", request) as ws,
            uni(srv, "uni_sse", request) as sse,
            uni(srv, "uni_http_stream", request) as stream,
        ):
            for pushes in (ws, sse, stream):
                check_connect(await pushes.next(), srv, ping=1)
            for pushes in (ws, sse, stream):
                assert await pushes.next() == {}
            # No pong is expected: the connections stay after the next ping too.
            for pushes in (ws, sse, stream):
                assert await pushes.next() == {}
            await publish(srv, "news", 1)
            for pushes in (ws, sse, stream):
                assert await pushes.next() == {"channel": "news", "pub": {"data": 1, "offset": 1}}


async def test_shutdown_ends_every_uni_connection() -> None:
    request = {"token": token(channels=["news"])}
    async with (
        running_server(**SETTINGS) as srv,
        ws_connect(srv, "/connection/uni_websocket") as ws,
        uni_http(srv, "uni_sse", request) as sse,
        uni_http(srv, "uni_http_stream", request) as stream,
    ):
        await ws.send(json.dumps(request))
        check_connect(await ws_json(ws), srv)
        for pushes in (sse, stream):
            check_connect(await pushes.next(), srv)
        closing = asyncio.create_task(srv.aclose())
        assert await ws_close_code(ws) == 3001
        shutdown = {"disconnect": {"code": 3001, "reason": "shutdown", "reconnect": True}}
        assert await sse.rest() == [shutdown]
        assert await stream.rest() == [shutdown]
        await asyncio.wait_for(closing, TIMEOUT)
        assert srv.app.node.clients == {}
