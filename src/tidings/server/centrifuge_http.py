"""HTTP transports of the client protocol: ``/connection/http_stream``, ``/connection/sse``
and ``/emulation``.

Both streams carry server-to-client frames in one long response; the client sends its
other commands with ``POST /emulation`` (``{"node", "session", "data"}``), which this node
routes to the connection whose session matches (a secret of the connection, not its client
id, which other clients may see). Being
emulated, a disconnect travels as a ``disconnect`` push before the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from tidings.core.client import Client
from tidings.core.hub import Formatter
from tidings.core.node_control import b64
from tidings.exceptions import ControlError, DecodeError, HttpError
from tidings.protocol.centrifuge import codes
from tidings.protocol.centrifuge.codec import JSON, PROTOBUF, Codec
from tidings.protocol.http import Request, chunk, response_head

from .centrifuge import DELTA_PAIRS, ClientConnection, PushFormat, kept, register
from .decisions import Response, StreamStart

if TYPE_CHECKING:
    from tidings.app import App

    from .context import Context

__all__ = [
    "FRAMES",
    "NO_CACHE",
    "PUSH_FORMATS",
    "ClientHttpStream",
    "emulation",
    "http_stream",
    "sse",
]

log = logging.getLogger("tidings.server")

NO_CACHE = [
    ("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0"),
    ("Pragma", "no-cache"),
    ("X-Accel-Buffering", "no"),
]


def _json_line(payload: bytes) -> bytes:
    return chunk(payload + b"\n")


def _sse_event(payload: bytes) -> bytes:
    # One reply per event: ``data`` lines can't hold a raw newline (WHATWG SSE §9.2.6).
    return chunk(b"data: " + payload + b"\n\n")


FRAMES: dict[str, tuple[Codec, Callable[[bytes], bytes]]] = {
    "http_stream/json": (JSON, _json_line),
    "http_stream/protobuf": (PROTOBUF, chunk),
    "sse/json": (JSON, _sse_event),
    "uni_sse": (JSON, _sse_event),
    "uni_http_stream": (JSON, _json_line),
}
PUSH_FORMATS: dict[str, Formatter] = {
    key: register(PushFormat(codec, frame, wrap=not key.startswith("uni_")))
    for key, (codec, frame) in FRAMES.items()
}


class ClientHttpStream(ClientConnection):
    """One emulated connection: replies and pushes flow down a chunked response."""

    __slots__ = ("frame", "name")
    emulated = True
    unidirectional = False

    def __init__(
        self, ctx: Context, transport: asyncio.Transport, key: str, request: Request | None = None
    ) -> None:
        super().__init__(ctx, transport)
        self.name = key.partition("/")[0]
        self.codec, self.frame = FRAMES[key]
        self.formatter = PUSH_FORMATS[key]
        self.delta_formats = DELTA_PAIRS[self.formatter]
        self.client = Client(ctx.node, self, ctx.client_options, kept(ctx, request))

    def send(self, data: bytes) -> None:
        self.push(self.frame(data))

    def close(self, disconnect: codes.Disconnect) -> None:
        self.ended("server", disconnect.code)
        self.finish(self._disconnect_push(disconnect) + chunk(b""))

    def _disconnect_push(self, disconnect: codes.Disconnect) -> bytes:
        push = {
            "disconnect": {
                "code": disconnect.code,
                "reason": disconnect.reason,
                "reconnect": disconnect.reconnect,
            }
        }
        codec = self.codec
        if self.unidirectional:
            return self.frame(codec.encode_push(push))
        return self.frame(codec.join([codec.encode_reply({"push": push})]))

    def goodbye(self, reason: str) -> bytes:
        return self._disconnect_push(self.disconnect_for(reason)) + chunk(b"")

    def data_received(self, data: bytes) -> None:
        """Nothing is read from a streaming request after its body."""


def _start(
    request: Request, key: str, frame_data: bytes, headers: list[tuple[str, str]]
) -> StreamStart:
    codec = FRAMES[key][0]
    try:
        commands = codec.decode_commands(frame_data)
    except DecodeError:
        raise HttpError(400, "bad connect command") from None
    if not commands or "connect" not in commands[0]:
        raise HttpError(400, "the first command must be connect")

    def make(ctx: Context, transport: asyncio.Transport) -> ClientHttpStream:
        conn = ClientHttpStream(ctx, transport, key, request)
        conn.client.feed(commands)
        return conn

    head = response_head(200, [*headers, ("Transfer-Encoding", "chunked"), *NO_CACHE])
    return StreamStart(head, make)


def http_stream(request: Request, cors: list[tuple[str, str]]) -> StreamStart:
    """``POST /connection/http_stream``: the body holds the connect command."""
    if request.method != "POST":
        raise HttpError(405, "method not allowed", [("Allow", "POST, OPTIONS")])
    binary = request.header("content-type").split(";")[0].strip() == "application/octet-stream"
    key = "http_stream/protobuf" if binary else "http_stream/json"
    ctype = "application/octet-stream" if binary else "application/json"
    return _start(request, key, request.body, [("Content-Type", ctype), *cors])


def sse(request: Request, cors: list[tuple[str, str]]) -> StreamStart:
    """``GET /connection/sse?cf_connect=<connect command JSON>`` (or POST with it as body)."""
    if request.method == "GET":
        data = request.query.get("cf_connect", "").encode()
        if not data:
            raise HttpError(400, "cf_connect is required")
    elif request.method == "POST":
        data = request.body
    else:
        raise HttpError(405, "method not allowed", [("Allow", "GET, POST, OPTIONS")])
    headers = [("Content-Type", "text/event-stream; charset=utf-8"), *cors]
    return _start(request, "sse/json", data, headers)


def emulation(app: App, request: Request) -> Response | Awaitable[Response]:
    """``POST /emulation``: commands for an emulated connection, 204 once delivered to the
    node that holds the session (through the controller when that is another node)."""
    if request.method != "POST":
        raise HttpError(405, "method not allowed", [("Allow", "POST, OPTIONS")])
    binary = request.header("content-type").split(";")[0].strip() == "application/octet-stream"
    codec = PROTOBUF if binary else JSON
    try:
        req = codec.decode_emulation(request.body)
        data = req.get("data", b"")
        commands = codec.decode_commands(data)
    except DecodeError:
        raise HttpError(400, "bad emulation request") from None
    node = app.node
    session = req.get("session", "")
    target = req.get("node") or node.id
    if target == node.id:
        client = node.sessions.get(session)
        if client is None or not client.transport.emulated:
            raise HttpError(404, "unknown session")
        client.feed(commands)
        return 204, b"", []
    return _forward(app, target, session, codec.name, data)


async def _forward(app: App, target: str, session: str, codec: str, data: bytes) -> Response:
    command = {"method": "emulation", "session": session, "codec": codec, "b64data": b64(data)}
    try:
        answer = await app.node.controller.send(target, command)
    except ControlError:
        raise HttpError(404, "unknown node") from None
    if not answer.get("found"):
        raise HttpError(404, "unknown session")
    return 204, b"", []
