"""Presence and node-to-node commands on a ``MemoryBackend``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from tidings.core.control import Controller
from tidings.core.presence import PresenceManager, PresenceStats
from tidings.core.publication import ClientInfo
from tidings.exceptions import BrokerUnavailable, ControlError

from .memory import MemoryBackend

__all__ = ["MemoryController", "MemoryPresenceManager"]

log = logging.getLogger("tidings.control")


class MemoryPresenceManager(PresenceManager):
    """Presence entries in the backend, each expiring ``ttl`` seconds after its last add."""

    def __init__(self, backend: MemoryBackend | None = None, *, ttl: float = 60.0) -> None:
        self.backend = backend or MemoryBackend()
        self.ttl = ttl

    async def add(self, channel: str, info: ClientInfo) -> None:
        backend = self.backend
        if self in backend.dead:
            raise BrokerUnavailable("backend unreachable")
        expires = backend.clock.monotonic() + self.ttl
        backend.presence.setdefault(channel, {})[info.client] = (info, expires)

    async def remove(self, channel: str, client: str) -> None:
        if self in self.backend.dead:
            raise BrokerUnavailable("backend unreachable")
        clients = self.backend.presence.get(channel)
        if clients is not None:
            clients.pop(client, None)
            if not clients:
                del self.backend.presence[channel]

    def _live(self, channel: str) -> dict[str, tuple[ClientInfo, float]]:
        clients = self.backend.presence.get(channel)
        if not clients:
            return {}
        now = self.backend.clock.monotonic()
        for client in [c for c, (_, expires) in clients.items() if expires <= now]:
            del clients[client]
        if not clients:
            del self.backend.presence[channel]
        return clients

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        return {client: info for client, (info, _) in self._live(channel).items()}

    async def stats(self, channel: str) -> PresenceStats:
        clients = self._live(channel)
        return PresenceStats(len(clients), len({info.user for info, _ in clients.values()}))


class MemoryController(Controller):
    """Commands between the nodes sharing a backend. Commands and answers go through JSON
    on the way, as they would over a network (contract, point 4)."""

    def __init__(self, backend: MemoryBackend | None = None, *, timeout: float = 5.0) -> None:
        self.backend = backend or MemoryBackend()
        self.timeout = timeout

    async def start(self) -> None:
        self.backend.controllers[self.node_id] = self

    async def aclose(self) -> None:
        if self.backend.controllers.get(self.node_id) is self:
            del self.backend.controllers[self.node_id]

    async def _run(self, target: MemoryController, payload: bytes) -> dict[str, Any]:
        handler = target.handler
        if handler is None:
            raise ControlError(f"node {target.node_id} has no handler")
        async with asyncio.timeout(self.timeout):
            answer = await handler.handle_control(orjson.loads(payload))
        result: dict[str, Any] = orjson.loads(orjson.dumps(answer))
        return result

    async def broadcast(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        if self in self.backend.dead:
            raise ControlError("backend unreachable")
        payload = orjson.dumps(command)
        targets = list(self.backend.controllers.values())
        outcomes = await asyncio.gather(
            *(self._run(t, payload) for t in targets), return_exceptions=True
        )
        answers = []
        for target, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("node %s did not answer %s: %r", target.node_id, command, outcome)
            else:
                answers.append(outcome)
        return answers

    async def send(self, node_id: str, command: dict[str, Any]) -> dict[str, Any]:
        target = self.backend.controllers.get(node_id)
        if target is None or self in self.backend.dead:
            raise ControlError(f"unknown node {node_id}")
        try:
            return await self._run(target, orjson.dumps(command))
        except TimeoutError:
            raise ControlError(f"node {node_id} did not answer") from None

    async def nodes(self) -> list[str]:
        return list(self.backend.controllers)
