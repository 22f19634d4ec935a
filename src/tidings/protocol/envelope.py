"""The message envelope of the simple endpoints, and control notices.

A publication travels as ``{"channel", "offset", "epoch", "event"?, "data"}``; ``data`` is the
payload itself when it is JSON and a JSON string when it is text. Raw mode sends the payload
alone. Notices (``{"notice": "gap" | "deleted" | ...}``) tell a client what the stream can't
say by itself: that history could not fill a gap, or that the channel was deleted.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

__all__ = ["encode_envelope", "encode_notice", "payload_json"]


def payload_json(data: bytes, is_json: bool) -> bytes:
    """The payload as a JSON value: JSON as is, text as a JSON string, and bytes that are
    not UTF-8 (published over a binary protocol) as ``{"base64": "..."}``."""
    if is_json:
        return data
    try:
        return orjson.dumps(data.decode("utf-8"))
    except UnicodeDecodeError:
        return orjson.dumps({"base64": base64.b64encode(data).decode()})


def encode_envelope(
    channel: str, offset: int, epoch: str, event: str | None, data: bytes, is_json: bool
) -> bytes:
    """The envelope of one publication, compact JSON without a trailing newline."""
    envelope: dict[str, Any] = {"channel": channel, "offset": offset, "epoch": epoch}
    if event:
        envelope["event"] = event
    envelope["data"] = orjson.Fragment(payload_json(data, is_json))
    return orjson.dumps(envelope)


def encode_notice(notice: str, channel: str, **fields: Any) -> bytes:
    """A control notice, compact JSON without a trailing newline."""
    body: dict[str, Any] = {"notice": notice, "channel": channel}
    body.update(fields)
    return orjson.dumps(body)
