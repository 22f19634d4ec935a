"""Helpers for testing code that uses tidings, and for tidings' own tests.

- ``running_server(**config)``: a real server on 127.0.0.1 with a free port, stopped after.
- ``memory_node(backend)``: a ``Node`` on the memory broker; several given one
  ``MemoryBackend`` form a hub in one process (with injectable delay and loss).
- ``FakeClock``: time that moves when told, for heartbeats, TTLs and timeouts.
- ``RecordingSubscriber``, ``RecordingTransport``: ends that record what reaches them.
- ``RecordingPublisher``: a ``Publisher`` that records instead of publishing, for
  applications' own tests.
- ``check_broker(factory)``, ``check_presence(factory)``: the conformance suites.
- ``tidings.testing.uvicorn.uvicorn_serving(asgi)``: an ASGI application (``tidings.asgi``)
  under uvicorn on a free port.

``TIMEOUT`` is a generous wait, scaled by ``TIDINGS_TEST_TIMEOUT_SCALE`` on slow machines;
wait on events with it, never sleep to synchronise.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

TIMEOUT = 10.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))

# The helpers below need TIMEOUT defined first.
from .clock import FakeClock  # noqa: E402
from .publisher import RecordedPublication, RecordingPublisher  # noqa: E402

if TYPE_CHECKING:
    from tidings.brokers.memory import MemoryBackend
    from tidings.core.clock import Clock
    from tidings.core.node import Node
    from tidings.server import Server

    from .conformance import (
        BROKER_CHECKS,
        PRESENCE_CHECKS,
        RecordingHandler,
        check_broker,
        check_presence,
    )
    from .recording import RecordingSubscriber, RecordingTransport

# Imported on first use: they need the whole server's dependencies, and an application
# that only publishes (``RecordingPublisher``) has the Publisher's alone.
_LAZY = {
    "BROKER_CHECKS": "conformance",
    "PRESENCE_CHECKS": "conformance",
    "RecordingHandler": "conformance",
    "check_broker": "conformance",
    "check_presence": "conformance",
    "RecordingSubscriber": "recording",
    "RecordingTransport": "recording",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidings.testing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BROKER_CHECKS",
    "PRESENCE_CHECKS",
    "TIMEOUT",
    "FakeClock",
    "RecordedPublication",
    "RecordingHandler",
    "RecordingPublisher",
    "RecordingSubscriber",
    "RecordingTransport",
    "check_broker",
    "check_presence",
    "memory_node",
    "running_server",
]


def memory_node(
    backend: MemoryBackend | None = None,
    *,
    clock: Clock | None = None,
    presence_ttl: float = 60.0,
    **options: Any,
) -> Node:
    """An unstarted ``Node`` on ``backend`` (a new one by default); ``options`` go to
    ``Node`` (``namespaces``, ``token_verifier``, ``recovery_limit``…)."""
    from tidings.brokers import MemoryBackend, MemoryBroker, MemoryController
    from tidings.brokers import MemoryPresenceManager as Presence
    from tidings.core.node import Node

    backend = backend or MemoryBackend(clock=clock)
    clock = clock or backend.clock
    return Node(
        MemoryBroker(backend),
        Presence(backend, ttl=presence_ttl),
        MemoryController(backend),
        clock=clock,
        **options,
    )


@asynccontextmanager
async def running_server(**settings: Any) -> AsyncIterator[Server]:
    """A started ``Server`` on 127.0.0.1, port 0; ``api_key`` defaults to ``"test-key"``."""
    from tidings.config import Config
    from tidings.server import Server

    settings.setdefault("host", "127.0.0.1")
    settings.setdefault("port", 0)
    settings.setdefault("api_key", "test-key")
    server = Server(Config(**settings))
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
