"""Wire formats of the simple endpoints: one ``Formatter`` per transport and mode.

Each builds a publication's complete bytes for its transport (a WebSocket frame, an SSE
event, a chunk of a chunked body); the hub builds them once per publication and the bytes
are shared by every subscriber using the same formatter.
"""

from __future__ import annotations

from typing import Any

from tidings.core.hub import Formatter
from tidings.core.publication import Publication
from tidings.protocol.envelope import encode_envelope, encode_notice
from tidings.protocol.http import chunk
from tidings.protocol.positions import format_position
from tidings.protocol.sse import sse_event
from tidings.protocol.template import MessageTemplate
from tidings.protocol.websocket import text_frame

__all__ = [
    "ENVELOPE",
    "SSE_FORMATS",
    "STREAM_FORMATS",
    "WS_FORMATS",
    "EnvelopeFormat",
    "SseFormat",
    "StreamFormat",
    "TemplateFormat",
    "WsFormat",
    "body_of",
    "notice_event",
]


def body_of(pub: Publication, raw: bool) -> bytes:
    """The message body: the envelope JSON, or in raw mode the payload alone."""
    if raw:
        return pub.data
    return ENVELOPE.encode(pub)


def notice_event(kind: str) -> str:
    return "tidings." + kind


class EnvelopeFormat(Formatter):
    """The envelope JSON alone (long-poll assembles its own response)."""

    __slots__ = ()

    def build(self, pub: Publication) -> bytes:
        return encode_envelope(pub.channel, pub.offset, pub.epoch, pub.event, pub.data, pub.is_json)


ENVELOPE = EnvelopeFormat()


class WsFormat(Formatter):
    """One text frame per message."""

    __slots__ = ("raw",)

    def __init__(self, raw: bool) -> None:
        self.raw = raw

    def build(self, pub: Publication) -> bytes:
        return text_frame(body_of(pub, self.raw))


class SseFormat(Formatter):
    """One event per message; ``with_id`` adds the single channel's position as ``id:``
    (connections on several channels write their own ``id:`` line with every position)."""

    __slots__ = ("raw", "with_id")

    def __init__(self, raw: bool, with_id: bool) -> None:
        self.raw = raw
        self.with_id = with_id

    def build(self, pub: Publication) -> bytes:
        ident = format_position(pub.channel, pub.offset, pub.epoch) if self.with_id else None
        return sse_event(body_of(pub, self.raw), event=pub.event, id=ident)


class StreamFormat(Formatter):
    """One line per message, each its own chunk (``chunked=False``: for HTTP/1.0 clients,
    whose close-delimited bodies have no chunks, RFC 9112 §7.1)."""

    __slots__ = ("chunked", "raw")

    def __init__(self, raw: bool, chunked: bool = True) -> None:
        self.raw = raw
        self.chunked = chunked

    def build(self, pub: Publication) -> bytes:
        line = body_of(pub, self.raw) + b"\n"
        return chunk(line) if self.chunked else line


class TemplateFormat(Formatter):
    """Messages rendered through a configured template, each its own chunk (unless not
    ``chunked``, as for ``StreamFormat``)."""

    __slots__ = ("chunked", "template")

    def __init__(self, template: MessageTemplate, chunked: bool = True) -> None:
        self.template = template
        self.chunked = chunked

    def frame(self, data: bytes) -> bytes:
        return chunk(data) if self.chunked else data

    def build(self, pub: Publication) -> bytes:
        return self.frame(
            self.template.render(
                text=pub.data,
                channel=pub.channel,
                id=format_position(pub.channel, pub.offset, pub.epoch),
                event=pub.event,
                offset=pub.offset,
                epoch=pub.epoch,
                is_json=pub.is_json,
            )
        )

    def notice(self, kind: str, channel: str, fields: dict[str, Any]) -> bytes:
        return self.frame(
            self.template.render(
                text=encode_notice(kind, channel, **fields),
                channel=channel,
                id="",
                event=notice_event(kind),
                offset=0,
                epoch="",
                is_json=True,
            )
        )


WS_FORMATS = {False: WsFormat(False), True: WsFormat(True)}
SSE_FORMATS = {
    (raw, with_id): SseFormat(raw, with_id) for raw in (False, True) for with_id in (False, True)
}
STREAM_FORMATS = {
    (raw, chunked): StreamFormat(raw, chunked) for raw in (False, True) for chunked in (False, True)
}
