"""Several ``tidings serve`` processes on one Redis are one hub, as users run them.

Real processes, real clients (httpx, websockets, the official Python SDK), a real
redis-server of the test's own. Faults are real too: a node killed with SIGKILL, Redis
restarted mid-stream; the count-based checks compare what every client received with what
the publisher was told was published.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from centrifuge import (
    Client,
    ClientEventHandler,
    DisconnectedContext,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
)

from tidings.core.tokens import mint_token
from tidings.testing import TIMEOUT
from tidings.testing.redis import RedisServer, redis_server

SECRET = "tidings-multinode-tests-secret-0123456789"
KEY = "multinode-key"
OPEN = {
    "allow_subscribe_for_client": True,
    "allow_presence_for_subscriber": True,
    "presence": True,
    "join_leave": True,
    "force_recovery": True,
}


class Node:
    """One ``tidings serve`` process."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url
        self.http = httpx.AsyncClient(base_url=url, timeout=TIMEOUT)

    async def publish(self, channel: str, data: Any, **extra: Any) -> dict[str, Any]:
        body = {"channel": channel, "data": data, **extra}
        reply = await self.http.post("/api/publish", json=body, headers={"X-API-Key": KEY})
        reply.raise_for_status()
        answer: dict[str, Any] = reply.json()
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["result"]

    async def api(self, method: str, **params: Any) -> Any:
        reply = await self.http.post(f"/api/{method}", json=params, headers={"X-API-Key": KEY})
        return reply.json()["result"]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)


