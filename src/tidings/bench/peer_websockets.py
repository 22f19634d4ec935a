"""A peer for ``tidings bench fanout --peer websockets``: the ``websockets`` library's own
asyncio server, fanning out with its ``broadcast()``.

Subscribers connect to ``ws://HOST:PORT/ws/<channel>``. Publishing is the same HTTP call as
tidings' (``POST /pub/<channel>``, answered with ``{"subscribers": N}``; ``GET`` answers the
count) on a second port, served by a minimal keep-alive HTTP protocol, so that both servers
are fed the same way. Run as ``python -m tidings.bench.peer_websockets``; it prints
``listening PORT PUB_PORT`` (ports chosen by the OS unless given).
"""

from __future__ import annotations

import argparse
import asyncio
import resource

import httptools
import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve

__all__ = [
    "PublishEndpoint",
    "main",
    "serve_peer",
]

Groups = dict[str, set[ServerConnection]]


def _channel(path: str, prefix: str) -> str:
    path = path.split("?", 1)[0]
    return path[len(prefix) :] if path.startswith(prefix) else ""


class PublishEndpoint(asyncio.Protocol):
    """``POST /pub/<channel>`` broadcasts the body as a text frame; ``GET`` counts."""

    def __init__(self, groups: Groups) -> None:
        self.groups = groups
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        channel = _channel(self.url.decode(), "/pub/")
        group = self.groups.get(channel, set())
        if self.parser.get_method() == b"POST":
            broadcast(group, b"".join(self.body), text=True)
        body = orjson.dumps({"channel": channel, "subscribers": len(group)})
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        assert self.transport is not None
        self.transport.write(head % len(body) + body)


async def serve_peer(host: str, port: int, pub_port: int) -> None:
    groups: Groups = {}

    async def subscriber(ws: ServerConnection) -> None:
        channel = _channel(ws.request.path if ws.request else "", "/ws/")
        group = groups.setdefault(channel, set())
        group.add(ws)
        try:
            await ws.wait_closed()
        finally:
            group.discard(ws)

    loop = asyncio.get_running_loop()
    publish = await loop.create_server(lambda: PublishEndpoint(groups), host, pub_port)
    # Keepalive pings off, as tidings' are during the bench; no compression offered anyway.
    async with serve(subscriber, host, port, ping_interval=None, backlog=4096) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"listening {bound} {publish.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()
    publish.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pub-port", type=int, default=0)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve_peer(args.host, args.port, args.pub_port))
    else:
        uvloop.run(serve_peer(args.host, args.port, args.pub_port))


if __name__ == "__main__":
    main()
