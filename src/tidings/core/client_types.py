"""What a client protocol connection is made of: its transport interface, its options, its
subscriptions, and the wire shapes of client infos and publications."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tidings.exceptions import DisconnectError, Reject, ReplyError
from tidings.protocol.centrifuge import codes
from tidings.protocol.centrifuge.codec import Codec

from .clock import Timer
from .conn import encode_data
from .hub import Formatter
from .publication import ClientInfo, Publication

__all__ = [
    "ClientOptions",
    "ClientTransport",
    "ServerSub",
    "Subscription",
    "info_dict",
    "pub_dict",
    "refusal",
]


class ClientTransport(Protocol):
    """What a client needs from its connection (implemented by the server layer)."""

    name: str
    codec: Codec
    formatter: Formatter  # encodes publication pushes, shared by connections alike
    delta_formats: tuple[Formatter, Formatter]  # (full as string, fossil delta) pushes
    emulated: bool  # a disconnect is a push, not a WebSocket close frame
    unidirectional: bool
    closed: bool

    def send(self, data: bytes) -> None:
        """Queue encoded replies (joined by the codec) as one message of the transport."""

    def push(self, data: bytes) -> None:
        """Queue bytes already framed for this transport (shared publication pushes)."""

    def close(self, disconnect: codes.Disconnect) -> None:
        """Tell the client why and close."""


@dataclass(slots=True)
class ClientOptions:
    """Connection-level settings of the client protocol."""

    ping_interval: int = 25
    insecure: bool = False
    allow_anonymous_connect_without_token: bool = False
    max_channels: int = 128
    private_prefix: str = "$"
    user_boundary: str = "#"
    user_separator: str = ","
    expired_grace: float = 25.0
    connect_timeout: float = 10.0  # a connection that hasn't connected by then is stale
    command_rate: float = 100.0  # commands a second per connection (0: no limit)
    command_burst: int = 500  # commands at once
    # Centrifugo's subscribe_to_user_personal_channel: every connection with a user is
    # subscribed server-side to "<namespace>:#<user>" (or "#<user>" without a namespace).
    personal_channels: bool = False
    personal_namespace: str = ""
    personal_single_connection: bool = False  # a user's new connection closes the others

    def personal_channel(self, user: str) -> str | None:
        """The personal channel of ``user``; None when off or for anonymous connections."""
        if not self.personal_channels or not user:
            return None
        name = self.user_boundary + user
        return f"{self.personal_namespace}:{name}" if self.personal_namespace else name


@dataclass(slots=True)
class Subscription:
    """One channel of one client."""

    channel: str
    join_leave: bool = False
    chan_info: bytes | None = None
    expires_at: float = 0.0
    presence: bool = False
    timer: Timer | None = None
    delta: bool = False  # fossil deltas negotiated
    delta_ready: bool = False  # the client holds the previous payload: deltas may follow
    positioned: bool = False  # the client tracks offsets: a lost publication matters
    by_caps: bool = False  # admitted by the connection's capabilities: they may take it back


@dataclass(frozen=True, slots=True)
class ServerSub:
    """The options of one server-side subscription a connect makes (Centrifugo's
    ``SubscribeOptions``): the channel info, the ``data`` of its result in the connect
    reply, option overrides (as a subscription token's ``override``) and an expiry."""

    info: bytes | None = None
    data: tuple[bytes, bool] | None = None  # (payload, is_json)
    override: Any = None
    expire_at: float = 0.0

    @classmethod
    def of(cls, value: Any) -> ServerSub:
        """From ``{"info", "data", "override", "expire_at"}`` as an ``on_connect`` hook
        gives it (values as hooks give payloads: JSON-serialisable, ``orjson.Fragment`` or
        bytes); None is no options. ``TypeError`` for anything else."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise TypeError("each of subs must be a dict of options")
        expire_at = value.get("expire_at") or 0
        if isinstance(expire_at, bool) or not isinstance(expire_at, int | float):
            raise TypeError("subs expire_at must be a number")
        override = value.get("override")
        if override is not None and not isinstance(override, dict):
            raise TypeError("subs override must be a dict")
        info = encode_data(value["info"])[0] if value.get("info") is not None else None
        data = encode_data(value["data"]) if value.get("data") is not None else None
        return cls(info, data, override, float(expire_at))


def info_dict(info: ClientInfo) -> dict[str, Any]:
    body: dict[str, Any] = {"user": info.user, "client": info.client}
    if info.conn_info is not None:
        body["conn_info"] = info.conn_info
    if info.chan_info is not None:
        body["chan_info"] = info.chan_info
    return body


def pub_dict(pub: Publication, codec: Codec, *, delta_sub: bool = False) -> dict[str, Any]:
    """A publication as the client protocol carries it. On a delta subscription the JSON
    encoding carries every payload as a JSON string (the SDKs parse it themselves)."""
    data = codec.payload(pub.data, pub.is_json)
    if delta_sub and not codec.binary:
        data = orjson.dumps(data.decode("utf-8", "replace"))
    body: dict[str, Any] = {"data": data, "offset": pub.offset}
    if pub.info is not None:
        body["info"] = info_dict(pub.info)
    if pub.tags:
        body["tags"] = pub.tags
    return body


def refusal(exc: Reject) -> ReplyError | DisconnectError:
    """A hook's ``Reject`` as the client protocol answers it: an error reply (codes below
    3000) or a disconnect."""
    if exc.closes:
        return DisconnectError(codes.Disconnect(exc.code, exc.reason))
    return ReplyError(codes.Error(exc.code, exc.reason))
