"""Hooks on the simple endpoints: opening a connection, and what a ``/ws`` client sends.

Where hooks or the message log are configured, a simple subscribe request runs
``on_connect`` and ``on_subscribe`` (per channel) while the HTTP connection waits, before
any stream starts: a ``Reject`` answers SSE, stream and long-poll requests with 403 (its
code in the body) and closes a WebSocket right after its handshake with the code (3000-4999;
other codes close with 1008 and the reason). The session then adopts the ``Conn``.

A ``/ws`` client's messages run ``on_message`` once per channel of the connection and are
published to the channels whose namespace has ``simple_publish`` (nginx-push-stream's
``websocket_allow_publish``; off by default), through the ``on_publish`` hooks. Messages are
rate-limited like client-protocol commands; a refusal is answered with an ``error`` notice
(or a close, for codes of 3000 and above).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import orjson

from tidings.core.conn import NO_CHANGE, Conn, ConnEnd, decode_data
from tidings.core.publication import ClientInfo
from tidings.exceptions import (
    BrokerError,
    HookError,
    HttpError,
    InvalidChannel,
    InvalidPayload,
    Reject,
)
from tidings.protocol.envelope import check_json_payload
from tidings.protocol.http import Request
from tidings.protocol.websocket import accept_response, close_frame

from .decisions import LongPollStart, StreamStart
from .formats import WS_FORMATS
from .request import websocket_key

if TYPE_CHECKING:
    from tidings.app import App

    from .context import Context
    from .sessions import WsSession

__all__ = ["MAX_QUEUED_MESSAGES", "Adopter", "Opening", "open_simple", "ws_message"]

log = logging.getLogger("tidings.server")

MAX_QUEUED_MESSAGES = 64  # /ws messages waiting for their hooks; more: closed (1008)


class Opening:
    """The end of a simple connection whose hooks run before its stream exists: messages
    sent meanwhile wait for the session, a disconnect is a refusal."""

    __slots__ = ("admitted", "closed", "id", "messages", "refused", "user")

    def __init__(self) -> None:
        self.id = str(uuid.uuid4())
        self.user = ""
        self.closed = False
        self.admitted: list[str] = []
        self.messages: list[tuple[bytes, bool]] = []
        self.refused: tuple[int, str] | None = None

    def send_message(self, data: bytes, is_json: bool) -> None:
        self.messages.append((data, is_json))

    def close_with(self, code: int, reason: str) -> None:
        self.refused = (code, reason)

    def hook_channels(self) -> list[str]:
        return list(self.admitted)

    def hand_over(self, conn: Conn, end: Adopter) -> None:
        """Make ``end`` the connection ``conn``'s hooks ran with: this opening's id and
        user, and the messages they sent meanwhile."""
        end.id, end.user, end.conn = self.id, self.user, conn
        conn.end = end
        for data, is_json in self.messages:
            end.send_message(data, is_json)


class Adopter(ConnEnd, Protocol):
    """A stream that takes over an ``Opening``'s connection."""

    conn: Conn | None


async def open_simple(
    app: App,
    request: Request,
    kind: str,
    channels: list[str],
    build: Callable[[Conn], StreamStart | LongPollStart],
) -> StreamStart | LongPollStart:
    """Run the opening hooks of a simple connection; its stream (``build(conn)``) or the
    refusal."""
    node = app.node
    hooks = node.hooks
    opening = Opening()
    conn = Conn(node, opening, kind=kind, transport=kind, request=request)
    try:
        if hooks.has("connect"):
            granted = await hooks.grants("connect", conn)
            user = granted.get("user")
            if isinstance(user, str):
                opening.user = user  # the rest of a connect result is the client protocol's
        for channel in channels:
            if opening.refused is not None:
                break
            if hooks.has("subscribe"):
                await hooks.run("subscribe", conn, channel, channel=channel)
            opening.admitted.append(channel)
        if opening.refused is not None:
            raise Reject(*opening.refused)
    except Reject as exc:
        log.info("%s connection refused by a hook: %d %s", kind, exc.code, exc.reason)
        _finished(app, conn)
        return _refused(request, kind, exc.code, exc.reason, closes=exc.closes)
    except HookError:
        _finished(app, conn)
        if kind == "ws":
            return _refused(request, kind, 1011, "internal error", closes=True)
        raise HttpError(500, "internal error") from None
    return build(conn)


def _finished(app: App, conn: Conn) -> None:
    conn.ended([])
    hooks = app.node.hooks
    if hooks.has("finish"):
        app.node.spawn(hooks.notify("finish", conn))


def _refused(request: Request, kind: str, code: int, reason: str, *, closes: bool) -> StreamStart:
    if kind != "ws":
        raise HttpError(403, reason or "refused", code=code)
    frame = close_frame(code if closes else 1008, reason)

    def make(ctx: Context, transport: asyncio.Transport) -> WsSession:
        from .sessions import WsSession  # sessions imports this module

        session = WsSession(ctx, transport, WS_FORMATS[False], [])
        session.finish(frame)
        return session

    return StreamStart(accept_response(websocket_key(request)), make)


async def ws_message(session: WsSession, data: bytes) -> None:
    """One message from a ``/ws`` client: the log, ``on_message`` per channel, and a
    publish to the channels that allow it."""
    node = session.ctx.node
    hooks, conn, log_ = node.hooks, session.conn, node.message_log
    channels = list(session.channels)
    is_json = True
    try:
        orjson.loads(data)
        check_json_payload(data)
    except orjson.JSONDecodeError:
        is_json = False
    except InvalidPayload:
        session.error_notice(107, "bad request")
        return
    if conn is not None and log_ is not None:
        log_.write("message", conn, ",".join(channels), data)
    try:
        for channel in channels:
            if conn is not None and hooks.has("message"):
                value = decode_data(data, is_json)
                await hooks.run("message", conn, channel, value, channel=channel)
            if session.closed:
                return
            if not node.namespaces.options(channel).simple_publish:
                continue
            payload, payload_json, how = data, is_json, NO_CHANGE
            if conn is not None and hooks.has("publish"):
                payload, payload_json, how = await hooks.publish(conn, channel, data, is_json)
            await node.publish(
                channel,
                payload,
                is_json=payload_json,
                info=ClientInfo(session.user, session.id),
                **how.options(),
            )
    except Reject as exc:
        if exc.closes:
            session.close_with(exc.code, exc.reason)
        else:
            session.error_notice(exc.code, exc.reason)
    except HookError:
        session.error_notice(100, "internal server error")
    except (BrokerError, InvalidChannel) as exc:
        log.warning("%s: publishing a message failed: %s", session.describe(), exc)
        session.error_notice(100, "internal server error")
