"""The demo page in a real browser: Debian's Chromium driven by Playwright.

Each test starts a real server with the demo page, opens it, and watches what the page
shows. Waits are Playwright's auto-retrying assertions with a generous timeout; nothing
sleeps. The page subscribes on open: the server subscribes a connection in the loop
iteration after its handshake, long before the browser can report "open" and the test
act on it, so a message published after "open" is always delivered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.browser

API_KEY = "test-key"
WAIT_MS = TIMEOUT * 1000


@pytest.fixture
async def demo() -> AsyncIterator[Server]:
    async with running_server(demo=True, api_key=API_KEY) as server:
        yield server


@pytest.fixture
async def page(browser: Browser, demo: Server) -> AsyncIterator[Page]:
    """The demo page, open and connected to `news` on both transports. Fails the test if
    the page logged an error or threw."""
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(demo.url + "/")
    await expect_open(page)
    try:
        yield page
    finally:
        await context.close()
    assert errors == []


async def expect_open(page: Page) -> None:
    for transport in ("sse", "ws"):
        await expect(page.get_by_test_id(f"{transport}-status")).to_have_attribute(
            "data-state", "open", timeout=WAIT_MS
        )


def api(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=TIMEOUT)


def item(page: Page, transport: str, channel: str, offset: int) -> Locator:
    return page.locator(
        f'#{transport}-messages li[data-channel="{channel}"][data-offset="{offset}"]'
    )


async def test_form_publish_arrives_on_both_transports(page: Page) -> None:
    await page.get_by_test_id("pub-data").fill('{"text": "hello from the form"}')
    await page.get_by_test_id("publish").click()
    await expect(page.get_by_test_id("pub-result")).to_have_text(
        "published news #1 to 2 subscriber(s)", timeout=WAIT_MS
    )
    for transport in ("sse", "ws"):
        shown = item(page, transport, "news", 1)
        await expect(shown.locator(".data")).to_have_text(
            '{"text":"hello from the form"}', timeout=WAIT_MS
        )
        await expect(shown.locator(".channel")).to_have_text("news")
        await expect(shown.locator(".offset")).to_have_text("#1")


async def test_python_publish_is_shown_escaped(page: Page, demo: Server) -> None:
    markup = '<img src=x onerror="document.title=1"><b>bold</b>'
    async with api(demo) as client:
        response = await client.post(
            "/pub/news", content=markup, headers={"Content-Type": "text/plain"}
        )
        assert response.status_code == 200
        assert response.json()["subscribers"] == 2
        response = await client.post("/pub/news", json={"n": 2})
        assert response.status_code == 200
    for transport in ("sse", "ws"):
        await expect(item(page, transport, "news", 1).locator(".data")).to_have_text(
            markup, timeout=WAIT_MS
        )
        await expect(item(page, transport, "news", 2).locator(".data")).to_have_text(
            '{"n":2}', timeout=WAIT_MS
        )
        # Shown as text, never parsed as markup.
        await expect(
            page.locator(f"#{transport}-messages img, #{transport}-messages b")
        ).to_have_count(0)
    assert await page.title() == "tidings demo"


async def test_event_names_reach_the_event_source(page: Page, demo: Server) -> None:
    # EventSource hands a named event only to listeners of that name. Close the WebSocket
    # (which would teach the page new names) and publish a name the page has never seen:
    # the EventSource misses it live, sees the skipped offset on the next message and
    # fetches it from history.
    await page.evaluate("ws.close(); ws = null")
    await expect(page.get_by_test_id("ws-status")).to_have_attribute("data-state", "closed")
    async with api(demo) as client:
        response = await client.post("/pub/news?event=unheard", json={"n": 1})
        assert response.status_code == 200
        response = await client.post("/pub/news", json={"n": 2})
        assert response.status_code == 200
    missed = item(page, "sse", "news", 1)
    await expect(missed).to_have_attribute("data-event", "unheard", timeout=WAIT_MS)
    await expect(missed.locator(".note")).to_have_text("from history")
    await expect(missed.locator(".data")).to_have_text('{"n":1}')
    await expect(item(page, "sse", "news", 2).locator(".data")).to_have_text('{"n":2}')
    # A name typed in the form: the page listens for it before publishing.
    await page.get_by_test_id("pub-event").fill("alert")
    await page.get_by_test_id("pub-data").fill("typed")
    await page.get_by_test_id("publish").click()
    typed = item(page, "sse", "news", 3)
    await expect(typed).to_have_attribute("data-event", "alert", timeout=WAIT_MS)
    await expect(typed.locator(".data")).to_have_text("typed")
    # The name learned from history now arrives live.
    async with api(demo) as client:
        response = await client.post("/pub/news?event=unheard", json={"n": 4})
        assert response.status_code == 200
    live = item(page, "sse", "news", 4)
    await expect(live).to_have_attribute("data-event", "unheard", timeout=WAIT_MS)
    await expect(page.locator("#sse-messages .note")).to_have_count(1)
    offsets = await page.locator("#sse-messages li").evaluate_all(
        "items => items.map(li => li.dataset.offset)"
    )
    assert offsets == ["1", "2", "3", "4"]


async def test_several_channels_and_deleted_notices(page: Page, demo: Server) -> None:
    await page.get_by_test_id("channels").fill("news,chat:1")
    await page.get_by_test_id("connect").click()
    await expect(page.locator("#sse-url")).to_have_text("/sse/news,chat%3A1")
    await expect_open(page)
    async with api(demo) as client:
        response = await client.post("/pub/chat:1", content="hi chat")
        assert response.json()["subscribers"] == 2
        # (not counting news's subscribers: the page's previous connections may not be
        # gone from the server yet)
        response = await client.post("/pub/news", content="hi news")
        assert response.status_code == 200
    for transport in ("sse", "ws"):
        await expect(item(page, transport, "chat:1", 1).locator(".data")).to_have_text(
            "hi chat", timeout=WAIT_MS
        )
        await expect(item(page, transport, "news", 1).locator(".data")).to_have_text(
            "hi news", timeout=WAIT_MS
        )
    async with api(demo) as client:
        response = await client.delete("/pub/chat:1")
        assert response.status_code == 200
    for transport in ("sse", "ws"):
        notice = page.locator(f'#{transport}-messages li[data-notice="deleted"]')
        await expect(notice).to_have_text("chat:1: channel deleted", timeout=WAIT_MS)
    # The other channel goes on.
    async with api(demo) as client:
        response = await client.post("/pub/news", content="still here")
        assert response.status_code == 200
    for transport in ("sse", "ws"):
        await expect(item(page, transport, "news", 2).locator(".data")).to_have_text(
            "still here", timeout=WAIT_MS
        )


async def test_deleting_the_only_channel_closes_the_websocket(page: Page, demo: Server) -> None:
    async with api(demo) as client:
        response = await client.delete("/pub/news")
        assert response.status_code == 200
    await expect(page.get_by_test_id("ws-status")).to_have_text(
        "closed (4404 channel deleted)", timeout=WAIT_MS
    )
    for transport in ("sse", "ws"):
        notice = page.locator(f'#{transport}-messages li[data-notice="deleted"]')
        await expect(notice).to_have_text("news: channel deleted", timeout=WAIT_MS)
