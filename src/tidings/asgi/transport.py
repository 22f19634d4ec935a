"""The native server's streaming connections, carried over an ASGI ``send``.

A session (``server/sessions.py``, ``server/centrifuge*.py``) writes wire bytes to an
``asyncio.Transport`` and never awaits. ``AsgiTransport`` is that transport for one ASGI
connection: each ``write`` is turned into ASGI messages (``protocol/relay.py``) and queued;
one writer task awaits ``send`` for them in order. What is queued counts as the transport's
write buffer, so the session's outgoing bound (``max_outgoing_bytes``) cuts off a reader
that can't keep up exactly as on the native server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from tidings.protocol.relay import ChunkReader, ServerFrameReader, client_frame, split_head

__all__ = ["AsgiTransport", "Message", "Send"]

log = logging.getLogger("tidings.asgi")

Message = dict[str, Any]
Send = Any  # an ASGI send callable: ``async (message) -> None``

_TEXT, _BINARY, _CLOSE, _PING = 0x1, 0x2, 0x8, 0x9
_DROPPED = {"connection", "transfer-encoding", "content-length"}  # the host frames the body


class AsgiTransport(asyncio.Transport):
    """One HTTP response stream (``websocket=False``) or one WebSocket, as a transport."""

    def __init__(self, send: Send, peer: object, *, websocket: bool) -> None:
        super().__init__()
        self._send = send
        self._peer = peer
        self.websocket = websocket
        self._queue: deque[tuple[Message, int]] = deque()
        self._buffered = 0
        self._wake = asyncio.Event()
        self._closing = False  # nothing more is queued
        self.done = asyncio.Event()  # the last message is sent (or the peer is gone)
        self._frames = ServerFrameReader()
        self._chunks: ChunkReader | None = None
        self._started = websocket  # a WebSocket is accepted before its session writes
        self.protocol: Any = None
        self._writer = asyncio.get_running_loop().create_task(self._run())

    # what the sessions use of asyncio.Transport
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        data = bytes(data)
        if self.websocket:
            self._ws_write(data)
        else:
            self._http_write(data)

    def _http_write(self, data: bytes) -> None:
        if not self._started:
            self._started = True
            status, headers, data = split_head(data)
            if any(n.lower() == "transfer-encoding" for n, _ in headers):
                self._chunks = ChunkReader()
            kept = [
                (n.lower().encode(), v.encode("latin-1"))
                for n, v in headers
                if n.lower() not in _DROPPED
            ]
            self._queue_message({"type": "http.response.start", "status": status, "headers": kept})
        if self._chunks is not None:
            data = self._chunks.feed(data)
        if data:
            self._queue_message({"type": "http.response.body", "body": data, "more_body": True})
        if self._chunks is not None and self._chunks.ended:
            self.close()

    def _ws_write(self, data: bytes) -> None:
        for opcode, payload in self._frames.feed(data):
            if opcode == _TEXT:
                self._queue_message({"type": "websocket.send", "text": payload.decode()})
            elif opcode == _BINARY:
                self._queue_message({"type": "websocket.send", "bytes": payload})
            elif opcode == _CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
                reason = payload[2:].decode()
                self._queue_message({"type": "websocket.close", "code": code, "reason": reason})
                self._closing = True
                return
            elif opcode == _PING:
                # ASGI has no ping message: the host's server pings the peer itself
                # (uvicorn: --ws-ping-interval) and drops it when it doesn't answer.
                # The session's own heartbeat is answered here so that it stays quiet.
                asyncio.get_running_loop().call_soon(self._pong)

    def _pong(self) -> None:
        if not self._closing and self.protocol is not None:
            self.protocol.data_received(b"\x8a\x80\x00\x00\x00\x00")

    def feed_message(self, data: bytes, text: bool) -> None:
        """A client's WebSocket message, given to the session as the frame it reads."""
        if self.protocol is not None:
            self.protocol.data_received(client_frame(data, text))

    def _queue_message(self, message: Message) -> None:
        size = len(message.get("body") or message.get("bytes") or message.get("text") or "")
        self._queue.append((message, size))
        self._buffered += size
        self._wake.set()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self.websocket:
            self._queue_message({"type": "websocket.close", "code": 1000, "reason": ""})
        elif self._started:
            self._queue_message({"type": "http.response.body", "body": b"", "more_body": False})
        self._wake.set()

    def abort(self) -> None:
        """End the connection now: what is queued is dropped, and a ``send`` the host
        holds back (a peer that doesn't read) is given up; the host closes the socket."""
        self._queue.clear()
        self._buffered = 0
        self._closing = True
        self._writer.cancel()

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return max(self._buffered, 0)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default

    def can_write_eof(self) -> bool:
        return False

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        result: asyncio.BaseProtocol = self.protocol
        return result

    def is_reading(self) -> bool:
        return True

    def pause_reading(self) -> None:
        """Reading is the host's; nothing to pause."""

    def resume_reading(self) -> None:
        """Reading is the host's; nothing to resume."""

    async def _run(self) -> None:
        try:
            while True:
                while self._queue:
                    message, size = self._queue.popleft()
                    await self._send(message)
                    self._buffered -= size
                    if message["type"] == "websocket.close" or (
                        message["type"] == "http.response.body" and not message["more_body"]
                    ):
                        return
                if self._closing and not self._queue:
                    return
                self._wake.clear()
                await self._wake.wait()
        except OSError:  # the peer went away under the host's server
            pass
        except Exception:
            log.exception("sending to %s failed", self._peer)
        finally:
            self._closing = True
            self.done.set()

    async def aclose(self) -> None:
        """Stop the writer (the peer is gone)."""
        self._closing = True
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self.done.set()