def write_config(path: Path, broker: str) -> Path:
    lines = [
        f'broker = "{broker}"',
        f'api_key = "{KEY}"',
        f'token_hmac_secret_key = "{SECRET}"',
        "redis_health_interval = 0.2",
        "presence_ttl = 3",
        "[default_namespace]",
        *(f"{k} = {json.dumps(v)}" for k, v in OPEN.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@asynccontextmanager
async def hub(tmp_path: Path, server: RedisServer, count: int) -> AsyncIterator[list[Node]]:
    config = write_config(tmp_path / "tidings.toml", server.url)
    nodes: list[Node] = []
    try:
        for _ in range(count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tidings.cli", "serve", "--config", str(config),
                "--port", "0",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            assert proc.stdout is not None
            async with asyncio.timeout(TIMEOUT):
                while not (
                    m := re.search(rb"serving on (http://\S+)", await proc.stdout.readline())
                ):
                    pass
            nodes.append(Node(proc, m.group(1).decode()))
        yield nodes
    finally:
        for node in nodes:
            await node.http.aclose()
            if node.proc.returncode is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in nodes:
            with suppress(TimeoutError):
                await asyncio.wait_for(node.proc.wait(), TIMEOUT)
            if node.proc.returncode is None:
                node.proc.kill()
                await node.proc.wait()


@pytest.fixture
async def redis() -> AsyncIterator[RedisServer]:
    async with redis_server(persistence=True) as srv:
        yield srv


class Sse:
    """An EventSource-like reader of ``/sse/<channel>`` on one node."""

    def __init__(self, node: Node, channel: str) -> None:
        self.node, self.channel = node, channel
        self.messages: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.open = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async with (
            httpx.AsyncClient(base_url=self.node.url, timeout=None) as client,
            client.stream("GET", f"/sse/{self.channel}") as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    self.open.set()
                if line.startswith("data: "):
                    self.messages.append(json.loads(line[6:]))
                    self.changed.set()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def aclose(self) -> None:
        self.task.cancel()
        with suppress(asyncio.CancelledError, httpx.HTTPError):
            await self.task


async def sse(node: Node, channel: str) -> Sse:
    reader = Sse(node, channel)
    await asyncio.wait_for(reader.open.wait(), TIMEOUT)  # ":ok" once subscribed
    return reader


async def test_three_nodes_are_one_hub(tmp_path: Path, redis: RedisServer) -> None:
    async with hub(tmp_path, redis, 3) as (one, two, three):
        readers = [await sse(one, "news"), await sse(two, "news")]
        first = await three.publish("news", {"n": 1})
        second = await one.publish("news", {"n": 2})
        assert (first["offset"], second["offset"]) == (1, 2)
        for reader in readers:
            await reader.wait_for(lambda r=reader: len(r.messages) == 2)
            assert [m["data"]["n"] for m in r_messages(reader)] == [1, 2]
            assert {m["epoch"] for m in reader.messages} == {first["epoch"]}
        info = await two.api("info")
        assert len(info["nodes"]) == 3
        history = await two.api("history", channel="news", limit=10)
        assert [p["offset"] for p in history["publications"]] == [1, 2]
        for reader in readers:
            await reader.aclose()


def r_messages(reader: Sse) -> list[dict[str, Any]]:
    return reader.messages


async def test_presence_is_the_whole_hubs(tmp_path: Path, redis: RedisServer) -> None:
    async with hub(tmp_path, redis, 2) as (one, two):
        clients = []
        for node, user in ((one, "ann"), (two, "bob")):
            client = Client(
                node.url.replace("http", "ws") + "/connection/websocket",
                token=mint_token(SECRET, user),
                timeout=TIMEOUT,
                proxy=None,
            )
            subscribed = asyncio.Event()

            class Events(SubscriptionEventHandler):
                async def on_subscribed(self, ctx: SubscribedContext, e=subscribed) -> None:
                    e.set()

            sub = client.new_subscription("room", events=Events())
            await client.connect()
            await sub.subscribe()
            await asyncio.wait_for(subscribed.wait(), TIMEOUT)
            clients.append(client)
        try:
            presence = await one.api("presence", channel="room")
            assert sorted(c["user"] for c in presence["presence"].values()) == ["ann", "bob"]
            stats = await two.api("presence_stats", channel="room")
            assert (stats["num_clients"], stats["num_users"]) == (2, 2)
        finally:
            for client in clients:
                await client.disconnect()


async def test_redis_publish_reaches_every_node_exactly_once(
    tmp_path: Path, redis: RedisServer
) -> None:
    async with hub(tmp_path, redis, 3) as nodes:
        readers = [await sse(node, "news") for node in nodes]
        r = aioredis.Redis.from_url(redis.url)
        try:
            # One node takes inbound messages; it may take a moment to be elected.
            async with asyncio.timeout(TIMEOUT):
                while await r.publish("tidings:publish:news", json.dumps({"t": "hi"})) == 0:
                    await asyncio.sleep(0.05)  # nobody subscribed yet: the sender retries
            envelope = {"channel": "news", "data": {"t": 2}, "event": "note"}
            assert await r.publish("tidings:publish", json.dumps(envelope)) == 1
        finally:
            await r.aclose()
        marker = await nodes[0].publish("news", "marker")
        for reader in readers:
            await reader.wait_for(
                lambda r=reader: any(m["offset"] == marker["offset"] for m in r.messages)
            )
            assert [m["data"] for m in reader.messages] == [{"t": "hi"}, {"t": 2}, "marker"]
            assert [m["offset"] for m in reader.messages] == [1, 2, 3]
            assert reader.messages[1]["event"] == "note"
            await reader.aclose()


class Proxy:
    """A TCP proxy in front of one node at a time: a load balancer that moves clients."""

    def __init__(self) -> None:
        self.target: tuple[str, int] = ("127.0.0.1", 0)
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/connection/websocket"

    def point_at(self, node: Node) -> None:
        host, port = node.url.removeprefix("http://").rsplit(":", 1)
        self.target = (host, int(port))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_sdk_client_of_a_killed_node_recovers_on_another(
    tmp_path: Path, redis: RedisServer
) -> None:
    async with hub(tmp_path, redis, 2) as (doomed, survivor):
        proxy = Proxy()
        proxy.point_at(doomed)
        url = await proxy.start()
        got: list[tuple[int, Any]] = []
        changed = asyncio.Event()
        subscribed: list[SubscribedContext] = []

        class Events(SubscriptionEventHandler):
            async def on_subscribed(self, ctx: SubscribedContext) -> None:
                subscribed.append(ctx)
                changed.set()

            async def on_publication(self, ctx: PublicationContext) -> None:
                got.append((ctx.pub.offset, ctx.pub.data))
                changed.set()

        async def until(condition: Callable[[], bool]) -> None:
            async with asyncio.timeout(TIMEOUT):
                while not condition():
                    changed.clear()
                    await changed.wait()

        client = Client(
            url, token=mint_token(SECRET, "42"), timeout=TIMEOUT, proxy=None,
            min_reconnect_delay=0.05, max_reconnect_delay=0.5,
        )  # fmt: skip
        sub = client.new_subscription("feed", events=Events())
        await client.connect()
        await sub.subscribe()
        try:
            await until(lambda: len(subscribed) == 1)
            for n in range(1, 4):
                await survivor.publish("feed", {"n": n})
            await until(lambda: len(got) == 3)
            proxy.point_at(survivor)
            doomed.kill()
            for n in range(4, 8):  # published while the client is away
                await survivor.publish("feed", {"n": n})
            await until(lambda: len(subscribed) == 2)
            assert subscribed[1].was_recovering and subscribed[1].recovered
            await survivor.publish("feed", {"n": 8})
            await until(lambda: len(got) == 8)
            assert got == [(n, {"n": n}) for n in range(1, 9)]  # nothing missed, nothing twice
        finally:
            await client.disconnect()
            await proxy.aclose()


async def test_nothing_acknowledged_is_lost_while_redis_restarts(
    tmp_path: Path, redis: RedisServer
) -> None:
    async with hub(tmp_path, redis, 2) as (one, two):
        readers = [await sse(one, "count"), await sse(two, "count")]
        acknowledged: list[int] = []

        async def publisher() -> None:
            for n in range(1, 201):
                while True:  # retried under one idempotency key: published once
                    try:
                        result = await two.publish("count", {"n": n}, idempotency_key=f"n-{n}")
                        break
                    except (RuntimeError, httpx.HTTPError):
                        await asyncio.sleep(0.05)  # Redis is restarting: retry
                acknowledged.append(n)
                assert result["offset"] == n
                if n == 80:
                    restart.set()
                await asyncio.sleep(0.002)  # a steady rate of publishing, not a sync

        restart = asyncio.Event()
        task = asyncio.create_task(publisher())
        await asyncio.wait_for(restart.wait(), TIMEOUT)
        await redis.arestart()  # with its append-only file: the streams survive
        await asyncio.wait_for(task, 3 * TIMEOUT)
        for reader in readers:
            await reader.wait_for(lambda r=reader: len(r.messages) >= 200)
            numbers = [m["data"]["n"] for m in reader.messages if "data" in m]
            assert numbers == acknowledged == list(range(1, 201))  # 0 lost, 0 twice, in order
            await reader.aclose()


async def test_server_api_disconnect_reaches_the_node_holding_the_user(
    tmp_path: Path, redis: RedisServer
) -> None:
    async with hub(tmp_path, redis, 2) as (one, two):
        disconnected = asyncio.Event()
        codes: list[int] = []

        class Events(ClientEventHandler):
            async def on_disconnected(self, ctx: DisconnectedContext) -> None:
                codes.append(ctx.code)
                disconnected.set()

        client = Client(
            one.url.replace("http", "ws") + "/connection/websocket",
            token=mint_token(SECRET, "carol"), events=Events(), timeout=TIMEOUT, proxy=None,
        )  # fmt: skip
        await client.connect()
        await client.ready(TIMEOUT)
        try:
            # Asked of the other node: the controller carries it to the one holding carol.
            await two.api("disconnect", user="carol", disconnect={"code": 4501, "reason": "bye"})
            await asyncio.wait_for(disconnected.wait(), TIMEOUT)
            assert codes == [4501]
        finally:
            await client.disconnect()
