"""``Conn``: one connection as hooks see it, and what hooks exchange with the hub.

``Conn`` wraps a ``ConnEnd`` (a client-protocol ``Client`` or a simple endpoint's session)
for the application's hooks: its identity, request and channels, a ``context`` kept across
its events, and methods to send, broadcast and disconnect, callable from any thread.
``Publish`` is how an ``on_publish`` hook says to publish a client's publication;
``decode_data``/``encode_data`` convert payloads between the hub's bytes and hooks' values.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import http.cookies
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from tidings.exceptions import BrokerError, InvalidChannel, NoSuchConnection

from .channels import validate_channel
from .tick import Later

if TYPE_CHECKING:
    from tidings.protocol.http import Request

    from .node import Node

__all__ = [
    "NO_CHANGE",
    "PUBLISH_OPTIONS",
    "Conn",
    "ConnEnd",
    "Publish",
    "decode_data",
    "encode_data",
]

log = logging.getLogger("tidings.hooks")


def decode_data(data: bytes, is_json: bool) -> Any:
    """A payload as a hook sees it: JSON decoded, text as ``str``, other bytes as they are."""
    if is_json:
        return orjson.loads(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def encode_data(value: Any) -> tuple[bytes, bool]:
    """What a hook gives as (payload, is_json): ``bytes`` as they are (JSON when they parse
    as JSON), anything else as JSON (``orjson.Fragment`` for JSON text already encoded).
    Raises ``TypeError`` for what JSON can't hold."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw, False
        return raw, True
    try:
        return orjson.dumps(value), True
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"hook data is not JSON serialisable: {exc}") from None


_UNCHANGED: Any = object()


