"""The contract between a node and its broker.

A broker moves publications between nodes and keeps each channel's stream: the offset
counter, the epoch and the bounded history. Every implementation (memory, Redis, NATS) passes
the same conformance suite (``tidings.testing.broker_conformance``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol

from .channels import ChannelOptions
from .publication import ClientInfo, HistoryResult, Publication, StreamPosition

__all__ = ["Broker", "BrokerEventHandler", "PresenceManager", "StreamInfo"]


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


@dataclass(slots=True)
class StreamInfo:
    """A stream's top position and how many publications its history holds now."""

    position: StreamPosition
    stored: int


class Broker(abc.ABC):
    """Pub/sub between nodes plus per-channel history with offset and epoch.

    Ordering: for one channel, publications reach ``on_publication`` in offset order.
    """

    handler: BrokerEventHandler | None = None

    def set_handler(self, handler: BrokerEventHandler) -> None:
        self.handler = handler

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect or allocate what the broker needs; called once before use."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release everything; the broker is unusable afterwards."""

    @abc.abstractmethod
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
        """Append to the channel's stream (offset + 1), keep it in history within the
        namespace's size and TTL, and deliver it to every subscribed node."""

    @abc.abstractmethod
    async def history(
        self,
        channel: str,
        *,
        since_offset: int | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        """Publications still held: those with offset > ``since_offset`` (all when None),
        oldest first (newest first with ``reverse``), at most ``limit`` (None = no limit,
        0 = only the position)."""

    @abc.abstractmethod
    async def remove_history(self, channel: str) -> None:
        """Drop the channel's history; its offsets keep growing from where they were."""

    @abc.abstractmethod
    async def delete_channel(self, channel: str) -> None:
        """Drop the history and tell every node (``on_channel_deleted``)."""

    @abc.abstractmethod
    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        """Tell every node subscribed to ``channel`` that ``info`` joined it."""

    @abc.abstractmethod
    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        """Tell every node subscribed to ``channel`` that ``info`` left it."""

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Start receiving the channel's publications on this node."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving the channel's publications on this node."""

    @abc.abstractmethod
    async def stream_info(self, channel: str) -> StreamInfo | None:
        """The stream's position and stored count, None when it has no stream."""

    @abc.abstractmethod
    async def channels(self, prefix: str = "", limit: int = 10000) -> list[str]:
        """Channels with a stream, names starting with ``prefix``, at most ``limit``."""


class PresenceManager(abc.ABC):
    """Who is subscribed to a channel, across nodes, keyed by client id."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect or allocate what the manager needs."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release everything."""

    @abc.abstractmethod
    async def add(self, channel: str, info: ClientInfo) -> None:
        """Record (or refresh) ``info.client`` as present in ``channel``."""

    @abc.abstractmethod
    async def remove(self, channel: str, client: str) -> None:
        """Forget ``client`` in ``channel``."""

    @abc.abstractmethod
    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        """Client id → info of every client present in ``channel``."""

    @abc.abstractmethod
    async def stats(self, channel: str) -> tuple[int, int]:
        """(number of clients, number of distinct users) in ``channel``."""
