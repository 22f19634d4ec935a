"""Helpers for the integration tests: real clients against a real server on 127.0.0.1.

Readers run in background tasks that fill queues, so a test waits on the next event with
``TIMEOUT`` and never sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

API_KEY = "test-key"
AUTH = {"X-API-Key": API_KEY}

# Client-protocol channel options an application typically opens to its logged-in users.
OPEN_NAMESPACE: dict[str, Any] = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_subscriber": True,
    "allow_history_for_subscriber": True,
    "allow_presence_for_subscriber": True,
    "presence": True,
    "join_leave": True,
    "force_recovery": True,
}


class Recorder:
    """SDK events, a queue per kind."""

    def __init__(self) -> None:
        self.queues: defaultdict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)

    def put(self, kind: str, ctx: Any) -> None:
        self.queues[kind].put_nowait(ctx)

    async def next(self, kind: str, where: Callable[[Any], bool] = lambda _: True) -> Any:
        """The next event of ``kind`` that satisfies ``where`` (others are skipped)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                ctx = await self.queues[kind].get()
                if where(ctx):
                    return ctx

    def waiting(self, kind: str) -> list[Any]:
        """Events of ``kind`` received and not yet taken."""
        queue = self.queues[kind]
        return [queue.get_nowait() for _ in range(queue.qsize())]


# Building an SSL context costs ~20 ms, and httpx builds one per client even for plain HTTP.
_SSL = ssl.create_default_context()


