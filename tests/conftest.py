from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tidings.server import Server
from tidings.testing import running_server

API_KEY = "test-key"

# Redis topologies on free ports: redis_server, redis_cluster, redis_sentinel, ...
pytest_plugins = ["redis_fixtures"]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A real server on 127.0.0.1 with a free port, stopped after the test."""
    async with running_server(api_key=API_KEY) as srv:
        yield srv
