"""The embedded broker: streams and history in this process's memory.

A ``MemoryBackend`` holds what a remote store would: streams, idempotency results,
presence, and which nodes subscribe to which channels. By default each node gets a backend
of its own; several ``Node``\\ s given one backend form a hub inside one process, which is
how the several-node conformance suites run without a server. The backend can delay and
lose deliveries and delay subscriptions (``subscribe_delay``, ``delivery_delay``, ``lose``,
``kill``) to reproduce what a network does.

Each stream draws its epoch when it is created, so a restarted process, or a stream swept
after ``meta_ttl`` seconds without a publication, tells resuming clients that their offsets
belong to a lost history.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from tidings.core.broker import (
    Broker,
    HistoryQuery,
    PublishOptions,
    PublishResult,
    StreamInfo,
)
from tidings.core.clock import Clock, SystemClock
from tidings.core.publication import ClientInfo, HistoryResult, Publication, StreamPosition
from tidings.exceptions import BrokerUnavailable

__all__ = [
    "IDEMPOTENCY_MAX",
    "SWEEP_INTERVAL",
    "MemoryBackend",
    "MemoryBroker",
    "Stream",
]

SWEEP_INTERVAL = 60.0
IDEMPOTENCY_MAX = 100_000


class Stream:
    """One channel's stream: epoch, top offset, and the history held, oldest first."""

    __slots__ = ("epoch", "history", "meta_ttl", "offset", "touched", "ttl")

    def __init__(self, now: float, meta_ttl: float, epoch: str = "") -> None:
        self.epoch = epoch or secrets.token_urlsafe(6)
        self.offset = 0
        # (monotonic time of publishing, publication); offsets in it are consecutive.
        self.history: deque[tuple[float, Publication]] = deque()
        self.touched = now
        self.ttl = 0.0
        self.meta_ttl = meta_ttl

    def expire(self, now: float) -> None:
        history = self.history
        while history and now - history[0][0] > self.ttl:
            history.popleft()


class MemoryBackend:
    """What the memory broker, presence manager and controller of every node share."""

    def __init__(self, *, clock: Clock | None = None, meta_ttl: float = 86400.0) -> None:
        self.clock: Clock = clock or SystemClock()
        self.meta_ttl = meta_ttl  # of streams created by a read, before any publication
        self.streams: dict[str, Stream] = {}
        self.idempotent: OrderedDict[tuple[str, str], tuple[float, PublishResult]] = OrderedDict()
        self.subscribers: dict[str, dict[MemoryBroker, None]] = {}
        self.presence: dict[str, dict[str, tuple[ClientInfo, float]]] = {}
        self.controllers: dict[str, Any] = {}
        self._last_sweep = self.clock.monotonic()
        # Fault injection, for tests.
        self.subscribe_delay = 0.0  # seconds before a node's subscribe is live
        self.delivery_delay = 0.0  # seconds before a publication reaches a node
        self.lose: Callable[[Publication, MemoryBroker], bool] | None = None
        self.dead: set[object] = set()  # members whose process "died": cut off

    def kill(self, *members: object) -> None:
        """Cut members (brokers, presence managers, controllers) off as if their process
        died: nothing reaches them, nothing they write lands, and they say no goodbye."""
        self.dead.update(members)
        for subs in self.subscribers.values():
            for member in members:
                subs.pop(member, None)  # type: ignore[call-overload]
        for node_id, controller in list(self.controllers.items()):
            if controller in members:
                del self.controllers[node_id]

    def find(self, channel: str, now: float) -> Stream | None:
        """The channel's stream unless it has none or its meta expired."""
        stream = self.streams.get(channel)
        if stream is None:
            return None
        stream.expire(now)
        if not stream.history and now - stream.touched > stream.meta_ttl:
            del self.streams[channel]  # contract, point 2: it comes back with a new epoch
            return None
        return stream

    def stream(self, channel: str, meta_ttl: float | None = None) -> Stream:
        """The channel's stream, created (with a new epoch) when it has none."""
        now = self.clock.monotonic()
        stream = self.find(channel, now)
        if stream is None:
            stream = self.streams[channel] = Stream(now, meta_ttl or self.meta_ttl)
        return stream

    def restore(self, channel: str, stream: Stream) -> None:
        """Put ``stream`` back as the channel's (a durable store's copy of it)."""
        self.streams[channel] = stream

    def append(self, stream: Stream, pub: Publication, options: PublishOptions, now: float) -> None:
        """Advance ``stream`` to ``pub`` (its next offset) and keep ``pub`` per ``options``."""
        stream.offset = pub.offset
        stream.touched = now
        stream.meta_ttl = options.meta_ttl
        if options.history_size > 0 and options.history_ttl > 0:
            history = stream.history
            history.append((now, pub))
            while len(history) > options.history_size:
                history.popleft()
            stream.ttl = options.history_ttl

    def remember(self, channel: str, key: str, expires: float, result: PublishResult) -> None:
        """Keep an idempotency key's result until ``expires`` (monotonic), the newest
        ``IDEMPOTENCY_MAX`` at most."""
        self.idempotent[(channel, key)] = (expires, result)
        while len(self.idempotent) > IDEMPOTENCY_MAX:
            self.idempotent.popitem(last=False)

    def seen(self, channel: str, key: str, now: float) -> PublishResult | None:
        """The result of the key's first publish on ``channel`` while it lasts."""
        seen = self.idempotent.get((channel, key))
        if seen is not None and seen[0] > now:
            return replace(seen[1], duplicate=True)
        return None

    def sweep(self, now: float) -> None:
        """Forget streams whose meta expired and idempotency results past their TTL."""
        self._last_sweep = now
        for name in list(self.streams):
            stream = self.streams[name]
            stream.expire(now)
            if not stream.history and now - stream.touched > stream.meta_ttl:
                del self.streams[name]
        idempotent = self.idempotent
        while idempotent:
            expires = next(iter(idempotent.values()))[0]
            if expires > now:
                break
            idempotent.popitem(last=False)

    def maybe_sweep(self, now: float) -> None:
        if now - self._last_sweep > SWEEP_INTERVAL:
            self.sweep(now)


