"""The application: the composition root of one tidings node, apart from any listener.

``App(config)`` builds the broker, presence manager and controller the configuration names
(``make_backend``), the ``Node`` around them, the hooks (from the modules ``hooks`` names,
and ``app.hooks`` in code), the server API and the stream templates, and keeps the registry
of live connections with its heartbeat. A listener mounts an ``App``:
``tidings.server.Server`` on a socket (an ASGI front end can do the same); none of them
builds the node itself.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tidings.api.server_api import ServerApi
from tidings.brokers.memory import MemoryBackend, MemoryBroker
from tidings.brokers.memory_control import MemoryController, MemoryPresenceManager
from tidings.brokers.sqlite import SqliteBackend, SqliteBroker
from tidings.brokers.sqlite_file import store_path
from tidings.config import Config
from tidings.core.broker import Broker
from tidings.core.clock import Clock, SystemClock, Timer
from tidings.core.control import Controller
from tidings.core.hooks import Hook, Hooks, default_hooks
from tidings.core.node import Node
from tidings.core.presence import PresenceManager
from tidings.exceptions import ConfigError, InvalidPayload
from tidings.protocol.envelope import EVENT_NAME, check_json_payload
from tidings.proxy import HttpProxies

if TYPE_CHECKING:
    from tidings.server.chat import ChatDemo

__all__ = [
    "KINDS",
    "STREAMING",
    "AddressLimits",
    "App",
    "Backend",
    "Connection",
    "default_node_name",
    "load_hooks",
    "make_backend",
]

log = logging.getLogger("tidings.app")

KINDS = ("ws", "sse", "stream", "lp", "client", "http")
# The kinds that stream (one long connection each): their open and close are logged.
STREAMING = frozenset(("ws", "sse", "stream", "client"))
conn_log = logging.getLogger("tidings.connections")


class Connection(Protocol):
    """One live connection, whatever its transport, as the application sees it."""

    @property
    def kind(self) -> str:
        """One of ``KINDS``: what ``/stats`` counts it as."""

    @property
    def closed(self) -> bool:
        """True once it stopped delivering."""

    @property
    def remote(self) -> str:
        """The peer's address as logs show it: ``127.0.0.1:5000``."""

    @property
    def close_reason(self) -> str:
        """Why it ended ("" while open): ``slow``, ``shutdown``, ``deleted``, ``error``,
        ``server``, ``client`` or ``lost`` (``Outbox.ended``)."""

    @property
    def close_code(self) -> int:
        """The WebSocket or client-protocol close code that ended it; 0 for none."""

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


def make_backend(config: Config, clock: Clock | None = None, node_name: str = "") -> Backend:
    """The broker, presence manager and controller ``config.broker`` (and
    ``history_path``) name."""
    settings = config.redis_settings(node_name or default_node_name())
    path = store_path(config.broker, config.history_path, config.history_sync)
    if path:
        durable = SqliteBackend(path, sync=config.history_sync, clock=clock)
        return Backend(
            SqliteBroker(durable),
            MemoryPresenceManager(durable.memory, ttl=config.presence_ttl),
            MemoryController(durable.memory),
        )
    if settings is None:
        backend = MemoryBackend(clock=clock)
        return Backend(
            MemoryBroker(backend),
            MemoryPresenceManager(backend, ttl=config.presence_ttl),
            MemoryController(backend),
        )
    try:
        from tidings.brokers.redis import RedisBroker
        from tidings.brokers.redis_backend import RedisBackend
        from tidings.brokers.redis_control import RedisController, RedisPresenceManager
    except ImportError as exc:
        raise ConfigError(
            f"broker {config.broker!r} needs the redis extra: pip install 'tidings[redis]' ({exc})"
        ) from None
    shared = RedisBackend(settings)
    return Backend(
        RedisBroker(shared),
        RedisPresenceManager(shared, ttl=config.presence_ttl),
        RedisController(shared, timeout=config.redis_timeout),
    )


def default_node_name() -> str:
    """``<host>-<pid>``: what ``info`` and Redis' CLIENT LIST show for this process."""
    return f"{socket.gethostname()}-{os.getpid()}"


def load_hooks(module: str) -> list[Hook]:
    """Import ``module`` and return its hooks: those it (or a module below it) registered
    on ``tidings.hooks``, and those of any ``Hooks`` registry it holds. An import that
    fails raises ``ConfigError`` with the import error as its cause."""
    try:
        mod = importlib.import_module(module)
    except Exception as exc:
        raise ConfigError(f"hooks: can't import {module!r}: {exc!r}") from exc
    found = default_hooks.of_module(module)
    for value in vars(mod).values():
        if isinstance(value, Hooks) and value is not default_hooks:
            found += [h for hooks in value.lists.values() for h in hooks if h not in found]
    return found


