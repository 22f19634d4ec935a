"""The chat demo (/demo/chat) in Chromium: two people in one room, one on WebSocket and one
whose WebSocket and SSE are blocked by routes (tidings.js falls back to long-poll), typing
fast; both see the same messages in the same order; presence, typing, back-chat, escaping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, WebSocketRoute, expect

from tidings.config import Config
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.browser

WAIT_MS = TIMEOUT * 1000
EACH = 100  # messages each side sends: 200 in all
MARKUP = '<img src=x onerror="document.title=1"><b>bold</b>'


@pytest.fixture
async def demo() -> AsyncIterator[Server]:
    async with running_server(demo=True) as server:
        yield server


async def websocket_blocked(browser: Browser) -> BrowserContext:
    """A context behind a "proxy" that lets neither WebSocket nor SSE through."""
    context = await browser.new_context()

    async def refuse(ws: WebSocketRoute) -> None:
        await ws.close()

    await context.route_web_socket("**/ws/**", refuse)
    await context.route("**/sse/**", lambda route: route.abort())
    return context


async def join(context: BrowserContext, server: Server, nick: str, room: str = "t") -> Page:
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{server.url}/demo/chat?room={room}&nick={nick}")
    await expect(page.get_by_test_id("status")).to_have_attribute(
        "data-state", "open", timeout=WAIT_MS
    )
    assert errors == []
    return page


async def texts(page: Page) -> list[str]:
    shown: list[str] = await page.locator("#messages li.msg").evaluate_all(
        "items => items.map(li => li.dataset.nick + ': ' + li.querySelector('.text').textContent)"
    )
    return shown


async def test_websocket_and_long_poll_see_the_same_chat(browser: Browser, demo: Server) -> None:
    fast = await browser.new_context()
    slow = await websocket_blocked(browser)
    try:
        alice = await join(fast, demo, "alice")
        bob = await join(slow, demo, "bob")
        await expect(alice.get_by_test_id("status")).to_have_attribute("data-transport", "ws")
        await expect(bob.get_by_test_id("status")).to_have_attribute("data-transport", "lp")
        for page in (alice, bob):
            await expect(page.locator("#members li")).to_have_text(
                ["alice", "bob"], timeout=WAIT_MS
            )

        # Typing shows on the other side.
        await alice.get_by_test_id("text").press_sequentially("hel")
        await expect(bob.get_by_test_id("typing")).to_have_text("alice is typing…", timeout=WAIT_MS)

        # Both type fast at once.
        burst = "([who, n]) => { for (let i = 0; i < n; i++) window.chat.say(`${who} ${i}`); }"
        await alice.evaluate(burst, ["a", EACH])
        await bob.evaluate(burst, ["b", EACH])
        for page in (alice, bob):
            await expect(page.locator("#messages li.msg")).to_have_count(
                2 * EACH, timeout=WAIT_MS * 3
            )
        seen_by_alice = await texts(alice)
        assert seen_by_alice == await texts(bob)
        assert [t for t in seen_by_alice if t.startswith("alice")] == [
            f"alice: a {i}" for i in range(EACH)
        ]
        assert [t for t in seen_by_alice if t.startswith("bob")] == [
            f"bob: b {i}" for i in range(EACH)
        ]
        assert await bob.evaluate("window.chat.outbox.length") == 0

        # User text is shown as text.
        await bob.get_by_test_id("text").fill(MARKUP)
        await bob.get_by_test_id("send").click()
        for page in (alice, bob):
            await expect(page.locator("#messages li.msg .text").last).to_have_text(
                MARKUP, timeout=WAIT_MS
            )
            await expect(page.locator("#messages img, #messages b")).to_have_count(0)
        seen = [*seen_by_alice, f"bob: {MARKUP}"]

        # Back-chat on reload, from history.
        await bob.reload()
        await expect(bob.get_by_test_id("status")).to_have_attribute(
            "data-state", "open", timeout=WAIT_MS
        )
        await expect(bob.locator("#messages li.msg").last).to_have_text(
            f"bob{MARKUP}", timeout=WAIT_MS
        )
        again = await texts(bob)
        assert len(again) > 150  # the last 200 publications, presence changes among them
        assert again == seen[-len(again) :]

        # Leaving: alice's page goes, bob sees her leave.
        await alice.close()
        await expect(bob.locator("#members li")).to_have_text(["bob"], timeout=WAIT_MS)
        await expect(bob.locator("#messages li.presence").last).to_have_text("alice left")
    finally:
        await fast.close()
        await slow.close()


async def test_rooms_are_apart(browser: Browser, demo: Server) -> None:
    context = await browser.new_context()
    try:
        lobby = await join(context, demo, "carol", "lobby")
        dev = await join(context, demo, "dave", "dev")
        await lobby.evaluate("window.chat.say('only in the lobby')")
        await expect(lobby.locator("#messages li.msg")).to_have_count(1, timeout=WAIT_MS)
        await dev.evaluate("window.chat.say('only in dev')")
        await expect(dev.locator("#messages li.msg .text")).to_have_text(
            ["only in dev"], timeout=WAIT_MS
        )
        await expect(lobby.locator("#messages li.msg .text")).to_have_text(["only in the lobby"])
        await expect(dev.locator("#members li")).to_have_text(["dave"])
    finally:
        await context.close()


def has_durable_history() -> bool:
    """Whether this build has the durable history store's ``history_path`` setting."""
    return hasattr(Config(), "history_path")


async def test_messages_survive_a_restart(browser: Browser, tmp_path: Path) -> None:
    if not has_durable_history():
        pytest.skip(
            "needs the durable SQLite history store (Config.history_path, issue 11 item 1),"
            " which another branch adds"
        )
    settings = {"demo": True, "history_path": str(tmp_path / "history.db")}
    context = await browser.new_context()
    try:
        async with running_server(**settings) as server:
            page = await join(context, server, "erin")
            for text in ("before", "the", "restart"):
                await page.evaluate("(text) => window.chat.say(text)", text)
            await expect(page.locator("#messages li.msg")).to_have_count(3, timeout=WAIT_MS)
            await page.close()
        async with running_server(**settings) as server:
            page = await join(context, server, "erin")
            await expect(page.locator("#messages li.msg .text")).to_have_text(
                ["before", "the", "restart"], timeout=WAIT_MS
            )
    finally:
        await context.close()
