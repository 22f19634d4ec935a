"""Server-Sent Events encoding (WHATWG HTML, "Server-sent events", §9.2).

A field value ends at CR or LF (§9.2.5), so a value holding either would end the field early
and let the rest of it add fields or whole events. Whatever the caller passes, the encoders
here write no CR or LF inside a field: ``data`` is split into one ``data:`` line per line,
an ``event:`` name has them replaced by spaces, and an ``id:`` holding CR, LF or NUL is left
out (§9.2.6: a browser ignores an id containing NUL anyway).
"""

from __future__ import annotations

__all__ = ["sse_comment", "sse_event", "sse_id", "sse_retry"]


def sse_event(data: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """One event. Each line of ``data`` becomes its own ``data:`` field, so a payload with
    newlines (LF, CR or CRLF: §9.2.5 splits on all three) arrives joined with LF."""
    parts: list[bytes] = []
    if id is not None:
        parts.append(sse_id(id))
    if event:
        parts.append(b"event: " + _line(event) + b"\n")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for line in data.split(b"\n"):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def sse_id(id: str) -> bytes:
    """The ``id:`` field line; empty (no field) when ``id`` holds CR, LF or NUL."""
    if "\n" in id or "\r" in id or "\0" in id:
        return b""
    return b"id: " + id.encode() + b"\n"


def sse_comment(text: str = "") -> bytes:
    """A comment line (ignored by clients): used as heartbeat."""
    return b":" + _line(text) + b"\n\n"


def sse_retry(milliseconds: int) -> bytes:
    """The reconnection time field."""
    return b"retry: " + str(int(milliseconds)).encode() + b"\n\n"


def _line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").replace("\0", " ").encode()
