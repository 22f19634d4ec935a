"""The contract between a node and its broker (version 2).

A broker moves publications between nodes and keeps each channel's stream: an offset
counter, an epoch and a bounded history. Every implementation (memory, Redis, NATS) passes
``tidings.testing.check_broker``, which runs several nodes on one shared backend. The
contract:

1. **Streams.** ``publish`` appends to the channel's stream: the offset grows by exactly one
   per publication, and the publication is kept in history within ``PublishOptions``'
   ``history_size`` and ``history_ttl`` (either 0: not kept, the offset still grows).
   Offsets are unique, gap-free and ordered per channel whatever node publishes.
2. **Epochs.** A stream's epoch names one life of its history. When a stream is recreated —
   its meta expired (no publication for ``meta_ttl`` seconds) or its storage lost it — it
   starts again at offset 1 under a new epoch, so one (offset, epoch) never names two
   publications. Reading a stream's position fixes its epoch: a reader told (0, E) of a
   stream that did not exist sees the first publication as (1, E).
3. **Delivery.** ``subscribe(channel)`` returns once delivery is live: every publication
   whose ``publish`` starts after it returned reaches this node's
   ``BrokerEventHandler.on_publication``. Delivery between nodes is at most once and in
   offset order per channel; the node finds a lost delivery by offset continuity and fills
   it from history (``core/subscriptions.py``). ``unsubscribe`` stops delivery. A
   publication published with ``PublishOptions.exclude_client`` reaches every node with
   that id in ``Publication.exclude_client`` (the node's hub skips that connection).
4. **Idempotency.** A publish whose ``idempotency_key`` was used on the same channel within
   ``idempotency_ttl`` seconds publishes nothing and returns the first result with
   ``duplicate=True``. The check and the append are one atomic step.
5. **History.** ``history(channel, HistoryQuery)``: see ``HistoryQuery``.
6. **Failures.** A call that can't complete raises ``BrokerUnavailable`` (timeout, lost
   connection: may be retried) or ``BrokerError``; a failed publish published nothing.
7. **Resync.** A broker whose delivery can silently lose publications (a dropped PUB/SUB
   connection) calls ``on_resync`` with the channels concerned once delivery is live again.
8. **Fast path.** ``publish_nowait`` may publish synchronously (an in-process broker) and
   return the result, or return a ``Later`` (``core/tick.py``) that the loop's ``Tick``
   settles within the iteration (a durable store's batch commit); ``None`` means the
   caller must ``await publish(...)`` instead.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .channels import ChannelOptions
from .publication import ClientInfo, HistoryResult, Publication, StreamPosition
from .tick import Later

__all__ = [
    "TOP",
    "Broker",
    "BrokerEventHandler",
    "HistoryQuery",
    "PublishOptions",
    "PublishResult",
    "StreamInfo",
]


class BrokerEventHandler(Protocol):
    """What a broker calls back on the node that owns it."""

    def on_publication(self, pub: Publication) -> None:
        """A publication reached a channel this node subscribed to (from any node)."""

    def on_channel_deleted(self, channel: str) -> None:
        """A channel was deleted (from any node): its subscribers must be told."""

    def on_join(self, channel: str, info: ClientInfo) -> None:
        """A client joined the channel (on any node)."""

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        """A client left the channel (on any node)."""

    def on_resync(self, channels: list[str]) -> None:
        """Delivery of ``channels`` may have skipped publications that no later one will
        reveal (a lost connection to the broker was made again): compare each with its
        stream and fill from history, or tell the subscribers."""


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """How a stream keeps one publication, and whom it skips. Times in seconds."""

    history_size: int = 0
    history_ttl: float = 0.0
    meta_ttl: float = 86400.0  # the stream (offset, epoch) outlives its last publication
    idempotency_key: str = ""
    idempotency_ttl: float = 300.0
    exclude_client: str = ""  # a connection id that is not to get this publication live

    @classmethod
    def of(
        cls,
        opts: ChannelOptions,
        *,
        skip_history: bool = False,
        idempotency_key: str = "",
        exclude_client: str = "",
    ) -> PublishOptions:
        """The options a namespace gives its channels' publications."""
        keep = not skip_history and opts.history_size > 0 and opts.history_ttl > 0
        return cls(
            history_size=opts.history_size if keep else 0,
            history_ttl=opts.history_ttl if keep else 0.0,
            meta_ttl=max(opts.history_meta_ttl, opts.history_ttl),
            idempotency_key=idempotency_key,
            exclude_client=exclude_client,
        )


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Where a publish put its publication; ``duplicate``: an earlier publish with the same
    idempotency key did, and nothing was published now."""

    position: StreamPosition
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Which publications a history read returns, with the stream's top position.

    Forward (the default): offsets after ``since`` (all held when None), oldest first.
    ``reverse``: newest first, offsets before ``since`` when given. At most ``limit``
    (None: no limit; 0: only the position). A ``since`` whose non-empty epoch is not the
    stream's selects nothing: the position tells the caller the epoch changed.
    """

    since: StreamPosition | None = None
    limit: int | None = None
    reverse: bool = False


TOP = HistoryQuery(limit=0)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's top position and how many publications its history holds now."""

    position: StreamPosition
    stored: int


class Broker(abc.ABC):
    """Pub/sub between nodes plus per-channel streams with offset, epoch and history."""

    handler: BrokerEventHandler | None = None

    def set_handler(self, handler: BrokerEventHandler) -> None:
        self.handler = handler

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect or allocate what the broker needs; called once before use."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release everything; the broker is unusable afterwards."""

    def health(self) -> str:
        """Why the broker can't be used now (``/health`` answers 503 with it); "" if it can."""
        return ""

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
    ) -> PublishResult | Later[PublishResult] | None:
        """Publish synchronously where the broker can (contract, point 8); else None."""
        return None

    @abc.abstractmethod
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
        """Append to the channel's stream and deliver to every subscribed node."""

    @abc.abstractmethod
    async def history(self, channel: str, query: HistoryQuery) -> HistoryResult:
        """Publications still held, per ``query``, and the stream's position."""

    @abc.abstractmethod
    async def remove_history(self, channel: str) -> None:
        """Drop the channel's history; its offsets keep growing from where they were."""

    @abc.abstractmethod
    async def delete_channel(self, channel: str) -> None:
        """Drop the stream and tell every node (``on_channel_deleted``)."""

    @abc.abstractmethod
    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        """Tell every node subscribed to ``channel`` that ``info`` joined it."""

    @abc.abstractmethod
    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        """Tell every node subscribed to ``channel`` that ``info`` left it."""

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Receive the channel's publications on this node; returns once that is live."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving the channel's publications on this node."""

    @abc.abstractmethod
    async def stream_info(self, channels: Sequence[str]) -> dict[str, StreamInfo]:
        """Position and stored count of each channel that has a stream (others left out)."""

    @abc.abstractmethod
    async def channels(self, prefix: str = "", limit: int = 10000) -> list[str]:
        """Channels with a stream, names starting with ``prefix``, at most ``limit``."""
