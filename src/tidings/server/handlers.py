"""Request/response endpoints: ``/pub/<channel>``, ``/stats``, ``/health`` and the demo page."""

from __future__ import annotations

import hmac
import re
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.channels import validate_channel
from tidings.core.node import Node
from tidings.exceptions import HttpError, InvalidChannel
from tidings.protocol.http import Request
from tidings.protocol.positions import format_position

if TYPE_CHECKING:
    from .server import Server

__all__ = [
    "Response",
    "check_api_key",
    "demo_page",
    "health",
    "publish_endpoint",
    "server_api",
    "stats",
]

Response = tuple[int, bytes, list[tuple[str, str]]]

_EVENT = re.compile(r"[A-Za-z0-9_\-.:@/]{1,64}")


def json_response(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return status, orjson.dumps(body), headers or []


def check_api_key(server: Server, request: Request) -> None:
    """Raise 401 unless the request carries the configured key (compared in constant time)."""
    key = server.config.api_key
    given = request.header("x-api-key")
    if not given:
        auth = request.header("authorization")
        if auth.lower().startswith("apikey "):
            given = auth[7:].strip()
    if not key or not given or not hmac.compare_digest(given.encode(), key.encode()):
        raise HttpError(401, "missing or wrong API key")


def decode_payload(request: Request) -> tuple[bytes, bool]:
    """The body as (payload, is_json). JSON content types must hold JSON; text types are
    text; anything else (curl -d sends a form type) is JSON when it parses, else text."""
    body = request.body
    ctype = request.header("content-type").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            raise HttpError(400, "body is not valid JSON") from None
        return body, True
    if not ctype.startswith("text/"):
        try:
            orjson.loads(body)
            return body, True
        except orjson.JSONDecodeError:
            pass
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "body must be JSON or UTF-8 text") from None
    return body, False


def _event_name(request: Request) -> str | None:
    event = request.query.get("event") or request.header("x-event") or None
    if event is not None and not _EVENT.fullmatch(event):
        raise HttpError(400, "event name: 1-64 characters of A-Z a-z 0-9 _-.:@/")
    return event


async def channel_info(node: Node, channel: str) -> dict[str, Any]:
    info = await node.stream_info(channel)
    result: dict[str, Any] = {"channel": channel, "subscribers": node.hub.count(channel)}
    if info is None:
        result.update(stored=0, published=0, offset=0, epoch="", last_event_id="")
    else:
        pos = info.position
        result.update(
            stored=info.stored,
            published=pos.offset,
            offset=pos.offset,
            epoch=pos.epoch,
            last_event_id=format_position(channel, pos.offset, pos.epoch),
        )
    return result


async def publish_endpoint(server: Server, request: Request, channel: str) -> Response:
    """POST/PUT publish, GET channel info, DELETE close subscribers and drop history."""
    check_api_key(server, request)
    try:
        validate_channel(channel)
    except InvalidChannel as exc:
        raise HttpError(400, f"bad channel name: {exc}") from None
    node = server.node
    method = request.method
    if method in ("POST", "PUT"):
        event = _event_name(request)
        data, is_json = decode_payload(request)
        pub, reached = await node.publish(channel, data, is_json=is_json, event=event)
        return json_response(
            200,
            {
                "channel": channel,
                "offset": pub.offset,
                "epoch": pub.epoch,
                "id": format_position(channel, pub.offset, pub.epoch),
                "subscribers": reached,
            },
        )
    if method == "GET":
        return json_response(200, await channel_info(node, channel))
    if method == "DELETE":
        closed = await node.delete_channel(channel)
        return json_response(200, {"channel": channel, "deleted": True, "subscribers": closed})
    raise HttpError(405, "method not allowed", [("Allow", "POST, PUT, GET, DELETE, OPTIONS")])


async def stats(server: Server, request: Request) -> Response:
    """Server and channel statistics: ``?channel=NAME`` for one, ``?prefix=P`` for some."""
    if not server.config.stats_open:
        check_api_key(server, request)
    if request.method != "GET":
        raise HttpError(405, "method not allowed", [("Allow", "GET")])
    node = server.node
    query = request.query
    if "channel" in query:
        names = [query["channel"]]
        try:
            validate_channel(names[0])
        except InvalidChannel as exc:
            raise HttpError(400, f"bad channel name: {exc}") from None
    else:
        prefix = query.get("prefix", "")
        known = set(await node.broker.channels(prefix))
        known.update(ch for ch in node.hub.channels() if ch.startswith(prefix))
        names = sorted(known)[:10000]
    channels = [await channel_info(node, name) for name in names]
    body = {
        "uptime": round(time.time() - node.started, 3),
        "connections": server.connection_counts(),
        "published": node.published,
        "slow_disconnects": server.stats_slow,
        "channels": channels,
    }
    return json_response(200, body)


def health(server: Server, request: Request) -> Response:
    # HEAD too: load balancers' health checks often use it.
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, "method not allowed", [("Allow", "GET, HEAD")])
    return json_response(200, {"status": "ok", "uptime": round(time.time() - server.node.started)})


def demo_page(server: Server, request: Request) -> Response:
    page = resources.files("tidings.server").joinpath("static/demo.html").read_bytes()
    # The demo publishes from the page, so it carries the key: the demo is for development.
    # "<" escaped so that no key can close the <script> element it is written into.
    key = orjson.dumps(server.config.api_key).replace(b"<", b"\\u003c")
    page = page.replace(b"{{API_KEY}}", key)
    return 200, page, [("Content-Type", "text/html; charset=utf-8")]


async def server_api(server: Server, request: Request, method: str) -> Response:
    """``POST /api/<method>``: the server API (Centrifugo-compatible request/response)."""
    check_api_key(server, request)
    if request.method != "POST":
        raise HttpError(405, "method not allowed", [("Allow", "POST")])
    try:
        params = orjson.loads(request.body) if request.body.strip() else {}
    except orjson.JSONDecodeError:
        raise HttpError(400, "body is not valid JSON") from None
    return json_response(200, await server.api.call(method, params))
