"""Serving an ASGI application under uvicorn for the ASGI tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tidings.app import App
from tidings.testing.uvicorn import uvicorn_serving as serving


@dataclass
class Served:
    """What the integration helpers need of a server: its base ``url`` and its ``App``."""

    url: str
    app: App


@asynccontextmanager
async def uvicorn_serving(asgi: Any, app: App, prefix: str = "") -> AsyncIterator[Served]:
    """Run ``asgi`` under uvicorn on a free port until the block ends."""
    async with serving(asgi) as run:
        yield Served(f"http://127.0.0.1:{run.port}{prefix}", app)
