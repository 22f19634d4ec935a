"""Publishing from outside through Redis: ``PUBLISH tidings:publish:<channel> <payload>``.

Two ways in, both documented in docs/scaling.md:

- **PUB/SUB, at most once.** ``PUBLISH <inbound_prefix>:<channel> <payload>`` (JSON, or
  text when it isn't JSON) or ``PUBLISH <inbound_prefix> {"channel", "data", "event",
  "idempotency_key"}``. Exactly one node — the holder of a lease key, renewed every
  ``LEASE / 3`` seconds — is subscribed and turns each message into a publication, in the
  order Redis delivered them. ``PUBLISH`` answers how many subscribers got the message: 0
  means no node took it (no leader at that instant, during a failover of at most
  ``LEASE`` seconds), and the sender may retry.
- **A stream, at least once.** ``XADD <inbound_stream> * channel <ch> data <payload>
  [event <ev>] [idempotency_key <key>]``. Every node reads it in one consumer group; each
  entry is published by one node, then acknowledged. An entry whose node died before
  acknowledging it is claimed by another after ``CLAIM_IDLE`` seconds and published again
  under the same idempotency key (the entry id by default), so it is published once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tidings.exceptions import BrokerError, TidingsError
from tidings.protocol.envelope import is_json_text

from .redis_backend import RedisBackend

__all__ = ["CLAIM_IDLE", "GROUP", "LEASE", "Inbound", "InboundPublish"]

log = logging.getLogger("tidings.inbound")

LEASE = 6.0  # seconds a leader holds the PUB/SUB lease without renewing it
CLAIM_IDLE = 30.0  # seconds before an unacknowledged stream entry is taken over
GROUP = "tidings"

# (channel, data, is_json, event, idempotency key) → published
InboundPublish = Callable[[str, bytes, bool, str | None, str], Awaitable[Any]]

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class Inbound:
    """The inbound PUB/SUB channels (when this node holds the lease) and the stream."""

    def __init__(
        self,
        backend: RedisBackend,
        node_id: str,
        publish: InboundPublish,
        *,
        prefix: str = "tidings:publish",
        stream: str = "",
    ) -> None:
        self.backend = backend
        self.node_id = node_id
        self.publish = publish
        self.prefix = prefix
        self.stream = stream
        self.lease_key = f"{backend.prefix}:inbound:leader"
        self.leader = False
        self.published = 0
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=100_000)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.prefix:
            self._tasks.append(loop.create_task(self._lease()))
            self._tasks.append(loop.create_task(self._work()))
        if self.stream:
            await self._group()
            self._tasks.append(loop.create_task(self._consume()))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.leader:
            await self._resign()

    # PUB/SUB, one leader
    async def _lease(self) -> None:
        shard = self.backend.shards[0]
        ttl = int(LEASE * 1000)
        while True:
            try:
                held = await self.backend.call(
                    shard, "EVAL", _RENEW, 1, self.lease_key, self.node_id, ttl
                )
                if held and not self.leader:
                    await self._lead()
                elif not held and self.leader:
                    await self._resign()
            except BrokerError as exc:
                log.warning("inbound lease: %s", exc)
                if self.leader:
                    await self._resign()  # another node may take over
            await asyncio.sleep(LEASE / 3)  # the lease's renewal period, not a sync

    async def _lead(self) -> None:
        shard = self.backend.shards[0]
        await self.backend.subscribe(shard, self.prefix.encode(), self._message, b"subscribe")
        pattern = self.prefix.encode() + b":*"
        await self.backend.subscribe(shard, pattern, self._message, b"psubscribe")
        self.leader = True
        log.info("inbound: this node publishes what comes on %s:*", self.prefix)

    async def _resign(self) -> None:
        self.leader = False
        await self.backend.unsubscribe(self.prefix.encode() + b":*")
        await self.backend.unsubscribe(self.prefix.encode())
        with contextlib.suppress(BrokerError):
            await self.backend.call(
                self.backend.shards[0],
                "EVAL",
                "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end",
                1,
                self.lease_key,
                self.node_id,
            )

    def _message(self, name: bytes, payload: bytes) -> None:
        try:
            self._queue.put_nowait((name.decode(errors="replace"), payload))
        except asyncio.QueueFull:
            log.warning("inbound queue full: message on %s dropped", name)

    async def _work(self) -> None:
        # One at a time: publications keep the order Redis delivered the messages in.
        while True:
            name, payload = await self._queue.get()
            await self._handle(name, payload)

    async def _handle(self, name: str, payload: bytes) -> None:
        if name == self.prefix:
            try:
                message = orjson.loads(payload)
                channel = message["channel"]
                data = message["data"]
                event = message.get("event")
                key = message.get("idempotency_key") or ""
                if not isinstance(channel, str) or not isinstance(key, str):
                    raise TypeError("channel and idempotency_key must be strings")
                if event is not None and not isinstance(event, str):
                    raise TypeError("event must be a string")
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                log.warning("inbound message on %s refused: %s", name, exc)
                return
            raw, is_json = orjson.dumps(data), True
        else:
            channel = name[len(self.prefix) + 1 :]
            raw, is_json, event, key = payload, is_json_text(payload), None, ""
        await self._publish(channel, raw, is_json, event, key)

    async def _publish(
        self, channel: str, data: bytes, is_json: bool, event: Any, key: str
    ) -> bool:
        try:
            await self.publish(channel, data, is_json, event, key)
        except TidingsError as exc:
            # Bad channel names and payloads are the sender's; broker failures are logged.
            log.warning("inbound publication to %r refused: %s", channel, exc)
            return not isinstance(exc, BrokerError)
        self.published += 1
        return True

    # the stream, at least once
    async def _group(self) -> None:
        shard = self.backend.shard(self.stream)
        try:
            await self.backend.call(shard, "XGROUP", "CREATE", self.stream, GROUP, "$", "MKSTREAM")
        except BrokerError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _consume(self) -> None:
        shard = self.backend.shard(self.stream)
        claim_every = CLAIM_IDLE / 3
        last_claim = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() - last_claim > claim_every:
                    last_claim = loop.time()
                    reply = await self.backend.call(
                        shard,
                        "XAUTOCLAIM",
                        self.stream,
                        GROUP,
                        self.node_id,
                        int(CLAIM_IDLE * 1000),
                        "0-0",
                        "COUNT",
                        100,
                    )
                    await self._entries(shard, reply[1])
                reply = await self.backend.call(
                    shard,
                    "XREADGROUP",
                    "GROUP",
                    GROUP,
                    self.node_id,
                    "COUNT",
                    100,
                    "BLOCK",
                    1000,
                    "STREAMS",
                    self.stream,
                    ">",
                )
                for _, entries in reply or []:
                    await self._entries(shard, entries)
            except BrokerError as exc:
                if "NOGROUP" in str(exc):
                    with contextlib.suppress(BrokerError):
                        await self._group()
                log.warning("inbound stream %s: %s", self.stream, exc)
                await asyncio.sleep(1.0)  # back off before reading again, not a sync

    async def _entries(self, shard: Any, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            if fields is None:
                continue  # deleted meanwhile
            pairs = (
                fields
                if isinstance(fields, dict)
                else dict(zip(fields[::2], fields[1::2], strict=True))
            )
            values = {bytes(k).decode(errors="replace"): bytes(v) for k, v in pairs.items()}
            ident = bytes(entry_id).decode()
            channel = values.get("channel", b"").decode(errors="replace")
            data = values.get("data", b"")
            event = values["event"].decode(errors="replace") if "event" in values else None
            key = values.get("idempotency_key", b"").decode(errors="replace") or f"xadd:{ident}"
            done = await self._publish(channel, data, is_json_text(data), event, key)
            if done:
                await self.backend.call(shard, "XACK", self.stream, GROUP, ident)
