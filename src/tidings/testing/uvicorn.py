"""``uvicorn_serving``: an ASGI application under uvicorn on a free 127.0.0.1 port.

For tests of ``tidings.asgi`` (and ``tidings bench fanout --peer asgi``); needs uvicorn.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from . import TIMEOUT

__all__ = ["UvicornRun", "uvicorn_serving"]


class UvicornRun:
    """A running uvicorn: its ``port``, and ``task`` (ends when the server stops)."""

    def __init__(self, server: Any, task: asyncio.Task[None], port: int) -> None:
        self.server = server
        self.task = task
        self.port = port

    def stop(self) -> None:
        """Ask uvicorn to shut down (as SIGTERM would)."""
        self.server.should_exit = True


@asynccontextmanager
async def uvicorn_serving(asgi: Any, **options: Any) -> AsyncIterator[UvicornRun]:
    """Serve ``asgi`` (lifespan on; more uvicorn ``options``) until the block ends."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    options = {
        "lifespan": "on",
        "log_level": "warning",
        "ws": "websockets-sansio",
        "timeout_graceful_shutdown": 5,
        **options,
    }
    server = uvicorn.Server(uvicorn.Config(asgi, **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    run = UvicornRun(server, task, sock.getsockname()[1])
    try:
        async with asyncio.timeout(TIMEOUT):
            # uvicorn has a flag for this, no event.
            while not server.started:
                if task.done():
                    task.result()  # it failed to start: its error
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        yield run
    finally:
        run.stop()
        async with asyncio.timeout(TIMEOUT):
            await task
        sock.close()
