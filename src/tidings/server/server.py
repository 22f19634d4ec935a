"""The native asyncio listener: it mounts an ``App`` on a socket."""

from __future__ import annotations

import asyncio
import logging
import socket

from tidings.app import App
from tidings.config import Config

from .context import Context
from .http import HttpConnection

__all__ = ["Server"]

log = logging.getLogger("tidings.server")


class Server:
    """Serves one ``App`` over HTTP, WebSocket, SSE, long-poll and streams.

    ``await start()`` binds (port 0 picks a free port: see ``port``); ``await aclose()``
    shuts down gracefully: stop accepting, tell clients, close.
    """

    def __init__(self, app: App | Config | None = None) -> None:
        self.app = app if isinstance(app, App) else App(app)
        self.config = self.app.config
        self._listener: asyncio.Server | None = None
        self._context: Context | None = None

    @property
    def context(self) -> Context:
        assert self._context is not None, "server not started"
        return self._context

    @property
    def port(self) -> int:
        assert self._listener is not None, "server not started"
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> None:
        loop = asyncio.get_running_loop()
        ctx = self._context = Context(self.app, loop)
        await self.app.start()
        config = self.config
        if sock is not None:
            self._listener = await loop.create_server(
                lambda: HttpConnection(ctx), sock=sock, backlog=4096
            )
        else:
            self._listener = await loop.create_server(
                lambda: HttpConnection(ctx),
                config.host,
                config.port,
                backlog=4096,
                reuse_port=config.reuse_port or None,
            )
        log.info("tidings listening on %s", self.url)

    async def aclose(self) -> None:
        """Stop accepting, then close the application (it tells every client)."""
        if self._listener is not None:
            self._listener.close()
        await self.app.aclose()
        if self._listener is not None:
            await self._listener.wait_closed()
        log.info("tidings stopped")
