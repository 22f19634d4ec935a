"""Transports of the client protocol (Centrifugo-compatible): ``/connection/websocket``.

The connection object is the ``ClientTransport`` of a ``core.client.Client``: it decodes
frames into commands for the client and frames the client's replies. Publication pushes are
encoded once per codec and framing by ``PushFormat`` and shared by every connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from tidings.core.client import Client
from tidings.core.client_types import pub_dict
from tidings.core.hub import Formatter
from tidings.core.publication import Publication
from tidings.exceptions import DecodeError
from tidings.protocol.centrifuge import codes
from tidings.protocol.centrifuge.codec import JSON, PROTOBUF, Codec
from tidings.protocol.centrifuge.fossil import make_delta
from tidings.protocol.http import Request
from tidings.protocol.websocket import (
    CloseCode,
    WebSocketReader,
    accept_response,
    binary_frame,
    close_frame,
    text_frame,
)

from .decisions import StreamStart
from .outbox import Outbox
from .request import websocket_key

if TYPE_CHECKING:
    from .context import Context

__all__ = [
    "DELTA_PAIRS",
    "GOODBYES",
    "PROTOBUF_SUBPROTOCOL",
    "WS_PUSH",
    "ClientConnection",
    "ClientWebSocket",
    "PushFormat",
    "client_websocket",
    "kept",
    "register",
]

log = logging.getLogger("tidings.server")

PROTOBUF_SUBPROTOCOL = "centrifuge-protobuf"


class PushFormat(Formatter):
    """A publication push for one codec, framed for one transport.

    ``mode``: "plain"; "full" (a delta subscription's full payload: a JSON string in the
    JSON encoding); "delta" (a fossil delta against the channel's previous payload, or
    the full payload when no smaller delta exists).
    """

    __slots__ = ("codec", "frame", "mode", "wrap")

    def __init__(self, codec: Codec, frame: Any, wrap: bool = True, mode: str = "plain") -> None:
        self.codec = codec
        self.frame = frame
        self.wrap = wrap  # unidirectional transports send pushes without the Reply wrapper
        self.mode = mode

    def build(self, pub: Publication) -> bytes:
        codec = self.codec
        body = pub_dict(pub, codec, delta_sub=self.mode != "plain")
        if self.mode == "delta" and pub.prev is not None:
            patch = _delta(codec, pub)
            if patch is not None:
                body["data"] = patch
                body["delta"] = True
        push = {"channel": pub.channel, "pub": body}
        if self.wrap:
            payload = codec.join([codec.encode_reply({"push": push})])
        else:
            payload = codec.encode_push(push)
        result: bytes = self.frame(payload)
        return result

    def pair(self) -> tuple[PushFormat, PushFormat]:
        """The formats of a delta subscription on the same codec and framing."""
        return (
            PushFormat(self.codec, self.frame, self.wrap, "full"),
            PushFormat(self.codec, self.frame, self.wrap, "delta"),
        )


def _delta(codec: Codec, pub: Publication) -> bytes | None:
    """The fossil delta from the previous payload to this one, as ``data`` carries it;
    None when it wouldn't be smaller (or, in JSON, isn't valid UTF-8 text)."""
    assert pub.prev is not None
    old = codec.payload(*pub.prev)
    new = codec.payload(pub.data, pub.is_json)
    patch = make_delta(old, new)
    if len(patch) >= len(new):
        return None
    if codec.binary:
        return patch
    try:
        return orjson.dumps(patch.decode("utf-8"))
    except UnicodeDecodeError:
        return None


WS_PUSH = {
    "json": PushFormat(JSON, text_frame),
    "protobuf": PushFormat(PROTOBUF, binary_frame),
}
# Each push format's delta pair, made once: formats are shared, and so are their encodings.
DELTA_PAIRS: dict[Formatter, tuple[Formatter, Formatter]] = {}


def register(fmt: PushFormat) -> PushFormat:
    DELTA_PAIRS[fmt] = fmt.pair()
    return fmt


for _fmt in WS_PUSH.values():
    register(_fmt)


class ClientConnection(Outbox):
    """What every client-protocol transport shares: its ``Client``, codec and formats."""

    __slots__ = ("client", "codec", "delta_formats", "formatter")

    kind: ClassVar[str] = "client"
    client: Client

    def disconnect_for(self, reason: str) -> codes.Disconnect:
        """The disconnect that says why the server ends the connection."""
        return GOODBYES.get(reason, codes.SERVER_ERROR)

    def eof_received(self) -> bool:
        return False

    def unsubscribe_all(self) -> None:
        self.client.transport_closed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport_closed()
        super().connection_lost(exc)

    def ping(self) -> None:
        self.client.ping()

    def opened(self, leftover: bytes) -> None:
        """The transport is ours: read what came with the handshake."""
        if leftover:
            self.data_received(leftover)


GOODBYES = {"slow": codes.SLOW, "shutdown": codes.SHUTDOWN}


class ClientWebSocket(ClientConnection):
    """A bidirectional WebSocket connection speaking the client protocol."""

    __slots__ = ("reader",)

    kind: ClassVar[str] = "client"
    name = "websocket"
    emulated = False
    unidirectional = False

    def __init__(
        self,
        ctx: Context,
        transport: asyncio.Transport,
        codec: Codec,
        formatter: Formatter | None = None,
        request: Request | None = None,
    ) -> None:
        super().__init__(ctx, transport)
        self.codec = codec
        self.formatter: Formatter = formatter or WS_PUSH[codec.name]
        self.delta_formats = DELTA_PAIRS[self.formatter]
        self.reader: WebSocketReader | None = None
        self.client = Client(ctx.node, self, ctx.client_options, kept(ctx, request))

    # ClientTransport
    def send(self, data: bytes) -> None:
        self.push(binary_frame(data) if self.codec.binary else text_frame(data))

    def close(self, disconnect: codes.Disconnect) -> None:
        self.ended("server", disconnect.code)
        self.finish(close_frame(disconnect.code, disconnect.reason), wait_close=True)

    # input
    def data_received(self, data: bytes) -> None:
        reader = self.reader
        if reader is None:
            reader = self.reader = WebSocketReader(self.ctx.config.max_message_bytes)
        messages, out = reader.receive_data(data)
        if reader.closed:
            if self.closed:
                self.transport.close()  # the client answered our close frame
                return
            code = reader.close_code
            if code not in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
                log.info("%s closed: %s %s", self.describe(), code, reader.close_reason)
            self.ended("client", int(code or 0))
            self.finish(out)
            return
        if out:
            self.push(out)  # pongs count against the outgoing bound like replies
        for message in messages:
            self.on_message(message.data, message.text)

    def on_message(self, data: bytes, text: bool) -> None:
        """One complete message from the client: a frame of commands."""
        if text == self.codec.binary:
            kind = "text" if text else "binary"
            log.info("%s: %s frame on a %s connection", self.describe(), kind, self.codec.name)
            self.client.bad_frame()
            return
        try:
            commands = self.codec.decode_commands(data)
        except DecodeError as exc:
            log.info("%s: undecodable frame: %s", self.describe(), exc)
            self.client.bad_frame()
            return
        self.client.feed(commands)

    # Outbox
    def goodbye(self, reason: str) -> bytes:
        disconnect = self.disconnect_for(reason)
        return close_frame(disconnect.code, disconnect.reason)

    def finish(self, last: bytes = b"", *, wait_close: bool = False) -> None:
        answered = self.reader is not None and self.reader.closed
        super().finish(last, wait_close=not answered)


def client_websocket(request: Request) -> StreamStart:
    """The handshake of ``/connection/websocket``; raises ``HttpError``."""
    key = websocket_key(request)
    offered = [p.strip() for p in request.header("sec-websocket-protocol").split(",")]
    # An empty or unknown Sec-WebSocket-Protocol means JSON (older SDKs send an empty one).
    if PROTOBUF_SUBPROTOCOL in offered:
        codec: Codec = PROTOBUF
        chosen: str | None = PROTOBUF_SUBPROTOCOL
    else:
        codec = JSON
        chosen = "centrifuge-json" if "centrifuge-json" in offered else None
    return StreamStart(
        accept_response(key, chosen),
        lambda ctx, transport: ClientWebSocket(ctx, transport, codec, request=request),
    )


def kept(ctx: Context, request: Request | None) -> Request | None:
    """The request a client keeps until it connects: only for hooks and the message log
    (its headers, cookies and address), so that other connections don't hold it."""
    return request if request is not None and ctx.node.wants_conns else None
