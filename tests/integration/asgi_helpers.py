"""Serving an ASGI application under uvicorn on 127.0.0.1 for the ASGI tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from tidings.app import App
from tidings.testing import TIMEOUT


@dataclass
class Served:
    """What the integration helpers need of a server: its base ``url`` and its ``App``."""

    url: str
    app: App


@asynccontextmanager
async def uvicorn_serving(asgi: Any, app: App, prefix: str = "") -> AsyncIterator[Served]:
    """Run ``asgi`` under uvicorn (lifespan on) on a free port until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        asgi,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=5,
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield Served(f"http://127.0.0.1:{port}{prefix}", app)
    finally:
        server.should_exit = True
        async with asyncio.timeout(TIMEOUT):
            await task
        sock.close()
