"""WebSocket (RFC 6455) on top of the ``websockets`` library's sans-I/O layer.

The opening handshake is checked here against the already parsed HTTP request (§4.2.1);
frames are parsed by ``websockets.protocol.Protocol``, which enforces masking, control frame
rules, fragmentation order and the message size limit. This module adds what that layer
leaves to its callers: reassembling fragmented messages and UTF-8 validation of text (§8.1).
Outgoing server frames are built once per message and shared by every connection.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import Protocol, Side, State
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


class WebSocketReader:
    """Parses client frames; collects messages and the bytes the protocol must answer.

    After ``receive_data``: ``messages`` holds complete messages, ``to_send`` holds control
    frames to write (pong, close), ``closed`` tells that the connection must end once they
    are written; ``close_code``/``close_reason`` say why.
    """

    __slots__ = ("_fragments", "_proto", "_text", "close_code", "close_reason", "closed")

    def __init__(self, max_size: int) -> None:
        self._proto = Protocol(Side.SERVER, state=State.OPEN, max_size=max_size)
        self._fragments: list[bytes] | None = None
        self._text = False
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""

    def receive_data(self, data: bytes) -> tuple[list[Message], bytes]:
        """Feed bytes; return (complete messages, bytes to send back)."""
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
        if text:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                # §8.1: invalid UTF-8 in a text message fails the connection with 1007.
                self._proto.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
                return
        messages.append(Message(bytes(data), text))

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
