"""Request/response endpoints: ``/pub/<channel>``, ``/stats``, ``/health`` and the demo page."""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.channels import validate_channel
from tidings.core.node import Node, Published
from tidings.core.publication import StreamPosition
from tidings.core.tick import Later
from tidings.exceptions import BrokerUnavailable, HttpError, InvalidChannel, InvalidPayload
from tidings.protocol.envelope import EVENT_NAME, MAX_JSON_DEPTH, check_json_payload
from tidings.protocol.http import Request
from tidings.protocol.positions import format_position

from .decisions import Response

if TYPE_CHECKING:
    from tidings.app import App

__all__ = [
    "api_params",
    "channel_infos",
    "check_api_key",
    "decode_payload",
    "demo_page",
    "health",
    "json_response",
    "publish_endpoint",
    "server_api",
    "stats",
]

log = logging.getLogger("tidings.server")


def json_response(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return status, orjson.dumps(body), headers or []


def check_api_key(app: App, request: Request) -> None:
    """Raise 401 unless the request carries the configured key (compared in constant time)."""
    key = app.config.api_key
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
    try:
        check_json_payload(body)
    except InvalidPayload:
        raise HttpError(400, f"JSON nested more than {MAX_JSON_DEPTH} levels") from None
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
    if event is not None and not EVENT_NAME.fullmatch(event):
        raise HttpError(400, "event name: 1-64 characters of A-Z a-z 0-9 _-.:@/")
    return event


# Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): an sf-string, "…", or the
# bare token most clients send; printable ASCII either way, bounded.
_IDEMPOTENCY_KEY = re.compile(r'"([\x21\x23-\x5b\x5d-\x7e]{1,128})"|([\x21-\x7e]{1,128})')


def _idempotency_key(request: Request) -> str:
    """The ``Idempotency-Key`` header's key, "" without one; 400 for a malformed one."""
    text = request.header("idempotency-key").strip()
    if not text:
        return ""
    match = _IDEMPOTENCY_KEY.fullmatch(text)
    if match is None or (match.group(2) and '"' in match.group(2)):
        raise HttpError(400, "Idempotency-Key: 1-128 printable ASCII characters")
    return match.group(1) or match.group(2)


def _channel_info(
    node: Node, channel: str, position: StreamPosition | None, stored: int
) -> dict[str, Any]:
    result: dict[str, Any] = {"channel": channel, "subscribers": node.hub.count(channel)}
    if position is None:
        result.update(stored=0, published=0, offset=0, epoch="", last_event_id="")
    else:
        result.update(
            stored=stored,
            published=position.offset,
            offset=position.offset,
            epoch=position.epoch,
            last_event_id=format_position(channel, position.offset, position.epoch),
        )
    return result


async def channel_infos(node: Node, channels: list[str]) -> list[dict[str, Any]]:
    """Stream and subscriber figures of ``channels``, read from the broker in one call."""
    infos = await node.stream_info(channels)
    result = []
    for channel in channels:
        info = infos.get(channel)
        position, stored = (info.position, info.stored) if info is not None else (None, 0)
        result.append(_channel_info(node, channel, position, stored))
    return result


def _published(channel: str, done: Published) -> Response:
    pos = done.position
    body: dict[str, Any] = {
        "channel": channel,
        "offset": pos.offset,
        "epoch": pos.epoch,
        "id": format_position(channel, pos.offset, pos.epoch),
        "subscribers": done.subscribers,
    }
    if done.duplicate:
        body["duplicate"] = True  # the key's first publish; nothing was published now
    return json_response(200, body)


def publish_endpoint(
    app: App, request: Request, channel: str
) -> Response | Later[Response] | Awaitable[Response]:
    """POST/PUT publish, GET channel info, DELETE close subscribers and drop history.

    A publish the broker takes synchronously (the memory broker) is answered at once, so
    publishes pipelined or arriving together are fanned out in the same loop iteration and
    reach each subscriber in one coalesced write (docs/architecture.md). One the broker
    commits in a batch (the SQLite store) is a ``Later``, answered when the batch of the
    same read is committed."""
    check_api_key(app, request)
    try:
        validate_channel(channel)
    except InvalidChannel as exc:
        raise HttpError(400, f"bad channel name: {exc}") from None
    node = app.node
    method = request.method
    if method in ("POST", "PUT"):
        event = _event_name(request)
        key = _idempotency_key(request)
        data, is_json = decode_payload(request)
        exclude = request.query.get("exclude_client", "")
        done = node.publish_nowait(
            channel, data, is_json=is_json, event=event, idempotency_key=key, exclude_client=exclude
        )
        if isinstance(done, Later):
            return done.then(partial(_settled, channel))
        if done is not None:
            return _published(channel, done)
        return _publish(node, channel, data, is_json, event, key, exclude)
    if method == "GET":
        return _info(node, channel)
    if method == "DELETE":
        return _delete(node, channel)
    raise HttpError(405, "method not allowed", [("Allow", "POST, PUT, GET, DELETE, OPTIONS")])


async def _publish(
    node: Node,
    channel: str,
    data: bytes,
    is_json: bool,
    event: str | None,
    key: str,
    exclude: str,
) -> Response:
    try:
        done = await node.publish(
            channel, data, is_json=is_json, event=event, idempotency_key=key, exclude_client=exclude
        )
    except BrokerUnavailable as exc:
        raise _unavailable(channel, exc) from None
    return _published(channel, done)


def _settled(channel: str, done: Published | None, error: BaseException | None) -> Response:
    if isinstance(error, BrokerUnavailable):
        raise _unavailable(channel, error) from None
    if error is not None:
        raise error
    assert done is not None
    return _published(channel, done)


def _unavailable(channel: str, exc: BrokerUnavailable) -> HttpError:
    """Nothing was published: the publisher may retry."""
    log.warning("publish to %s failed: %s", channel, exc)
    return HttpError(503, "broker unavailable", [("Retry-After", "1")])


async def _info(node: Node, channel: str) -> Response:
    return json_response(200, (await channel_infos(node, [channel]))[0])


async def _delete(node: Node, channel: str) -> Response:
    closed = await node.delete_channel(channel)
    return json_response(200, {"channel": channel, "deleted": True, "subscribers": closed})


def stats(app: App, request: Request, rest: str = "") -> Awaitable[Response]:
    """Server and channel statistics: ``?channel=NAME`` for one, ``?prefix=P`` for some."""
    if not app.config.stats_open:
        check_api_key(app, request)
    if request.method != "GET":
        raise HttpError(405, "method not allowed", [("Allow", "GET")])
    query = request.query
    if "channel" in query:
        try:
            validate_channel(query["channel"])
        except InvalidChannel as exc:
            raise HttpError(400, f"bad channel name: {exc}") from None
    return _stats(app, query.get("channel"), query.get("prefix", ""))


async def _stats(app: App, channel: str | None, prefix: str) -> Response:
    node = app.node
    if channel is not None:
        names = [channel]
    else:
        known = set(await node.broker.channels(prefix))
        known.update(ch for ch in node.hub.channels() if ch.startswith(prefix))
        names = sorted(known)[:10000]
    body = {
        "uptime": round(time.time() - node.started, 3),
        "connections": app.connection_counts(),
        "published": node.published,
        "slow_disconnects": app.slow_disconnects,
        "channels": await channel_infos(node, names),
    }
    return json_response(200, body)


def health(app: App, request: Request, rest: str = "") -> Response:
    # HEAD too: load balancers' health checks often use it.
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, "method not allowed", [("Allow", "GET, HEAD")])
    uptime = round(time.time() - app.node.started)
    # The node's name (<host>-<pid>) tells which worker or machine answered.
    node = app.node.name
    problem = app.node.broker.health()
    if problem:
        # A load balancer sends clients elsewhere while this node can't reach its broker.
        body = {"status": "unavailable", "reason": problem, "uptime": uptime, "node": node}
        return json_response(503, body)
    return json_response(200, {"status": "ok", "uptime": uptime, "node": node})


