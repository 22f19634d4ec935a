"""The Redis broker: streams, history and delivery between nodes through Redis.

Every publish is one Lua script (``redis_scripts.PUBLISH_SCRIPT``) that checks the
idempotency key, bumps the offset (creating the epoch when the stream is new), appends to
the history, trims it by size and age, and PUBLISHes the publication to the channel's
PUB/SUB name — all atomically, so publications of a channel are delivered in offset order
whatever node made them. History reads are one script too (``HISTORY_SCRIPT``), which
returns the stream's position with the entries.

Delivery is PUB/SUB on a few multiplexed connections per node (``RedisBackend``), at most
once. When a PUB/SUB connection is lost and made again, the node is told which channels
may have missed publications (``on_resync``) and compares each with its stream.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from tidings.core.broker import Broker, HistoryQuery, PublishOptions, PublishResult, StreamInfo
from tidings.core.publication import ClientInfo, HistoryResult, StreamPosition
from tidings.core.tick import Later

from .redis_backend import RedisBackend, RedisShard, redis_error
from .redis_commands import Commands
from .redis_scripts import (
    decode_info,
    decode_publication,
    encode_info,
    encode_publication,
    keys,
    pubsub_channel,
)
from .redis_settings import RedisSettings

__all__ = ["RedisBroker", "epoch_candidate", "publish_args", "publish_result"]

log = logging.getLogger("tidings.redis")


_EPOCH_BASE = secrets.token_urlsafe(6)
_epochs = itertools.count()


def epoch_candidate() -> str:
    """The epoch a stream gets if this publish creates it: unique per process (a random
    base) and per call (a counter), without asking the OS for randomness each time."""
    return f"{_EPOCH_BASE}{next(_epochs):x}"


def publish_args(
    prefix: str,
    channel: str,
    data: bytes,
    options: PublishOptions,
    *,
    cluster: bool,
    is_json: bool = True,
    event: str | None = None,
    info: ClientInfo | None = None,
    tags: dict[str, str] | None = None,
    delta: bool = False,
) -> tuple[list[str], list[Any]]:
    """The publish script's keys and arguments (shared with ``Publisher("redis://…")``)."""
    key = options.idempotency_key
    blob = encode_publication(
        data,
        is_json=is_json,
        event=event,
        time_ms=int(time.time() * 1000),
        info=info,
        tags=tags,
        delta=delta,
        exclude_client=options.exclude_client,
    )
    args = [
        blob,
        options.history_size,
        int(options.history_ttl * 1000),
        max(1, int(options.meta_ttl * 1000)),
        int(options.idempotency_ttl * 1000) if key else 0,
        pubsub_channel(prefix, channel),
        epoch_candidate(),
        1 if cluster else 0,
        channel,
    ]
    return keys(prefix, channel, key), args


def publish_result(reply: Any) -> PublishResult:
    position, duplicate = reply
    offset, _, epoch = bytes(position).decode().partition(":")
    return PublishResult(StreamPosition(int(offset), epoch), bool(int(duplicate)))


def _settled(reply: Any, error: BaseException | None) -> PublishResult:
    if error is not None:
        raise error
    return publish_result(reply)


