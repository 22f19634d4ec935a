"""The native asyncio server: listening, connection registry, heartbeats, shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter

from tidings.api.server_api import ServerApi
from tidings.brokers.memory import MemoryBroker
from tidings.config import Config
from tidings.core.node import Node

from .centrifuge import ClientConnection
from .formats import TemplateFormat
from .http import HttpConnection
from .outbox import Flusher
from .sessions import SseSession, WsSession

__all__ = ["Server"]

log = logging.getLogger("tidings.server")


class Server:
    """One tidings process serving HTTP, WebSocket, SSE, long-poll and streams.

    ``await start()`` binds (port 0 picks a free port: see ``port``); ``await aclose()``
    shuts down gracefully: stop accepting, tell clients, close.
    """

    def __init__(self, config: Config | None = None, node: Node | None = None) -> None:
        self.config = config or Config()
        self.config.validate()
        self.node = node or Node(
            MemoryBroker(),
            self.config.channel_namespaces(),
            token_verifier=self.config.token_verifier(),
        )
        self.client_options = self.config.client_options()
        self.api = ServerApi(self.node)
        self.templates = self.config.message_templates()
        self.template_formats = {n: TemplateFormat(t) for n, t in self.templates.items()}
        self.connections: set[asyncio.BaseProtocol] = set()
        self.stats_slow = 0
        self.stopping = False
        self._listener: asyncio.Server | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self._closed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flusher: Flusher | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "server not started"
        return self._loop

    @property
    def flusher(self) -> Flusher:
        assert self._flusher is not None, "server not started"
        return self._flusher

    @property
    def port(self) -> int:
        assert self._listener is not None, "server not started"
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._flusher = Flusher(self._loop)
        await self.node.start()
        config = self.config
        if sock is not None:
            self._listener = await self._loop.create_server(
                lambda: HttpConnection(self), sock=sock, backlog=4096
            )
        else:
            self._listener = await self._loop.create_server(
                lambda: HttpConnection(self),
                config.host,
                config.port,
                backlog=4096,
                reuse_port=config.reuse_port or None,
            )
        self._heartbeat = self._loop.call_later(config.ping_interval, self._beat)
        log.info("tidings listening on %s", self.url)

    # connection registry
    def admit(self, conn: HttpConnection) -> bool:
        """Register a new connection; False when the connection limit is reached."""
        if len(self.connections) >= self.config.max_connections or self.stopping:
            return False
        self.connections.add(conn)
        return True

    def replace(self, old: asyncio.BaseProtocol, new: asyncio.BaseProtocol) -> None:
        self.connections.discard(old)
        self.connections.add(new)

    def forget(self, conn: asyncio.BaseProtocol) -> None:
        self.connections.discard(conn)
        if self.stopping and not self.connections:
            self._closed.set()

    def connection_counts(self) -> dict[str, int]:
        counts = Counter(getattr(c, "kind", "http") for c in self.connections)
        for conn in self.connections:
            if isinstance(conn, HttpConnection) and conn.lp is not None:
                counts["http"] -= 1
                counts["lp"] += 1
        kinds = ("ws", "sse", "stream", "lp", "client", "http")
        return {k: counts.get(k, 0) for k in kinds}

    def _beat(self) -> None:
        """Ping WebSocket clients (and cut off those that didn't answer the last ping);
        send SSE comments so proxies and browsers see the stream alive."""
        for conn in list(self.connections):
            if isinstance(conn, WsSession | ClientConnection) and not conn.closed:
                conn.ping()
            elif isinstance(conn, SseSession) and not conn.closed:
                conn.heartbeat()
        self._heartbeat = self.loop.call_later(self.config.ping_interval, self._beat)

    # shutdown
    async def aclose(self) -> None:
        """Stop accepting, tell every client, wait up to ``shutdown_timeout``, then close."""
        if self.stopping:
            await self._closed.wait()
            return
        self.stopping = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._listener is not None:
            self._listener.close()
        for conn in list(self.connections):
            if isinstance(conn, HttpConnection):
                conn.shutdown()
            elif isinstance(conn, WsSession | SseSession) or hasattr(conn, "goodbye"):
                conn.finish(conn.goodbye("shutdown"))  # type: ignore[attr-defined]
        if not self.connections:
            self._closed.set()
        try:
            await asyncio.wait_for(self._closed.wait(), self.config.shutdown_timeout)
        except TimeoutError:
            for conn in list(self.connections):
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    transport.abort()
            self.connections.clear()
        self._closed.set()
        if self._listener is not None:
            await self._listener.wait_closed()
        await self.node.aclose()
        log.info("tidings stopped")
