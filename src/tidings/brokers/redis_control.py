"""Presence and node-to-node commands through Redis.

Presence entries of a channel live in one hash and one sorted set of expiry times (see
``redis_scripts``), on the channel's shard.

The controller keeps a registry of live nodes (hash ``<prefix>:nodes``: node id → expiry,
refreshed every third of ``node_ttl``) and carries commands over PUB/SUB on the first
shard: ``<prefix>:control`` reaches every node, ``<prefix>:node:<id>`` one node, and
answers come back on ``<prefix>:reply:<id>`` of the asking node. Every message is JSON:
``{"id", "from", "command"}`` out, ``{"id", "answer"}`` back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import orjson

from tidings.core.control import Controller
from tidings.core.presence import PresenceManager, PresenceStats
from tidings.core.publication import ClientInfo
from tidings.exceptions import BrokerError, ControlError

from .redis_backend import RedisBackend
from .redis_scripts import decode_info, encode_info
from .redis_settings import RedisSettings

__all__ = ["RedisController", "RedisPresenceManager"]

log = logging.getLogger("tidings.control")


def _backend(backend: RedisBackend | RedisSettings) -> RedisBackend:
    return backend if isinstance(backend, RedisBackend) else RedisBackend(backend)


class RedisPresenceManager(PresenceManager):
    """Presence entries in Redis, each expiring ``ttl`` seconds after its last add."""

    def __init__(self, backend: RedisBackend | RedisSettings, *, ttl: float = 60.0) -> None:
        self.backend = _backend(backend)
        self.ttl = ttl

    async def start(self) -> None:
        await self.backend.start()

    async def aclose(self) -> None:
        await self.backend.aclose()

    def _keys(self, channel: str) -> list[str]:
        base = f"{self.backend.prefix}:{{{channel}}}"
        return [f"{base}:p", f"{base}:pz"]

    async def add(self, channel: str, info: ClientInfo) -> None:
        shard = self.backend.shard(channel)
        args = [info.client, encode_info(info), max(1, int(self.ttl * 1000))]
        await self.backend.script(shard, "presence_add", self._keys(channel), args)

    async def remove(self, channel: str, client: str) -> None:
        shard = self.backend.shard(channel)
        hash_key, zset = self._keys(channel)
        await self.backend.call(shard, "HDEL", hash_key, client)
        await self.backend.call(shard, "ZREM", zset, client)

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        shard = self.backend.shard(channel)
        flat = await self.backend.script(shard, "presence", self._keys(channel), [])
        result = {}
        for i in range(0, len(flat), 2):
            try:
                result[bytes(flat[i]).decode()] = decode_info(bytes(flat[i + 1]))
            except (ValueError, TypeError) as exc:
                log.warning("presence entry in %s unreadable: %s", channel, exc)
        return result

    async def stats(self, channel: str) -> PresenceStats:
        entries = await self.presence(channel)
        return PresenceStats(len(entries), len({info.user for info in entries.values()}))


class RedisController(Controller):
    """Commands between the nodes on one Redis deployment (contract: core/control.py)."""

    def __init__(
        self,
        backend: RedisBackend | RedisSettings,
        *,
        timeout: float = 5.0,
        node_ttl: float = 15.0,
    ) -> None:
        self.backend = _backend(backend)
        self.timeout = timeout
        self.node_ttl = node_ttl
        prefix = self.backend.prefix
        self._registry = f"{prefix}:nodes"
        self._all = f"{prefix}:control"
        self._waiting: dict[str, tuple[asyncio.Future[None], list[dict[str, Any]], int]] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._names: list[bytes] = []

    def _one(self, node_id: str) -> str:
        return f"{self.backend.prefix}:node:{node_id}"

    def _reply(self, node_id: str) -> str:
        return f"{self.backend.prefix}:reply:{node_id}"

    @property
    def _shard(self) -> Any:
        return self.backend.shards[0]

    async def start(self) -> None:
        await self.backend.start()
        try:
            for name in (self._all, self._one(self.node_id), self._reply(self.node_id)):
                raw = name.encode()
                handler = (
                    self._on_answer
                    if name.startswith(f"{self.backend.prefix}:reply:")
                    else (self._on_command)
                )
                await self.backend.subscribe(self._shard, raw, handler, b"subscribe")
                self._names.append(raw)
            await self._register()
        except BaseException:
            await self._leave()
            raise
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(BrokerError):
            await self.backend.call(self._shard, "HDEL", self._registry, self.node_id)
        await self._leave()

    async def _leave(self) -> None:
        for name in self._names:
            await self.backend.unsubscribe(name)
        self._names.clear()
        for task in list(self._tasks):
            task.cancel()
        await self.backend.aclose()

    async def _register(self) -> None:
        expires = int((time.time() + self.node_ttl) * 1000)
        await self.backend.call(self._shard, "HSET", self._registry, self.node_id, expires)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.node_ttl / 3)  # the heartbeat's period, not a sync
            try:
                await self._register()
                await self._sweep()
            except BrokerError as exc:
                log.warning("node registry heartbeat failed: %s", exc)

    async def _sweep(self) -> None:
        entries = await self.backend.call(self._shard, "HGETALL", self._registry)
        now = time.time() * 1000
        dead = [k for k, v in _pairs(entries) if int(v) < now]
        if dead:
            await self.backend.call(self._shard, "HDEL", self._registry, *dead)

    async def nodes(self) -> list[str]:
        try:
            entries = await self.backend.call(self._shard, "HGETALL", self._registry)
        except BrokerError as exc:
            raise ControlError(f"node registry unreachable: {exc}") from None
        now = time.time() * 1000
        return sorted(k.decode() for k, v in _pairs(entries) if int(v) >= now)

    # sending
    async def _ask(self, channel: str, command: dict[str, Any], expect: int | None) -> list[Any]:
        """Publish ``command`` on ``channel``; the answers that came within the timeout
        (as soon as ``expect`` did; None: as many as Redis says received it)."""
        request = secrets.token_hex(8)
        done = asyncio.get_running_loop().create_future()
        answers: list[dict[str, Any]] = []
        message = orjson.dumps({"id": request, "from": self.node_id, "command": command})
        self._waiting[request] = (done, answers, expect or 0)
        try:
            try:
                received = await self.backend.call(self._shard, "PUBLISH", channel, message)
            except BrokerError as exc:
                raise ControlError(f"control channel unreachable: {exc}") from None
            if expect is None:
                # Standalone Redis counts the receivers; a Cluster counts only the local
                # node's, so there the registry tells how many to wait for.
                expect = int(received) if not self._shard.cluster else len(await self.nodes())
                self._waiting[request] = (done, answers, expect)
            if len(answers) < expect:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timeout):  # not wait_for: gh-86296
                        await done
            return answers
        finally:
            del self._waiting[request]

    async def broadcast(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        answers = await self._ask(self._all, command, None)
        return [a["answer"] for a in answers]

    async def send(self, node_id: str, command: dict[str, Any]) -> dict[str, Any]:
        if not self._shard.cluster or node_id in await self.nodes():
            answers = await self._ask(self._one(node_id), command, 1)
        else:
            raise ControlError(f"unknown node {node_id}")
        if not answers:
            raise ControlError(f"node {node_id} did not answer")
        answer: dict[str, Any] = answers[0]["answer"]
        return answer

    # receiving
    def _on_answer(self, _: bytes, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
            waiting = self._waiting.get(message["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("unreadable control answer")
            return
        if waiting is None:
            return  # too late
        done, answers, expect = waiting
        answers.append(message)
        if expect and len(answers) >= expect and not done.done():
            done.set_result(None)

    def _on_command(self, _: bytes, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
            request, sender, command = message["id"], message["from"], message["command"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("unreadable control command")
            return
        task = asyncio.get_running_loop().create_task(self._run(request, sender, command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, request: str, sender: str, command: dict[str, Any]) -> None:
        handler = self.handler
        if handler is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                answer = await handler.handle_control(command)
        except Exception as exc:
            log.warning("control command %s failed: %r", command.get("method"), exc)
            return
        reply = orjson.dumps({"id": request, "answer": answer})
        try:
            await self.backend.call(self._shard, "PUBLISH", self._reply(sender), reply)
        except BrokerError as exc:
            log.warning("control answer to %s lost: %s", sender, exc)


def _pairs(entries: Any) -> list[tuple[bytes, bytes]]:
    if isinstance(entries, dict):
        return list(entries.items())
    return [(entries[i], entries[i + 1]) for i in range(0, len(entries), 2)]
