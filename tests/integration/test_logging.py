"""What the server logs: at debug, requests, upgrades, subscribe/unsubscribe and broker
calls; refused requests at info with method, path and remote address."""

from __future__ import annotations

import logging
import re

import pytest
from integration_helpers import AUTH, http_client, publish, subscribed, until, ws_connect, ws_json

from tidings.server import Server

pytestmark = pytest.mark.usefixtures("no_server_errors")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("tidings")]


def has(caplog: pytest.LogCaptureFixture, pattern: str) -> bool:
    return any(re.search(pattern, m) for m in messages(caplog))


async def test_debug_logs_requests_upgrades_subscriptions_and_broker_calls(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tidings")
    addr = r"127\.0\.0\.1:\d+"
    async with http_client(server) as c:
        assert (await c.get("/health?secret=hidden")).status_code == 200
    async with ws_connect(server, "/ws/news?format=raw") as ws:
        await subscribed(server, "news")
        await publish(server, "news", {"n": 1})
        assert await ws_json(ws) == {"n": 1}
    await until(lambda: server.app.node.hub.count("news") == 0, "unsubscribed")
    await until(lambda: has(caplog, r"^broker unsubscribe news$"), "the broker unsubscribe")
    assert has(caplog, rf"^GET /health from {addr}$")
    assert not has(caplog, "hidden")  # queries are not logged: they may carry tokens
    assert has(caplog, rf"^GET /ws/news from {addr}: ws stream$")
    assert has(caplog, rf"^subscribe ws connection from {addr} to news \(since None, limit None\)")
    assert has(caplog, r"^broker subscribe news$")
    assert has(caplog, r"^broker publish_nowait news -> ")
    assert has(caplog, rf"^unsubscribe ws connection from {addr} from news$")


@pytest.mark.parametrize(
    ("method", "path", "headers", "line"),
    [
        ("POST", "/pub/news", {}, "-> 401 missing or wrong API key"),
        ("GET", "/sse/news", {"Origin": "http://evil.example"}, "-> 403 origin not allowed"),
        ("GET", "/nowhere", {}, "-> 404 not found"),
        ("GET", "/stats", {**AUTH, "X-API-Key": "wrong"}, "-> 401 missing or wrong API key"),
    ],
)
async def test_refusals_are_logged_with_method_path_and_address(
    server: Server,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    headers: dict[str, str],
    line: str,
) -> None:
    caplog.set_level(logging.INFO, logger="tidings")
    async with http_client(server) as c:
        resp = await c.request(method, path, headers=headers)
    assert resp.status_code == int(line.split()[1])
    assert has(caplog, rf"^{method} {re.escape(path)} from 127\.0\.0\.1:\d+ {re.escape(line)}$")
