"""Message templates for HTTP streaming (iframe/JSONP style), in nginx-push-stream's manner.

Placeholders: ``~text~`` (the payload), ``~channel~``, ``~id~`` (the position), ``~event~``,
``~offset~`` and ``~epoch~``. Templates come from configuration only, never from a request:
a template from a query string would let anyone make the server serve their HTML.
"""

from __future__ import annotations

import re

__all__ = ["MessageTemplate"]

_PLACEHOLDER = re.compile(rb"~(text|channel|id|event|offset|epoch)~")


class MessageTemplate:
    """A compiled template: literal pieces and placeholder names, in order."""

    __slots__ = ("_pieces", "content_type", "footer", "header", "name")

    def __init__(
        self,
        name: str,
        template: str,
        *,
        content_type: str = "text/plain; charset=utf-8",
        header: str = "",
        footer: str = "",
    ) -> None:
        self.name = name
        self.content_type = content_type
        self.header = header.encode()
        self.footer = footer.encode()
        raw = template.encode()
        pieces: list[tuple[bool, bytes]] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(raw):
            if match.start() > pos:
                pieces.append((False, raw[pos : match.start()]))
            pieces.append((True, match.group(1)))
            pos = match.end()
        if pos < len(raw):
            pieces.append((False, raw[pos:]))
        self._pieces = tuple(pieces)

    def render(
        self, *, text: bytes, channel: str, id: str, event: str | None, offset: int, epoch: str
    ) -> bytes:
        values = {
            b"text": text,
            b"channel": channel.encode(),
            b"id": id.encode(),
            b"event": (event or "").encode(),
            b"offset": str(offset).encode(),
            b"epoch": epoch.encode(),
        }
        return b"".join(values[p] if is_var else p for is_var, p in self._pieces)
