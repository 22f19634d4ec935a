from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from integration_helpers import http_client

from tidings.server import Server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for ``server`` (no proxies from the environment)."""
    async with http_client(server) as c:
        yield c
