"""The native asyncio listener: it mounts an ``App`` on a socket."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from tidings.app import App
from tidings.config import Config

from .context import Context
from .http import HttpConnection
from .tls import server_context

__all__ = ["Server"]

log = logging.getLogger("tidings.server")


class Server:
    """Serves one ``App`` over HTTP, WebSocket, SSE, long-poll and streams.

    ``await start()`` binds (port 0 picks a free port: see ``port``); ``await aclose()``
    shuts down gracefully: stop accepting, tell clients, close. With ``certfile`` and
    ``keyfile`` configured it speaks TLS (``https://``, ``wss://``); a certificate that
    can't be loaded raises ``ConfigError`` from ``start`` before anything is bound.
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
        scheme = "https" if self.config.certfile else "http"
        host = self.config.host
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> None:
        config = self.config
        tls: ssl.SSLContext | None = None
        if config.certfile or config.keyfile:
            tls = server_context(config.certfile, config.keyfile)
        loop = asyncio.get_running_loop()
        ctx = self._context = Context(self.app, loop)
        await self.app.start()
        # A TLS handshake counts against the request deadline: connection_made, which arms
        # the connection's own timer, comes only after it.
        handshake = config.request_timeout if tls else None
        closing = config.shutdown_timeout if tls else None
        try:
            if sock is not None:
                self._listener = await loop.create_server(
                    lambda: HttpConnection(ctx),
                    sock=sock,
                    backlog=4096,
                    ssl=tls,
                    ssl_handshake_timeout=handshake,
                    ssl_shutdown_timeout=closing,
                )
            else:
                self._listener = await loop.create_server(
                    lambda: HttpConnection(ctx),
                    config.host,
                    config.port,
                    backlog=4096,
                    reuse_port=config.reuse_port or None,
                    ssl=tls,
                    ssl_handshake_timeout=handshake,
                    ssl_shutdown_timeout=closing,
                )
        except BaseException:
            await self.app.aclose()
            raise
        log.info("tidings listening on %s", self.url)

    async def aclose(self) -> None:
        """Stop accepting, then close the application (it tells every client)."""
        if self._listener is not None:
            self._listener.close()
        await self.app.aclose()
        if self._listener is not None:
            await self._listener.wait_closed()
        log.info("tidings stopped")
