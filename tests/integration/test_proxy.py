"""HTTP proxies against a real backend: a small HTTP server started by each test, and real
clients (raw WebSockets, the Python SDK) on the other side of tidings."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from centrifuge import ClientState
from integration_helpers import OPEN_NAMESPACE, http_client, subscribed, ws_connect
from test_client_sdk import sdk as sdk_client
from test_client_sdk import value

from tidings.core.tokens import mint_token
from tidings.testing import TIMEOUT, running_server

SECRET = "tidings-proxy-tests-hmac-secret-0123456789"

pytestmark = pytest.mark.usefixtures("no_server_errors")

Answer = Callable[[dict[str, Any]], Any]  # request body -> answer object (or an awaitable)


@dataclass
class Backend:
    """An application backend: answers each proxy path with ``answers[path](body)``."""

    answers: dict[str, Answer] = field(default_factory=dict)
    requests: asyncio.Queue[tuple[str, dict[str, str], dict[str, Any]]] = field(
        default_factory=asyncio.Queue
    )
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def next(self, path: str) -> tuple[dict[str, str], dict[str, Any]]:
        """The next request to ``path`` (others before it are skipped)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                got, headers, body = await self.requests.get()
                if got == path:
                    return headers, body

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, val = line.partition(":")
                    headers[name.strip().lower()] = val.strip()
            body = json.loads(await reader.readexactly(int(headers["content-length"])))
            self.requests.put_nowait((path, headers, body))
            answer = self.answers[path](body)
            if asyncio.iscoroutine(answer):
                answer = await answer
            status, payload = answer if isinstance(answer, tuple) else (200, answer)
            data = json.dumps(payload).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def backend() -> AsyncIterator[Backend]:
    app = Backend()
    listener = await asyncio.start_server(app.serve, "127.0.0.1", 0)
    app.port = listener.sockets[0].getsockname()[1]
    try:
        yield app
    finally:
        listener.close()
        await listener.wait_closed()


def settings(app: Backend, **more: Any) -> dict[str, Any]:
    chat = {
        **OPEN_NAMESPACE,
        "proxy_subscribe_endpoint": app.url("/subscribe"),
        "proxy_publish_endpoint": app.url("/publish"),
        "proxy_sub_refresh_endpoint": app.url("/sub_refresh"),
        "proxy_unsubscribe_endpoint": app.url("/unsubscribe"),
    }
    return {
        "token_hmac_secret_key": SECRET,
        "default_namespace": OPEN_NAMESPACE,
        "namespaces": {"chat": chat},
        "proxy_connect_endpoint": app.url("/connect"),
        "proxy_refresh_endpoint": app.url("/refresh"),
        "proxy_rpc_endpoint": app.url("/rpc"),
        "proxy_disconnect_endpoint": app.url("/disconnect"),
        "proxy_http_headers": ["X-Tenant"],
        **more,
    }


PUSHES: dict[int, list[dict[str, Any]]] = {}


