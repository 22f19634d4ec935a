"""Methods of the server API, with Centrifugo's request and response shapes.

Every call answers ``{"result": {...}}`` or ``{"error": {"code", "message"}}`` (HTTP 200 in
both cases; a missing or wrong API key is HTTP 401). ``batch`` answers ``{"replies": [...]}``
with one ``{"<method>": result}`` or ``{"error": ...}`` per command, in order. Methods that
act on connections (``disconnect``, ``subscribe``, ``unsubscribe``, ``refresh``), the
out-of-band messages (``send`` to one connection, ``send_all`` to every one; tidings'
own) and the cluster views (``channels``, ``info``) go to every node through the controller.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tidings.core.broker import TOP, HistoryQuery
from tidings.core.channels import ChannelOptions, validate_channel
from tidings.core.client_types import info_dict
from tidings.core.node import Node
from tidings.core.node_control import b64
from tidings.core.publication import Publication, StreamPosition
from tidings.exceptions import (
    ApiError,
    BrokerUnavailable,
    ControlError,
    InvalidChannel,
    InvalidPayload,
    NoSuchConnection,
)
from tidings.protocol.centrifuge import codes
from tidings.protocol.envelope import check_json_payload, json_payload, payload_json

__all__ = [
    "BAD_REQUEST",
    "MAX_HISTORY",
    "NO_SUCH_CONNECTION",
    "ServerApi",
]

log = logging.getLogger("tidings.api")

MAX_HISTORY = 10_000

BAD_REQUEST = ApiError(codes.BAD_REQUEST)
# ``send`` to a connection no node holds: "not available", with a message that says why.
NO_SUCH_CONNECTION = codes.Error(108, "no such connection")


def _str(params: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = params.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise ApiError(codes.BAD_REQUEST)
    return value


def _json_or_b64(params: dict[str, Any], name: str) -> tuple[bytes, bool] | None:
    """``name`` (any JSON) or ``b64<name>`` (base64 bytes) as (payload, is_json)."""
    b64 = params.get("b64" + name)
    if b64 is not None:
        if not isinstance(b64, str):
            raise BAD_REQUEST
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise BAD_REQUEST from None
        try:
            check_json_payload(raw)
        except InvalidPayload:
            raise BAD_REQUEST from None
        try:
            orjson.loads(raw)
            return raw, True
        except orjson.JSONDecodeError:
            return raw, False
    if name not in params:
        return None
    try:
        return json_payload(params[name]), True
    except InvalidPayload:  # deeper than any subscriber's encoder could write it
        raise BAD_REQUEST from None


def _position(since: dict[str, Any]) -> StreamPosition:
    """A ``{"offset", "epoch"}`` stream position from a request; 107 when malformed."""
    offset, epoch = since.get("offset", 0), since.get("epoch", "")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise BAD_REQUEST
    if not isinstance(epoch, str):
        raise BAD_REQUEST
    return StreamPosition(offset, epoch)


class ServerApi:
    """Runs server API methods against a node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.methods: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "publish": self.publish,
            "broadcast": self.broadcast,
            "send": self.send,
            "send_all": self.send_all,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "disconnect": self.disconnect,
            "refresh": self.refresh,
            "presence": self.presence,
            "presence_stats": self.presence_stats,
            "history": self.history,
            "history_remove": self.history_remove,
            "channels": self.channels,
            "info": self.info,
        }

    async def call(self, method: str, params: Any) -> dict[str, Any]:
        """One method call: ``{"result": ...}`` or ``{"error": ...}``."""
        if method == "batch":
            return await self.batch(params)
        handler = self.methods.get(method)
        if handler is None:
            return {"error": codes.METHOD_NOT_FOUND.reply()}
        if not isinstance(params, dict):
            return {"error": codes.BAD_REQUEST.reply()}
        try:
            return {"result": await handler(params)}
        except ApiError as exc:
            return {"error": exc.error.reply()}
        except (BrokerUnavailable, ControlError) as exc:
            log.warning("server API %s: %s", method, exc)
            return {"error": codes.INTERNAL.reply()}
        except Exception:
            log.exception("server API %s failed", method)
            return {"error": codes.INTERNAL.reply()}

    async def batch(self, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict) or not isinstance(params.get("commands"), list):
            return {"error": codes.BAD_REQUEST.reply()}
        commands = params["commands"]

        async def one(command: Any) -> dict[str, Any]:
            if not isinstance(command, dict) or len(command) != 1:
                return {"error": codes.BAD_REQUEST.reply()}
            ((method, args),) = command.items()
            if method == "batch":
                return {"error": codes.BAD_REQUEST.reply()}
            answer = await self.call(method, args)
            return {method: answer["result"]} if "result" in answer else answer

        if params.get("parallel"):
            replies = list(await asyncio.gather(*(one(c) for c in commands)))
        else:
            replies = [await one(c) for c in commands]
        return {"replies": replies}

    # helpers
    def _channel(self, params: dict[str, Any]) -> tuple[str, ChannelOptions]:
        channel = _str(params, "channel")
        try:
            validate_channel(channel)
        except InvalidChannel:
            raise BAD_REQUEST from None
        opts = self.node.namespaces.find(channel)
        if opts is None:
            raise ApiError(codes.UNKNOWN_CHANNEL)
        return channel, opts

    def _pub(self, pub: Publication) -> dict[str, Any]:
        body: dict[str, Any] = {
            "data": orjson.Fragment(payload_json(pub.data, pub.is_json)),
            "offset": pub.offset,
        }
        if pub.tags:
            body["tags"] = pub.tags
        if pub.info is not None:
            info = info_dict(pub.info)
            for key in ("conn_info", "chan_info"):
                if key in info:
                    info[key] = orjson.Fragment(info[key])
            body["info"] = info
        return body

    def _target(self, params: dict[str, Any]) -> dict[str, Any]:
        """Which connections a command is for: a user's, narrowed by client and session."""
        target = {"user": _str(params, "user", required=False)}
        for key in ("client", "session"):
            value = params.get(key, "")
            if not isinstance(value, str):
                raise BAD_REQUEST
            target[key] = value
        return target

    async def _everywhere(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.node.controller.broadcast(command)

    # methods
    async def publish(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, _ = self._channel(params)
        return await self._publish_one(channel, params)

    async def _publish_one(self, channel: str, params: dict[str, Any]) -> dict[str, Any]:
        payload = _json_or_b64(params, "data")
        if payload is None:
            raise BAD_REQUEST
        tags = params.get("tags")
        if tags is not None and not (
            isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())
        ):
            raise BAD_REQUEST
        key = params.get("idempotency_key") or ""
        if not isinstance(key, str):
            raise BAD_REQUEST
        exclude = params.get("exclude_client") or ""
        if not isinstance(exclude, str):
            raise BAD_REQUEST
        done = await self.node.publish(
            channel,
            payload[0],
            is_json=payload[1],
            tags=tags,
            skip_history=bool(params.get("skip_history")),
            delta=bool(params.get("delta")),
            idempotency_key=key,
            exclude_client=exclude,
        )
        return {"offset": done.position.offset, "epoch": done.position.epoch}

    async def send(self, params: dict[str, Any]) -> dict[str, Any]:
        """``{"client", "data"|"b64data"}``: a message to that connection, on whichever node
        holds it; error 108 "no such connection" when none does."""
        client = _str(params, "client")
        payload = _json_or_b64(params, "data")
        if payload is None:
            raise BAD_REQUEST
        try:
            await self.node.send(client, *payload)
        except NoSuchConnection:
            raise ApiError(NO_SUCH_CONNECTION) from None
        return {}

    async def send_all(self, params: dict[str, Any]) -> dict[str, Any]:
        """``{"data"|"b64data"}``: a message to every connection on every node;
        ``{"delivered": N}``."""
        payload = _json_or_b64(params, "data")
        if payload is None:
            raise BAD_REQUEST
        return {"delivered": await self.node.send_all(*payload)}

    async def broadcast(self, params: dict[str, Any]) -> dict[str, Any]:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            raise BAD_REQUEST
        responses = []
        for channel in channels:
            answer = await self.call("publish", {**params, "channel": channel, "channels": None})
            responses.append(answer)
        return {"responses": responses}

    async def subscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, _ = self._channel(params)
        info = _json_or_b64(params, "info")
        data = _json_or_b64(params, "data")
        since = params.get("recover_since")
        position = _position(since) if isinstance(since, dict) else None
        override = params.get("override")
        if override is not None and not isinstance(override, dict):
            raise BAD_REQUEST
        await self._everywhere(
            {
                "method": "subscribe",
                **self._target(params),
                "channel": channel,
                "b64info": b64(info[0]) if info else None,
                "b64data": b64(data[0]) if data else None,
                "since": None if position is None else [position.offset, position.epoch],
                "override": override,
            }
        )
        return {}

    async def unsubscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, _ = self._channel(params)
        await self._everywhere(
            {"method": "unsubscribe", **self._target(params), "channel": channel}
        )
        return {}

    async def disconnect(self, params: dict[str, Any]) -> dict[str, Any]:
        custom = params.get("disconnect")
        disconnect = codes.FORCE_DISCONNECT
        if isinstance(custom, dict) and custom.get("code"):
            code = custom["code"]
            if not isinstance(code, int) or not 3000 <= code <= 4999:
                raise BAD_REQUEST
            disconnect = codes.Disconnect(code, str(custom.get("reason", "")))
        whitelist = params.get("whitelist") or []
        if not isinstance(whitelist, list) or not all(isinstance(c, str) for c in whitelist):
            raise BAD_REQUEST
        await self._everywhere(
            {
                "method": "disconnect",
                **self._target(params),
                "code": disconnect.code,
                "reason": disconnect.reason,
                "whitelist": whitelist,
            }
        )
        return {}

    async def refresh(self, params: dict[str, Any]) -> dict[str, Any]:
        """As Centrifugo: ``expired`` or an ``expire_at`` already past disconnects (3005);
        otherwise the connection's expiry becomes ``expire_at`` (0: none) and the client
        gets a ``refresh`` push saying so."""
        expire_at = params.get("expire_at") or 0
        if not isinstance(expire_at, int) or isinstance(expire_at, bool):
            raise BAD_REQUEST
        info = _json_or_b64(params, "info")
        await self._everywhere(
            {
                "method": "refresh",
                **self._target(params),
                "expired": bool(params.get("expired")),
                "expire_at": expire_at,
                "b64info": b64(info[0]) if info else None,
            }
        )
        return {}

    async def presence(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(params)
        if not opts.presence:
            raise ApiError(codes.NOT_AVAILABLE)
        clients = await self.node.presence_manager.presence(channel)
        body = {}
        for cid, info in clients.items():
            item = info_dict(info)
            for key in ("conn_info", "chan_info"):
                if key in item:
                    item[key] = orjson.Fragment(item[key])
            body[cid] = item
        return {"presence": body}

    async def presence_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(params)
        if not opts.presence:
            raise ApiError(codes.NOT_AVAILABLE)
        stats = await self.node.presence_manager.stats(channel)
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(params)
        if opts.history_size <= 0 or opts.history_ttl <= 0:
            raise ApiError(codes.NOT_AVAILABLE)
        limit = params.get("limit") or 0
        if not isinstance(limit, int):
            raise BAD_REQUEST
        wanted = MAX_HISTORY if limit < 0 else min(limit, MAX_HISTORY)
        reverse = bool(params.get("reverse"))
        since = params.get("since")
        position = _position(since) if isinstance(since, dict) else None
        query = HistoryQuery(since=position, limit=wanted, reverse=reverse) if wanted else TOP
        result = await self.node.history(channel, query)
        if position is not None and position.epoch and position.epoch != result.position.epoch:
            raise ApiError(codes.UNRECOVERABLE_POSITION)
        pubs = result.publications
        pos = result.position
        return {
            "publications": [self._pub(p) for p in pubs],
            "offset": pos.offset,
            "epoch": pos.epoch,
        }

    async def history_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(params)
        if opts.history_size <= 0 or opts.history_ttl <= 0:
            raise ApiError(codes.NOT_AVAILABLE)
        await self.node.broker.remove_history(channel)
        return {}

    async def channels(self, params: dict[str, Any]) -> dict[str, Any]:
        pattern = params.get("pattern") or "*"
        if not isinstance(pattern, str):
            raise BAD_REQUEST
        counts: dict[str, int] = {}
        for answer in await self._everywhere({"method": "channels", "pattern": pattern}):
            for channel, count in answer.get("channels", {}).items():
                counts[channel] = counts.get(channel, 0) + int(count)
        return {"channels": {ch: {"num_clients": n} for ch, n in sorted(counts.items())}}

    async def info(self, params: dict[str, Any]) -> dict[str, Any]:
        nodes = await self._everywhere({"method": "info"})
        return {"nodes": sorted(nodes, key=lambda n: str(n.get("name", "")))}