class RedisBroker(Broker):
    """A node's broker on Redis (standalone, sharded, Sentinel or Cluster)."""

    def __init__(self, backend: RedisBackend | RedisSettings) -> None:
        self.backend = backend if isinstance(backend, RedisBackend) else RedisBackend(backend)
        self.prefix = self.backend.prefix
        self._names: dict[bytes, str] = {}  # PUB/SUB name → channel

    async def start(self) -> None:
        await self.backend.start()
        self.backend.listeners.append(self._restored)

    async def aclose(self) -> None:
        if self._restored in self.backend.listeners:
            self.backend.listeners.remove(self._restored)
        for name in list(self._names):
            await self.backend.unsubscribe(name)
        self._names.clear()
        await self.backend.aclose()

    def health(self) -> str:
        return self.backend.health()

    def _shard(self, channel: str) -> RedisShard:
        return self.backend.shard(channel)

    # publishing
    def publish_nowait(
        self,
        channel: str,
        data: bytes,
        options: PublishOptions,
        *,
        is_json: bool = True,
        event: str | None = None,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        delta: bool = False,
    ) -> Later[PublishResult] | None:
        """The script on our own connection (not on a Cluster): a ``Later`` settled in the
        read callback of its reply, so an HTTP publish is answered there, without a task."""
        shard = self._shard(channel)
        commands = shard.pipeliner
        if not isinstance(commands, Commands):
            return None
        script_keys, args = publish_args(
            self.prefix,
            channel,
            data,
            options,
            cluster=False,
            is_json=is_json,
            event=event,
            info=info,
            tags=tags,
            delta=delta,
        )
        return commands.run("publish", script_keys, args).then(_settled)

    async def publish(
        self,
        channel: str,
        data: bytes,
        options: PublishOptions,
        *,
        is_json: bool = True,
        event: str | None = None,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        delta: bool = False,
    ) -> PublishResult:
        shard = self._shard(channel)
        script_keys, args = publish_args(
            self.prefix,
            channel,
            data,
            options,
            cluster=shard.cluster,
            is_json=is_json,
            event=event,
            info=info,
            tags=tags,
            delta=delta,
        )
        reply = await self.backend.script(shard, "publish", script_keys, args)
        return publish_result(reply)

    async def _notify(self, channel: str, message: bytes) -> None:
        shard = self._shard(channel)
        command = "SPUBLISH" if shard.cluster else "PUBLISH"
        await self.backend.call(shard, command, pubsub_channel(self.prefix, channel), message)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self._notify(channel, b"j" + encode_info(info))

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self._notify(channel, b"l" + encode_info(info))

    # streams
    async def history(self, channel: str, query: HistoryQuery) -> HistoryResult:
        shard = self._shard(channel)
        since = query.since
        args = [
            since.offset if since is not None else -1,
            since.epoch if since is not None else "",
            query.limit if query.limit is not None else -1,
            1 if query.reverse else 0,
            86_400_000,
            epoch_candidate(),
            channel,
        ]
        reply = await self.backend.script(shard, "history", keys(self.prefix, channel)[:2], args)
        offset, epoch = int(reply[0]), bytes(reply[1]).decode()
        pubs = []
        for i in range(2, len(reply), 2):
            entry_id, raw = bytes(reply[i]), reply[i + 1]
            pub_offset = int(entry_id.partition(b"-")[0])
            try:
                pubs.append(decode_publication(channel, pub_offset, epoch, bytes(raw)))
            except (ValueError, TypeError) as exc:
                log.warning("history of %s: entry %r unreadable: %s", channel, entry_id, exc)
        return HistoryResult(pubs, StreamPosition(offset, epoch))

    async def remove_history(self, channel: str) -> None:
        await self.backend.call(self._shard(channel), "DEL", keys(self.prefix, channel)[1])

    async def delete_channel(self, channel: str) -> None:
        meta, hist, _ = keys(self.prefix, channel)
        await self.backend.call(self._shard(channel), "DEL", meta, hist)
        await self._notify(channel, b"d")

    async def stream_info(self, channels: Sequence[str]) -> dict[str, StreamInfo]:
        by_shard: dict[int, list[str]] = {}
        for channel in channels:
            by_shard.setdefault(id(self._shard(channel)), []).append(channel)
        result: dict[str, StreamInfo] = {}
        for group in by_shard.values():
            shard = self._shard(group[0])
            try:
                async with shard.client.pipeline(transaction=False) as pipe:
                    for channel in group:
                        meta, hist, _ = keys(self.prefix, channel)
                        pipe.hmget(meta, "o", "e", "s")
                        pipe.xlen(hist)
                    replies = await pipe.execute()
            except Exception as exc:
                raise redis_error(shard.address, exc) from None
            for i, channel in enumerate(group):
                (offset, epoch, size), stored = replies[2 * i], replies[2 * i + 1]
                if epoch is not None:
                    position = StreamPosition(int(offset or 0), bytes(epoch).decode())
                    # XADD trims approximately: what counts is within the size.
                    kept = min(int(stored), int(size)) if size is not None else int(stored)
                    result[channel] = StreamInfo(position, kept)
        return result

    async def channels(self, prefix: str = "", limit: int = 10000) -> list[str]:
        names: list[str] = []
        pattern = f"{self.prefix}:{{{_glob_escape(prefix)}*}}:m"
        for shard in self.backend.shards:
            try:
                found = [key async for key in shard.client.scan_iter(match=pattern, count=1000)]
            except Exception as exc:
                raise redis_error(shard.address, exc) from None
            start = len(self.prefix) + 2
            names.extend(bytes(k)[start:-3].decode() for k in found)
        return sorted(set(names))[:limit]

    # delivery
    async def subscribe(self, channel: str) -> None:
        name = pubsub_channel(self.prefix, channel).encode()
        self._names[name] = channel
        try:
            await self.backend.subscribe(self._shard(channel), name, self._message)
        except BaseException:
            self._names.pop(name, None)
            raise

    async def unsubscribe(self, channel: str) -> None:
        name = pubsub_channel(self.prefix, channel).encode()
        if self._names.pop(name, None) is not None:
            await self.backend.unsubscribe(name)

    def _message(self, name: bytes, payload: bytes) -> None:
        channel = self._names.get(name)
        handler = self.handler
        if channel is None or handler is None or not payload:
            return
        kind = payload[:1]
        try:
            if kind == b"p":
                first = payload.index(b":", 1)
                second = payload.index(b":", first + 1)
                pub = decode_publication(
                    channel,
                    int(payload[1:first]),
                    payload[first + 1 : second].decode(),
                    payload[second + 1 :],
                )
                handler.on_publication(pub)
            elif kind == b"j":
                handler.on_join(channel, decode_info(payload[1:]))
            elif kind == b"l":
                handler.on_leave(channel, decode_info(payload[1:]))
            elif kind == b"d":
                handler.on_channel_deleted(channel)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            log.warning("redis message on %s unreadable: %s", channel, exc)

    def _restored(self, names: list[bytes]) -> None:
        channels = [self._names[n] for n in names if n in self._names]
        if channels and self.handler is not None:
            self.handler.on_resync(channels)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
