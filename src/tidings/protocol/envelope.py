"""The message envelope of the simple endpoints, and control notices.

A publication travels as ``{"channel", "offset", "epoch", "event"?, "data"}``; ``data`` is the
payload itself when it is JSON and a JSON string when it is text. Raw mode sends the payload
alone. Notices (``{"notice": "gap" | "deleted" | ...}``) tell a client what the stream can't
say by itself: that history could not fill a gap, or that the channel was deleted.

A JSON payload nests at most ``MAX_JSON_DEPTH`` (254) levels of arrays and objects: the
deepest ``orjson.dumps`` encodes (``orjson.loads`` reads up to 1,024), so every payload
tidings accepts can be encoded again wherever it travels. ``json_payload`` and
``check_json_payload`` raise ``InvalidPayload`` for deeper ones.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson

from tidings.exceptions import InvalidPayload

__all__ = [
    "EVENT_NAME",
    "MAX_JSON_DEPTH",
    "check_json_payload",
    "encode_envelope",
    "encode_notice",
    "is_json_text",
    "json_payload",
    "payload_json",
]

MAX_JSON_DEPTH = 254

# A publisher's event name: it travels in SSE ``event:`` fields and HTTP headers.
EVENT_NAME = re.compile(r"[A-Za-z0-9_\-.:@/]{1,64}")


def json_payload(value: Any) -> bytes:
    """``value``, as ``orjson.loads`` returns it, as compact JSON text; ``InvalidPayload``
    when it nests more than ``MAX_JSON_DEPTH`` levels."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # The only failure for a parsed value: orjson's recursion limit (the tests pin it).
        raise InvalidPayload(f"JSON nested more than {MAX_JSON_DEPTH} levels") from None


def is_json_text(data: bytes) -> bool:
    """Whether ``data`` is JSON text (else it is published as text)."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def check_json_payload(data: bytes) -> None:
    """``InvalidPayload`` when ``data`` is JSON text nested more than ``MAX_JSON_DEPTH``
    levels; any other bytes (shallower JSON, or not JSON at all) pass."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return  # too few brackets to be that deep: the common case, without parsing
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    json_payload(value)


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
