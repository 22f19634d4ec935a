"""Server-Sent Events encoding (WHATWG HTML, "Server-sent events", §9.2)."""

from __future__ import annotations

__all__ = ["sse_comment", "sse_event", "sse_retry"]


def sse_event(data: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """One event. Each line of ``data`` becomes its own ``data:`` field, so a payload with
    newlines (LF, CR or CRLF: §9.2.5 splits on all three) arrives joined with LF."""
    parts: list[bytes] = []
    if id is not None:
        # §9.2.6: an id containing NUL is ignored by the browser; ours never holds CR/LF/NUL.
        parts.append(b"id: " + id.encode() + b"\n")
    if event:
        parts.append(b"event: " + _line(event) + b"\n")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for line in data.split(b"\n"):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def sse_comment(text: str = "") -> bytes:
    """A comment line (ignored by clients): used as heartbeat."""
    return b":" + _line(text) + b"\n\n"


def sse_retry(milliseconds: int) -> bytes:
    """The reconnection time field."""
    return b"retry: " + str(int(milliseconds)).encode() + b"\n\n"


def _line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode()