async def command(ws: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    """Send one command; its reply. Pushes read on the way are kept for ``push``."""
    await ws.send(json.dumps(cmd))
    async with asyncio.timeout(TIMEOUT):
        while True:
            for line in str(await ws.recv()).split("\n"):
                message = json.loads(line)
                if message.get("id") == cmd["id"]:
                    return message
                if "push" in message:
                    PUSHES.setdefault(id(ws), []).append(message["push"])


async def push(ws: Any) -> dict[str, Any]:
    """The next push: one read already, or the next message."""
    kept = PUSHES.get(id(ws))
    if kept:
        return kept.pop(0)
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return message["push"]


async def test_connect_proxy_authenticates_and_gives_data_channels_and_info() -> None:
    async with backend() as app:
        app.answers["/connect"] = lambda body: {
            "result": {
                "user": "56",
                "info": {"name": "Alice"},
                "data": {"welcome": True},
                "channels": ["news"],
            }
        }
        async with running_server(**settings(app)) as server:
            headers = {"Cookie": "session=abc", "X-Tenant": "t1", "X-Other": "no"}
            async with ws_connect(
                server, "/connection/websocket", additional_headers=headers
            ) as ws:
                cmd = {"id": 1, "connect": {"data": {"hi": 1}, "name": "tests", "version": "9"}}
                reply = await command(ws, cmd)
                seen_headers, body = await app.next("/connect")
            result = reply["connect"]
            assert result["data"] == {"welcome": True}
            assert list(result["subs"]) == ["news"]
            assert body == {
                "client": result["client"],
                "transport": "websocket",
                "protocol": "json",
                "encoding": "json",
                "data": {"hi": 1},
                "name": "tests",
                "version": "9",
            }
            assert seen_headers["cookie"] == "session=abc" and seen_headers["x-tenant"] == "t1"
            assert "x-other" not in seen_headers
            _, gone = await app.next("/disconnect")  # tidings' own notification
            assert (gone["user"], gone["channels"]) == ("56", ["news"])

            # A connection with a token is the token's: the proxy is not asked.
            async with ws_connect(server, "/connection/websocket") as ws:
                reply = await command(ws, {"id": 1, "connect": {"token": mint_token(SECRET, "7")}})
                assert "connect" in reply
                assert server.app.node.clients[reply["connect"]["client"]].user == "7"
            assert all(path != "/connect" for path, _, _ in drain(app))


def drain(app: Backend) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    return [app.requests.get_nowait() for _ in range(app.requests.qsize())]


async def test_connect_proxy_with_the_python_sdk() -> None:
    async with backend() as app:
        app.answers["/connect"] = lambda body: {"result": {"user": "56", "data": {"n": 1}}}
        app.answers["/disconnect"] = lambda body: {}
        async with running_server(**settings(app)) as server:
            for use_protobuf in (False, True):
                async with sdk_client(server, use_protobuf, token="") as alice:
                    connected = await alice.connect()
                    assert value(connected.data) == {"n": 1}
                    assert server.app.node.clients[connected.client].user == "56"
                _, body = await app.next("/connect")
                assert body["protocol"] == ("protobuf" if use_protobuf else "json")


@pytest.mark.parametrize(
    ("answer", "expect"),
    [
        ({"error": {"code": 1000, "message": "who are you"}}, ("error", 1000, "who are you")),
        ({"disconnect": {"code": 4500, "reason": "banned"}}, ("close", 4500, "banned")),
        ((500, {"oops": 1}), ("error", 100, "internal server error")),
        ({"result": "not an object"}, ("error", 100, "internal server error")),
    ],
    ids=["error", "disconnect", "status-500", "bad-answer"],
)
async def test_connect_proxy_refusals_and_failures(caplog, answer, expect) -> None:
    async with backend() as app:
        app.answers["/connect"] = lambda body: answer
        async with (
            running_server(**settings(app)) as server,
            ws_connect(server, "/connection/websocket") as ws,
        ):
            kind, code, text = expect
            if kind == "close":
                await ws.send(json.dumps({"id": 1, "connect": {}}))
                with pytest.raises(Exception):  # noqa: B017 - the close is the answer
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
                assert ws.close_code == code and ws.close_reason == text
            else:
                reply = await command(ws, {"id": 1, "connect": {}})
                assert (reply["error"]["code"], reply["error"]["message"]) == (code, text)
    caplog.clear()  # failures of the backend are logged, as they should be


async def test_a_backend_that_is_down_or_slow_is_a_temporary_error_and_the_server_goes_on(
    caplog,
) -> None:
    async with backend() as app:
        slow = asyncio.Event()

        async def hang(body: dict[str, Any]) -> Any:
            await slow.wait()
            return {}

        app.answers["/connect"] = hang
        async with running_server(**settings(app, proxy_timeout=0.3)) as server:
            async with ws_connect(server, "/connection/websocket") as ws:
                reply = await command(ws, {"id": 1, "connect": {}})
            assert reply["error"] == {
                "code": 100,
                "message": "internal server error",
                "temporary": True,
            }
            slow.set()
        down = {**settings(app), "proxy_connect_endpoint": "http://127.0.0.1:9/connect"}
        async with running_server(**down) as server:
            async with ws_connect(server, "/connection/websocket") as ws:
                reply = await command(ws, {"id": 1, "connect": {}})
                assert reply["error"]["code"] == 100
            async with http_client(server) as http:
                assert (await http.get("/health")).status_code == 200
    assert "proxy" in caplog.text
    caplog.clear()


async def test_subscribe_publish_rpc_and_unsubscribe_proxies() -> None:
    async with backend() as app:

        def subscribe(body: dict[str, Any]) -> Any:
            if body["channel"] == "chat:vip":
                return {"error": {"code": 1403, "message": "members only"}}
            return {"result": {"info": {"seat": 3}, "data": {"topic": "cats"}}}

        app.answers["/subscribe"] = subscribe
        app.answers["/publish"] = lambda body: {"result": {"data": {"said": body["data"]["text"]}}}
        app.answers["/rpc"] = lambda body: {"result": {"data": {"method": body["method"]}}}
        app.answers["/unsubscribe"] = lambda body: {}
        app.answers["/disconnect"] = lambda body: {}
        async with (
            running_server(**settings(app)) as server,
            ws_connect(server, "/connection/websocket") as ws,
        ):
            token = mint_token(SECRET, "42")
            await command(ws, {"id": 1, "connect": {"token": token}})
            refused = await command(ws, {"id": 2, "subscribe": {"channel": "chat:vip"}})
            assert refused["error"] == {"code": 1403, "message": "members only"}
            ok = await command(ws, {"id": 3, "subscribe": {"channel": "chat:1"}})
            assert ok["subscribe"]["data"] == {"topic": "cats"}
            _, body = await app.next("/subscribe")
            _, body = await app.next("/subscribe")
            assert (body["channel"], body["user"]) == ("chat:1", "42")
            await command(ws, {"id": 4, "publish": {"channel": "chat:1", "data": {"text": "hi"}}})
            pub = (await push(ws))["pub"]
            assert pub["data"] == {"said": "hi"}
            assert pub["info"]["chan_info"] == {"seat": 3}  # from the subscribe proxy
            # Channels of other namespaces are not proxied.
            await command(ws, {"id": 5, "subscribe": {"channel": "news"}})
            answer = await command(ws, {"id": 6, "rpc": {"method": "whoami", "data": {}}})
            assert answer["rpc"]["data"] == {"method": "whoami"}
            await command(ws, {"id": 7, "unsubscribe": {"channel": "chat:1"}})
            _, body = await app.next("/unsubscribe")
            assert body["channel"] == "chat:1"
        assert all(body.get("channel") != "news" for _, _, body in drain(app))


async def test_refresh_and_sub_refresh_proxies() -> None:
    async with backend() as app:
        soon = int(time.time()) + 1
        refreshes: list[str] = []

        def refresh(body: dict[str, Any]) -> Any:
            refreshes.append(body["client"])
            if len(refreshes) == 1:
                return {"result": {"expire_at": int(time.time()) + 1}}
            return {"result": {"expired": True}}

        app.answers["/connect"] = lambda body: {"result": {"user": "56", "expire_at": soon}}
        app.answers["/refresh"] = refresh
        app.answers["/subscribe"] = lambda body: {"result": {"expire_at": soon}}
        app.answers["/sub_refresh"] = lambda body: {"result": {"expired": True}}
        app.answers["/unsubscribe"] = lambda body: {}
        app.answers["/disconnect"] = lambda body: {}
        async with (
            running_server(**settings(app)) as server,
            ws_connect(server, "/connection/websocket") as ws,
        ):
            reply = await command(ws, {"id": 1, "connect": {}})
            assert reply["connect"]["expires"] is True
            await command(ws, {"id": 2, "subscribe": {"channel": "chat:1"}})
            # The subscription's sub_refresh says expired: 2501, and the SDK would resubscribe.
            _, body = await app.next("/sub_refresh")
            assert body["channel"] == "chat:1"
            assert (await push(ws))["unsubscribe"]["code"] == 2501
            # The first refresh extends the connection, the second lets it expire.
            await app.next("/refresh")
            await app.next("/refresh")
            with pytest.raises(Exception):  # noqa: B017 - the close is the answer
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert ws.close_code == 3005


async def test_the_connect_proxy_on_the_simple_endpoints() -> None:
    async with backend() as app:

        def connect(body: dict[str, Any]) -> Any:
            if body["transport"] == "sse":
                return {"error": {"code": 1401, "message": "log in"}}
            return {"result": {"user": "u1"}}

        app.answers["/connect"] = connect
        app.answers["/disconnect"] = lambda body: {}
        async with running_server(**settings(app)) as server:
            async with http_client(server) as http:
                resp = await http.get("/sse/news")
                assert (resp.status_code, resp.json()) == (403, {"error": "log in", "code": 1401})
            async with ws_connect(server, "/ws/news") as ws:
                await subscribed(server, "news")
                _, body = await app.next("/connect")
                _, body = await app.next("/connect")
                assert body["transport"] == "ws"
                users = [s.user for s in server.app.node.streams.values()]
                assert users == ["u1"]
                await ws.close()


async def test_the_sdk_keeps_connecting_while_the_backend_is_down(caplog) -> None:
    async with backend() as app:
        up = asyncio.Event()

        async def connect(body: dict[str, Any]) -> Any:
            if not up.is_set():
                return (503, {})
            return {"result": {"user": "56"}}

        app.answers["/connect"] = connect
        app.answers["/disconnect"] = lambda body: {}
        async with (
            running_server(**settings(app)) as server,
            sdk_client(server, False, token="") as alice,
        ):
            await alice.client.connect()
            await app.next("/connect")  # refused with 503: a temporary error
            up.set()
            await alice.events.next("connected")
            assert alice.client.state == ClientState.CONNECTED
    caplog.clear()


async def test_connect_meta_comes_back_in_later_requests_and_subscribe_may_override() -> None:
    async with backend() as app:
        app.answers["/connect"] = lambda body: {"result": {"user": "7", "meta": {"tenant": "a"}}}

        def subscribe(body: dict[str, Any]) -> Any:
            # The namespace forces recovery; the backend turns it off for this subscription.
            return {"result": {"override": {"force_recovery": {"value": False}}}}

        app.answers["/subscribe"] = subscribe
        app.answers["/rpc"] = lambda body: {"result": {"data": body.get("meta")}}
        app.answers["/unsubscribe"] = lambda body: {}
        app.answers["/disconnect"] = lambda body: {}
        async with (
            running_server(**settings(app)) as server,
            ws_connect(server, "/connection/websocket") as ws,
        ):
            connected = await command(ws, {"id": 1, "connect": {}})
            assert connected["connect"]["client"]
            _, body = await app.next("/connect")
            assert "meta" not in body  # nothing to send back yet
            ok = await command(ws, {"id": 2, "subscribe": {"channel": "chat:1"}})
            assert "recoverable" not in ok["subscribe"] and "positioned" not in ok["subscribe"]
            _, body = await app.next("/subscribe")
            assert body["meta"] == {"tenant": "a"}
            plain = await command(ws, {"id": 3, "subscribe": {"channel": "news"}})
            assert plain["subscribe"]["recoverable"] is True  # not proxied: the namespace's
            answer = await command(ws, {"id": 4, "rpc": {"method": "m", "data": {}}})
            assert answer["rpc"]["data"] == {"tenant": "a"}
