"""The embedded broker: streams and history in this process's memory.

Its epoch is drawn when the broker starts, so a restarted process tells resuming clients that
their offsets belong to a lost history. Streams with no history that saw no publication for
``stream_ttl`` seconds are forgotten, which bounds memory by the live channel count.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable

from tidings.core.broker import Broker, PresenceManager, StreamInfo
from tidings.core.channels import ChannelOptions
from tidings.core.publication import ClientInfo, HistoryResult, Publication, StreamPosition

__all__ = ["MemoryBroker", "MemoryPresenceManager"]


class _Stream:
    __slots__ = ("history", "offset", "touched", "ttl")

    def __init__(self, now: float) -> None:
        self.offset = 0
        # (monotonic time of publishing, publication); offsets in it are consecutive.
        self.history: deque[tuple[float, Publication]] = deque()
        self.touched = now
        self.ttl = 0.0


class MemoryBroker(Broker):
    """Single-node broker; ``on_publication`` is called before ``publish`` returns.

    ``clock`` (monotonic seconds) is there for tests that move time forward.
    """

    def __init__(
        self, *, stream_ttl: float = 86400.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.epoch = secrets.token_urlsafe(6)
        self.stream_ttl = stream_ttl
        self._streams: dict[str, _Stream] = {}
        self._clock = clock
        self._last_sweep = clock()

    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        options: ChannelOptions,
        is_json: bool = True,
        event: str | None = None,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        delta: bool = False,
    ) -> Publication:
        now = self._clock()
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(now)
        stream.offset += 1
        stream.touched = now
        pub = Publication(
            channel, stream.offset, self.epoch, data, is_json, event, info=info, tags=tags
        )
        pub.delta = delta
        if options.history_size > 0 and options.history_ttl > 0:
            history = stream.history
            history.append((now, pub))
            while len(history) > options.history_size:
                history.popleft()
            stream.ttl = options.history_ttl
            self._expire(stream, now)
        if now - self._last_sweep > 60.0:
            self._sweep(now)
        if self.handler is not None:
            self.handler.on_publication(pub)
        return pub

    async def history(
        self,
        channel: str,
        *,
        since_offset: int | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        stream = self._streams.get(channel)
        if stream is None:
            return HistoryResult([], StreamPosition(0, self.epoch))
        self._expire(stream, self._clock())
        position = StreamPosition(stream.offset, self.epoch)
        if limit == 0:
            return HistoryResult([], position)
        history = stream.history
        start = 0
        if since_offset is not None and history:
            start = min(len(history), max(0, since_offset - history[0][1].offset + 1))
        pubs = [history[i][1] for i in range(start, len(history))]
        if reverse:
            pubs.reverse()
        if limit is not None:
            pubs = pubs[:limit]
        return HistoryResult(pubs, position)

    async def remove_history(self, channel: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.history.clear()

    async def delete_channel(self, channel: str) -> None:
        await self.remove_history(channel)
        if self.handler is not None:
            self.handler.on_channel_deleted(channel)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        if self.handler is not None:
            self.handler.on_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        if self.handler is not None:
            self.handler.on_leave(channel, info)

    async def subscribe(self, channel: str) -> None:
        """Nothing to do: every publication is local."""

    async def unsubscribe(self, channel: str) -> None:
        """Nothing to do: every publication is local."""

    async def stream_info(self, channel: str) -> StreamInfo | None:
        stream = self._streams.get(channel)
        if stream is None:
            return None
        self._expire(stream, self._clock())
        return StreamInfo(StreamPosition(stream.offset, self.epoch), len(stream.history))

    async def channels(self, prefix: str = "", limit: int = 10000) -> list[str]:
        names = [name for name in self._streams if name.startswith(prefix)]
        return names[:limit]

    def _expire(self, stream: _Stream, now: float) -> None:
        history = stream.history
        while history and now - history[0][0] > stream.ttl:
            history.popleft()

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for name in list(self._streams):
            stream = self._streams[name]
            self._expire(stream, now)
            if not stream.history and now - stream.touched > self.stream_ttl:
                del self._streams[name]


class MemoryPresenceManager(PresenceManager):
    """Presence in this process's memory."""

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, ClientInfo]] = {}

    async def add(self, channel: str, info: ClientInfo) -> None:
        self._channels.setdefault(channel, {})[info.client] = info

    async def remove(self, channel: str, client: str) -> None:
        clients = self._channels.get(channel)
        if clients is not None:
            clients.pop(client, None)
            if not clients:
                del self._channels[channel]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        return dict(self._channels.get(channel, {}))

    async def stats(self, channel: str) -> tuple[int, int]:
        clients = self._channels.get(channel, {})
        return len(clients), len({info.user for info in clients.values()})
