"""The presence contract: who is subscribed to a channel, across nodes.

Each entry is owned by the node that holds the connection. It lives ``ttl`` seconds unless
that node adds it again: the node refreshes its entries periodically (every third of the
TTL), so the entries of a node that died without saying goodbye expire, and a node removes
its own entries when it shuts down. Every implementation passes
``tidings.testing.check_presence``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from .publication import ClientInfo

__all__ = ["PresenceManager", "PresenceStats"]


@dataclass(frozen=True, slots=True)
class PresenceStats:
    """How many connections and distinct users are present in a channel."""

    num_clients: int
    num_users: int


class PresenceManager(abc.ABC):
    """Presence entries keyed by channel and client id, each expiring after ``ttl``."""

    ttl: float = 60.0

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect or allocate what the manager needs."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release everything."""

    @abc.abstractmethod
    async def add(self, channel: str, info: ClientInfo) -> None:
        """Record ``info.client`` as present in ``channel`` for ``ttl`` seconds from now
        (adding it again refreshes it)."""

    @abc.abstractmethod
    async def remove(self, channel: str, client: str) -> None:
        """Forget ``client`` in ``channel``."""

    @abc.abstractmethod
    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        """Client id → info of every unexpired entry of ``channel``."""

    @abc.abstractmethod
    async def stats(self, channel: str) -> PresenceStats:
        """Counts of the unexpired entries of ``channel``."""
