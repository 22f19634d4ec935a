"""The local registry of subscribers and the fan-out loop.

Subscribers of a channel are grouped by ``Formatter``: a publication is encoded once per
formatter and the same bytes go to every subscriber in the group. ``deliver`` must only queue
bytes (no I/O, no await, no change to the hub): the fan-out loop iterates the live sets.
A publication with ``exclude_client`` takes a loop of its own that skips the subscriber with
that ``id``, so the common loop does no per-subscriber check.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

from .publication import ClientInfo, Publication

__all__ = ["Formatter", "Hub", "Subscriber"]

log = logging.getLogger("tidings.hub")


class Formatter:
    """Encodes a publication for one wire format; the result is cached on the publication."""

    __slots__ = ()

    def encode(self, pub: Publication) -> bytes:
        cached = pub.encoded.get(self)
        if cached is None:
            cached = pub.encoded[self] = self.build(pub)
        return cached

    def build(self, pub: Publication) -> bytes:
        raise NotImplementedError


class Subscriber(Protocol):
    """One connection's end of its subscriptions, as the hub sees it."""

    formatter: Formatter
    closed: bool

    def deliver(self, pub: Publication, data: bytes) -> None:
        """Queue ``data`` (``formatter.encode(pub)``) for the client."""

    def notice(self, kind: str, channel: str, fields: dict[str, Any]) -> None:
        """Tell the client about its stream: a gap in history, a deletion."""

    def channel_deleted(self, channel: str) -> None:
        """The channel is gone: the hub has already dropped this subscriber from it."""

    def presence_event(self, kind: str, channel: str, info: ClientInfo) -> None:
        """``info`` joined (``kind`` "join") or left ("leave") the channel."""


class Hub:
    """Channel name → formatter → subscribers (dicts used as ordered sets)."""

    __slots__ = ("_channels", "delivered")

    def __init__(self) -> None:
        self._channels: dict[str, dict[Formatter, dict[Subscriber, None]]] = {}
        self.delivered = 0  # publications handed to subscribers, for /metrics

    def add(self, channel: str, sub: Subscriber) -> None:
        groups = self._channels.get(channel)
        if groups is None:
            groups = self._channels[channel] = {}
        group = groups.get(sub.formatter)
        if group is None:
            group = groups[sub.formatter] = {}
        group[sub] = None

    def remove(self, channel: str, sub: Subscriber) -> bool:
        """Remove ``sub``; False when it was not there."""
        groups = self._channels.get(channel)
        if groups is None:
            return False
        group = groups.get(sub.formatter)
        if group is None or sub not in group:
            return False
        del group[sub]
        if not group:
            del groups[sub.formatter]
            if not groups:
                del self._channels[channel]
        return True

    def pop(self, channel: str) -> list[Subscriber]:
        """Remove and return every subscriber of ``channel``."""
        subs = self.subscribers(channel)
        self._channels.pop(channel, None)
        return subs

    def broadcast(self, pub: Publication) -> int:
        """Deliver ``pub`` to every local subscriber of its channel; return how many."""
        groups = self._channels.get(pub.channel)
        if groups is None:
            return 0
        if pub.exclude_client:
            count = self._broadcast_except(pub, groups, pub.exclude_client)
            self.delivered += count
            return count
        count = 0
        for formatter, group in groups.items():
            try:
                data = formatter.encode(pub)
            except Exception:
                log.exception("encoding a publication of %s failed", pub.channel)
                continue
            for sub in group:
                try:
                    sub.deliver(pub, data)
                except Exception:
                    log.exception("delivery to a subscriber of %s failed", pub.channel)
            count += len(group)
        self.delivered += count
        return count

    def _broadcast_except(
        self, pub: Publication, groups: dict[Formatter, dict[Subscriber, None]], skip: str
    ) -> int:
        count = 0
        for formatter, group in groups.items():
            data: bytes | None = None
            for sub in group:
                try:
                    if getattr(sub, "id", None) == skip:
                        # It has no copy of this payload: a delta subscriber must not get the
                        # next publication as a delta against it.
                        excluded = getattr(sub, "excluded", None)
                        if excluded is not None:
                            excluded(pub)
                        continue
                    if data is None:
                        data = formatter.encode(pub)
                    sub.deliver(pub, data)
                    count += 1
                except Exception:
                    log.exception("delivery to a subscriber of %s failed", pub.channel)
        return count

    def subscribers(self, channel: str) -> list[Subscriber]:
        groups = self._channels.get(channel)
        if groups is None:
            return []
        return [sub for group in groups.values() for sub in group]

    def count(self, channel: str) -> int:
        groups = self._channels.get(channel)
        return sum(len(g) for g in groups.values()) if groups else 0

    def channels(self) -> Iterator[str]:
        return iter(self._channels)

    def __contains__(self, channel: str) -> bool:
        return channel in self._channels
