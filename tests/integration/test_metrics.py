"""``GET /metrics`` scraped over HTTP and parsed as Prometheus reads it, after real traffic:
simple and client-protocol WebSocket connections, publishes, a slow consumer cut off."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any

import httpx
import pytest
from integration_helpers import AUTH, http_client, subscribed, until, ws_connect, ws_handshake
from prometheus_client.parser import text_string_to_metric_families

from tidings.server import Server
from tidings.testing import running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")

LIMIT = 64 * 1024
MESSAGE = 16 * 1024
CHANNELS = {
    "allow_subscribe_for_client": True,
    "allow_subscribe_for_anonymous": True,
    "allow_history_for_anonymous": True,
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) → value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics", headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=")
    return samples(resp.text)


async def cut_off_slow_consumer(server: Server, client: httpx.AsyncClient) -> None:
    """A WebSocket subscriber that never reads, flooded until the server cuts it off."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        await loop.sock_sendall(sock, ws_handshake("/ws/flood"))
        await subscribed(server, "flood")
        body = json.dumps({"pad": "x" * MESSAGE})
        for _ in range(2000):
            if server.app.slow_disconnects:
                break
            resp = await client.post("/pub/flood", content=body, headers=AUTH)
            assert resp.status_code == 200
        await until(lambda: server.app.node.hub.count("flood") == 0, "slow consumer gone")
        await until(lambda: ("slow", 0) in server.app.disconnects, "its close counted")
    finally:
        sock.close()


async def test_metrics_after_real_traffic() -> None:
    async with (
        running_server(
            max_outgoing_bytes=LIMIT,
            allow_anonymous_connect_without_token=True,
            default_namespace=CHANNELS,
        ) as srv,
        http_client(srv) as client,
        ws_connect(srv, "/ws/news") as ws,
        ws_connect(srv, "/connection/websocket") as proto,
    ):
        await proto.send(
            '{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"news"}}\n'
            '{"id":3,"history":{"channel":"news","limit":1}}'
        )
        got: dict[int, Any] = {}
        while len(got) < 3:
            for line in str(await asyncio.wait_for(proto.recv(), 10)).split("\n"):
                reply = json.loads(line)
                if reply.get("id"):
                    got[reply["id"]] = reply
        assert "subscribe" in got[2] and "history" in got[3], got
        await subscribed(srv, "news", 2)
        for n in range(3):
            resp = await client.post("/pub/news", json={"n": n}, headers=AUTH)
            assert resp.status_code == 200
        for n in range(3):
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["data"] == {"n": n}
        # A simple subscriber that goes away on its own: a "client" end with code 1000.
        async with ws_connect(srv, "/ws/news") as gone:
            await subscribed(srv, "news", 3)
            await gone.close()
        await until(lambda: ("client", 1000) in srv.app.disconnects, "the normal close")
        await cut_off_slow_consumer(srv, client)

        m = await scrape(client)
        assert m["tidings_connections", (("transport", "ws"),)] == 1
        assert m["tidings_connections", (("transport", "client"),)] == 1
        # The scrape's own request is the one plain HTTP connection.
        assert m["tidings_connections", (("transport", "http"),)] == 1
        assert m["tidings_subscriptions", ()] == 2
        assert m["tidings_channels", ()] == 1
        flooded = srv.app.node.published - 3
        assert flooded >= 1
        assert m["tidings_publications_total", ()] == 3 + flooded
        # news: 3 publications to 2 subscribers; flood: each reached the slow one.
        assert m["tidings_deliveries_total", ()] == 6 + flooded
        assert m["tidings_bytes_out_total", ()] >= 3 * len('{"n":0}')
        assert m["tidings_slow_disconnects_total", ()] == 1
        ends = "tidings_disconnects_total"
        assert m[ends, (("code", "0"), ("reason", "slow"))] == 1
        assert m[ends, (("code", "1000"), ("reason", "client"))] == 1
        for method in ("connect", "subscribe", "history"):
            labels = (("method", method),)
            assert m["tidings_command_duration_seconds_count", labels] == 1
            inf = (("le", "+Inf"), ("method", method))
            assert m["tidings_command_duration_seconds_bucket", inf] == 1
            assert m["tidings_command_duration_seconds_sum", labels] > 0
        assert m["tidings_history_channels", ()] == 2
        stored = sum(
            info.stored for info in (await srv.app.node.stream_info(["news", "flood"])).values()
        )
        # Each channel's history keeps its last history_size (100) publications.
        assert m["tidings_history_publications", ()] == stored == 3 + min(flooded, 100)
        # The scrape itself read the broker: its latency is there by the next scrape.
        again = await scrape(client)
        assert again["tidings_broker_duration_seconds_count", (("operation", "stream_info"),)] >= 1


async def test_metrics_need_the_api_key_unless_open() -> None:
    async with running_server() as srv, http_client(srv) as client:
        assert (await client.get("/metrics")).status_code == 401
        resp = await client.get("/metrics", headers={"X-API-Key": "wrong"})
        assert resp.status_code == 401
        assert resp.json() == {"error": "missing or wrong API key"}
        assert (await client.post("/metrics", headers=AUTH)).status_code == 405
    async with running_server(metrics_open=True) as srv, http_client(srv) as client:
        resp = await client.get("/metrics")
        assert resp.status_code == 200
        assert ("tidings_publications_total", ()) in samples(resp.text)


async def test_metrics_without_the_extra_say_which_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if prometheus_client were not installed: importing it fails.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    async with running_server() as srv, http_client(srv) as client:
        resp = await client.get("/metrics", headers=AUTH)
        assert resp.status_code == 501
        assert "tidings[metrics]" in resp.json()["error"]
