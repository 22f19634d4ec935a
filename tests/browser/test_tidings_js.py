"""tidings.js in Chromium, against a real server: resume on every transport after the server
cuts the connection, fallback when WebSocket and SSE are blocked, and a page of another
origin (the hub lists it in ``allowed_origins``; cookies allowed with ``withCredentials``).

The test page comes from a listener on another port — another origin than the hub's — and
imports the module from the hub.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, WebSocketRoute

from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.browser

API_KEY = "test-key"
WAIT_MS = TIMEOUT * 1000
PAGE = "<!doctype html><meta charset='utf-8'><title>tidings.js test</title>"

# Subscribes to news and records what tidings.js reports.
SUBSCRIBE = """async ([hub, transports]) => {
  const { subscribe } = await import(hub + "/tidings.js");
  window.got = []; window.states = []; window.gaps = [];
  window.sub = subscribe(["news"], {
    url: hub,
    transports,
    withCredentials: true,
    onMessage: (data, meta) => window.got.push([meta.offset, data.n, meta.transport]),
    onState: (state, info) => window.states.push([state, info.transport || info.to || null]),
    onGap: (info) => window.gaps.push(info),
  });
}"""


@pytest.fixture
async def page_origin() -> AsyncIterator[str]:
    """Another origin than the hub's: a listener of its own on loopback that serves the
    test page (a page Playwright made up would have no address, and Chromium keeps pages
    of unknown address from reaching loopback)."""
    body = PAGE.encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()
        await listener.wait_closed()


@pytest.fixture
async def hub(page_origin: str) -> AsyncIterator[Server]:
    async with running_server(api_key=API_KEY, allowed_origins=[page_origin]) as server:
        yield server


@pytest.fixture
async def context(browser: Browser, hub: Server) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()
    try:
        yield context
    finally:
        await context.close()


async def open_page(
    context: BrowserContext, origin: str, hub: Server, transports: list[str] | None
) -> Page:
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(origin + "/page")
    await page.evaluate(SUBSCRIBE, [hub.url, transports])
    await page.wait_for_function(
        "window.states.some(([s]) => s === 'open')", timeout=WAIT_MS, polling=20
    )
    assert errors == []
    return page


async def publish(hub: Server, numbers: range) -> None:
    async with httpx.AsyncClient(base_url=hub.url, headers={"X-API-Key": API_KEY}) as client:
        for n in numbers:
            response = await client.post("/pub/news", json={"n": n})
            assert response.status_code == 200


async def received(page: Page, count: int) -> list[Any]:
    await page.wait_for_function(f"window.got.length >= {count}", timeout=WAIT_MS, polling=20)
    got: list[Any] = await page.evaluate("window.got")
    return got


async def until_connected(hub: Server, kind: str) -> list[Any]:
    """The hub's connections of ``kind``, once there is one (a long-poll is between two
    requests for a moment)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        found = [c for c in hub.app.connections if c.kind == kind and not c.closed]
        if found:
            return found
        assert loop.time() < deadline, f"no {kind} connection"
        await asyncio.sleep(0.002)


@pytest.mark.parametrize("transport", ["ws", "sse", "stream"])
async def test_resumes_after_the_server_cuts_the_connection(
    context: BrowserContext, page_origin: str, hub: Server, transport: str
) -> None:
    page = await open_page(context, page_origin, hub, [transport])
    await until_connected(hub, transport)
    await publish(hub, range(1, 6))
    await received(page, 5)
    # The server drops the connection (TCP reset); what is published meanwhile must come
    # when the client is back, and nothing twice.
    for conn in await until_connected(hub, transport):
        conn.abort()
    await back_with_everything(page, hub, transport)


async def test_long_poll_resumes_after_a_request_fails(
    context: BrowserContext, page_origin: str, hub: Server
) -> None:
    # A long-poll is a request at a time; the browser silently retries one whose reused
    # connection was reset, so the cut here is a request that fails in the network.
    page = await open_page(context, page_origin, hub, ["lp"])
    await until_connected(hub, "lp")
    await publish(hub, range(1, 6))
    await received(page, 5)

    async def fail_once(route: Route) -> None:
        await route.abort("connectionreset")
        await context.unroute("**/lp/**", fail_once)

    await context.route("**/lp/**", fail_once)
    await until_connected(hub, "lp")
    await publish(hub, range(6, 7))  # answers the waiting poll: the next one fails
    await back_with_everything(page, hub, "lp", first=7)


async def back_with_everything(page: Page, hub: Server, transport: str, first: int = 6) -> None:
    """Once the page saw its connection go, publish up to 10 while it is away, then 11 and
    12 live: it must show 1-12, once each, in order."""
    await page.wait_for_function(
        "window.states.at(-1)[0] === 'closed'", timeout=WAIT_MS, polling=10
    )
    await publish(hub, range(first, 11))
    await received(page, 10)
    await until_connected(hub, transport)
    await publish(hub, range(11, 13))
    got = await received(page, 12)
    assert got == [[n, n, transport] for n in range(1, 13)]
    states = await page.evaluate("window.states")
    assert [s for s, _ in states].count("open") >= 2
    assert all(t == transport for _, t in states)  # no fallback: it had worked
    assert await page.evaluate("window.sub.position") == f"news:12:{await epoch(hub)}"
    assert await page.evaluate("window.gaps") == []


async def epoch(hub: Server) -> str:
    async with httpx.AsyncClient(base_url=hub.url, headers={"X-API-Key": API_KEY}) as client:
        epoch_: str = (await client.get("/pub/news")).json()["epoch"]
        return epoch_


async def test_falls_back_to_long_poll_when_websocket_and_sse_are_blocked(
    context: BrowserContext, page_origin: str, hub: Server
) -> None:
    async def refuse(ws: WebSocketRoute) -> None:
        await ws.close()  # never connected: the page's WebSocket fails to open

    await context.route_web_socket("**/ws/**", refuse)
    await context.route("**/sse/**", lambda route: route.abort())
    page = await open_page(
        context, page_origin, hub, None
    )  # the default order: ws, sse, lp, stream
    states = await page.evaluate("window.states")
    assert states[:6] == [
        ["connecting", "ws"],
        ["fallback", "sse"],
        ["connecting", "sse"],
        ["fallback", "lp"],
        ["connecting", "lp"],
        ["open", "lp"],
    ]
    await until_connected(hub, "lp")
    await publish(hub, range(1, 4))
    got = await received(page, 3)
    assert got == [[n, n, "lp"] for n in range(1, 4)]
    assert await page.evaluate("window.sub.send('hello')") is False  # no WebSocket


async def test_a_gap_is_reported_when_history_cannot_fill_it(
    context: BrowserContext, page_origin: str, hub: Server
) -> None:
    await publish(hub, range(1, 4))
    page = await context.new_page()
    await page.goto(page_origin + "/page")
    # A position of a history that no longer exists (another epoch): the server says so
    # first, then what its history holds follows.
    script = SUBSCRIBE.replace("withCredentials: true,", "since: 'news:1:oldepoch',")
    await page.evaluate(script, [hub.url, ["ws"]])
    got = await received(page, 3)
    assert got == [[n, n, "ws"] for n in range(1, 4)]
    gaps = await page.evaluate("window.gaps")
    assert [(g["channel"], g["reason"], g["resumed_from"]) for g in gaps] == [("news", "epoch", 1)]
