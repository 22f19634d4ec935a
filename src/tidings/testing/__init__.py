"""Helpers for testing code that uses tidings (and tidings' own tests).

``running_server(**config)`` starts a real server on 127.0.0.1 with a free port and stops
it afterwards. ``TIMEOUT`` is a generous wait, scaled by ``TIDINGS_TEST_TIMEOUT_SCALE`` on
slow machines; wait on events with it, never sleep to synchronise.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tidings.config import Config
from tidings.server import Server

__all__ = ["TIMEOUT", "running_server"]

TIMEOUT = 10.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))


@asynccontextmanager
async def running_server(**settings: Any) -> AsyncIterator[Server]:
    """A started ``Server`` on 127.0.0.1, port 0; ``api_key`` defaults to ``"test-key"``."""
    settings.setdefault("host", "127.0.0.1")
    settings.setdefault("port", 0)
    settings.setdefault("api_key", "test-key")
    server = Server(Config(**settings))
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
