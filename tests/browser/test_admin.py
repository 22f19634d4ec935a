"""The admin dashboard in a real browser (Debian's Chromium via Playwright): login required,
the live overview shows a connection and a publication the test makes, the channel
inspector's history and live tail, the publish form reaching a subscriber, and
disconnecting a user. Waits are Playwright's auto-retrying assertions; nothing sleeps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from test_demo import API_KEY, WAIT_MS
from websockets.asyncio.client import connect

from tidings.core.tokens import mint_token
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.browser

PASSWORD = "dashboard-password-for-tests"
SECRET = "tidings-admin-browser-tests-hmac-secret-0123"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(
        api_key=API_KEY,
        admin_password=PASSWORD,
        token_hmac_secret_key=SECRET,
        default_namespace={"presence": True},
    ) as srv:
        yield srv


@pytest.fixture
async def page(browser: Browser, server: Server) -> AsyncIterator[Page]:
    """A fresh browser context; fails the test on a page error."""
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    try:
        yield page
    finally:
        await context.close()
    assert errors == []


async def log_in(page: Page, server: Server, password: str = PASSWORD) -> None:
    await page.goto(server.url + "/admin")
    await page.locator("#password").fill(password)
    await page.locator("#login").click()


def ws_url(server: Server, path: str) -> str:
    return server.url.replace("http", "ws", 1) + path


async def test_login_is_required(page: Page, server: Server) -> None:
    await page.goto(server.url + "/admin")
    await expect(page.locator("#password")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#overview")).to_have_count(0)
    await log_in(page, server, "wrong")
    await expect(page.locator("#message")).to_have_text("Wrong password.", timeout=WAIT_MS)
    await expect(page.locator("#overview")).to_have_count(0)
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#login").click()
    await expect(page.locator("#overview")).to_be_visible(timeout=WAIT_MS)
    await page.locator("#logout").click()
    await expect(page.locator("#password")).to_be_visible(timeout=WAIT_MS)


async def test_overview_inspector_and_publish_form(page: Page, server: Server) -> None:
    async with connect(ws_url(server, "/ws/room"), proxy=None) as ws:
        await log_in(page, server)
        ws_row = page.locator("#connections tbody tr", has_text="ws")
        await expect(ws_row.locator("td").nth(1)).to_have_text("1", timeout=WAIT_MS)
        await expect(page.locator("#subscriptions")).to_have_text("1", timeout=WAIT_MS)
        markup = "<b>bold</b>"
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            resp = await client.post(
                "/pub/room", json={"text": markup}, headers={"X-API-Key": API_KEY}
            )
            assert resp.status_code == 200
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["offset"] == 1
        await expect(page.locator("#published")).to_have_text("1", timeout=WAIT_MS)
        await expect(page.locator("#delivered")).to_have_text("1", timeout=WAIT_MS)
        # The channel list (searched), then the inspector's history: shown as text.
        await page.locator("#channel-search").fill("roo")
        await page.locator('#channel-list tr[data-channel="room"]').click()
        await expect(page.locator("#inspected")).to_have_text("room", timeout=WAIT_MS)
        await expect(page.locator("#history li")).to_have_text(
            '1: {"text":"<b>bold</b>"}', timeout=WAIT_MS
        )
        await expect(page.locator("#history b")).to_have_count(0)
        # The test's WebSocket and the live tail, which the inspector opens at once (so the
        # count may never show 1 alone); then the publish form publishes to both.
        await expect(page.locator("#subscribers")).to_have_text("2", timeout=WAIT_MS)
        await page.locator("#publish-data").fill('{"from": "the form"}')
        await page.locator("#publish-button").click()
        await expect(page.locator("#publish-result")).to_have_text(
            "published at offset 2", timeout=WAIT_MS
        )
        got = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert (got["offset"], got["data"]) == (2, {"from": "the form"})
        await expect(page.locator("#tail li").last).to_contain_text('"the form"', timeout=WAIT_MS)
        await expect(page.locator("#published")).to_have_text("2", timeout=WAIT_MS)


async def test_disconnect_a_user(page: Page, server: Server) -> None:
    async with connect(ws_url(server, "/connection/websocket"), proxy=None) as alice:
        await alice.send(json.dumps({"id": 1, "connect": {"token": mint_token(SECRET, "alice")}}))
        reply = json.loads(await asyncio.wait_for(alice.recv(), TIMEOUT))
        assert "connect" in reply, reply
        await log_in(page, server)
        client_row = page.locator("#connections tbody tr", has_text="client")
        await expect(client_row.locator("td").nth(1)).to_have_text("1", timeout=WAIT_MS)
        await page.locator("#disconnect-user").fill("alice")
        await page.locator("#disconnect-button").click()
        await expect(page.locator("#disconnect-result")).to_have_text(
            "disconnected", timeout=WAIT_MS
        )
        await asyncio.wait_for(alice.wait_closed(), TIMEOUT)
        assert alice.close_code is not None and 3000 <= alice.close_code <= 4999
        await expect(client_row.locator("td").nth(1)).to_have_text("0", timeout=WAIT_MS)
