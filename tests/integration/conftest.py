from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import httpx
import pytest
import pytest_asyncio.plugin
from integration_helpers import http_client

from tidings.server import Server

try:
    import uvloop
except ImportError:  # pragma: no cover - Windows
    uvloop = None


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


# Modules that set ``BOTH_LOOPS = True`` run each test on the standard event loop and on
# uvloop, the one ``tidings serve`` uses: transports differ in buffering and half-close.
# Others keep the standard loop alone. (The hook exists from pytest-asyncio 1.3; with older
# versions every test runs on the standard loop.)
if uvloop is not None and hasattr(pytest_asyncio.plugin, "PytestAsyncioSpecs"):
    _STANDARD: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    _BOTH = {**_STANDARD, "uvloop": uvloop.new_event_loop}

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        module = getattr(item, "module", None)
        return _BOTH if getattr(module, "BOTH_LOOPS", False) else _STANDARD