class MemoryBroker(Broker):
    """A node's broker on a ``MemoryBackend``. With no delay configured, subscribed nodes
    get ``on_publication`` before ``publish`` returns."""

    def __init__(self, backend: MemoryBackend | None = None, *, clock: Clock | None = None) -> None:
        self.backend = backend or MemoryBackend(clock=clock)
        self._inbox: deque[tuple[float, str, Any]] = deque()
        self._draining: asyncio.TimerHandle | None = None

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
    ) -> PublishResult:
        backend = self.backend
        if self in backend.dead:
            raise BrokerUnavailable("backend unreachable")
        now = backend.clock.monotonic()
        key = options.idempotency_key
        if key:
            seen = backend.seen(channel, key, now)
            if seen is not None:
                return seen
        stream = backend.stream(channel, options.meta_ttl)
        pub = Publication(
            channel, stream.offset + 1, stream.epoch, data, is_json, event, info=info, tags=tags
        )
        pub.delta = delta
        pub.exclude_client = options.exclude_client
        backend.append(stream, pub, options, now)
        result = PublishResult(StreamPosition(stream.offset, stream.epoch))
        if key:
            backend.remember(channel, key, now + options.idempotency_ttl, result)
        backend.maybe_sweep(now)
        self.fan_out(channel, "pub", pub)
        return result

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
        return self.publish_nowait(
            channel, data, options, is_json=is_json, event=event, info=info, tags=tags, delta=delta
        )

    def fan_out(self, channel: str, kind: str, item: Any) -> None:
        """Hand ``item`` to every node subscribed to ``channel``: a publication (``pub``),
        a join or leave (``join``/``leave``: a (channel, info) pair) or ``deleted``."""
        receivers = self.backend.subscribers.get(channel)
        if not receivers:
            return
        backend = self.backend
        several = len(receivers) > 1
        for receiver in list(receivers):
            if kind == "pub":
                if backend.lose is not None and backend.lose(item, receiver):
                    continue
                # Nodes annotate publications (delta bookkeeping, encodings): one copy each.
                payload = replace(item, encoded={}, prev=None) if several else item
            else:
                payload = item
            if backend.delivery_delay > 0:
                receiver._enqueue(kind, payload)
            else:
                receiver._receive(kind, payload)

    def _enqueue(self, kind: str, item: Any) -> None:
        # One FIFO per receiving node keeps the channel's order (timers of equal deadline
        # may run in any order).
        due = asyncio.get_running_loop().time() + self.backend.delivery_delay
        self._inbox.append((due, kind, item))
        if self._draining is None:
            self._draining = asyncio.get_running_loop().call_at(due, self._drain)

    def _drain(self) -> None:
        self._draining = None
        loop = asyncio.get_running_loop()
        inbox = self._inbox
        while inbox and inbox[0][0] <= loop.time():
            _, kind, item = inbox.popleft()
            if self not in self.backend.dead:  # killed while this was on its way
                self._receive(kind, item)
        if inbox:
            self._draining = loop.call_at(inbox[0][0], self._drain)

    def _receive(self, kind: str, item: Any) -> None:
        handler = self.handler
        if handler is None:
            return
        if kind == "pub":
            handler.on_publication(item)
        elif kind == "join":
            handler.on_join(*item)
        elif kind == "leave":
            handler.on_leave(*item)
        else:
            handler.on_channel_deleted(item)

    # streams
    async def history(self, channel: str, query: HistoryQuery) -> HistoryResult:
        stream = self.backend.stream(channel)
        position = StreamPosition(stream.offset, stream.epoch)
        since, limit = query.since, query.limit
        if limit == 0 or (since is not None and since.epoch and since.epoch != stream.epoch):
            return HistoryResult([], position)
        history = stream.history
        first = history[0][1].offset if history else stream.offset + 1
        if query.reverse:
            stop = len(history)
            if since is not None:
                stop = min(len(history), max(0, since.offset - first))
            count = stop if limit is None else min(stop, limit)
            pubs = [history[i][1] for i in range(stop - 1, stop - 1 - count, -1)]
        else:
            start = 0
            if since is not None:
                start = min(len(history), max(0, since.offset - first + 1))
            stop = len(history) if limit is None else min(len(history), start + limit)
            pubs = [history[i][1] for i in range(start, stop)]
        return HistoryResult(pubs, position)

    async def remove_history(self, channel: str) -> None:
        stream = self.backend.streams.get(channel)
        if stream is not None:
            stream.history.clear()

    async def delete_channel(self, channel: str) -> None:
        self.backend.streams.pop(channel, None)
        self.fan_out(channel, "deleted", channel)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        self.fan_out(channel, "join", (channel, info))

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        self.fan_out(channel, "leave", (channel, info))

    async def subscribe(self, channel: str) -> None:
        delay = self.backend.subscribe_delay
        if delay > 0:
            await asyncio.sleep(delay)  # fault injection: a SUBSCRIBE in flight
        if self not in self.backend.dead:
            self.backend.subscribers.setdefault(channel, {})[self] = None

    async def unsubscribe(self, channel: str) -> None:
        subs = self.backend.subscribers.get(channel)
        if subs is not None:
            subs.pop(self, None)
            if not subs:
                del self.backend.subscribers[channel]

    async def stream_info(self, channels: Sequence[str]) -> dict[str, StreamInfo]:
        now = self.backend.clock.monotonic()
        result = {}
        for channel in channels:
            stream = self.backend.find(channel, now)
            if stream is not None:
                position = StreamPosition(stream.offset, stream.epoch)
                result[channel] = StreamInfo(position, len(stream.history))
        return result

    async def channels(self, prefix: str = "", limit: int = 10000) -> list[str]:
        now = self.backend.clock.monotonic()
        names = [
            name
            for name in list(self.backend.streams)
            if name.startswith(prefix) and self.backend.find(name, now) is not None
        ]
        return names[:limit]

    async def aclose(self) -> None:
        if self._draining is not None:
            self._draining.cancel()
        for subs in self.backend.subscribers.values():
            subs.pop(self, None)
