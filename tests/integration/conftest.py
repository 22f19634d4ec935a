from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from integration_helpers import http_client

from tidings.server import Server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for ``server`` (no proxies from the environment)."""
    async with http_client(server) as c:
        yield c


@pytest.fixture
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test during which the server logged an error (a failed handler, a crash in
    delivery): bad input must be answered, not tripped over. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("no_server_errors")``."""
    yield
    errors = [
        r
        for when in ("setup", "call", "teardown")
        for r in caplog.get_records(when)  # type: ignore[arg-type]
        if r.levelno >= logging.ERROR and r.name.startswith("tidings")
    ]
    assert not errors, [r.getMessage() for r in errors]
