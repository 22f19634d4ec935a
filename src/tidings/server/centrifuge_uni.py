"""Unidirectional transports of the client protocol: ``/connection/uni_websocket``,
``/connection/uni_sse`` and ``/connection/uni_http_stream`` (JSON).

The client sends one bare ConnectRequest (no Command wrapper) and then only listens: the
server answers with a ``connect`` push and sends bare pushes (publications, join/leave,
subscribe/unsubscribe, disconnect) and empty pushes as pings. Channels come from the
connection token (``channels``/``subs``) or from the request's ``subs``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from tidings.exceptions import DecodeError, HttpError
from tidings.protocol.centrifuge import codes
from tidings.protocol.centrifuge.codec import _SCHEMA, JSON, _from_json
from tidings.protocol.http import Request, chunk, response_head
from tidings.protocol.websocket import accept_response, text_frame

from .centrifuge import ClientWebSocket, PushFormat, register
from .centrifuge_http import NO_CACHE, ClientHttpStream
from .decisions import StreamStart
from .request import websocket_key

if TYPE_CHECKING:
    from .context import Context

__all__ = [
    "UNI_WS_PUSH",
    "ClientUniStream",
    "ClientUniWebSocket",
    "connect_request",
    "uni_stream",
    "uni_websocket",
]

log = logging.getLogger("tidings.server")

UNI_WS_PUSH = register(PushFormat(JSON, text_frame, wrap=False))


def connect_request(data: bytes) -> dict[str, Any]:
    """A bare ConnectRequest as JSON; raises ``DecodeError``."""
    try:
        parsed = orjson.loads(data) if data.strip() else {}
    except orjson.JSONDecodeError:
        raise DecodeError("malformed JSON") from None
    return _from_json(_SCHEMA["ConnectRequest"], parsed)


class ClientUniWebSocket(ClientWebSocket):
    """``/connection/uni_websocket``: the first text message is the connect request."""

    __slots__ = ("started",)

    kind: ClassVar[str] = "client"
    name = "uni_websocket"
    unidirectional = True

    def __init__(
        self, ctx: Context, transport: asyncio.Transport, request: Request | None = None
    ) -> None:
        super().__init__(ctx, transport, JSON, UNI_WS_PUSH, request)
        self.started = False

    def send(self, data: bytes) -> None:
        self.push(text_frame(data))

    def start(self, data: bytes) -> None:
        self.started = True
        try:
            request = connect_request(data)
        except DecodeError:
            log.info("%s: malformed connect request", self.describe())
            self.close(codes.BAD_REQUEST_DISCONNECT)
            return
        self.client.feed([{"id": 1, "connect": request}])

    def on_message(self, data: bytes, text: bool) -> None:
        # After connecting, whatever the client sends is read and ignored.
        if not self.started:
            self.start(data)


class ClientUniStream(ClientHttpStream):
    """``uni_sse`` and ``uni_http_stream``: bare pushes down a chunked response."""

    __slots__ = ()

    unidirectional = True
    emulated = True


def uni_websocket(request: Request) -> StreamStart:
    """``/connection/uni_websocket``: the connect request comes as the first message, or in
    ``cf_connect``."""
    key = websocket_key(request)
    first = request.query.get("cf_connect")

    def make(ctx: Context, transport: asyncio.Transport) -> ClientUniWebSocket:
        conn = ClientUniWebSocket(ctx, transport, request)
        if first is not None:
            conn.start(first.encode())
        return conn

    return StreamStart(accept_response(key), make)


def uni_stream(request: Request, name: str, cors: list[tuple[str, str]]) -> StreamStart:
    """``GET|POST /connection/uni_sse`` (``cf_connect`` or body) or ``POST
    /connection/uni_http_stream`` (body)."""
    if name == "uni_sse" and request.method == "GET":
        data = request.query.get("cf_connect", "").encode()
    elif request.method == "POST":
        data = request.body
    else:
        allow = "GET, POST, OPTIONS" if name == "uni_sse" else "POST, OPTIONS"
        raise HttpError(405, "method not allowed", [("Allow", allow)])
    try:
        connect = connect_request(data)
    except DecodeError:
        raise HttpError(400, "bad connect request") from None
    if name == "uni_sse":
        ctype, key, preface = "text/event-stream; charset=utf-8", "uni_sse", chunk(b"\r\n")
    else:
        ctype, key, preface = "application/json", "uni_http_stream", b""
    head = response_head(
        200, [("Content-Type", ctype), ("Transfer-Encoding", "chunked"), *NO_CACHE, *cors]
    )

    def make(ctx: Context, transport: asyncio.Transport) -> ClientUniStream:
        conn = ClientUniStream(ctx, transport, key, request)
        conn.client.feed([{"id": 1, "connect": connect}])
        return conn

    return StreamStart(head + preface, make)
