"""The official npm SDK (``centrifuge`` for browsers and Node) against a real server.

Each scenario is a small Node script in tests/js/scenarios (installed by ``make test`` with
``npm ci --prefix tests/js``). It prints a JSON line per SDK event and exits by itself,
0 when done; the test reads those lines as they come, acts on the server in between
(publishes, drops the connection) and may answer on the script's stdin. Every scenario
runs over WebSocket and HTTP-streaming in JSON and Protobuf, and over SSE (JSON only).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from integration_helpers import OPEN_NAMESPACE
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tidings.core.conn import Conn
from tidings.core.tokens import mint_token
from tidings.exceptions import Reject
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCENARIOS = JS_DIR / "scenarios"
SECRET = "tidings-js-sdk-tests-hmac-secret-0123456789"

OPEN = OPEN_NAMESPACE
SETTINGS: dict[str, Any] = {
    "token_hmac_secret_key": SECRET,
    "default_namespace": OPEN,
    "namespaces": {"small": {**OPEN, "history_size": 2}},
}

pytestmark = pytest.mark.parametrize(
    ("transport", "protocol"),
    [
        ("websocket", "json"),
        ("websocket", "protobuf"),
        ("http_stream", "json"),
        ("http_stream", "protobuf"),
        ("sse", "json"),  # SSE carries JSON only
    ],
    ids=["ws-json", "ws-protobuf", "http_stream-json", "http_stream-protobuf", "sse-json"],
)


@functools.cache
def node_version(node: str) -> str:
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()


def node_executable() -> str:
    """Node.js and the SDK from tests/js: a missing one fails the test, with the fix."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (`node`, version 20 or later) is not installed; it runs the npm SDK")
    version = node_version(node)
    if int(version.lstrip("v").split(".")[0] or 0) < 20:
        pytest.fail(f"Node.js {version} is too old: the npm SDK tests need version 20 or later")
    if not (JS_DIR / "node_modules" / "centrifuge" / "package.json").is_file():
        pytest.fail(f"the npm packages are not installed: run `npm ci --prefix {JS_DIR}`")
    return node


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(**SETTINGS) as srv:
        yield srv


class Script:
    """A running scenario: its output lines by event, its stdin for answers."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.queues: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.lines: list[str] = []

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            await self._failed("ended before the expected event")
        self.lines.append(line.decode().rstrip("\n"))
        try:
            event = json.loads(line)
        except ValueError:
            return  # not a scenario's line (kept above for the failure report)
        if event["event"] == "fail":
            await self._failed("failed")
        self.queues[event["event"]].append(event)

    async def _failed(self, what: str) -> None:
        assert self.proc.stderr is not None
        if self.proc.returncode is None:
            self.proc.kill()  # its stderr ends with it
        async with asyncio.timeout(TIMEOUT):
            stderr = (await self.proc.stderr.read()).decode()
        pytest.fail(f"{self.name} {what}:\n" + "\n".join(self.lines) + "\n" + stderr)

    async def next(
        self, event: str, where: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any]:
        """The next ``event`` line satisfying ``where`` (others stay for later calls)."""
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    queue = self.queues[event]
                    for i, item in enumerate(queue):
                        if where(item):
                            return queue.pop(i)
                    await self._read()
        except TimeoutError:
            await self._failed(f"gave no {event!r} event in time")
            raise

    def all(self, event: str, who: str | None = None) -> list[dict[str, Any]]:
        """The ``event`` lines read so far (and not taken), optionally only ``who``'s."""
        return [e for e in self.queues[event] if who is None or e.get("who") == who]

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    async def finish(self) -> dict[str, Any]:
        """The final ``done`` line, once the script exited with 0."""
        done = await self.next("done")
        async with asyncio.timeout(TIMEOUT):
            code = await self.proc.wait()
        if code != 0:
            await self._failed(f"exited with {code}")
        return done


@asynccontextmanager
async def scenario(
    server: Server, name: str, transport: str, protocol: str, **params: Any
) -> AsyncIterator[Script]:
    """Run tests/js/scenarios/``name``.mjs with ``params`` against ``server``."""
    node = node_executable()
    params = {
        "url": f"http://127.0.0.1:{server.port}",
        "transport": transport,
        "protocol": protocol,
        "timeout_ms": int(TIMEOUT * 1000),
        "deadline_ms": int(TIMEOUT * 3000),
        **params,
    }
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCENARIOS / f"{name}.mjs"),
        json.dumps(params),
        cwd=JS_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
        limit=1 << 20,  # the longest line expected (history results)
    )
    try:
        yield Script(proc, name)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def token(user: str, ttl: float = 3600) -> str:
    return mint_token(SECRET, user, ttl=ttl)


