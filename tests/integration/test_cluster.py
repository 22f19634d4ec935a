"""Two servers in one process sharing a memory backend: one hub. Publications, the server
API's connection commands and ``/emulation`` reach the node that holds the connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from integration_helpers import publish, subscribed, ws_close_code, ws_connect, ws_json

from tidings.app import App, Backend
from tidings.brokers import MemoryBackend, MemoryBroker, MemoryController, MemoryPresenceManager
from tidings.config import Config
from tidings.core.tokens import mint_token
from tidings.server import Server
from tidings.testing import TIMEOUT

SECRET = "tidings-cluster-tests-hmac-secret-0123456789"
API = {"X-API-Key": "test-key"}
SETTINGS = {
    "host": "127.0.0.1",
    "port": 0,
    "api_key": "test-key",
    "token_hmac_secret_key": SECRET,
    "allow_anonymous_connect_without_token": True,
    "default_namespace": {
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
        "presence": True,
    },
}

pytestmark = pytest.mark.usefixtures("no_server_errors")


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Server, Server]]:
    backend = MemoryBackend()
    async with AsyncExitStack() as stack:
        servers = []
        for _ in range(2):
            parts = Backend(
                MemoryBroker(backend), MemoryPresenceManager(backend), MemoryController(backend)
            )
            server = Server(App(Config(**SETTINGS), backend=parts))
            await server.start()
            stack.push_async_callback(server.aclose)
            servers.append(server)
        yield servers[0], servers[1]


async def api(server: Server, method: str, params: dict) -> dict:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        resp = await http.post(f"{server.url}/api/{method}", json=params, headers=API)
        assert resp.status_code == 200
        return resp.json()


@asynccontextmanager
async def client_ws(server: Server, user: str, *channels: str) -> AsyncIterator[Any]:
    """A client-protocol WebSocket connected as ``user`` and subscribed to ``channels``."""
    async with ws_connect(server, "/connection/websocket") as ws:
        await _connect(ws, user, channels)
        yield ws


async def _connect(ws: Any, user: str, channels: tuple[str, ...]) -> None:
    commands = [{"id": 1, "connect": {"token": mint_token(SECRET, user)}}]
    commands += [{"id": i + 2, "subscribe": {"channel": ch}} for i, ch in enumerate(channels)]
    await ws.send("\n".join(json.dumps(c) for c in commands))
    answered = 0
    while answered < len(commands):
        data = await ws.recv()
        answered += sum(1 for line in str(data).split("\n") if '"id"' in line)


async def test_a_publication_on_one_node_reaches_subscribers_on_the_other(cluster):
    a, b = cluster
    async with ws_connect(b, "/ws/news?format=raw") as ws:
        await subscribed(b, "news")
        sent = await publish(a, "news", {"n": 1})
        assert await ws_json(ws) == {"n": 1}
        second = await publish(b, "news", {"n": 2})
        assert await ws_json(ws) == {"n": 2}
    assert (sent["offset"], second["offset"]) == (1, 2) and sent["epoch"] == second["epoch"]


async def test_info_lists_every_node_and_channels_are_cluster_wide(cluster):
    a, b = cluster
    async with client_ws(b, "42", "room"):
        info = (await api(a, "info", {}))["result"]["nodes"]
        assert sorted(n["uid"] for n in info) == sorted([a.app.node.id, b.app.node.id])
        on_b = next(n for n in info if n["uid"] == b.app.node.id)
        assert (on_b["num_clients"], on_b["num_subs"]) == (1, 1)
        channels = (await api(a, "channels", {}))["result"]["channels"]
        assert channels == {"room": {"num_clients": 1}}
        presence = (await api(a, "presence", {"channel": "room"}))["result"]["presence"]
        assert [p["user"] for p in presence.values()] == ["42"]


async def test_disconnect_through_one_node_closes_a_connection_on_the_other(cluster):
    a, b = cluster
    async with client_ws(b, "42") as ws:
        assert (await api(a, "disconnect", {"user": "42"}))["result"] == {}
        assert await ws_close_code(ws) == 3503


async def test_server_side_subscribe_reaches_the_user_on_the_other_node(cluster):
    a, b = cluster
    async with client_ws(b, "42") as ws:
        assert (await api(a, "subscribe", {"user": "42", "channel": "pushed"}))["result"] == {}
        push = json.loads(await ws.recv())
        assert push["push"]["channel"] == "pushed" and "subscribe" in push["push"]
        await publish(a, "pushed", {"n": 1})
        got = json.loads(await ws.recv())
        assert got["push"]["pub"]["data"] == {"n": 1}


async def test_emulation_reaches_the_node_holding_the_session(cluster):
    a, b = cluster
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        http.stream(
            "POST", f"{b.url}/connection/http_stream", content=b'{"id":1,"connect":{}}'
        ) as stream,
    ):
        lines = stream.aiter_lines()
        connect = json.loads(await anext(lines))["connect"]
        assert connect["node"] == b.app.node.id
        command = json.dumps({"id": 2, "subscribe": {"channel": "news"}})
        body = {"node": connect["node"], "session": connect["session"], "data": command}
        assert (await http.post(f"{a.url}/emulation", json=body)).status_code == 204
        assert json.loads(await anext(lines)) == {"id": 2, "subscribe": {}}
        wrong = {**body, "session": connect["client"]}
        assert (await http.post(f"{a.url}/emulation", json=wrong)).status_code == 404
        unknown = {**body, "node": "no-such-node"}
        assert (await http.post(f"{a.url}/emulation", json=unknown)).status_code == 404


async def test_send_through_one_node_reaches_a_long_poll_session_on_the_other(cluster):
    a, b = cluster
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        await publish(a, "news", {"n": 1})
        poll = await http.get(f"{b.url}/lp/news", params={"since": "0"})  # answered at once
        secret = poll.json()["session"]
        [session] = b.app.longpoll_sessions.by_secret.values()
        # Between two polls: node a's server API finds it on b, which keeps the message.
        sent = await api(a, "send", {"client": session.id, "data": {"to": "lp"}})
        assert sent == {"result": {}}
        again = await http.get(f"{b.url}/lp/news", params={"session": secret})
        assert again.json()["notices"] == [
            {"notice": "message", "channel": "", "data": {"to": "lp"}}
        ]
        missing = await http.post(
            f"{a.url}/api/send", json={"client": "no-such", "data": {}}, headers=API
        )
        assert missing.json()["error"]["code"] == 108
