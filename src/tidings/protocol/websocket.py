"""WebSocket (RFC 6455) on top of the ``websockets`` library's sans-I/O layer.

The opening handshake is checked here against the already parsed HTTP request (§4.2.1);
frames are parsed by ``websockets.protocol.Protocol``, which enforces masking, control frame
rules, fragmentation order and the frame size limit. This module adds what that layer
leaves to its callers: the size limit of a whole fragmented message, UTF-8 validation of
text (§8.1), both checked frame by frame as the frames are parsed, and reassembly.
Outgoing server frames are built once per message and shared by every connection.
"""

from __future__ import annotations

import base64
import binascii
import codecs
from dataclasses import dataclass

from websockets.exceptions import PayloadTooBig
from websockets.extensions import Extension
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.typing import ExtensionName
from websockets.utils import accept_key

from tidings.exceptions import WebSocketError

from .http import Request, response_head

__all__ = [
    "CloseCode",
    "Message",
    "WebSocketReader",
    "accept_response",
    "binary_frame",
    "check_handshake",
    "close_frame",
    "text_frame",
]


def check_handshake(request: Request) -> str:
    """Validate an opening handshake; return the ``Sec-WebSocket-Key``.

    Raises ``WebSocketError`` with a reason safe to show the client.
    """
    if request.method != "GET":
        raise WebSocketError("WebSocket handshake must use GET")
    if "websocket" not in request.header("upgrade").lower():
        raise WebSocketError("missing Upgrade: websocket")
    if "upgrade" not in request.header("connection").lower():
        raise WebSocketError("missing Connection: upgrade")
    if request.header("sec-websocket-version").strip() != "13":
        raise WebSocketError("unsupported Sec-WebSocket-Version")
    key = request.header("sec-websocket-key").strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise WebSocketError("invalid Sec-WebSocket-Key") from None
    if len(raw) != 16:
        raise WebSocketError("invalid Sec-WebSocket-Key")
    return key


def accept_response(key: str, subprotocol: str | None = None) -> bytes:
    """The 101 response that completes the handshake (§4.2.2)."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if subprotocol:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    return response_head(101, headers)


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame (servers never mask, §5.1)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def binary_frame(payload: bytes) -> bytes:
    return Frame(Opcode.BINARY, payload).serialize(mask=False)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit the 125-byte control payload (§5.5)."""
    data = reason.encode()[:123]
    while True:
        try:
            data.decode()
            break
        except UnicodeDecodeError:
            data = data[:-1]
    return Frame(Opcode.CLOSE, Close(code, data.decode()).serialize()).serialize(mask=False)


@dataclass(slots=True)
class Message:
    """A complete data message from the client."""

    data: bytes
    text: bool


class _MessageChecks(Extension):
    """Checks each data frame as ``websockets`` parses it: the size of the message so far,
    and that a text message is valid UTF-8 so far (§8.1: it may fail as soon as a byte
    can't be). Never negotiated, never on the wire: ``websockets`` calls ``decode`` on every
    frame it parses before acting on it, so an exception here fails the connection at this
    frame (UnicodeDecodeError: 1007, PayloadTooBig: 1009), and the frames after it are
    neither answered nor delivered (§7.1.7). Frames that break the framing rules are let
    through: ``websockets`` refuses them right after (1002)."""

    name = ExtensionName("tidings-message-checks")

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._size: int | None = None  # bytes of the fragmented message so far
        self._utf8: codecs.IncrementalDecoder | None = None

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        op = frame.opcode
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            return frame
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if self._size is not None:
                return frame  # a new message inside a fragmented one
            self._size = 0
            self._utf8 = codecs.getincrementaldecoder("utf-8")() if op is Opcode.TEXT else None
        elif op is not Opcode.CONT or self._size is None:
            return frame  # a control frame, or a continuation of nothing
        size = self._size + len(frame.data)
        if size > self._max_size:
            raise PayloadTooBig(len(frame.data), self._max_size - self._size)
        if self._utf8 is not None:
            self._utf8.decode(frame.data, frame.fin)
        self._size = None if frame.fin else size
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


class WebSocketReader:
    """Parses client frames; collects messages and the bytes the protocol must answer.

    After ``receive_data``: ``messages`` holds complete messages, ``to_send`` holds control
    frames to write (pong, close), ``closed`` tells that the connection must end once they
    are written; ``close_code``/``close_reason`` say why.
    """

    __slots__ = ("_eof", "_fragments", "_proto", "_text", "close_code", "close_reason", "closed")

    def __init__(self, max_size: int) -> None:
        # websockets checks each frame's declared length before reading it; the size of a
        # whole fragmented message is checked by _MessageChecks, which doesn't count the
        # control frames between fragments (§5.4: they aren't part of the message).
        self._proto = Protocol(Side.SERVER, state=State.OPEN, max_size=(None, max_size))
        self._proto.extensions = [_MessageChecks(max_size)]
        self._fragments: list[bytes] | None = None
        self._text = False
        self._eof = False
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""

    def receive_data(self, data: bytes) -> tuple[list[Message], bytes]:
        """Feed bytes; return (complete messages, bytes to send back). Bytes after
        ``receive_eof`` are ignored."""
        if self._eof:
            return [], b""
        proto = self._proto
        proto.receive_data(data)
        messages: list[Message] = []
        for event in proto.events_received():
            if isinstance(event, Frame):
                self._on_frame(event, messages)
        out = b"".join(proto.data_to_send())
        self._check_closed()
        return messages, out

    def receive_eof(self) -> bytes:
        """The peer's end of stream; return the bytes to send back."""
        self._eof = True
        self._proto.receive_eof()
        out = b"".join(self._proto.data_to_send())
        self._check_closed()
        return out

    def _on_frame(self, frame: Frame, messages: list[Message]) -> None:
        if self.closed:
            return
        op = frame.opcode
        data = bytes(frame.data)
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if frame.fin:
                self._complete(data, op is Opcode.TEXT, messages)
            else:
                self._fragments = [data]
                self._text = op is Opcode.TEXT
        elif op is Opcode.CONT and self._fragments is not None:
            self._fragments.append(data)
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = None
                self._complete(data, self._text, messages)
        # PING (the protocol queued the PONG), PONG and CLOSE need nothing more here.

    def _complete(self, data: bytes, text: bool, messages: list[Message]) -> None:
        # Text is valid UTF-8 here: _MessageChecks failed the connection otherwise.
        messages.append(Message(data, text))

    def _check_closed(self) -> None:
        proto = self._proto
        if proto.state in (State.CLOSING, State.CLOSED) and not self.closed:
            self.closed = True
            rcvd, sent = proto.close_rcvd, proto.close_sent
            if sent is not None and (rcvd is None or proto.close_rcvd_then_sent is False):
                self.close_code, self.close_reason = int(sent.code), sent.reason
            elif rcvd is not None:
                self.close_code, self.close_reason = int(rcvd.code), rcvd.reason
            else:
                self.close_code = int(CloseCode.ABNORMAL_CLOSURE)

    @property
    def state(self) -> State:
        return self._proto.state

    @property
    def peer_closed(self) -> bool:
        """True once the client's close frame has arrived (it started or answered a close)."""
        return self._proto.close_rcvd is not None
