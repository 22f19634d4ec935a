"""Message templates for HTTP streaming (iframe/JSONP style), in nginx-push-stream's manner.

Placeholders: ``~text~`` (the payload), ``~channel~``, ``~id~`` (the position), ``~event~``,
``~offset~`` and ``~epoch~``. Templates come from configuration only, never from a request:
a template from a query string would let anyone make the server serve their HTML.

How a value is written depends on the template's content type:

- **script mode** (``text/html``, ``application/xhtml+xml`` and the JavaScript types): every
  value is a JavaScript literal — ``~text~`` the JSON payload as is, or a text payload as a
  string; ``~offset~`` a number; the others strings — with ``<``, ``>``, ``&``, U+2028 and
  U+2029 written as ``\\uXXXX`` escapes. So a value is always one JS expression and can't
  end the ``<script>`` element it is in (WHATWG HTML §13.2.5.4, script data state: only a
  ``<`` can begin that) nor open a tag in HTML text. Placeholders are written bare:
  ``f(~text~, ~id~)``. One next to a quote (``'~id~'``) is refused: inside a JS string a
  literal's own quotes would end it. Values are not safe inside HTML attributes.
- **raw mode** (any other type): values are inserted as they are.
"""

from __future__ import annotations

import re

import orjson

from tidings.exceptions import ConfigError

from .envelope import payload_json

__all__ = ["SCRIPT_TYPES", "MessageTemplate", "script_literal"]

_PLACEHOLDER = re.compile(rb"~(text|channel|id|event|offset|epoch)~")
_QUOTES = frozenset(b"'\"`")

# Media types whose documents run or embed script: their templates get script mode.
SCRIPT_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "text/ecmascript",
        "application/ecmascript",
    }
)

# Outside string literals these can't occur in JSON; inside them the \u escapes are the same
# characters to JavaScript. U+2028/U+2029 end a line in JS before ES2019 (ECMA-262 §12.3).
_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def script_literal(json: bytes) -> bytes:
    """Valid JSON bytes made safe to embed in a ``<script>`` element or HTML text."""
    for char, escape in _ESCAPES:
        if char in json:
            json = json.replace(char, escape)
    return json


def _json_payload(data: bytes, is_json: bool) -> bytes:
    """The payload as a JSON value; a "JSON" payload that doesn't parse becomes a string."""
    if is_json:
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            is_json = False
    return payload_json(data, is_json)


class MessageTemplate:
    """A compiled template: literal pieces and placeholder names, in order."""

    __slots__ = ("_pieces", "content_type", "footer", "header", "name", "script")

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
        self.script = content_type.split(";")[0].strip().lower() in SCRIPT_TYPES
        self.header = header.encode()
        self.footer = footer.encode()
        raw = template.encode()
        pieces: list[tuple[bool, bytes]] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(raw):
            start, end = match.span()
            quoted = (start > 0 and raw[start - 1] in _QUOTES) or (
                end < len(raw) and raw[end] in _QUOTES
            )
            if self.script and quoted:
                raise ConfigError(
                    f"template {name!r}: write ~{match.group(1).decode()}~ without quotes, "
                    f"it is a JavaScript literal in a {content_type} template"
                )
            if start > pos:
                pieces.append((False, raw[pos:start]))
            pieces.append((True, match.group(1)))
            pos = end
        if pos < len(raw):
            pieces.append((False, raw[pos:]))
        self._pieces = tuple(pieces)

    def render(
        self,
        *,
        text: bytes,
        channel: str,
        id: str,
        event: str | None,
        offset: int,
        epoch: str,
        is_json: bool = False,
    ) -> bytes:
        """One message; ``is_json`` tells whether ``text`` is JSON (script mode only)."""
        if self.script:
            values = {
                b"text": script_literal(_json_payload(text, is_json)),
                b"channel": script_literal(orjson.dumps(channel)),
                b"id": script_literal(orjson.dumps(id)),
                b"event": script_literal(orjson.dumps(event or "")),
                b"offset": str(offset).encode(),
                b"epoch": script_literal(orjson.dumps(epoch)),
            }
        else:
            values = {
                b"text": text,
                b"channel": channel.encode(),
                b"id": id.encode(),
                b"event": (event or "").encode(),
                b"offset": str(offset).encode(),
                b"epoch": epoch.encode(),
            }
        return b"".join(values[p] if is_var else p for is_var, p in self._pieces)
