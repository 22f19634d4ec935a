"""Re-framing the native server's output for a host that frames it itself (ASGI).

The streaming connections write what goes on the wire: a response head, chunked body
pieces, WebSocket frames. An ASGI server takes the status and headers, body pieces and
whole messages instead. These sans-I/O readers turn the one into the other; they read only
what tidings wrote (complete, well-formed), so they raise ``ValueError`` on anything else.
A client's WebSocket message goes the other way, as the masked frame a reader expects.
"""

from __future__ import annotations

import struct

__all__ = ["ChunkReader", "ServerFrameReader", "client_frame", "split_head"]


def split_head(data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """A response head's status and headers, and the bytes after it."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("incomplete response head")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return status, headers, rest


class ChunkReader:
    """The data of a chunked body (RFC 9112 §7.1), piece by piece; ``ended`` after the
    last chunk."""

    __slots__ = ("_buffer", "ended")

    def __init__(self) -> None:
        self._buffer = b""
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data
        out: list[bytes] = []
        while buffer and not self.ended:
            line, sep, rest = buffer.partition(b"\r\n")
            if not sep:
                break
            size = int(line.split(b";", 1)[0], 16)
            if len(rest) < size + 2:
                break
            if size == 0:
                self.ended = True
            else:
                out.append(rest[:size])
            buffer = rest[size + 2 :]
        self._buffer = buffer
        return b"".join(out)

    def rest(self) -> bytes:
        """What came after the last chunk: the next message's bytes."""
        rest, self._buffer = self._buffer, b""
        return rest


class ServerFrameReader:
    """Unmasked, unfragmented server frames (RFC 6455 §5.2) as ``(opcode, payload)``."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data
        frames: list[tuple[int, bytes]] = []
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            if second & 0x80:
                raise ValueError("a server frame is never masked")
            size, start = second & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    break
                size, start = struct.unpack_from("!H", buffer, 2)[0], 4
            elif size == 127:
                if len(buffer) < 10:
                    break
                size, start = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < start + size:
                break
            frames.append((first & 0x0F, buffer[start : start + size]))
            buffer = buffer[start + size :]
        self._buffer = buffer
        return frames


def client_frame(payload: bytes, text: bool) -> bytes:
    """One whole message as a client's final frame, masked with a zero key (§5.3: the key
    hides nothing here; the host's server has unmasked the message already)."""
    first = 0x81 if text else 0x82
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + b"\x00\x00\x00\x00" + payload