def http_client(server: Server, verify: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """An httpx client for ``server`` (no proxies from the environment); ``verify``: the
    context that trusts a TLS server's certificate."""
    return httpx.AsyncClient(
        base_url=server.url, timeout=TIMEOUT, trust_env=False, verify=verify or _SSL
    )


async def publish(
    server: Server,
    channel: str,
    data: Any,
    *,
    event: str | None = None,
    text: bool = False,
) -> dict[str, Any]:
    """Publish over ``POST /pub``: ``data`` as JSON, or as text/plain with ``text=True``."""
    if text:
        body, ctype = str(data).encode(), "text/plain; charset=utf-8"
    else:
        body, ctype = json.dumps(data).encode(), "application/json"
    params = {"event": event} if event else None
    async with http_client(server) as c:
        resp = await c.post(
            f"/pub/{channel}",
            content=body,
            params=params,
            headers={**AUTH, "Content-Type": ctype},
        )
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Wait (bounded by ``TIMEOUT``) until ``predicate()`` holds, yielding to the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def subscribed(server: Server, channel: str, count: int = 1) -> None:
    """Wait until ``channel`` has at least ``count`` local subscribers on the server."""
    await until(lambda: server.app.node.hub.count(channel) >= count, f"{count} on {channel}")


# WebSocket


@asynccontextmanager
async def ws_connect(server: Server, path: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    url = server.url.replace("http", "ws", 1) + path
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    kwargs.setdefault("compression", None)
    async with connect(url, **kwargs) as ws:
        yield ws


async def ws_json(ws: ClientConnection) -> Any:
    """The next text frame, parsed as JSON."""
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str), message
    return json.loads(message)


async def ws_close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; return its close code."""
    with suppress(Exception):
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return ws.close_code


# Server-Sent Events and chunked streams over httpx


@dataclass
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None


@dataclass
class Lines:
    """A streaming response read in the background; ``items`` are events or lines."""

    response: httpx.Response
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    live: asyncio.Event = field(default_factory=asyncio.Event)  # ": ok" came (SSE)
    comments: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    last_id: str | None = None

    async def next(self) -> Any:
        item = await asyncio.wait_for(self.queue.get(), TIMEOUT)
        if item is _END:
            raise AssertionError("stream ended")
        return item

    async def take(self, n: int) -> list[Any]:
        return [await self.next() for _ in range(n)]

    async def wait_end(self) -> list[Any]:
        """Wait for the server to end the body; return what came before the end."""
        await asyncio.wait_for(self.ended.wait(), TIMEOUT)
        rest = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not _END:
                rest.append(item)
        return rest


_END = object()


async def _read_sse(lines: Lines) -> None:
    data: list[str] = []
    event = ""
    try:
        async for line in lines.response.aiter_lines():
            if line == "":
                # As a browser does (WHATWG HTML §9.2.6): no event for an empty data buffer.
                text = "\n".join(data)
                if text:
                    lines.queue.put_nowait(SseEvent(text, event or "message", lines.last_id))
                data, event = [], ""
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                lines.comments.append(value)
                if value == "ok":
                    lines.live.set()
            elif name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                lines.last_id = value
            elif name == "retry":
                lines.retry.append(value)
    except httpx.HTTPError:
        pass
    finally:
        lines.queue.put_nowait(_END)
        lines.ended.set()
        lines.live.set()


async def _pump(lines: Lines, items: AsyncIterator[Any]) -> None:
    """Queue what the response yields, then the end marker."""
    try:
        async for item in items:
            lines.queue.put_nowait(item)
    except httpx.HTTPError:
        pass
    finally:
        lines.queue.put_nowait(_END)
        lines.ended.set()


async def _read_lines(lines: Lines) -> None:
    await _pump(lines, lines.response.aiter_lines())


async def _read_chunks(lines: Lines) -> None:
    await _pump(lines, lines.response.aiter_bytes())


@asynccontextmanager
async def _streaming(
    server: Server,
    path: str,
    reader: Callable[[Lines], Awaitable[None]],
    headers: dict[str, str] | None,
    status: int,
    live: bool = False,
) -> AsyncIterator[Lines]:
    async with (
        http_client(server) as c,
        c.stream("GET", path, headers=headers) as resp,
    ):
        assert resp.status_code == status, (resp.status_code, await resp.aread())
        lines = Lines(resp)
        task = asyncio.create_task(reader(lines))
        try:
            if live:
                await asyncio.wait_for(lines.live.wait(), TIMEOUT)
            yield lines
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


def sse_connect(
    server: Server, path: str, headers: dict[str, str] | None = None
) -> AbstractAsyncContextManager[Lines]:
    """Open ``/sse/...``; ``next()`` returns ``SseEvent``s. On the simple endpoint it returns
    once the ``: ok`` comment says every channel is live (what is published from then on
    arrives), as a page would wait before publishing; a stream that ends first returns too."""
    return _streaming(server, path, _read_sse, headers, 200, path.startswith("/sse/"))


def stream_connect(
    server: Server, path: str, headers: dict[str, str] | None = None
) -> AbstractAsyncContextManager[Lines]:
    """Open ``/stream/...``; ``next()`` returns lines."""
    return _streaming(server, path, _read_lines, headers, 200)


def chunks_connect(server: Server, path: str) -> AbstractAsyncContextManager[Lines]:
    """Open a streaming response; ``next()`` returns raw body pieces."""
    return _streaming(server, path, _read_chunks, None, 200)


# Raw sockets


async def read_responses(reader: asyncio.StreamReader, count: int) -> list[tuple[int, bytes]]:
    """``count`` responses (each with Content-Length) as (status, body), in order."""
    answers = []
    async with asyncio.timeout(TIMEOUT):
        for _ in range(count):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            answers.append((int(head.split(b" ", 2)[1]), await reader.readexactly(length)))
    return answers


async def pipelined(port: int, requests: bytes, count: int) -> list[tuple[int, bytes]]:
    """Write ``requests`` at once on a new connection to ``port``; its ``count`` answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(requests)
        return await read_responses(reader, count)
    finally:
        writer.close()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """One HTTP/1.1 response with ``Content-Length`` (or to EOF) from ``reader``."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT)
    elif status in (101, 204, 304):
        body = b""
    else:
        body = await asyncio.wait_for(reader.read(), TIMEOUT)
    return RawResponse(status, headers, body)


@asynccontextmanager
async def raw_connection(
    server: Server,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A plain TCP connection to ``server``, closed afterwards."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


def ws_handshake(path: str, *, omit: str = "", **replace: str) -> bytes:
    """An opening handshake for ``path``; ``omit`` drops a header, ``replace`` sets some."""
    headers = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    headers.update(replace)
    headers.pop(omit, None)
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@asynccontextmanager
async def raw_ws(
    server: Server, path: str
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A WebSocket opened by hand on a raw socket (to misbehave, or to never read)."""
    async with raw_connection(server) as (reader, writer):
        writer.write(ws_handshake(path))
        assert (await read_response(reader)).status == 101
        yield reader, writer


async def raw_request(server: Server, data: bytes) -> RawResponse:
    """Send ``data`` on a fresh connection and read one response."""
    async with raw_connection(server) as (reader, writer):
        writer.write(data)
        return await read_response(reader)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), TIMEOUT)


async def assert_serving(server: Server, channel: str = "alive") -> None:
    """The server still answers: health, and a publication reaches a WebSocket subscriber."""
    async with http_client(server) as c:
        resp = await c.get("/health")
    assert resp.status_code == 200
    async with ws_connect(server, f"/ws/{channel}?format=raw") as ws:
        await subscribed(server, channel)
        await publish(server, channel, {"still": "here"})
        assert await ws_json(ws) == {"still": "here"}


# A server for blocking code


@contextmanager
def server_in_thread(**settings: Any) -> Iterator[Server]:
    """A running server on an event loop of its own, in a thread: for tests whose own code
    blocks or runs event loops of its own (``asyncio.run``). ``call(server, fn)`` runs on
    the server's loop."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        async with running_server(**settings) as server:
            holder["server"] = server
            holder["stop"] = asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            ready.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT), "the server did not start"
    try:
        yield holder["server"]
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(TIMEOUT)


def on_server_loop(server: Server, fn: Callable[[], Any]) -> Any:
    """``fn()`` run on a threaded server's loop (its state is that loop's alone)."""
    loop = server.context.loop

    async def run() -> Any:
        result = fn()
        return await result if asyncio.iscoroutine(result) else result

    return asyncio.run_coroutine_threadsafe(run(), loop).result(TIMEOUT)
