"""The application: the composition root of one tidings node, apart from any listener.

``App(config)`` builds the broker, presence manager and controller the configuration names
(``make_backend``), the ``Node`` around them, the server API and the stream templates, and
keeps the registry of live connections with its heartbeat. A listener mounts an ``App``:
``tidings.server.Server`` on a socket (an ASGI front end can do the same); none of them
builds the node itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from tidings.api.server_api import ServerApi
from tidings.brokers.memory import MemoryBackend, MemoryBroker
from tidings.brokers.memory_control import MemoryController, MemoryPresenceManager
from tidings.config import Config
from tidings.core.broker import Broker
from tidings.core.clock import Clock, SystemClock, Timer
from tidings.core.control import Controller
from tidings.core.node import Node
from tidings.core.presence import PresenceManager
from tidings.exceptions import ConfigError

__all__ = ["KINDS", "App", "Backend", "Connection", "make_backend"]

log = logging.getLogger("tidings.app")

KINDS = ("ws", "sse", "stream", "lp", "client", "http")


class Connection(Protocol):
    """One live connection, whatever its transport, as the application sees it."""

    @property
    def kind(self) -> str:
        """One of ``KINDS``: what ``/stats`` counts it as."""

    @property
    def closed(self) -> bool:
        """True once it stopped delivering."""

    def ping(self) -> None:
        """The heartbeat: ping the client, or cut off one that didn't answer the last."""

    def shutdown(self, reason: str) -> None:
        """Tell the client why (``shutdown``) and close when it has been told."""

    def abort(self) -> None:
        """Close at once (a client that didn't go in time)."""


@dataclass(slots=True)
class Backend:
    """What a node runs on."""

    broker: Broker
    presence: PresenceManager
    controller: Controller


def make_backend(config: Config, clock: Clock | None = None) -> Backend:
    """The broker, presence manager and controller ``config.broker`` names."""
    if config.broker != "memory":
        raise ConfigError(f"broker: unknown broker {config.broker!r} (known: memory)")
    backend = MemoryBackend(clock=clock)
    return Backend(
        MemoryBroker(backend),
        MemoryPresenceManager(backend, ttl=config.presence_ttl),
        MemoryController(backend),
    )


class App:
    """Config → node, broker, presence, controller, server API, templates, connections."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config = config or Config()
        config.validate()
        self.clock: Clock = clock or SystemClock()
        backend = backend or make_backend(config, self.clock)
        self.node = Node(
            backend.broker,
            backend.presence,
            backend.controller,
            config.channel_namespaces(),
            token_verifier=config.token_verifier(),
            clock=self.clock,
            recovery_limit=config.recovery_max_publications,
        )
        self.api = ServerApi(self.node)
        self.client_options = config.client_options()
        self.templates = config.message_templates()
        self.connections: set[Connection] = set()
        self.slow_disconnects = 0
        self.stopping = False
        self._heartbeat: Timer | None = None
        self._empty = asyncio.Event()

    async def start(self) -> None:
        await self.node.start()
        self._heartbeat = self.clock.call_later(self.config.ping_interval, self._beat)

    # connection registry
    def admit(self, conn: Connection) -> bool:
        """Register a new connection; False at the connection limit or when stopping."""
        if len(self.connections) >= self.config.max_connections or self.stopping:
            return False
        self.connections.add(conn)
        return True

    def replace(self, old: Connection, new: Connection) -> None:
        self.connections.discard(old)
        self.connections.add(new)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.stopping and not self.connections:
            self._empty.set()

    def connection_counts(self) -> dict[str, int]:
        counts = Counter(conn.kind for conn in self.connections)
        return {kind: counts.get(kind, 0) for kind in KINDS}

    def _beat(self) -> None:
        """Ping every connection (each kind knows how: WebSocket pings, SSE comments)."""
        for conn in list(self.connections):
            if not conn.closed:
                conn.ping()
        self._heartbeat = self.clock.call_later(self.config.ping_interval, self._beat)

    # shutdown
    async def aclose(self) -> None:
        """Tell every client, wait up to ``shutdown_timeout`` for them to go, abort the
        rest, and stop the node."""
        if self.stopping:
            return
        self.stopping = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for conn in list(self.connections):
            conn.shutdown("shutdown")
        if self.connections:
            try:
                await asyncio.wait_for(self._empty.wait(), self.config.shutdown_timeout)
            except TimeoutError:
                log.info("aborting %d connections at shutdown", len(self.connections))
                for conn in list(self.connections):
                    conn.abort()
                self.connections.clear()
        await self.node.aclose()
