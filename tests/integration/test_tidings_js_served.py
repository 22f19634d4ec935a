"""What the hub serves for browsers besides the streams: /tidings.js, CORS answers a page of
another origin relies on, and the chat demo's endpoints with their refusals."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets
from integration_helpers import http_client, until

import tidings
from tidings.server import Server
from tidings.server import chat as chat_module
from tidings.testing import running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")

SOURCE = Path(tidings.__file__).parent / "server" / "static" / "tidings.js"
APP = "http://app.example"
KEY = "0123456789abcdef"


@pytest.fixture
async def hub() -> AsyncIterator[Server]:
    async with running_server(allowed_origins=[APP]) as server:
        yield server


@pytest.fixture
async def demo() -> AsyncIterator[Server]:
    async with running_server(demo=True) as server:
        yield server


async def test_tidings_js_is_served_cacheable_and_readable_from_any_origin(hub: Server) -> None:
    async with http_client(hub) as client:
        response = await client.get("/tidings.js", headers={"Origin": "http://elsewhere.example"})
        assert response.status_code == 200
        assert response.content == SOURCE.read_bytes()
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        assert response.headers["cache-control"] == "public, max-age=3600"
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["x-content-type-options"] == "nosniff"
        etag = response.headers["etag"]
        again = await client.get("/tidings.js", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert (await client.head("/tidings.js")).headers["etag"] == etag
        refused = await client.post("/tidings.js")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/lp/news?last=1", "/sse/news", "/stream/news"])
async def test_a_listed_origin_may_send_cookies(hub: Server, path: str) -> None:
    async with http_client(hub) as client:
        await client.post("/pub/news", json={"n": 1}, headers={"X-API-Key": "test-key"})
        async with client.stream("GET", path, headers={"Origin": APP}) as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == APP
            assert response.headers["access-control-allow-credentials"] == "true"
            assert "ETag" in response.headers["access-control-expose-headers"]


async def test_any_origin_reads_without_cookies() -> None:
    # With "*" any site may read the streams, but a visitor's cookies must not open them.
    async with running_server(allowed_origins=["*"]) as server, http_client(server) as client:
        response = await client.options("/lp/news", headers={"Origin": "http://any.example"})
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "http://any.example"
        assert "access-control-allow-credentials" not in response.headers


async def test_an_unlisted_origin_is_refused(hub: Server) -> None:
    async with http_client(hub) as client:
        response = await client.get("/lp/news", headers={"Origin": "http://evil.example"})
        assert response.status_code == 403


async def test_the_chat_is_there_only_with_the_demo(hub: Server) -> None:
    async with http_client(hub) as client:
        assert (await client.get("/demo/chat")).status_code == 404
        message = {"type": "join", "key": KEY, "nick": "x"}
        assert (await client.post("/demo/chat/send/lobby", json=message)).status_code == 404


async def test_the_chat_publishes_what_pages_send(demo: Server) -> None:
    async with http_client(demo) as client:
        page = await client.get("/demo/chat")
        assert page.status_code == 200
        assert '<script type="module">' in page.text
        assert 'from "/tidings.js"' in page.text
        message = {"type": "msg", "key": KEY, "nick": " ann ", "text": "<b>hi</b>", "cid": KEY}
        for _ in range(2):  # the second is a retry: published once
            response = await client.post("/demo/chat/send/lobby", json=message)
            assert response.status_code == 200
            assert response.json() == {"ok": True}
        history = (await client.get("/lp/chat:lobby?last=10")).json()
        assert [m["data"] for m in history["messages"]] == [
            {"type": "presence", "event": "join", "nick": "ann", "members": ["ann"]},
            {"type": "msg", "nick": "ann", "text": "<b>hi</b>", "cid": KEY},
        ]
        leave = {"type": "leave", "key": KEY}
        assert (await client.post("/demo/chat/send/lobby", json=leave)).status_code == 200
        history = (await client.get("/lp/chat:lobby?last=1")).json()
        assert history["messages"][0]["data"]["members"] == []


def page_says(**fields: object) -> dict[str, object]:
    return {"type": "msg", "key": KEY, "nick": "n", "text": "x", "cid": KEY, **fields}


@pytest.mark.parametrize(
    ("room", "body", "error"),
    [
        ("no%20spaces", page_says(), "bad room name"),
        ("lobby", [1], "a chat message is a JSON object"),
        ("lobby", page_says(key="short"), "bad page key"),
        ("lobby", page_says(nick=""), "a nickname is 1 to 32 characters"),
        ("lobby", page_says(nick="n" * 33), "a nickname is 1 to 32 characters"),
        ("lobby", page_says(type="boom"), "unknown message type"),
        ("lobby", page_says(text="x" * 2001), "a message is 1 to 2000 characters"),
        ("lobby", page_says(text=" "), "a message is 1 to 2000 characters"),
        ("lobby", page_says(cid=None), "bad message id"),
    ],
)
async def test_the_chat_refuses_bad_messages(
    demo: Server, caplog: pytest.LogCaptureFixture, room: str, body: object, error: str
) -> None:
    caplog.set_level(logging.INFO, "tidings.server")
    async with http_client(demo) as client:
        response = await client.post(f"/demo/chat/send/{room}", json=body)
        assert response.status_code == 400
        assert response.json() == {"error": error}
        # Nothing was published, not even a join.
        info = await client.get("/pub/chat:lobby", headers={"X-API-Key": "test-key"})
        assert info.json()["published"] == 0
    assert any(error in r.getMessage() for r in caplog.records)


async def test_the_chat_keeps_bounded_rooms(demo: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat_module, "MAX_ROOMS", 1)
    monkeypatch.setattr(chat_module, "MAX_MEMBERS", 1)
    async with http_client(demo) as client:
        first = {"type": "join", "key": KEY, "nick": "first"}
        assert (await client.post("/demo/chat/send/a", json=first)).status_code == 200
        second = {**first, "key": KEY[::-1]}
        for room in ("a", "b"):
            response = await client.post(f"/demo/chat/send/{room}", json=second)
            assert response.status_code == 400
            assert response.json() == {"error": "the chat is full"}
        # The first page is still there and may speak.
        again = {**page_says(), "nick": "first"}
        assert (await client.post("/demo/chat/send/a", json=again)).status_code == 200


async def test_the_chat_refuses_other_sites_and_other_methods(demo: Server) -> None:
    async with http_client(demo) as client:
        message = {"type": "join", "key": KEY, "nick": "x"}
        response = await client.post(
            "/demo/chat/send/lobby", json=message, headers={"Origin": "http://evil.example"}
        )
        assert response.status_code == 403
        response = await client.get("/demo/chat/send/lobby")
        assert response.status_code == 405
        response = await client.post("/demo/chat/send/lobby", content=b"{not json")
        assert response.status_code == 400
        assert (await client.post("/demo/nothing", json=message)).status_code == 404


async def test_a_websocket_page_sends_through_the_hooks(demo: Server) -> None:
    url = demo.url.replace("http", "ws", 1) + "/ws/chat:lobby,typing:lobby"
    async with websockets.connect(url, proxy=None) as ws:
        await ws.send(json.dumps({"type": "join", "key": KEY, "nick": "ws"}))
        joined = json.loads(await ws.recv())
        assert joined["data"] == {
            "type": "presence",
            "event": "join",
            "nick": "ws",
            "members": ["ws"],
        }
        await ws.send(json.dumps({"type": "typing", "key": KEY, "nick": "ws"}))
        typing = json.loads(await ws.recv())
        assert (typing["channel"], typing["data"]) == (
            "typing:lobby",
            {"type": "typing", "nick": "ws"},
        )
        await ws.send(json.dumps({"type": "nonsense", "key": KEY, "nick": "ws"}))
        refused = json.loads(await ws.recv())
        assert refused == {
            "notice": "error",
            "channel": "",
            "code": 400,
            "reason": "unknown message type",
        }
        await ws.send("not even JSON")
        refused = json.loads(await ws.recv())
        assert refused["reason"] == "a chat message is a JSON object"
    # The WebSocket closed: its page left the room.
    chat = demo.app.demo_chat
    assert chat is not None
    await until(lambda: "lobby" not in chat.rooms, "the page to leave")
    async with http_client(demo) as client:
        last = (await client.get("/lp/chat:lobby?last=1")).json()["messages"][0]["data"]
    assert (last["event"], last["members"]) == ("leave", [])
