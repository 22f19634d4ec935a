"""HTTP/1.1 responses read from bytes (RFC 9112), for the Publisher's pipelined client.

``ResponseReader.feed(data)`` returns the responses completed by ``data``, in order. A body
is delimited by ``Content-Length`` or chunked transfer coding (§6.3); a response without
either, other than 204/304/1xx, would end only with the connection, which pipelining can't
use, so it is refused like any malformed input (``ValueError``). Heads and bodies are
bounded. Pure Python: the Publisher needs no server dependency.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .relay import ChunkReader

__all__ = ["MAX_BODY", "MAX_HEAD", "ParsedResponse", "ResponseReader"]

MAX_HEAD = 65536
MAX_BODY = 16 << 20


@dataclass(slots=True)
class ParsedResponse:
    """One response: ``keep_alive`` is whether the connection may carry another."""

    status_code: int
    reason_phrase: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    content: bytes = b""
    keep_alive: bool = True


class ResponseReader:
    """Responses from a byte stream, one after another."""

    __slots__ = ("_body", "_buffer", "_chunks", "_current", "_length")

    def __init__(self) -> None:
        self._buffer = b""
        self._current: ParsedResponse | None = None
        self._length = 0  # body bytes still due (Content-Length)
        self._chunks: ChunkReader | None = None
        self._body: list[bytes] = []

    def feed(self, data: bytes) -> list[ParsedResponse]:
        self._buffer += data
        done: list[ParsedResponse] = []
        while True:
            if self._current is None:
                if not self._head():
                    return done
                continue
            if not self._read_body():
                return done
            response, self._current = self._current, None
            response.content = b"".join(self._body)
            self._body = []
            if response.status_code >= 200:  # 1xx (100 Continue) comes before the answer
                done.append(response)

    def _head(self) -> bool:
        head, sep, rest = self._buffer.partition(b"\r\n\r\n")
        if not sep:
            if len(self._buffer) > MAX_HEAD:
                raise ValueError("response head too long")
            return False
        self._buffer = rest
        lines = head.decode("latin-1").split("\r\n")
        version, _, status_reason = lines[0].partition(" ")
        status, _, reason = status_reason.partition(" ")
        if not version.startswith("HTTP/1.") or not (status.isdigit() and len(status) == 3):
            raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        response = ParsedResponse(int(status), reason)
        length: int | None = None
        chunked = False
        connection = ""
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError("bad header line")
            name, value = name.strip().lower(), value.strip()
            response.headers.append((name, value))
            if name == "content-length":
                if not value.isdigit():
                    raise ValueError("bad Content-Length")
                length = int(value)
            elif name == "transfer-encoding":
                chunked = value.lower().endswith("chunked")
            elif name == "connection":
                connection = value.lower()
        if version == "HTTP/1.0":
            response.keep_alive = "keep-alive" in connection
        else:
            response.keep_alive = "close" not in connection
        code = response.status_code
        if code < 200 or code in (204, 304):
            self._length, self._chunks = 0, None
        elif chunked:
            self._chunks = ChunkReader()
        elif length is not None:
            if length > MAX_BODY:
                raise ValueError("response body too large")
            self._length, self._chunks = length, None
        else:
            raise ValueError("a response body delimited only by closing the connection")
        self._current = response
        return True

    def _read_body(self) -> bool:
        """Take what the body needs from the buffer; whether it is complete."""
        if self._chunks is not None:
            data, self._buffer = self._buffer, b""
            self._body.append(self._chunks.feed(data))
            if sum(len(b) for b in self._body) > MAX_BODY:
                raise ValueError("response body too large")
            if not self._chunks.ended:
                return False
            self._buffer = self._chunks.rest()
            self._chunks = None
            return True
        take = min(self._length, len(self._buffer))
        if take:
            self._body.append(self._buffer[:take])
            self._buffer = self._buffer[take:]
            self._length -= take
        return self._length == 0
