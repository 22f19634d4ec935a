"""Publications and stream positions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["ClientInfo", "HistoryResult", "Publication", "StreamPosition"]


@dataclass(slots=True, frozen=True)
class ClientInfo:
    """Who a connection is: user id, client id, and optional raw JSON infos (from the
    connection token and the subscription token)."""

    user: str
    client: str
    conn_info: bytes | None = None
    chan_info: bytes | None = None


@dataclass(slots=True, frozen=True)
class StreamPosition:
    """Where a channel's stream stands: ``offset`` grows by one per publication; ``epoch``
    changes whenever the stream's history is lost, so offsets from another epoch mean nothing.
    """

    offset: int
    epoch: str


@dataclass(slots=True, eq=False)
class Publication:
    """One message in one channel's stream.

    ``data`` is the payload as received: JSON when ``is_json``, else UTF-8 text. ``encoded``
    caches the payload's wire encodings by format key, so each is built once and its bytes
    shared by every subscriber (and by history replays).
    """

    channel: str
    offset: int
    epoch: str
    data: bytes
    is_json: bool = True
    event: str | None = None
    time: float = field(default_factory=time.time)
    info: ClientInfo | None = None
    tags: dict[str, str] | None = None
    delta: bool = False  # published for delta delivery (fossil) to subscribers that asked
    prev: tuple[bytes, bool] | None = None  # previous (data, is_json), where deltas are on
    exclude_client: str = ""  # the connection that is not to get it live (its publisher)
    encoded: dict[object, bytes] = field(default_factory=dict)

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self.offset, self.epoch)


@dataclass(slots=True)
class HistoryResult:
    """Publications in offset order (or reversed on request) and the stream's top position."""

    publications: list[Publication]
    position: StreamPosition