async def server_publish(server: Server, channel: str, value: Any) -> int:
    done = await server.app.node.publish(channel, json.dumps(value).encode())
    return done.position.offset


async def test_connect_subscribe_publish(server: Server, transport: str, protocol: str) -> None:
    async with scenario(
        server,
        "connect_publish",
        transport,
        protocol,
        token=token("42"),
        channel="news",
        server_pubs=2,
    ) as js:
        connected = await js.next("client")
        assert connected["transport"] == transport
        assert server.app.node.clients[connected["client"]].user == "42"
        subscribed = await js.next("subscribed")
        assert subscribed["recoverable"]  # force_recovery
        assert subscribed["streamPosition"]["offset"] == 0
        assert await server_publish(server, "news", {"n": 1}) == 1
        assert await server_publish(server, "news", {"n": 2}) == 2
        pubs = [await js.next("publication") for _ in range(2)]
        assert [(p["data"], p["offset"]) for p in pubs] == [({"n": 1}, 1), ({"n": 2}, 2)]
        assert all("info" not in p for p in pubs)  # server publishes have no publisher

        own = await js.next("own")
        assert own["offset"] == 3
        assert (own["info"]["user"], own["info"]["client"]) == ("42", connected["client"])
        await js.finish()


async def test_history_and_presence(server: Server, transport: str, protocol: str) -> None:
    for n in range(1, 6):
        await server_publish(server, "hist", {"n": n})
    tokens = [token("1"), token("2"), token("1")]
    async with scenario(
        server, "history_presence", transport, protocol, tokens=tokens, channel="hist"
    ) as js:
        ids = (await js.next("clients"))["ids"]
        history = {}
        for _ in range(7):
            result = await js.next("history")
            offsets = [p["offset"] for p in result["publications"]]
            assert [p["data"]["n"] for p in result["publications"]] == offsets
            assert result["offset"] == 5
            history[result["call"]] = offsets
        epoch = result["epoch"]
        assert epoch
        assert history == {
            "limit 2": [1, 2],
            "all": [1, 2, 3, 4, 5],
            "position": [],
            "since": [3, 4, 5],
            "since limit 1": [3],
            "reverse": [5, 4],
            "reverse since": [3, 2],
        }
        assert (await js.next("history_error"))["code"] == 112  # unrecoverable position

        presence = (await js.next("presence"))["clients"]
        users = {c: info["user"] for c, info in presence.items()}
        assert users == dict(zip(ids, "121", strict=True))
        assert all(info["client"] == c for c, info in presence.items())
        stats = await js.next("presence_stats")
        assert (stats["numClients"], stats["numUsers"]) == (3, 2)
        # The third connection closed (the same user's first one stays).
        stats = await js.next("presence_stats")
        assert (stats["numClients"], stats["numUsers"]) == (2, 2)
        await js.finish()


async def test_join_and_leave(server: Server, transport: str, protocol: str) -> None:
    async with scenario(
        server, "join_leave", transport, protocol, tokens=[token("1"), token("2")], channel="lobby"
    ) as js:
        two = (await js.next("two"))["client"]
        # The watcher's own join comes first: Centrifugo sends it to the joining client too.
        assert (await js.next("join"))["info"]["user"] == "1"
        for kind in ("join", "leave", "join", "leave"):
            event = await js.next(kind)
            assert (event["who"], event["channel"]) == ("one", "lobby")
            assert (event["info"]["client"], event["info"]["user"]) == (two, "2")
        await js.finish()
        assert js.all("join") == js.all("leave") == []  # one of each, no more