@dataclass(frozen=True, slots=True)
class Publish:
    """What an ``on_publish`` hook may return besides new data: how to publish the client's
    publication (Centrifugo's publish proxy result). ``data`` replaces the payload (left
    out: unchanged); ``skip_history`` keeps it out of the channel's history; ``tags`` are
    attached to it (the client protocol delivers them); ``idempotency_key`` makes a repeat
    with the same key to the same channel within the idempotency window publish nothing;
    ``delta`` sends it as a fossil delta against the previous publication to subscribers
    that asked for deltas, where the namespace allows them. ``TypeError`` for values of
    other types."""

    data: Any = _UNCHANGED
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    delta: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.skip_history, bool):
            raise TypeError("skip_history must be a bool")
        if not isinstance(self.delta, bool):
            raise TypeError("delta must be a bool")
        tags = self.tags
        if tags is not None and not (
            isinstance(tags, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        ):
            raise TypeError("tags must be a dict of strings")
        key = self.idempotency_key
        if not isinstance(key, str) or len(key) > 128 or not key.isprintable():
            raise TypeError("idempotency_key must be a printable string of 128 at most")

    @property
    def changes_data(self) -> bool:
        return self.data is not _UNCHANGED

    def options(self) -> dict[str, Any]:
        """The fields besides ``data``, as ``Node.publish`` takes them."""
        return {name: getattr(self, name) for name in PUBLISH_OPTIONS}

    def then(self, later: Publish) -> Publish:
        """This, with what a later hook's ``Publish`` says on top (its tags added)."""
        tags = {**(self.tags or {}), **(later.tags or {})} if later.tags else self.tags
        return Publish(
            later.data if later.changes_data else self.data,
            self.skip_history or later.skip_history,
            tags,
            later.idempotency_key or self.idempotency_key,
            self.delta or later.delta,
        )


NO_CHANGE = Publish()
# Publish's fields besides data: Node.publish's keywords, and a publish proxy's result's.
PUBLISH_OPTIONS = tuple(f.name for f in dataclasses.fields(Publish) if f.name != "data")


class ConnEnd(Protocol):
    """The connection behind a ``Conn``: a client-protocol ``Client`` or a simple session."""

    id: str
    user: str
    closed: bool

    def send_message(self, data: bytes, is_json: bool) -> None:
        """Push ``data`` to the client outside any channel."""

    def close_with(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` (3000-4999) and ``reason``."""

    def hook_channels(self) -> list[str]:
        """The channels the connection is subscribed to now."""


class Conn:
    """One connection as hooks see it.

    ``id``, ``user`` (a hook of ``connect`` may set it), ``kind`` (``client`` for the
    client protocol, else ``ws``, ``sse``, ``stream``, ``lp``), ``transport`` (the client
    protocol's transport name, e.g. ``websocket``, ``sse``, ``http_stream``; the kind for
    the simple endpoints), ``protocol`` (``json`` or ``protobuf``), ``headers`` (lower-case
    names), ``cookies``, ``remote_addr``, ``channels``, ``context`` (a dict kept across the
    connection's events), and what a client-protocol connect carried: ``data`` (decoded),
    ``client_name``, ``client_version``.

    The methods may be called from any thread (plain hooks run in a thread pool); what they
    send is queued on the event loop in call order.
    """

    __slots__ = (
        "_cookies",
        "_final",
        "_loop",
        "_node",
        "client_name",
        "client_version",
        "context",
        "data",
        "end",
        "headers",
        "kind",
        "meta",
        "protocol",
        "remote_addr",
        "transport",
    )

    def __init__(
        self,
        node: Node,
        end: ConnEnd,
        *,
        kind: str,
        transport: str,
        request: Request | None = None,
        protocol: str = "json",
    ) -> None:
        self._node = node
        self.end = end
        self._loop = asyncio.get_running_loop()
        self._final: list[str] | None = None
        self._cookies: dict[str, str] | None = None
        self.kind = kind
        self.transport = transport
        self.protocol = protocol
        # What a client-protocol connect command carried besides its token.
        self.data: Any = None
        self.client_name = ""
        self.client_version = ""
        # What an ``on_connect`` hook attached to the connection (a dict's ``"meta"``);
        # the HTTP proxies send it with every later request (Centrifugo's connect meta).
        self.meta: Any = None
        self.headers: dict[str, str] = dict(request.headers) if request is not None else {}
        self.remote_addr = request.remote_addr if request is not None else ""
        self.context: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Conn {self.kind} {self.id} user={self.user!r}>"

    @property
    def id(self) -> str:
        return self.end.id

    @property
    def user(self) -> str:
        return self.end.user

    @user.setter
    def user(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("conn.user must be a string")
        self.end.user = value

    @property
    def closed(self) -> bool:
        return self._final is not None or self.end.closed

    @property
    def channels(self) -> list[str]:
        """The channels the connection is subscribed to (at its end: those it had)."""
        if self._final is not None:
            return list(self._final)
        return self.end.hook_channels()

    @property
    def cookies(self) -> dict[str, str]:
        """The request's cookies by name (parsed once, on first use)."""
        if self._cookies is None:
            jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
            # A malformed Cookie header: no cookies rather than an error.
            with contextlib.suppress(http.cookies.CookieError):
                jar.load(self.headers.get("cookie", ""))
            self._cookies = {name: morsel.value for name, morsel in jar.items()}
        return self._cookies

    def ended(self, channels: list[str]) -> None:
        """The connection closed: ``channels`` are what it had (for the last hooks)."""
        if self._final is None:
            self._final = channels

    # what hooks do
    def send(self, data: Any) -> None:
        """Send ``data`` (JSON-serialisable, or bytes) to this connection alone.
        ``NoSuchConnection`` when it has closed."""
        if self.closed:
            raise NoSuchConnection(f"connection {self.id} has closed")
        payload, is_json = encode_data(data)
        self._soon(self._send, payload, is_json)

    def broadcast_channel(self, data: Any, channel: str | None = None) -> None:
        """Publish ``data`` to ``channel`` (default: each of the connection's channels) for
        every subscriber but this connection."""
        payload, is_json = encode_data(data)
        for name in self._targets(channel):
            self._soon(self._publish, name, payload, is_json, self.id)

    def send_and_broadcast_channel(self, data: Any, channel: str | None = None) -> None:
        """Publish ``data`` to ``channel`` (default: each of the connection's channels) for
        every subscriber, this connection too: a channel it is not subscribed to reaches it
        as a message (``send``)."""
        payload, is_json = encode_data(data)
        for name in self._targets(channel):
            if name in self.channels or self.closed:
                self._soon(self._publish, name, payload, is_json, "")
            else:
                self._soon(self._send, payload, is_json)
                self._soon(self._publish, name, payload, is_json, self.id)

    def disconnect(self, code: int = 3503, reason: str = "force disconnect") -> None:
        """Close the connection with ``code`` (3000-4999; 4000-4499: the client may
        reconnect) and ``reason``."""
        if isinstance(code, bool) or not isinstance(code, int) or not 3000 <= code <= 4999:
            raise ValueError(f"disconnect code {code!r}: use 3000-4999")
        self._soon(self._close, code, str(reason))

    # on the loop
    def _targets(self, channel: str | None) -> list[str]:
        names = [channel] if channel is not None else self.channels
        for name in names:
            validate_channel(name)  # raises InvalidChannel in the hook, where it is useful
        return names

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _send(self, data: bytes, is_json: bool) -> None:
        if not self.end.closed:
            self.end.send_message(data, is_json)

    def _close(self, code: int, reason: str) -> None:
        if not self.end.closed:
            self.end.close_with(code, reason)

    def _publish(self, channel: str, data: bytes, is_json: bool, exclude: str) -> None:
        node = self._node
        try:
            done = node.publish_nowait(channel, data, is_json=is_json, exclude_client=exclude)
        except (BrokerError, InvalidChannel) as exc:
            log.warning("hook publish to %s failed: %s", channel, exc)
            return
        if done is None:
            node.spawn(self._apublish(channel, data, is_json, exclude))
        elif isinstance(done, Later):
            done.when_settled(functools.partial(_log_failed, channel))

    async def _apublish(self, channel: str, data: bytes, is_json: bool, exclude: str) -> None:
        try:
            await self._node.publish(channel, data, is_json=is_json, exclude_client=exclude)
        except BrokerError as exc:
            log.warning("hook publish to %s failed: %s", channel, exc)


def _log_failed(channel: str, _: object, error: BaseException | None) -> None:
    if error is not None:
        log.warning("hook publish to %s failed: %s", channel, error)
