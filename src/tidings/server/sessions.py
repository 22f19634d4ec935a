"""Streaming subscribers: WebSocket, Server-Sent Events and chunked HTTP streams.

After its handshake each connection's transport is handed to one of these small protocol
objects (no task, no parser of HTTP left), which the hub calls to deliver. Each has an id
in the node's registry, so that out-of-band messages reach it (as a ``message`` notice, or
the payload alone in raw mode); where hooks are configured it carries their ``Conn``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from tidings.core.conn import Conn
from tidings.core.hub import Formatter
from tidings.core.publication import ClientInfo, Publication, StreamPosition
from tidings.protocol.envelope import encode_notice, payload_json
from tidings.protocol.http import chunk
from tidings.protocol.positions import format_positions
from tidings.protocol.sse import sse_comment, sse_event, sse_id
from tidings.protocol.websocket import CloseCode, WebSocketReader, close_frame, text_frame

from .formats import TemplateFormat, notice_event
from .hooked import MAX_QUEUED_MESSAGES, Opening, ws_message
from .outbox import Outbox

if TYPE_CHECKING:
    from .context import Context

__all__ = [
    "PING",
    "WS_CLOSE",
    "Session",
    "SseSession",
    "StreamSession",
    "WsSession",
]

log = logging.getLogger("tidings.server")


class Session(Outbox):
    """A connection subscribed to channels with one formatter."""

    __slots__ = ("channels", "conn", "formatter", "id", "user")

    def __init__(
        self,
        ctx: Context,
        transport: asyncio.Transport,
        formatter: Formatter,
        channels: list[str],
    ) -> None:
        super().__init__(ctx, transport)
        self.formatter = formatter
        self.channels = channels
        self.id = str(uuid.uuid4())
        self.user = ""
        self.conn: Conn | None = None

    def begin(
        self, resume: dict[str, StreamPosition], last: int | None, *, announce: bool = False
    ) -> None:
        """Become addressable (out-of-band messages) and start subscribing."""
        node = self.ctx.node
        node.streams[self.id] = self
        node.spawn(self.start(resume, last, announce=announce))

    def adopt(self, conn: Conn) -> None:
        """Take over the ``Conn`` its opening hooks ran with (and what they sent)."""
        opening = conn.end
        assert isinstance(opening, Opening)
        opening.hand_over(conn, self)

    async def start(
        self, resume: dict[str, StreamPosition], last: int | None, *, announce: bool = False
    ) -> None:
        """Subscribe to every channel: after the client's position where it gave one
        (with a gap notice when history can't fill the gap), else the ``last`` N. With
        ``announce``, a ``position`` notice follows what history gave: where the channel
        stands, so that a client can resume exactly even before its first message."""
        node = self.ctx.node
        try:
            for channel in self.channels:
                if self.closed:
                    return
                since = resume.get(channel)
                limit = None if since else (0 if announce and last is None else last)
                handle = await node.subscribe(self, channel, since, limit)
                if self.closed:
                    handle.abort()
                    return
                handle.replay()
                position = handle.position
                if announce and position is not None:
                    # Before go_live: what it delivers comes after this position.
                    fields = {"offset": position.offset, "epoch": position.epoch}
                    self.notice("position", channel, fields)
                handle.go_live()
        except Exception:
            log.exception("subscribing %s failed", self.describe())
            self.ended("error")
            self.finish(self.goodbye("error"))

    def deliver(self, pub: Publication, data: bytes) -> None:
        self.push(data)

    def notice(self, kind: str, channel: str, fields: dict[str, Any]) -> None:
        self.push(self.encode_notice(kind, channel, fields))

    def encode_notice(self, kind: str, channel: str, fields: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def presence_event(self, kind: str, channel: str, info: ClientInfo) -> None:
        """Simple endpoints don't carry join/leave."""

    def channel_deleted(self, channel: str) -> None:
        if channel in self.channels:
            self.channels = [c for c in self.channels if c != channel]
        if self.channels:
            self.notice("deleted", channel, {})
            node, conn = self.ctx.node, self.conn
            if conn is not None and node.hooks.has("unsubscribe"):
                node.spawn(node.hooks.notify("unsubscribe", conn, channel, channel=channel))
        else:
            self.ended("deleted")
            self.finish(self.encode_notice("deleted", channel, {}) + self.goodbye("deleted"))

    def unsubscribe_all(self) -> None:
        node = self.ctx.node
        channels = self.channels
        for channel in channels:
            node.unsubscribe(self, channel)
        self.channels = []
        if node.streams.get(self.id) is self:
            del node.streams[self.id]
            conn = self.conn
            if conn is not None:
                conn.ended(list(channels))
                if node.hooks:
                    node.spawn(self.last_hooks(conn))

    async def last_hooks(self, conn: Conn) -> None:
        """``on_disconnect``, then ``on_finish``."""
        hooks = self.ctx.node.hooks
        await hooks.notify("disconnect", conn)
        await hooks.notify("finish", conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self.unsubscribe_all()
        super().connection_lost(exc)

    # ConnEnd (tidings.core.conn): out-of-band messages and hooks' disconnects
    def message_body(self, data: bytes, is_json: bool) -> bytes:
        """An out-of-band message: the payload alone in raw mode, else a notice."""
        if getattr(self.formatter, "raw", False):
            return data
        return encode_notice("message", "", data=orjson.Fragment(payload_json(data, is_json)))

    def send_message(self, data: bytes, is_json: bool) -> None:
        raise NotImplementedError

    def ending(self) -> bytes:
        """The bytes that end the stream, after its last notice."""
        return b""

    def close_with(self, code: int, reason: str) -> None:
        self.ended("server", code)
        notice = self.encode_notice("disconnect", "", {"code": code, "reason": reason})
        self.finish(notice + self.ending())

    def hook_channels(self) -> list[str]:
        return list(self.channels)


# Close codes of the simple WebSocket endpoint (docs/endpoints.md).
WS_CLOSE: dict[str, tuple[int, str]] = {
    "shutdown": (int(CloseCode.GOING_AWAY), "shutdown"),
    "slow": (3008, "slow"),
    "deleted": (4404, "channel deleted"),
    "error": (int(CloseCode.INTERNAL_ERROR), "internal error"),
}


class WsSession(Session):
    """``/ws/<channels>``: one text frame per message. What the client sends goes to the
    hooks and to channels that allow it (``hooked.ws_message``); otherwise it is ignored."""

    __slots__ = ("busy", "inbox", "reader", "seen", "stamp", "tokens")

    kind: ClassVar[str] = "ws"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reader: WebSocketReader | None = None
        self.seen = True
        self.inbox: deque[bytes] | None = None  # messages to handle; None: ignored
        # Messages wait until the subscriptions are live, so that a message's publication
        # reaches the sender too.
        self.busy = True
        self.tokens = 0.0
        self.stamp = 0.0
        node = self.ctx.node
        if node.wants_conns or any(
            node.namespaces.options(ch).simple_publish for ch in self.channels
        ):
            self.inbox = deque()
            self.tokens = float(self.ctx.client_options.command_burst)
            self.stamp = self.ctx.loop.time()

    async def start(
        self, resume: dict[str, StreamPosition], last: int | None, *, announce: bool = False
    ) -> None:
        try:
            await super().start(resume, last, announce=announce)
        finally:
            self.busy = False
            if self.inbox and not self.closed:
                self.busy = True
                self.ctx.node.spawn(self._drain())

    def opened(self, leftover: bytes) -> None:
        if leftover:
            self.data_received(leftover)

    def data_received(self, data: bytes) -> None:
        self.seen = True
        reader = self.reader
        if reader is None:
            reader = self.reader = WebSocketReader(self.ctx.config.max_message_bytes)
        messages, out = reader.receive_data(data)
        if not reader.closed:
            if out:
                # Pongs are queued like any other frame: bytes the client leaves unread
                # count against the same bound (a client pinging without reading is slow).
                self.push(out)
            if messages and self.inbox is not None and not self.closed:
                self.take([m.data for m in messages])
            return
        if self.closed:
            # We sent our close frame first; the client's answer completes the handshake.
            # After failing the connection the reader discards input: wait for EOF instead.
            if reader.peer_closed:
                self.transport.close()
            return
        if reader.close_code not in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
            log.info("%s closed: %s %s", self.describe(), reader.close_code, reader.close_reason)
        self.ended("client", int(reader.close_code or 0))
        self.finish(out)

    def take(self, messages: list[bytes]) -> None:
        """Queue the client's messages for their hooks, within the command rate
        (``client_command_rate``/``_burst``) and ``MAX_QUEUED_MESSAGES``: past either the
        connection is closed with 1008."""
        inbox = self.inbox
        assert inbox is not None
        options = self.ctx.client_options
        if options.command_rate:
            now = self.ctx.loop.time()
            tokens = min(
                float(options.command_burst),
                self.tokens + (now - self.stamp) * options.command_rate,
            )
            self.stamp = now
            if tokens < len(messages):
                log.info("%s: messages past the rate", self.describe())
                self.close_with(1008, "too many messages")
                return
            self.tokens = tokens - len(messages)
        if len(inbox) + len(messages) > MAX_QUEUED_MESSAGES:
            log.info("%s: too many messages waiting", self.describe())
            self.close_with(1008, "too many messages")
            return
        inbox.extend(messages)
        if not self.busy:
            self.busy = True
            self.ctx.node.spawn(self._drain())

    async def _drain(self) -> None:
        inbox = self.inbox
        assert inbox is not None
        try:
            while inbox and not self.closed:
                await ws_message(self, inbox.popleft())
        finally:
            self.busy = False

    def eof_received(self) -> bool:
        return False

    def encode_notice(self, kind: str, channel: str, fields: dict[str, Any]) -> bytes:
        return text_frame(encode_notice(kind, channel, **fields))

    def error_notice(self, code: int, reason: str) -> None:
        """A message was refused: ``{"notice":"error","code","reason"}``."""
        self.push(self.encode_notice("error", "", {"code": code, "reason": reason}))

    def send_message(self, data: bytes, is_json: bool) -> None:
        self.push(text_frame(self.message_body(data, is_json)))

    def close_with(self, code: int, reason: str) -> None:
        self.ended("server", code)
        self.finish(close_frame(code, reason))

    def goodbye(self, reason: str) -> bytes:
        code, text = WS_CLOSE.get(reason, WS_CLOSE["error"])
        return close_frame(code, text)

    def finish(self, last: bytes = b"", *, wait_close: bool = False) -> None:
        # Having sent our close frame, wait for the client's (RFC 6455 §7.1.1); having
        # answered the client's, close at once.
        reader = self.reader
        if reader is None or not reader.closed or self.closed:
            super().finish(last, wait_close=True)
        elif reader.peer_closed:
            super().finish(last)
        else:
            # We failed the connection (1002, 1007, 1009): the client may still be sending,
            # and closing a socket with unread input resets it, which can destroy our close
            # frame before the client reads it. Half-close and read on until its EOF.
            super().finish(last, wait_close=True)
            if self.transport.can_write_eof():
                self.transport.write_eof()

    def ping(self) -> None:
        """Called by the server's heartbeat: a client silent for a whole round is dead."""
        if not self.seen:
            log.info("%s: no answer to ping, closing", self.describe())
            self.closed = True
            self.ctx.loop.call_soon(self.unsubscribe_all)
            self.transport.abort()
            return
        self.seen = False
        self.push(PING)


PING = b"\x89\x00"  # an unmasked ping frame with no payload (RFC 6455 §5.5.2)


class SseSession(Session):
    """``/sse/<channels>``: EventSource. On several channels, ``id:`` lists every position."""

    __slots__ = ("positions",)

    kind: ClassVar[str] = "sse"

    def __init__(self, *args: Any, multi: bool) -> None:
        super().__init__(*args)
        self.positions: dict[str, tuple[int, str]] | None = {} if multi else None

    async def start(
        self, resume: dict[str, StreamPosition], last: int | None, *, announce: bool = False
    ) -> None:
        # On several channels every id lists every position, so that a reconnecting
        # browser resumes all of them: the client's own, else where the stream stands now.
        positions = self.positions
        if positions is not None:
            unknown = [ch for ch in self.channels if ch not in resume]
            infos = await self.ctx.node.stream_info(unknown) if unknown else {}
            for channel in self.channels:
                given = resume.get(channel)
                info = infos.get(channel)
                if given is not None:
                    positions[channel] = (given.offset, given.epoch)
                elif info is not None:
                    positions[channel] = (info.position.offset, info.position.epoch)
                else:
                    positions[channel] = (0, "")
        await super().start(resume, last, announce=announce)
        if not self.closed:
            # Every channel is live: what is published from now on reaches this stream.
            self.push(sse_comment("ok"))

    def deliver(self, pub: Publication, data: bytes) -> None:
        positions = self.positions
        if positions is None:
            self.push(data)
            return
        positions[pub.channel] = (pub.offset, pub.epoch)
        self.push(sse_id(format_positions(positions)) + data)

    def encode_notice(self, kind: str, channel: str, fields: dict[str, Any]) -> bytes:
        return sse_event(encode_notice(kind, channel, **fields), event=notice_event(kind))

    def send_message(self, data: bytes, is_json: bool) -> None:
        self.push(sse_event(self.message_body(data, is_json), event=notice_event("message")))

    def goodbye(self, reason: str) -> bytes:
        if reason == "deleted":
            return b""
        return sse_event(encode_notice(reason, ""), event=notice_event(reason))

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False

    def ping(self) -> None:
        """The heartbeat: a comment, so proxies and browsers see the stream alive."""
        self.push(b":\n\n")


class StreamSession(Session):
    """``/stream/<channels>``: a chunked body, one line (or rendered template) per message;
    for HTTP/1.0 clients a close-delimited body with the same lines."""

    __slots__ = ()

    kind: ClassVar[str] = "stream"

    def _frame(self, data: bytes) -> bytes:
        return chunk(data) if self.formatter.chunked else data  # type: ignore[attr-defined]

    def encode_notice(self, kind: str, channel: str, fields: dict[str, Any]) -> bytes:
        fmt = self.formatter
        if isinstance(fmt, TemplateFormat):
            return fmt.notice(kind, channel, fields)
        return self._frame(encode_notice(kind, channel, **fields) + b"\n")

    def send_message(self, data: bytes, is_json: bool) -> None:
        fmt = self.formatter
        if isinstance(fmt, TemplateFormat):
            body = orjson.Fragment(payload_json(data, is_json))
            self.push(fmt.notice("message", "", {"data": body}))
        else:
            self.push(self._frame(self.message_body(data, is_json) + b"\n"))

    def ending(self) -> bytes:
        fmt = self.formatter
        footer = fmt.template.footer if isinstance(fmt, TemplateFormat) else b""
        end = self._frame(b"")  # the last chunk; nothing when close-delimited
        return (self._frame(footer) if footer else b"") + end

    def goodbye(self, reason: str) -> bytes:
        notice = b"" if reason == "deleted" else self.encode_notice(reason, "", {})
        return notice + self.ending()

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False