@pytest.mark.parametrize(
    ("channel", "recovered", "server_side"),
    [("feed", True, False), ("small:feed", False, False), ("feed", True, True)],
    ids=["full", "gap", "server-side"],
)
async def test_recovery_after_dropped_connection(
    server: Server, transport: str, protocol: str, channel: str, recovered: bool, server_side: bool
) -> None:
    # A server-side subscription comes from the token and is recovered by the connect command.
    token_ = mint_token(SECRET, "42", channels=[channel]) if server_side else token("42")
    async with scenario(
        server,
        "recovery",
        transport,
        protocol,
        token=token_,
        channel=channel,
        last=6,
        server_side=server_side,
    ) as js:
        client_id = (await js.next("client"))["client"]
        first = await js.next("subscribed")
        assert first["channel"] == channel
        assert not first["wasRecovering"]
        assert first["recoverable"]
        await server_publish(server, channel, {"n": 1})
        await js.next("publication")

        # Cut the TCP connection from the server side, without a close frame or push.
        server.app.node.clients[client_id].transport.transport.abort()  # type: ignore[attr-defined]
        lost = await js.next("connecting", lambda e: e["code"] != 0)  # 0: connect() called
        assert lost["code"] == 1  # transport closed
        await js.next("reconnecting")  # held until told to go on
        for n in range(2, 6):  # missed while away: "small" keeps only the last two
            await server_publish(server, channel, {"n": n})
        js.send({"go": True})

        again = await js.next("subscribed")
        assert again["wasRecovering"]
        assert again["recovered"] is recovered
        assert again["streamPosition"]["epoch"] == first["streamPosition"]["epoch"]
        if not recovered:
            assert again["streamPosition"]["offset"] == 5  # where the stream is now
        await server_publish(server, channel, {"n": 6})
        await js.finish()
        got = [(p["offset"], p["data"]["n"]) for p in js.all("publication")]
        expected = [2, 3, 4, 5, 6] if recovered else [6]
        assert got == [(n, n) for n in expected]  # each once, in order


async def test_connection_token_refresh(server: Server, transport: str, protocol: str) -> None:
    server.app.client_options.expired_grace = 0.5  # Centrifugo's expired_close_delay, shortened
    short = token("42", ttl=2)
    async with scenario(
        server,
        "token_refresh",
        transport,
        protocol,
        short=short,
        fresh=token("42"),
        expired=token("42", ttl=-10),
        channel="news",
    ) as js:
        # An expired token at connect: error 109, then the SDK asks getToken and connects.
        late = await js.next("late")
        assert (late["connecting"], late["errors"]) == ([0], [109])  # still connecting, then in
        client_id = (await js.next("client"))["client"]
        # The control has no new token: the server closes it once the token expired.
        lost = await js.next("control_lost")
        assert (lost["code"], lost["reason"]) == (3005, "connection expired")
        refreshing = await js.next("refreshing")
        assert refreshing == {
            "event": "refreshing",
            "state": "connected",
            "calls": 1,
            "connecting": [0],  # only connect() itself: the connection was never lost
            "disconnected": 0,
        }
        assert server.app.node.clients[client_id].exp > time.time() + 3000
        js.send({"finish": True})
        await js.finish()
        assert sorted(e["who"] for e in js.all("get_token")) == ["control", "late", "refreshing"]


async def test_rpc_and_send(server: Server, transport: str, protocol: str) -> None:
    async def echo(conn: Conn, context: dict[str, Any], data: Any) -> Any:
        return {"echo": data, "user": conn.user}

    def fail(conn: Conn, context: dict[str, Any], data: Any) -> Any:  # a plain hook
        raise Reject(1001, "not today")

    messages: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def on_message(
        conn: Conn, context: dict[str, Any], channel: str | None, data: Any
    ) -> None:
        messages.put_nowait((conn.user, data))

    hooks = server.app.hooks
    hooks.on_rpc("echo")(echo)
    hooks.on_rpc("fail")(fail)
    hooks.on_message(on_message)
    async with scenario(server, "rpc", transport, protocol, token=token("42")) as js:
        assert (await js.next("echo"))["data"] == {"echo": {"x": [1, 2]}, "user": "42"}
        assert (await js.next("missing"))["code"] == 104
        failing = await js.next("failing")
        assert (failing["code"], failing["message"]) == (1001, "not today")
        assert (await js.next("again"))["data"] == {"echo": 1, "user": "42"}
        await js.next("sent")
        user, data = await asyncio.wait_for(messages.get(), TIMEOUT)
        assert (user, data) == ("42", {"note": "bye"})
        js.send({"finish": True})
        await js.finish()


async def control_without_pongs(server: Server, answered: int) -> int:
    """A raw WebSocket client that answers ``answered`` pings and then stops; the close code
    the server cuts it off with."""
    async with ws_connect(f"ws://127.0.0.1:{server.port}/connection/websocket") as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token("7")}}))
        assert "connect" in json.loads(await ws.recv())
        for _ in range(answered):
            assert await ws.recv() == "{}"  # a ping
            await ws.send("{}")  # its pong
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code


