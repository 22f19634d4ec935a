"""Resume positions as clients see them.

A position names, per channel, the last publication a client has: ``channel:offset:epoch``.
Several channels are joined with ``,``: ``news:12:k3x9,chat:1:4:k3x9``. Channel names may hold
``:`` (namespaces) but not ``,`` on the simple endpoints, so each part splits from the right.
The same text is the SSE ``id:``, the long-poll ``ETag`` and the ``?last_event_id=`` value.

An epoch is a token the broker draws (``secrets.token_urlsafe``: URL-safe base64). A parsed
epoch must be one: the text comes from a request and is written back into SSE ``id:`` lines
and ``ETag`` headers, so anything else (CR, LF, NUL, quotes, ``<``) is refused here.
"""

from __future__ import annotations

import re

from tidings.exceptions import InvalidPosition

__all__ = [
    "MAX_EPOCH",
    "MAX_POSITION_TEXT",
    "format_position",
    "format_positions",
    "is_epoch",
    "parse_positions",
    "parse_since",
]

MAX_POSITION_TEXT = 8192
MAX_EPOCH = 64
# The URL-safe base64 alphabet (RFC 4648 §5), without padding; empty means "not known".
_EPOCH = re.compile(rf"[A-Za-z0-9_-]{{0,{MAX_EPOCH}}}")


def is_epoch(text: str) -> bool:
    """True for up to ``MAX_EPOCH`` characters of the URL-safe base64 alphabet."""
    return _EPOCH.fullmatch(text) is not None


def format_position(channel: str, offset: int, epoch: str) -> str:
    """One channel's position."""
    return f"{channel}:{offset}:{epoch}"


def format_positions(positions: dict[str, tuple[int, str]]) -> str:
    """Every channel's position, joined with ``,``."""
    return ",".join(f"{ch}:{off}:{ep}" for ch, (off, ep) in positions.items())


def _offset(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise InvalidPosition("offset must be a non-negative integer")
    return int(text)


def parse_positions(text: str) -> dict[str, tuple[int, str]]:
    """Parse ``channel:offset:epoch[,...]``; an ETag's quotes and ``W/`` are ignored."""
    text = text.strip()
    if len(text) > MAX_POSITION_TEXT:
        raise InvalidPosition("position too long")
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    result: dict[str, tuple[int, str]] = {}
    if not text:
        return result
    for part in text.split(","):
        pieces = part.rsplit(":", 2)
        if len(pieces) != 3 or not pieces[0]:
            raise InvalidPosition("expected channel:offset:epoch")
        channel, offset, epoch = pieces
        if not is_epoch(epoch):
            raise InvalidPosition("epoch must be URL-safe base64")
        result[channel] = (_offset(offset), epoch)
    return result


def parse_since(text: str, channels: list[str]) -> dict[str, tuple[int, str]]:
    """Parse ``?since=``: a bare offset for every channel, or ``channel:offset[,...]``.

    No epoch is given here, so the epoch is left empty: the stream's current one is assumed.
    """
    text = text.strip()
    if len(text) > MAX_POSITION_TEXT:
        raise InvalidPosition("position too long")
    if text.isascii() and text.isdigit():
        offset = _offset(text)
        return dict.fromkeys(channels, (offset, ""))
    result: dict[str, tuple[int, str]] = {}
    for part in text.split(","):
        pieces = part.rsplit(":", 1)
        if len(pieces) != 2 or not pieces[0]:
            raise InvalidPosition("expected an offset or channel:offset")
        result[pieces[0]] = (_offset(pieces[1]), "")
    return result