class AddressLimits:
    """Per client address: at most ``max_connections_per_ip`` at once and a token bucket
    of new connections (``connection_rate_per_ip`` a second, ``connection_burst_per_ip``
    at once). Loopback addresses — a reverse proxy's, the machine's own — are exempt unless
    ``limit_loopback``."""

    def __init__(self, config: Config, clock: Clock) -> None:
        self.clock = clock
        self.max_open = config.max_connections_per_ip
        self.rate = config.connection_rate_per_ip
        self.burst = float(config.connection_burst_per_ip)
        self.loopback = config.limit_loopback
        self.open: dict[str, int] = {}
        self.address_of: dict[Connection, str] = {}
        self.buckets: dict[str, tuple[float, float]] = {}  # address → (tokens, when)

    def _applies(self, address: str) -> bool:
        if not (self.max_open or self.rate):
            return False
        if self.loopback:
            return True
        try:
            return not ipaddress.ip_address(address).is_loopback
        except ValueError:
            return True

    def admit(self, conn: Connection, address: str) -> bool:
        if not self._applies(address):
            return True
        if self.max_open and self.open.get(address, 0) >= self.max_open:
            log.warning("connections from %s: at the limit of %d", address, self.max_open)
            return False
        if self.rate:
            now = self.clock.monotonic()
            tokens, then = self.buckets.get(address, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens < 1:
                self.buckets[address] = (tokens, now)
                log.warning("new connections from %s: over %s a second", address, self.rate)
                return False
            self.buckets[address] = (tokens - 1, now)
        self.open[address] = self.open.get(address, 0) + 1
        self.address_of[conn] = address
        return True

    def replace(self, old: Connection, new: Connection) -> None:
        address = self.address_of.pop(old, None)
        if address is not None:
            self.address_of[new] = address

    def forget(self, conn: Connection) -> None:
        address = self.address_of.pop(conn, None)
        if address is not None:
            left = self.open[address] - 1
            if left:
                self.open[address] = left
            else:
                del self.open[address]

    def prune(self) -> None:
        """Drop the buckets that are full again: memory follows recent addresses only."""
        now = self.clock.monotonic()
        full = [
            address
            for address, (tokens, then) in self.buckets.items()
            if tokens + (now - then) * self.rate >= self.burst
        ]
        for address in full:
            del self.buckets[address]


class App:
    """Config → node, broker, presence, controller, server API, templates, connections."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.config = config = config or Config()
        config.validate()
        self.clock: Clock = clock or SystemClock()
        # The application's hooks: the configured modules', then those given here; more
        # may be registered on ``app.hooks`` before connections open.
        self.hooks = Hooks(timeout=config.hook_timeout, threads=config.hook_threads)
        namespaces = config.channel_namespaces()
        if config.demo:
            from tidings.server.chat import chat_namespaces  # the demo's own front end

            namespaces = chat_namespaces(namespaces)
        self.proxies = HttpProxies(config, namespaces)
        if self.proxies.configured():
            self.proxies.register(self.hooks)  # first: the connect proxy sees token-less ones
        for module in config.hook_modules():
            self.hooks.extend(load_hooks(module))
        if hooks is not None:
            self.hooks.extend(hooks)
        name = default_node_name()
        backend = backend or make_backend(config, self.clock, name)
        self.node = Node(
            backend.broker,
            backend.presence,
            backend.controller,
            namespaces,
            token_verifier=config.token_verifier(),
            clock=self.clock,
            recovery_limit=config.recovery_max_publications,
            name=name,
            hooks=self.hooks,
            message_log=config.message_log(),
        )
        self.api = ServerApi(self.node)
        from tidings.server.lpsession import LongPollSessions  # the long-poll endpoint's

        # Long-poll clients between their polls (the native server's and ASGI's /lp).
        self.longpoll_sessions = LongPollSessions(self.node, config)
        # The chat demo (/demo/chat): its rooms, and the hooks that take what pages send.
        self.demo_chat: ChatDemo | None = None
        if config.demo:
            from tidings.server.chat import ChatDemo

            self.demo_chat = ChatDemo(self.node, self.clock)
            self.hooks.extend(self.demo_chat.hooks)
        self.client_options = config.client_options()
        self.templates = config.message_templates()
        self.connections: set[Connection] = set()
        self.limits = AddressLimits(config, self.clock)
        self.slow_disconnects = 0
        # For /metrics, counted where the server already does the work: bytes written to
        # streaming connections, and their ends by (reason, close code).
        self.bytes_out = 0
        self.disconnects: Counter[tuple[str, int]] = Counter()
        self.node.log_publications = config.log_publications
        self.stopping = False
        self._heartbeat: Timer | None = None
        self._empty = asyncio.Event()
        self.inbound: Any = None  # publishing from outside through Redis (redis_inbound.py)

    async def publish_inbound(
        self, channel: str, data: bytes, is_json: bool, event: str | None, key: str
    ) -> None:
        """Publish what came in through Redis, with the checks ``POST /pub`` makes."""
        if len(data) > self.config.max_body_bytes:
            raise InvalidPayload(f"{len(data)} bytes: more than max_body_bytes")
        if event is not None and not EVENT_NAME.fullmatch(event):
            raise InvalidPayload(f"event name {event[:80]!r} not allowed")
        if is_json:
            check_json_payload(data)
        else:
            try:
                data.decode()
            except UnicodeDecodeError:
                raise InvalidPayload("text that is not UTF-8") from None
        await self.node.publish(channel, data, is_json=is_json, event=event, idempotency_key=key)

    async def start(self) -> None:
        await self.node.start()
        broker, config = self.node.broker, self.config
        if config.broker != "memory" and (config.inbound_prefix or config.inbound_stream):
            from tidings.brokers.redis import RedisBroker
            from tidings.brokers.redis_inbound import Inbound

            assert isinstance(broker, RedisBroker)
            self.inbound = Inbound(
                broker.backend,
                self.node.id,
                self.publish_inbound,
                prefix=config.inbound_prefix,
                stream=config.inbound_stream,
            )
            try:
                await self.inbound.start()
            except BaseException:
                await self.node.aclose()
                raise
        self._heartbeat = self.clock.call_later(self.config.ping_interval, self._beat)

    # connection registry
    def admit(self, conn: Connection, address: str | None = None) -> str | None:
        """Register a new connection from ``address``; None when admitted, else why not:
        ``"limit"`` (``max_connections``, or stopping) or ``"address"`` (per-address
        limits)."""
        if len(self.connections) >= self.config.max_connections or self.stopping:
            return "limit"
        if address is not None and not self.limits.admit(conn, address):
            return "address"
        self.connections.add(conn)
        return None

    def replace(self, old: Connection, new: Connection) -> None:
        """``new`` takes over ``old``'s registration: a request became a stream."""
        self.connections.discard(old)
        self.connections.add(new)
        self.limits.replace(old, new)
        kind = new.kind
        if kind in STREAMING:
            remote = new.remote
            fields = {"event": "open", "transport": kind, "remote": remote}
            conn_log.info("%s connection from %s opened", kind, remote, extra={"fields": fields})

    def forget(self, conn: Connection) -> None:
        known = conn in self.connections
        self.connections.discard(conn)
        self.limits.forget(conn)
        if self.stopping and not self.connections:
            self._empty.set()
        kind = conn.kind
        if known and kind in STREAMING:
            reason, code = conn.close_reason or "lost", conn.close_code
            self.disconnects[reason, code] += 1
            remote = conn.remote
            fields = {
                "event": "close",
                "transport": kind,
                "remote": remote,
                "reason": reason,
                "code": code,
            }
            conn_log.info(
                "%s connection from %s closed: %s%s",
                kind,
                remote,
                reason,
                f" {code}" if code else "",
                extra={"fields": fields},
            )

    def connection_counts(self) -> dict[str, int]:
        counts = Counter(conn.kind for conn in self.connections)
        return {kind: counts.get(kind, 0) for kind in KINDS}

    def _beat(self) -> None:
        """Ping every connection (each kind knows how: WebSocket pings, SSE comments)."""
        for conn in list(self.connections):
            if not conn.closed:
                conn.ping()
        self.limits.prune()
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
        self.longpoll_sessions.close()
        if self.hooks:
            # The last hooks of the connections that went, within the shutdown timeout.
            try:
                await asyncio.wait_for(self.node.drain(), self.config.shutdown_timeout)
            except TimeoutError:
                log.warning("hooks still running at shutdown")
        if self.inbound is not None:
            await self.inbound.aclose()
        if self.demo_chat is not None:
            self.demo_chat.close()
        await self.node.aclose()
        self.hooks.close()
        await self.proxies.aclose()