async def test_pings_and_pongs(transport: str, protocol: str) -> None:
    # Pings every second (the shortest interval allowed); the SDK reconnects if 2 s pass
    # without one, the server cuts off a client whose pong is late.
    async with (
        running_server(**SETTINGS, ping_interval=1) as server,
        scenario(
            server, "pings", transport, protocol, token=token("42"), max_ping_delay_ms=1000
        ) as js,
    ):
        client_id = (await js.next("client"))["client"]
        # Four pings answered take longer than the SDK's deadline without pings.
        assert await asyncio.wait_for(control_without_pongs(server, 4), TIMEOUT) == 3012
        assert client_id in server.app.node.clients
        js.send({"report": True})
        alice = await js.next("alice")
        assert (alice["state"], alice["connecting"], alice["errors"]) == ("connected", [0], [])
        await js.finish()


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [("http://app.example", True), ("http://other.example", False)],
    ids=["allowed", "other"],
)
async def test_allowed_origins(transport: str, protocol: str, origin: str, allowed: bool) -> None:
    async def echo(conn: Conn, context: dict[str, Any], data: Any) -> Any:
        return data

    settings = {**SETTINGS, "allowed_origins": ["http://app.example"]}
    async with running_server(**settings) as server:
        server.app.hooks.on_rpc("echo")(echo)
        async with scenario(
            server, "origin", transport, protocol, token=token("42"), origin=origin, allowed=allowed
        ) as js:
            if allowed:
                assert (await js.next("echo"))["data"] == {"from": origin}
            else:
                error = await js.next("error")
                assert error["type"] == "transport"
            await js.finish()
        if not allowed:
            assert not server.app.node.clients  # never connected


async def test_private_channels_and_subscription_tokens(
    server: Server, transport: str, protocol: str
) -> None:
    server.app.client_options.expired_grace = 0.5
    sub_tokens = [
        mint_token(SECRET, "42", channel="$secret", ttl=2),  # refreshed by getToken
        mint_token(SECRET, "42", channel="$secret"),
    ]
    async with scenario(
        server,
        "private_channels",
        transport,
        protocol,
        token=token("42"),
        refused=["unknown:ns", "$other"],
        channel="$secret",
        sub_tokens=sub_tokens,
        control="$static",
        control_token=mint_token(SECRET, "42", channel="$static", ttl=2),
    ) as js:
        refused = [await js.next("unsubscribed") for _ in range(2)]
        assert [(e["channel"], e["code"]) for e in refused] == [
            ("unknown:ns", 102),  # unknown channel
            ("$other", 103),  # permission denied: private, no token
        ]
        lost = await js.next("control_lost")
        assert (lost["code"], lost["reason"]) == (2501, "subscription expired")
        private = await js.next("private")
        assert private == {
            "event": "private",
            "state": "subscribed",
            "subscribing": [0],
            "unsubscribed": 0,
        }
        client = next(iter(server.app.node.clients.values()))
        assert client.subs["$secret"].expires_at > time.time() + 3000
        js.send({"finish": True})
        await js.finish()
        assert [e["channel"] for e in js.all("get_sub_token")] == ["$secret", "$secret"]


async def test_get_state(server: Server, transport: str, protocol: str) -> None:
    for n in range(1, 4):
        done = await server.app.node.publish("feed", json.dumps({"n": n}).encode())
    epoch = done.position.epoch
    positions = [
        {"offset": 1, "epoch": "not-the-epoch"},  # refused: the SDK asks for a new state
        {"offset": 1, "epoch": epoch},
    ]
    async with scenario(
        server,
        "get_state",
        transport,
        protocol,
        token=token("42"),
        channel="feed",
        positions=positions,
        count=3,
    ) as js:
        assert (await js.next("get_state"))["epoch"] == "not-the-epoch"
        # Refused with 112 (unrecoverable position): the SDK asks the app again.
        assert (await js.next("get_state"))["epoch"] == epoch
        subscribed = await js.next("subscribed")
        assert (subscribed["wasRecovering"], subscribed["recovered"]) == (True, True)
        pubs = [await js.next("publication") for _ in range(2)]
        assert [(p["offset"], p["data"]["n"]) for p in pubs] == [(2, 2), (3, 3)]
        assert await server_publish(server, "feed", {"n": 4}) == 4
        assert (await js.next("publication"))["offset"] == 4
        await js.finish()
        assert js.all("publication") == []