def demo_page(app: App, request: Request, rest: str = "") -> Response:
    if not app.config.demo or request.method != "GET":
        raise HttpError(404, "not found")
    page = resources.files("tidings.server").joinpath("static/demo.html").read_bytes()
    # The demo publishes from the page, so it carries the key: the demo is for development.
    # "<" escaped so that no key can close the <script> element it is written into.
    key = orjson.dumps(app.config.api_key).replace(b"<", b"\\u003c")
    page = page.replace(b"{{API_KEY}}", key)
    return 200, page, [("Content-Type", "text/html; charset=utf-8")]


def server_api(app: App, request: Request, method: str) -> Awaitable[Response]:
    """``POST /api/<method>``: the server API (Centrifugo-compatible request/response)."""
    check_api_key(app, request)
    return _api(app, method, api_params(request))


def api_params(request: Request) -> Any:
    """The JSON body of a server API call (``{}`` when empty); 405 unless POST, 400 unless
    JSON."""
    if request.method != "POST":
        raise HttpError(405, "method not allowed", [("Allow", "POST")])
    try:
        return orjson.loads(request.body) if request.body.strip() else {}
    except orjson.JSONDecodeError:
        raise HttpError(400, "body is not valid JSON") from None


async def _api(app: App, method: str, params: Any) -> Response:
    return json_response(200, await app.api.call(method, params))
